// src/util/unix-socket.ts: the unix socket path limit and claiming a socket path before listen().
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { claimSocketPath, socketAnswers, UNIX_PATH_MAX, unixPathTooLong } from '../../src/util/unix-socket.js';

function listen(path: string): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const s = net.createServer((c) => c.destroy());
    s.once('error', reject);
    s.listen(path, () => resolve(s));
  });
}

test('unixPathTooLong: 107 bytes fit, 108 do not, counted in bytes', () => {
  assert.equal(UNIX_PATH_MAX, 107);
  assert.equal(unixPathTooLong('/' + 'a'.repeat(106)), false);
  assert.equal(unixPathTooLong('/' + 'a'.repeat(107)), true);
  assert.equal(unixPathTooLong('/' + 'é'.repeat(53)), false); // 1 + 106 bytes
  assert.equal(unixPathTooLong('/' + 'é'.repeat(54)), true); // 1 + 108 bytes
});

test('claimSocketPath: free, live, stale (removed), not a socket (kept)', async () => {
  const d = await mkdtemp(join(tmpdir(), 'lunar-sock-'));
  try {
    const path = join(d, 'x.sock');
    assert.equal(await claimSocketPath(path), 'free');
    const server = await listen(path);
    assert.equal(await socketAnswers(path), true);
    assert.equal(await claimSocketPath(path), 'live');
    assert.ok((await stat(path)).isSocket(), 'a live socket is left alone');
    // A socket file whose listener is gone: closing a net.Server unlinks its file, so make the stale
    // file by binding in a child process and killing it.
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const stale = join(d, 'stale.sock');
    const r = spawnSync(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    assert.equal(r.signal, 'SIGKILL');
    assert.ok((await stat(stale)).isSocket(), 'the killed process left its socket file');
    assert.equal(await socketAnswers(stale), false);
    assert.equal(await claimSocketPath(stale), 'free');
    assert.equal(existsSync(stale), false, 'the stale socket file was removed');
    const file = join(d, 'plain');
    await writeFile(file, 'data');
    assert.equal(await claimSocketPath(file), 'not-socket');
    assert.equal(existsSync(file), true, 'a file of another kind is never removed');
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});
