// The iSCSI transport against a real peer: libiscsi's tools (libiscsi-bin), with the real SCSI device
// (createTargetDevice) over a sparse file store, and a registry built here.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { createTargetDevice, type TargetDevice } from '../../src/scsi/device.js';
import type { BackingStore } from '../../src/storage/types.js';
import { openFileStore } from '../../src/storage/file-store.js';
import type { ChapCredentials, Portal, TargetEntry, TargetRegistry } from '../../src/target/types.js';
import { IscsiServer } from '../../src/iscsi/server.js';

const PORT = 13265;
const HOST = '127.0.0.1';
const SIZE = 64 * 1024 * 1024;
const IQN = {
  open: 'iqn.2026-01.io.lunar.e2e:open',
  chap: 'iqn.2026-01.io.lunar.e2e:chap',
  mutual: 'iqn.2026-01.io.lunar.e2e:mutual',
  acl: 'iqn.2026-01.io.lunar.e2e:acl',
};
const NODE = {
  plain: 'iqn.2026-01.io.lunar.node:plain',
  chap: 'iqn.2026-01.io.lunar.node:chap',
  mutual: 'iqn.2026-01.io.lunar.node:mutual',
  acl: 'iqn.2026-01.io.lunar.node:acl',
};

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}
function run(cmd: string, args: string[], timeoutMs = 60000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, env: { ...process.env, LIBISCSI_DEBUG: '' } }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout: stdout.toString(), stderr: stderr.toString() });
    });
  });
}

let dir = '';
let store: BackingStore;
let device: TargetDevice;
let server: IscsiServer;
let discoveryChap: ChapCredentials | null = null;

