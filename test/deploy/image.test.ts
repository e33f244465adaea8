// The Dockerfile, read as its instructions: multi-stage with the bases as build arguments, production
// dependencies only in the runtime stage, the host tools the node plugin runs in direct mode, `lunar` as
// the entrypoint, OCI labels; .dockerignore sends only what the build copies. (test/image/build-image.sh
// builds it with buildah from a local base and runs these checks on the image itself.)

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from '../support/chart.js';

interface Instruction {
  readonly op: string;
  readonly args: string;
}

/** Instructions of a Dockerfile: continuation lines joined, comments dropped. */
function instructions(text: string): Instruction[] {
  const joined = text
    .split('\n')
    .filter((l) => !/^\s*#/.test(l))
    .join('\n')
    .replace(/\\\n/g, ' ');
  return joined
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .map((l) => {
      const m = /^(\S+)\s+(.*)$/.exec(l);
      return { op: (m?.[1] ?? l).toUpperCase(), args: m?.[2] ?? '' };
    });
}

const dockerfile = instructions(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
const stages: Instruction[][] = [];
for (const i of dockerfile) {
  if (i.op === 'FROM') stages.push([]);
  stages.at(-1)?.push(i);
}
const [build, runtime] = stages;

describe('Dockerfile', () => {
  it('has a build stage and a runtime stage, both from base-image build arguments (Node 22 slim by default)', () => {
    assert.equal(stages.length, 2);
    const args = dockerfile.filter((i) => i.op === 'ARG').map((i) => i.args);
    assert.ok(args.includes('NODE_IMAGE=docker.io/library/node:22-bookworm-slim'), args.join(', '));
    assert.ok(args.includes('RUNTIME_IMAGE=${NODE_IMAGE}'));
    assert.match(build![0]!.args, /^\$\{NODE_IMAGE\} AS build$/);
    assert.match(runtime![0]!.args, /^\$\{RUNTIME_IMAGE\} AS runtime$/);
  });

  it('builds the native addon and the TypeScript in the build stage, then drops the dev dependencies', () => {
    const runs = build!.filter((i) => i.op === 'RUN').map((i) => i.args);
    assert.ok(
      runs.some((r) => /apt-get install .*\bg\+\+.*\bmake\b.*\bpython3\b/.test(r)),
      'node-gyp needs g++, make, python3',
    );
    assert.ok(
      runs.some((r) => /apt-get install .*\bliburing-dev\b/.test(r)),
      'liburing-dev: binding.gyp builds the io_uring path only when liburing.a is there',
    );
    // Linked statically (binding.gyp -Wl,-Bstatic -luring): the build proves the io_uring code is in the
    // addon and that it needs no liburing at runtime.
    assert.ok(runs.some((r) => r.includes("nm build/Release/lunar_native.node | grep -q ' T io_uring_queue_init'")));
    assert.ok(runs.some((r) => r.includes('! ldd build/Release/lunar_native.node | grep -q liburing')));
    assert.ok(runs.some((r) => r.includes('npm ci')));
    assert.ok(runs.some((r) => r.includes('tsc -p tsconfig.json') && r.includes('npm prune --omit=dev')));
  });

  it('the runtime stage copies only build output and production dependencies', () => {
    const copies = runtime!.filter((i) => i.op === 'COPY').map((i) => i.args);
    for (const c of copies) assert.match(c, /^--from=build /, c);
    const sources = copies.flatMap((c) => c.split(/\s+/).slice(1, -1));
    assert.deepEqual(sources.sort(), [
      '/src/build/Release/lunar_native.node',
      '/src/dist/src',
      '/src/node_modules',
      '/src/package-lock.json',
      '/src/package.json',
      '/src/proto',
    ]);
    assert.ok(!runtime!.some((i) => i.op === 'RUN' && /npm (ci|install)/.test(i.args)), 'no npm install at runtime');
  });

  it('installs the host tools the node plugin runs in direct mode', () => {
    const install = runtime!.find((i) => i.op === 'RUN' && i.args.includes('apt-get install'))?.args ?? '';
    for (const pkg of ['open-iscsi', 'multipath-tools', 'e2fsprogs', 'xfsprogs', 'util-linux', 'mount']) {
      assert.match(install, new RegExp(`\\s${pkg}(\\s|$)`), pkg);
    }
  });

  it('runs lunar as the entrypoint, with OCI version and source labels and a non-root user for the controller', () => {
    assert.deepEqual(runtime!.find((i) => i.op === 'ENTRYPOINT')?.args, '["/usr/local/bin/lunar"]');
    const labels = runtime!
      .filter((i) => i.op === 'LABEL')
      .map((i) => i.args)
      .join(' ');
    assert.match(labels, /org\.opencontainers\.image\.version="\$\{LUNAR_VERSION\}"/);
    assert.match(labels, /org\.opencontainers\.image\.source="\$\{LUNAR_SOURCE\}"/);
    assert.ok(runtime!.some((i) => i.op === 'RUN' && /useradd .*--uid 10001/.test(i.args)));
    assert.ok(runtime!.some((i) => i.op === 'ENV' && i.args.includes('UV_THREADPOOL_SIZE=32')));
  });
});

describe('.dockerignore', () => {
  const lines = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));

  it('ignores everything but what the build stage copies', () => {
    assert.equal(lines[0], '*');
    const allowed = lines.slice(1).map((l) => l.replace(/^!/, '').replace(/\/$/, ''));
    const copied = build!
      .filter((i) => i.op === 'COPY')
      .flatMap((i) => i.args.split(/\s+/).slice(0, -1))
      .map((s) => s.replace(/\/$/, ''));
    assert.deepEqual([...new Set(copied)].sort(), [...allowed].sort());
    for (const never of ['node_modules', 'dist', 'build', '.git', '.lunar']) assert.ok(!allowed.includes(never), never);
  });
});
