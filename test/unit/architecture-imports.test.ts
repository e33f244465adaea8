// The import rules of docs/architecture.md for the Kubernetes API, metrics and SCSI rooms, read from the
// sources: only src/kube/client.ts imports @kubernetes/client-node, only src/metrics/registry.ts imports
// prom-client, src/kube and src/metrics import nothing of Lunar but what their rules name, the data path
// (src/scsi) reaches metrics only through its own contract, and the CSI services see src/kube only
// through its types.ts.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, posix, relative, sep } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from '../support/chart.js';

interface SourceFile {
  /** src/… with / separators. */
  readonly path: string;
  /** Every module specifier of import/export … from and import(…), resolved to src/… for relative ones. */
  readonly imports: readonly string[];
}

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

const SOURCES: SourceFile[] = walk(join(ROOT, 'src')).map((file) => {
  const path = relative(ROOT, file).split(sep).join('/');
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|^import\s+)'([^']+)'/gm)].map((m) => m[1]!);
  const imports = specs.map((s) => (s.startsWith('.') ? posix.normalize(posix.join(posix.dirname(path), s)).replace(/\.js$/, '.ts') : s));
  return { path, imports };
});

const importersOf = (spec: string): string[] => SOURCES.filter((f) => f.imports.includes(spec)).map((f) => f.path);
const room = (path: string): string => path.split('/').slice(0, 2).join('/');

/** The imports of `dir`'s files that leave the room and are not in `allowed` (Lunar files) or packages. */
function outside(dir: string, allowed: readonly string[], packages: readonly string[] = []): string[] {
  return SOURCES.filter((f) => f.path.startsWith(`${dir}/`)).flatMap((f) =>
    f.imports
      .filter((i) => (i.startsWith('src/') ? room(i) !== dir && !allowed.includes(i) : !i.startsWith('node:') && !packages.includes(i)))
      .map((i) => `${f.path} imports ${i}`),
  );
}

describe('architecture: import rules', () => {
  it('reads the sources', () => {
    assert.ok(SOURCES.length > 50, `${SOURCES.length} files`);
    assert.ok(importersOf('src/log.ts').length > 5, 'relative imports resolved');
  });

  it('only src/kube/client.ts imports @kubernetes/client-node', () => {
    assert.deepEqual(importersOf('@kubernetes/client-node'), ['src/kube/client.ts']);
  });

  it('only src/metrics/registry.ts imports prom-client', () => {
    assert.deepEqual(importersOf('prom-client'), ['src/metrics/registry.ts']);
  });

  it('src/kube imports nothing of Lunar but log.ts', () => {
    assert.deepEqual(outside('src/kube', ['src/log.ts'], ['@kubernetes/client-node']), []);
  });

  it('src/metrics imports nothing of Lunar but log.ts and the SCSI contract', () => {
    assert.deepEqual(outside('src/metrics', ['src/log.ts', 'src/scsi/types.ts'], ['prom-client']), []);
  });

  it('src/scsi reaches other rooms only through the storage contract and the logger (no metrics, no kube)', () => {
    assert.deepEqual(outside('src/scsi', ['src/storage/types.ts', 'src/log.ts']), []);
  });

  it('src/iscsi imports only the target and SCSI contracts (and the logger, the portal helper)', () => {
    assert.deepEqual(
      outside(
        'src/iscsi',
        ['src/scsi/types.ts', 'src/scsi/sense.ts', 'src/target/types.ts', 'src/log.ts', 'src/util/portal.ts'],
        ['pino', '@node-rs/crc32'],
      ),
      [],
    );
  });

  it('src/storage and src/util import nothing of Lunar', () => {
    assert.deepEqual([...outside('src/storage', []), ...outside('src/util', [])], []);
  });

  it('only src/storage and the composition root (src/server.ts: duplicateFd for the transport) load the native addon', () => {
    assert.deepEqual(
      importersOf('src/storage/native.ts').filter((f) => !f.startsWith('src/storage/') && f !== 'src/server.ts'),
      [],
    );
  });

  it('the CSI services see src/kube only through its types.ts contract', () => {
    const kube = SOURCES.filter((f) => f.path.startsWith('src/csi/')).flatMap((f) =>
      f.imports.filter((i) => i.startsWith('src/kube/') && i !== 'src/kube/types.ts').map((i) => `${f.path} imports ${i}`),
    );
    assert.deepEqual(kube, []);
  });
});

/** `src/<dir>` for files in a folder, `src/<file>.ts` for the top-level files. */
const roomOf = (path: string): string => (path.split('/').length > 2 ? room(path) : path);

/** The room → rooms table between the markers of docs/architecture.md's "Imports between rooms". */
function drawnEdges(): Map<string, Set<string>> {
  const doc = readFileSync(join(ROOT, 'docs', 'architecture.md'), 'utf8');
  const m = /<!-- room-imports:begin -->([\s\S]*?)<!-- room-imports:end -->/.exec(doc);
  assert.ok(m, 'docs/architecture.md has the room-imports table');
  const edges = new Map<string, Set<string>>();
  for (const line of m[1]!.split('\n')) {
    const cells = line.split('|').map((c) => c.trim());
    if (cells.length < 4 || !cells[1]!.startsWith('src/')) continue;
    const to = cells[2]!
      .split(',')
      .map((c) => c.trim())
      .filter((c) => c !== '');
    edges.set(cells[1]!, new Set(to));
  }
  return edges;
}

describe('architecture: docs/architecture.md draws the imports', () => {
  it('every import between rooms is in the table, and every edge in the table is an import', () => {
    const drawn = drawnEdges();
    const real = new Map<string, Set<string>>();
    for (const f of SOURCES) {
      const from = roomOf(f.path);
      if (!real.has(from)) real.set(from, new Set());
      for (const i of f.imports) {
        if (!i.startsWith('src/')) continue;
        const to = roomOf(i);
        if (to !== from) real.get(from)!.add(to);
      }
    }
    const missing: string[] = [];
    const extra: string[] = [];
    for (const [from, tos] of real) {
      if (!drawn.has(from)) missing.push(`room ${from} has no row`);
      for (const to of tos) if (!drawn.get(from)?.has(to)) missing.push(`${from} -> ${to} (imported, not drawn)`);
    }
    for (const [from, tos] of drawn) {
      if (!real.has(from)) extra.push(`row ${from}: no such room`);
      for (const to of tos) if (!real.get(from)?.has(to)) extra.push(`${from} -> ${to} (drawn, not imported)`);
    }
    assert.deepEqual({ missing, extra }, { missing: [], extra: [] });
  });
});
