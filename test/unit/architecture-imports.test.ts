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

  it('the CSI services see src/kube only through its types.ts contract', () => {
    const kube = SOURCES.filter((f) => f.path.startsWith('src/csi/')).flatMap((f) =>
      f.imports.filter((i) => i.startsWith('src/kube/') && i !== 'src/kube/types.ts').map((i) => `${f.path} imports ${i}`),
    );
    assert.deepEqual(kube, []);
  });
});
