// What an operator sees (issue 9, "Failures an operator can see"), against real `lunar serve` processes
// and the real CLI: the CLI's bounded wait for a server that is starting, abnormal volumes in
// `volume list` / `status` and `volume rescan`, and writes that fail for want of space (a small tmpfs as
// the data directory, written past its end by QEMU's iSCSI driver): logged rate-limited, counted in
// /metrics, reported in the volume's condition (CSI and `volume show`) until space is back.
// Run inside `isolated` (private network and mount namespaces): the ENOSPC test mounts a tmpfs.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { POOL_PRELOAD } from '../../src/util/threadpool.js';
import { LUNAR_CLI, startLunarProcess, type CliResult } from '../support/lunar.js';

const MiB = 1024 * 1024;

/** `lunar ARGS` as a child process; resolves with its exit code and output (killed after timeoutMs). */
function cli(args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): Promise<CliResult & { ms: number }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [LUNAR_CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.stdout.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
    c.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
    c.on('error', reject);
    c.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : -1), stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** `lunar serve` started without waiting for it (the tests below are about what happens meanwhile). */
function serve(dataDir: string, portal: string): { child: ChildProcess; output: () => string } {
  const child = spawn(
    process.execPath,
    [`--import=${POOL_PRELOAD}`, LUNAR_CLI, 'serve', '--data-dir', dataDir, '--portal', portal, '--csi-endpoint', 'none'],
    { env: { ...process.env, LUNAR_LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout?.on('data', (b: Buffer) => (out += b.toString('utf8')));
  child.stderr?.on('data', (b: Buffer) => (out += b.toString('utf8')));
  return { child, output: () => out };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- the CLI waits for a server that is starting ------------------------------------------------------

test('CLI readiness: no server and --wait 1 → exit 7 after about a second, saying so', { timeout: 30_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lunar-op-'));
  try {
    const r = await cli(['volume', 'list', '--wait', '1'], { LUNAR_DATA_DIR: dir });
    assert.equal(r.code, 7, r.stderr);
    assert.ok(r.ms >= 1000 && r.ms < 6000, `exited after ${r.ms} ms`);
    assert.match(r.stderr, /no Lunar server at .*admin\.sock \(ENOENT\) after waiting 1\.\d s — start one with `lunar serve/);
    const now = await cli(['status', '--wait', '0'], { LUNAR_DATA_DIR: dir });
    assert.equal(now.code, 7, now.stderr);
    const help = await cli(['--help']);
    assert.match(help.stdout, /7 server not reachable or not ready within --wait/);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('CLI readiness: `lunar volume create` started before and right after `lunar serve` succeeds', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lunar-op-'));
  let server: ReturnType<typeof serve> | null = null;
  try {
    // Before: the admin socket does not exist yet when the command starts.
    const early = cli(['volume', 'create', 'early', '--size', '4MiB', '--wait', '60', '--json'], { LUNAR_DATA_DIR: dir });
    await sleep(500);
    server = serve(dir, '127.0.0.1:13390');
    const e = await early;
    assert.equal(e.code, 0, `${e.stderr}\n${server.output().slice(-2000)}`);
    assert.equal((JSON.parse(e.stdout) as { name: string }).name, 'early');
    await stopChild(server.child);
    // Right after: started in the same tick as the server, as `lunar serve & lunar volume create` does.
    server = serve(dir, '127.0.0.1:13390');
    const right = await cli(['volume', 'create', 'right-after', '--size', '4MiB', '--wait', '60'], { LUNAR_DATA_DIR: dir });
    assert.equal(right.code, 0, `${right.stderr}\n${server.output().slice(-2000)}`);
    const list = await cli(['volume', 'list', '--json'], { LUNAR_DATA_DIR: dir });
    assert.deepEqual((JSON.parse(list.stdout) as { name: string }[]).map((v) => v.name).sort(), ['early', 'right-after']);
  } finally {
    if (server) await stopChild(server.child);
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
