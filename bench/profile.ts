// Summary of a V8 .cpuprofile (written by `node --cpu-prof`): the functions with the most self time.
// Used by `npm run bench -- --profile` to show where Lunar spends its CPU under load.

import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { repoRoot } from './util.js';

export interface ProfileEntry {
  readonly fn: string;
  readonly where: string;
  readonly selfPct: number;
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Top `n` functions by self samples (V8 CPU profile format: nodes[].callFrame, nodes[].hitCount). */
export function summarizeProfile(profileJson: string, n: number): ProfileEntry[] {
  const p: unknown = JSON.parse(profileJson);
  if (!isRecord(p) || !Array.isArray(p['nodes'])) throw new Error('not a V8 CPU profile');
  const self = new Map<string, { fn: string; where: string; hits: number }>();
  let total = 0;
  for (const node of p['nodes'] as unknown[]) {
    if (!isRecord(node) || !isRecord(node['callFrame'])) continue;
    const hits = typeof node['hitCount'] === 'number' ? node['hitCount'] : 0;
    const cf = node['callFrame'];
    const fn = typeof cf['functionName'] === 'string' && cf['functionName'] !== '' ? cf['functionName'] : '(anonymous)';
    const url = typeof cf['url'] === 'string' ? cf['url'].replace(/^file:\/\//, '') : '';
    const line = typeof cf['lineNumber'] === 'number' ? cf['lineNumber'] + 1 : 0;
    const where = url ? `${url.startsWith('/') ? relative(repoRoot, url) : url}:${line}` : '';
    const key = `${fn}@${where}`;
    const e = self.get(key) ?? { fn, where, hits: 0 };
    e.hits += hits;
    self.set(key, e);
    total += hits;
  }
  return [...self.values()]
    .sort((a, b) => b.hits - a.hits)
    .slice(0, n)
    .map((e) => ({ fn: e.fn, where: e.where, selfPct: total ? (e.hits / total) * 100 : 0 }));
}

/** The newest .cpuprofile in `dir`, or undefined. */
export function newestProfile(dir: string): string | undefined {
  let files: string[];
  try {
    files = readdirSync(dir)
      .filter((f) => f.endsWith('.cpuprofile'))
      .sort();
  } catch {
    return undefined;
  }
  const last = files[files.length - 1];
  return last ? join(dir, last) : undefined;
}

export function readProfileSummary(file: string, n: number): ProfileEntry[] {
  return summarizeProfile(readFileSync(file, 'utf8'), n);
}
