// Running libiscsi's conformance suite (iscsi-test-cu, Debian libiscsi-bin) one suite per process and
// reading its CUnit output. Used by test/e2e/conformance.test.ts; pure parsing/rendering functions are
// unit-tested in test/conformance/cu.test.ts.

import { spawn } from 'node:child_process';

export type Outcome = 'pass' | 'fail' | 'skip';

export interface TestResult {
  /** Full name, e.g. "ALL.ProutReserve.OwnershipEA". */
  readonly name: string;
  readonly outcome: Outcome;
  /** For failures (and skips): the [FAILED]/[SKIPPED] lines and CUnit assertion lines. */
  readonly message: string;
}

export interface SuiteRun {
  /** "ALL.Read10" */
  readonly suite: string;
  readonly results: TestResult[];
  readonly seconds: number;
  /** Non-empty when the process timed out or crashed; tests it never reported count as failures. */
  readonly problem: string;
}

/** Parse `iscsi-test-cu --list`: suite name -> its test names (ALL family only). */
export function parseList(text: string): Map<string, string[]> {
  const suites = new Map<string, string[]>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const parts = line.split('.');
    if (parts[0] !== 'ALL') continue;
    if (parts.length === 2) {
      if (!suites.has(line)) suites.set(line, []);
    } else if (parts.length === 3) {
      const suite = `${parts[0]}.${parts[1]}`;
      const list = suites.get(suite) ?? [];
      list.push(line);
      suites.set(suite, list);
    }
  }
  return suites;
}

/**
 * Parse the verbose CUnit output of one iscsi-test-cu run of suite `suite` ("ALL.X").
 * A test is "pass" when CUnit passed it, "skip" when CUnit passed it but it logged "[SKIPPED]"
 * (CUnit counts skips as passes), "fail" when CUnit reports FAILED.
 */
export function parseOutput(suite: string, text: string): TestResult[] {
  const results: TestResult[] = [];
  const lines = text.split('\n');
  let current: { name: string; body: string[] } | null = null;
  const flush = (): void => {
    if (!current) return;
    const body = current.body.join('\n');
    // The verdict is the first "passed"/"FAILED" CUnit prints after "...", or alone on a line.
    const m = /(?:\.\.\.\s*|^\s*)(passed|FAILED)\b/m.exec(body);
    let outcome: Outcome;
    if (!m) outcome = 'fail';
    else if (m[1] === 'FAILED') outcome = 'fail';
    else outcome = /\[SKIPPED\]/.test(body.slice(0, m.index)) ? 'skip' : 'pass';
    const notes = current.body
      .flatMap((l) => {
        const out: string[] = [];
        const f = /\[(FAILED|SKIPPED)\][^\n]*/.exec(l);
        if (f) out.push(f[0].trim());
        if (/^\s+\d+\.\s+\S+:\d+\s+-/.test(l)) out.push(l.trim());
        return out;
      })
      .filter((v, i, a) => a.indexOf(v) === i);
    const message = m ? notes.join(' | ') : `no verdict in output${notes.length ? ': ' + notes.join(' | ') : ''}`;
    results.push({ name: `${suite}.${current.name}`, outcome, message });
    current = null;
  };
  for (const line of lines) {
    const t = /^\s{2}Test: (\S+) \.\.\.(.*)$/.exec(line);
    if (t) {
      flush();
      current = { name: t[1]!, body: ['...' + t[2]!] };
      continue;
    }
    if (/^Run Summary:/.test(line) || /^Suite: /.test(line)) {
      flush();
      continue;
    }
    if (current) current.body.push(line);
  }
  flush();
  return results;
}

export interface RunSuiteOptions {
  suite: string;
  /** Every test the suite has (from --list), so unreported ones count as failures. */
  tests: readonly string[];
  url: string;
  /** Second URL for MultipathIO. */
  multipathUrl?: string;
  initiatorName: string;
  initiatorName2: string;
  timeoutMs: number;
}