describe('iSCSI target with libiscsi tools (real peer, real SCSI device)', () => {
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lunar-iscsi-e2e-'));
    store = await openFileStore(join(dir, 'lu0.img'), { create: { size: SIZE } });
    device = createTargetDevice({
      luns: new Map([[0, { identity: { naa: '6001405a1b2c3d4e5f60718293a4b5c6', serial: 'LUNARE2E0001', vendor: 'LUNAR', product: 'E2E-VOLUME', revision: '0001' }, store, thinProvisioned: true }]]),
      targetPorts: [1],
    });
    const portal: Portal = { host: HOST, port: PORT, tpgt: 1 };
    const targets: TargetEntry[] = [
      { iqn: IQN.open, portals: [], access: { allow: null }, chap: null, device },
      { iqn: IQN.chap, portals: [], access: { allow: [NODE.chap] }, chap: { user: 'alice', secret: 'alicesecret12' }, device },
      { iqn: IQN.mutual, portals: [], access: { allow: [NODE.mutual] }, chap: { user: 'bob', secret: 'bobsecret1234', mutualUser: 'lunar', mutualSecret: 'lunarsecret12' }, device },
      { iqn: IQN.acl, portals: [], access: { allow: [NODE.acl] }, chap: null, device },
    ];
    const registry: TargetRegistry = {
      findTarget: (i) => targets.find((t) => t.iqn === i), listTargets: () => targets, portals: () => [portal], discoveryChap: () => discoveryChap,
    };
    server = new IscsiServer({ registry, logger: pino({ level: 'silent' }) });
    await server.listen();
  });

  after(async () => {
    await server?.close();
    await device?.close();
    await (store as BackingStore & { close?: () => Promise<void> })?.close?.();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('iscsi-ls -s: discovery lists only the targets the initiator may see, with LUN 0', async () => {
    const r = await run('iscsi-ls', ['-s', '-i', NODE.plain, `iscsi://${HOST}:${PORT}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`Target:${IQN.open} Portal:${HOST}:${PORT},1`));
    assert.match(r.stdout, /Lun:0\s+Type:DIRECT_ACCESS/);
    assert.doesNotMatch(r.stdout, /:chap|:mutual|:acl/);
  });

  it('iscsi-ls: an initiator on an ACL sees its target too', async () => {
    const r = await run('iscsi-ls', ['-i', NODE.acl, `iscsi://${HOST}:${PORT}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`Target:${IQN.acl} `));
    assert.match(r.stdout, new RegExp(`Target:${IQN.open} `));
    assert.doesNotMatch(r.stdout, /:chap |:mutual /);
  });

  it('iscsi-ls -s with CHAP credentials logs in to the CHAP target', async () => {
    const r = await run('iscsi-ls', ['-s', '-i', NODE.chap, `iscsi://alice%alicesecret12@${HOST}:${PORT}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`Target:${IQN.chap} Portal:${HOST}:${PORT},1\\s+Lun:0`));
  });

  it('discovery CHAP: refused without or with wrong credentials, listed with the right ones', async () => {
    discoveryChap = { user: 'disc', secret: 'discsecret123' };
    try {
      const none = await run('iscsi-ls', ['-i', NODE.plain, `iscsi://${HOST}:${PORT}`]);
      assert.notEqual(none.code, 0);
      assert.doesNotMatch(none.stdout, /Target:/);
      const wrong = await run('iscsi-ls', ['-i', NODE.plain, `iscsi://disc%wrongsecret12@${HOST}:${PORT}`]);
      assert.notEqual(wrong.code, 0);
      assert.match(wrong.stderr + wrong.stdout, /Authentication failure/i);
      const ok = await run('iscsi-ls', ['-i', NODE.plain, `iscsi://disc%discsecret123@${HOST}:${PORT}`]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, new RegExp(`Target:${IQN.open} `));
    } finally {
      discoveryChap = null;
    }
  });

  it('iscsi-inq returns the standard INQUIRY of the real device', async () => {
    const r = await run('iscsi-inq', ['-i', NODE.plain, `iscsi://${HOST}:${PORT}/${IQN.open}/0`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Peripheral Device Type:DIRECT_ACCESS/);
    assert.match(r.stdout, /Vendor:LUNAR/);
    assert.match(r.stdout, /Product:E2E-VOLUME/);
  });

  it('iscsi-inq VPD 0x80 returns the unit serial number', async () => {
    const r = await run('iscsi-inq', ['-i', NODE.plain, '-e', '1', '-c', '128', `iscsi://${HOST}:${PORT}/${IQN.open}/0`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /LUNARE2E0001/);
  });

  it('iscsi-readcapacity16 reports the LU size', async () => {
    const r = await run('iscsi-readcapacity16', ['-i', NODE.plain, `iscsi://${HOST}:${PORT}/${IQN.open}/0`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`Total size:${SIZE}`));
    assert.match(r.stdout, /LOGICAL BLOCK LENGTH IN BYTES:512/);
  });

  it('header and data digests CRC32C negotiated with libiscsi', async () => {
    const r = await run('iscsi-readcapacity16', ['-i', NODE.plain, `iscsi://${HOST}:${PORT}/${IQN.open}/0?header_digest=crc32c`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`Total size:${SIZE}`));
  });

  it('one-way CHAP: right secret logs in, wrong secret is refused (Authentication failure)', async () => {
    const ok = await run('iscsi-inq', ['-i', NODE.chap, `iscsi://alice%alicesecret12@${HOST}:${PORT}/${IQN.chap}/0`]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /Vendor:LUNAR/);
    const bad = await run('iscsi-inq', ['-i', NODE.chap, `iscsi://alice%wrongsecret1@${HOST}:${PORT}/${IQN.chap}/0`]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stdout + bad.stderr, /Authentication failure/i);
    const none = await run('iscsi-inq', ['-i', NODE.chap, `iscsi://${HOST}:${PORT}/${IQN.chap}/0`]);
    assert.notEqual(none.code, 0);
    assert.doesNotMatch(none.stdout, /Vendor:/);
  });

  it('mutual CHAP: the initiator verifies the target secret', async () => {
    const url = `iscsi://bob%bobsecret1234@${HOST}:${PORT}/${IQN.mutual}/0`;
    const ok = await run('iscsi-inq', ['-i', NODE.mutual, `${url}?target_user=lunar&target_password=lunarsecret12`]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /Vendor:LUNAR/);
    const bad = await run('iscsi-inq', ['-i', NODE.mutual, `${url}?target_user=lunar&target_password=notthesecret`]);
    assert.notEqual(bad.code, 0);
    assert.doesNotMatch(bad.stdout, /Vendor:/);
  });

  it('an unlisted initiator is refused (authorization failure); the listed one logs in', async () => {
    const bad = await run('iscsi-inq', ['-i', NODE.plain, `iscsi://${HOST}:${PORT}/${IQN.acl}/0`]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stdout + bad.stderr, /Authorization failure|not authorized|Forbidden/i);
    const ok = await run('iscsi-inq', ['-i', NODE.acl, `iscsi://${HOST}:${PORT}/${IQN.acl}/0`]);
    assert.equal(ok.code, 0, ok.stderr);
  });

  it('a missing target is refused (target not found)', async () => {
    const r = await run('iscsi-inq', ['-i', NODE.plain, `iscsi://${HOST}:${PORT}/iqn.2026-01.io.lunar.e2e:nope/0`]);
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /not found/i);
  });

  it('iscsi-test-cu iSCSI suites (CmdSN, DataSN, residuals, TMF) pass', async () => {
    const r = await run('iscsi-test-cu', ['--dataloss', '-i', NODE.plain, '-t', 'ALL.iSCSI*', `iscsi://${HOST}:${PORT}/${IQN.open}/0`], 120000);
    const summary = /tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/.exec(r.stdout);
    assert.ok(summary, r.stdout.slice(-2000));
    const [, total, ran, passed, failed] = summary.map(Number);
    assert.equal(failed, 0, r.stdout.slice(-3000));
    assert.equal(ran, total);
    assert.equal(passed, 15);
    assert.doesNotMatch(r.stdout, /\[SKIPPED\]/);
  });

  it('the server listed and then forgot the libiscsi sessions', () => {
    assert.deepEqual(server.sessions(), []);
  });
});
