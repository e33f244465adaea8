// The admin socket protocol: newline-delimited JSON, error codes for malformed or invalid requests, one
// server per socket, a real VolumeManager behind it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import net from 'node:net';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAdminServer } from '../../src/admin/server.js';
import { adminCall, AdminError, AdminUnreachable } from '../../src/admin/client.js';
import { IscsiServer } from '../../src/iscsi/server.js';
import { VolumeManager } from '../../src/volumes/manager.js';
import { VolumeTargetRegistry } from '../../src/target/registry.js';
import { VolumeError, type VolumeService } from '../../src/volumes/types.js';

const portals = [{ host: '127.0.0.1', port: 13338, tpgt: 1 }];

function rawExchange(path: string, text: string, lines: number): Promise<Array<Record<string, unknown>>> {
  return new Promise((resolve, reject) => {
    const s = net.connect(path);
    let buf = '';
    const out: Array<Record<string, unknown>> = [];
    s.on('data', (b) => {
      buf += b.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        out.push(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
        buf = buf.slice(nl + 1);
        if (out.length === lines) {
          s.destroy();
          resolve(out);
        }
      }
    });
    s.on('error', reject);
    s.write(text);
  });
}

test('admin socket: requests, error codes, malformed input, exclusivity', async () => {
  const d = await mkdtemp(join(tmpdir(), 'lunar-admin-'));
  const sock = join(d, 'admin.sock');
  const registry = new VolumeTargetRegistry(portals);
  const manager = await VolumeManager.open({ dataDir: d, portals, registry, sessions: new IscsiServer({ registry }) });
  let ready = false;
  const server = await startAdminServer(sock, {
    volumes: (): VolumeService => {
      if (!ready) throw new VolumeError('failed-precondition', 'Lunar is still starting; retry in a moment');
      return manager;
    },
    allSessions: () => [],
    info: () => ({ ready }),
  });
  try {
    assert.equal((await stat(sock)).mode & 0o777, 0o600);
    assert.deepEqual(await adminCall(sock, 'ping'), { ready: false });
    await assert.rejects(adminCall(sock, 'volume.list'), (e: unknown) => e instanceof AdminError && e.code === 'failed-precondition');
    ready = true;
    const v = (await adminCall(sock, 'volume.create', { name: 'a', sizeBytes: 1 << 20 })) as { id: string; name: string };
    assert.equal(v.name, 'a');
    assert.equal(((await adminCall(sock, 'volume.get', { volume: 'a' })) as { id: string }).id, v.id);
    assert.equal(((await adminCall(sock, 'volume.get', { volume: v.id })) as { name: string }).name, 'a');
    await assert.rejects(
      adminCall(sock, 'volume.get', { volume: 'zzz' }),
      (e: unknown) => e instanceof AdminError && e.code === 'not-found',
    );
    await assert.rejects(
      adminCall(sock, 'volume.create', { name: 'b' }),
      (e: unknown) => e instanceof AdminError && e.code === 'invalid-argument' && /sizeBytes/.test(e.message),
    );
    await assert.rejects(adminCall(sock, 'volume.create', { name: 'b', sizeBytes: 1, chap: { mode: 'weird' } }), /unknown CHAP mode/);
    await assert.rejects(adminCall(sock, 'volume.resize', { volume: 'a', sizeBytes: 'big' }), /"sizeBytes" must be a number/);
    await assert.rejects(adminCall(sock, 'nonsense'), (e: unknown) => e instanceof AdminError && e.code === 'unknown-method');
    // Several requests on one connection, one malformed: each gets its own answer, the connection survives.
    const answers = await rawExchange(
      sock,
      '{"id":1,"method":"ping"}\nthis is not json\n{"id":3}\n[1]\n{"id":5,"method":"volume.list"}\n',
      4 + 1,
    );
    const byId = (id: number | null) => answers.filter((a) => a.id === id);
    assert.equal(byId(1)[0]?.ok, true);
    assert.equal(byId(3)[0]?.ok, false);
    assert.equal((byId(3)[0]?.error as { code: string }).code, 'bad-request');
    assert.equal(byId(null).length, 2);
    assert.ok(byId(null).every((a) => (a.error as { code: string }).code === 'bad-request'));
    assert.equal(byId(5)[0]?.ok, true);
    // A second server on the same socket is refused while the first answers.
    await assert.rejects(startAdminServer(sock, { volumes: () => manager, allSessions: () => [], info: () => ({}) }), /already running/);
  } finally {
    await server.close();
    await manager.close();
  }
  await assert.rejects(adminCall(sock, 'ping'), (e: unknown) => e instanceof AdminUnreachable);
  await rm(d, { recursive: true, force: true });
});
