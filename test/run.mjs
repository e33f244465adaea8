// Runs every compiled test file (dist/test/**/*.test.js) with Node's test runner, one file at a time:
// unit tests first (fast, no peers), then the tests with real peers, the QEMU guest last (slowest).
// Only *.test.js files are passed: `node --test DIR` would also load helper modules under test/.
// Usage: node test/run.mjs [unit|e2e|conformance|guest ...]   (no argument = everything)
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = join('dist', 'test');
const ORDER = ['unit', 'conformance', 'e2e', 'guest'];

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : name.endsWith('.test.js') ? [p] : [];
  });
}

const groups = process.argv.slice(2);
const rank = (f) => {
  const top = f.split('/')[2];
  const i = ORDER.indexOf(top);
  return i < 0 ? ORDER.length - 1.5 : i;
};
const files = walk(root)
  .filter((f) => groups.length === 0 || groups.includes(f.split('/')[2]))
  .sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
if (files.length === 0) {
  process.stderr.write(`no test files under ${root} for ${groups.join(', ') || 'all groups'} (did the build run?)\n`);
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
