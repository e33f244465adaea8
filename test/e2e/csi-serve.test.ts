// `lunar serve` itself serves CSI: the default endpoint unix://<data-dir>/csi.sock answers Identity and
// Controller calls, a volume made over CSI is a real LU the CLI lists and libiscsi reads, and
// --csi-endpoint none turns CSI off, and tcp://host:0 reports the port it bound. (csi-controller.test.ts covers
// every RPC in depth.)
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import test, { after } from 'node:test';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { loadCsiPackage } from '../../src/csi/proto.js';
import { startLunarProcess, type LunarProcess } from '../support/lunar.js';
import { rpc } from '../support/csi.js';

const run = promisify(execFile);
const PORT = 13356;

const procs: LunarProcess[] = [];
after(async () => {
  for (const p of procs) await p.remove();
});

test('lunar serve answers CSI on unix://<data-dir>/csi.sock; a CSI volume is a real LU', async () => {
  const lunar = await startLunarProcess({ portals: [`127.0.0.1:${PORT}`] });
  procs.push(lunar);
  const sock = join(lunar.dataDir, 'csi.sock');
  assert.ok(existsSync(sock), `no CSI socket at ${sock}:\n${lunar.output()}`);
  const pkg = loadCsiPackage();
  const identity = new pkg.Identity(`unix://${sock}`, grpc.credentials.createInsecure());
  const controller = new pkg.Controller(`unix://${sock}`, grpc.credentials.createInsecure());
  try {
    const info = await rpc<{ name: string; vendor_version: string }>(identity, 'GetPluginInfo');
    assert.equal(info.name, 'iscsi.lunar.dev');
    assert.match(info.vendor_version, /^\d+\.\d+\.\d+/);
    assert.deepEqual((await rpc<{ ready: { value: boolean } }>(identity, 'Probe')).ready, { value: true });

    const created = await rpc<{ volume: { volume_id: string; capacity_bytes: string; volume_context: Record<string, string> } }>(
      controller,
      'CreateVolume',
      {
        name: 'pvc-serve-1',
        capacity_range: { required_bytes: String(64 * 1024 * 1024) },
        volume_capabilities: [{ block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
        parameters: {},
      },
    );
    const vol = created.volume;
    assert.equal(vol.capacity_bytes, String(64 * 1024 * 1024));
    const ctx = vol.volume_context;
    const iqn = Object.values(ctx).find((v) => v.startsWith('iqn.'));
    assert.ok(iqn, `volume_context carries the target IQN: ${JSON.stringify(ctx)}`);

    // The CLI (admin socket of the same server) sees the CSI volume.
    const list = await lunar.cli(['volume', 'list', '--json']);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /pvc-serve-1/);

    // Masked until published: a node that was not published is refused at login...
    const node = 'iqn.2026-11.io.lunar.test:serve-node';
    const url = `iscsi://127.0.0.1:${PORT}/${iqn}/0`;
    await assert.rejects(run('iscsi-readcapacity16', ['-i', node, url], { timeout: 20_000 }));
    // ...and reads the LU's capacity once published to it.
    await rpc(controller, 'ControllerPublishVolume', {
      volume_id: vol.volume_id,
      node_id: `node-a#${node}`,
      volume_capability: { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } },
      readonly: false,
    });
    const cap = await run('iscsi-readcapacity16', ['-i', node, url], { timeout: 20_000 });
    assert.match(cap.stdout, new RegExp(`Total size:\\s*${64 * 1024 * 1024}\\b`), cap.stdout);
  } finally {
    identity.close();
    controller.close();
  }
});

test('lunar serve --csi-endpoint none serves no CSI socket', async () => {
  const lunar = await startLunarProcess({ portals: [`127.0.0.1:${PORT + 1}`], args: ['--csi-endpoint', 'none'] });
  procs.push(lunar);
  assert.equal(existsSync(join(lunar.dataDir, 'csi.sock')), false);
  const st = await lunar.cli(['volume', 'list']);
  assert.equal(st.code, 0, st.stderr);
});

test('lunar serve --csi-endpoint tcp://127.0.0.1:0 prints and logs the port it bound, and serves CSI there', async () => {
  const lunar = await startLunarProcess({ portals: [`127.0.0.1:${PORT + 2}`], args: ['--csi-endpoint', 'tcp://127.0.0.1:0'] });
  procs.push(lunar);
  // The banner (stdout) and the log lines (stderr, written asynchronously) follow the server's readiness:
  // wait for both.
  let printed: RegExpExecArray | null = null;
  for (let i = 0; i < 200; i++) {
    printed = /; CSI (tcp:\/\/127\.0\.0\.1:(\d+))\n/.exec(lunar.output());
    if (printed !== null && lunar.output().includes('"msg":"Lunar ready"')) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.ok(printed, `no CSI address in the banner:\n${lunar.output()}`);
  const address = printed[1]!;
  const port = Number(printed[2]);
  assert.ok(port > 0 && port <= 65535, `the printed port is the bound one, not 0: ${address}`);
  const logs = lunar
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { msg?: string; csiEndpoint?: string; endpoint?: string });
  assert.equal(logs.find((l) => l.msg === 'Lunar ready')?.csiEndpoint, address);
  assert.equal(logs.find((l) => l.msg === 'CSI Identity and Controller services listening')?.endpoint, address);
  const identity = new (loadCsiPackage().Identity)(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  try {
    assert.equal((await rpc<{ name: string }>(identity, 'GetPluginInfo')).name, 'iscsi.lunar.dev');
  } finally {
    identity.close();
  }
});