/** Run one suite in its own iscsi-test-cu process (destructive tests allowed: -d). */
export function runSuite(o: RunSuiteOptions): Promise<SuiteRun> {
  // -d: destructive tests allowed; -S: SANITIZE tests allowed (the LU is a scratch LU).
  const args = ['-d', '-S', '-i', o.initiatorName, '-I', o.initiatorName2, '-t', o.suite, o.url];
  if (o.suite === 'ALL.MultipathIO' && o.multipathUrl) args.push(o.multipathUrl);
  const start = Date.now();
  return new Promise((res) => {
    const c = spawn('iscsi-test-cu', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let problem = '';
    c.stdout.on('data', (b: Buffer) => (out += b.toString('utf8')));
    c.stderr.on('data', (b: Buffer) => (out += b.toString('utf8')));
    const timer = setTimeout(() => {
      problem = `timed out after ${o.timeoutMs / 1000} s`;
      c.kill('SIGKILL');
    }, o.timeoutMs);
    c.on('error', (e) => {
      problem = `cannot run iscsi-test-cu: ${e.message}`;
    });
    c.on('close', (code, signal) => {
      clearTimeout(timer);
      if (!problem && signal) problem = `killed by ${signal}`;
      const parsed = parseOutput(o.suite, out);
      const seen = new Set(parsed.map((r) => r.name));
      const missing = o.tests.filter((t) => !seen.has(t));
      if (!problem && missing.length > 0) problem = `exit code ${code}; ${missing.length} test(s) not reported`;
      const tail = out.trim().split('\n').slice(-3).join(' | ');
      const results = [
        ...parsed,
        ...missing.map((name) => ({ name, outcome: 'fail' as const, message: `not run: ${problem}; output tail: ${tail}` })),
      ];
      res({ suite: o.suite, results, seconds: (Date.now() - start) / 1000, problem });
    });
  });
}

export interface Counts {
  pass: number;
  fail: number;
  skip: number;
}

export function count(results: readonly TestResult[]): Counts {
  const c = { pass: 0, fail: 0, skip: 0 };
  for (const r of results) c[r.outcome]++;
  return c;
}

const pfs = (c: Counts | undefined): string => (c ? `${c.pass}/${c.fail}/${c.skip}` : '–');

/** Side-by-side per-suite table (plain text for the test log). */
export function textTable(
  suites: readonly string[],
  columns: ReadonlyArray<{ title: string; runs: ReadonlyMap<string, SuiteRun> }>,
): string {
  const rows = [['suite', ...columns.map((c) => `${c.title} P/F/S`)]];
  for (const s of suites) rows.push([s.replace(/^ALL\./, ''), ...columns.map((c) => pfs(c.runs.get(s) && count(c.runs.get(s)!.results)))]);
  rows.push(['TOTAL', ...columns.map((c) => pfs(count([...c.runs.values()].flatMap((r) => r.results))))]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((v, i) => v.padEnd(widths[i]!)).join('  ')).join('\n');
}

/** Markdown report for docs/conformance.md. */
export function markdownReport(opts: {
  suites: readonly string[];
  columns: ReadonlyArray<{ title: string; runs: ReadonlyMap<string, SuiteRun>; note: string }>;
  header: string;
  regressions: readonly string[];
}): string {
  const { suites, columns } = opts;
  const out: string[] = [opts.header, ''];
  out.push(`| suite | tests | ${columns.map((c) => `${c.title} P/F/S`).join(' | ')} | ${columns.map((c) => `${c.title} s`).join(' | ')} |`);
  out.push(`|---|---|${columns.map(() => '---').join('|')}|${columns.map(() => '---:').join('|')}|`);
  const secs = (r: SuiteRun | undefined): string => (r ? r.seconds.toFixed(1) : '–');
  for (const s of suites) {
    const n = Math.max(...columns.map((c) => c.runs.get(s)?.results.length ?? 0));
    const cells = columns.map((c) => pfs(c.runs.get(s) && count(c.runs.get(s)!.results)));
    out.push(`| ${s.replace(/^ALL\./, '')} | ${n} | ${cells.join(' | ')} | ${columns.map((c) => secs(c.runs.get(s))).join(' | ')} |`);
  }
  const totals = columns.map((c) => count([...c.runs.values()].flatMap((r) => r.results)));
  const nTotal = Math.max(...columns.map((c) => [...c.runs.values()].reduce((a, r) => a + r.results.length, 0)));
  const totalSecs = columns.map((c) => [...c.runs.values()].reduce((a, r) => a + r.seconds, 0).toFixed(1));
  out.push(`| **TOTAL** | ${nTotal} | ${totals.map((t) => `**${pfs(t)}**`).join(' | ')} | ${totalSecs.join(' | ')} |`);
  out.push(
    '',
    'P/F/S = passed / failed / skipped; s = wall seconds of the suite process. CUnit counts a skip as a pass; here a test that logged `[SKIPPED]` is a skip.',
    '',
  );
  for (const c of columns) {
    out.push(`## ${c.title}`, '', c.note, '');
    const all = [...c.runs.values()].flatMap((r) => r.results);
    const failed = all.filter((r) => r.outcome === 'fail');
    out.push(`Failed (${failed.length}):`, '');
    if (failed.length === 0) out.push('- none');
    for (const f of failed) out.push(`- \`${f.name}\` — ${mdEscape(f.message.length > 400 ? f.message.slice(0, 400) + ' …' : f.message)}`);
    const problems = [...c.runs.values()].filter((r) => r.problem);
    if (problems.length) {
      out.push('', 'Suites that did not finish normally:', '');
      for (const p of problems) out.push(`- ${p.suite}: ${mdEscape(p.problem)}`);
    }
    const skipped = all.filter((r) => r.outcome === 'skip');
    out.push('', `Skipped (${skipped.length}): ${skipped.map((s) => `\`${s.name.replace(/^ALL\./, '')}\``).join(', ') || 'none'}`, '');
  }
  if (opts.regressions.length) {
    out.push('## Problems (these fail the conformance test)', '', ...opts.regressions.map((r) => `- ${mdEscape(r)}`), '');
  }
  return out.join('\n') + '\n';
}

function mdEscape(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}
