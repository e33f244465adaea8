// What an unauthenticated peer may hold of `lunar serve`, with small caps (20 connections not logged in,
// 5 per source address, 2 sessions per initiator): connections over a cap are closed at accept and
// counted by reason in /metrics; libiscsi's iscsi-inq still logs in while other addresses hold their
// whole per-address share; a session over the per-initiator cap is answered 0x0302 (RFC 7143 §11.13.5)
// while a reinstatement at the cap is not refused; 500 malformed PDUs from one peer give a few log lines
// and one summary; a connection that never logs in is counted at the login timeout and summed up.
// Source addresses 127.0.0.2, 127.0.0.3, …: all of 127/8 is loopback.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { Volume } from '../../src/volumes/types.js';
import { TestInitiator } from '../support/iscsi-initiator.js';
import { readyMetricsUrl, startLunarProcess, type LunarProcess } from '../support/lunar.js';
import { parsePrometheusText, sampleValue } from '../support/prom-text.js';

const exec = promisify(execFile);
const HOST = '127.0.0.1';
const PORT = 13381;
const INITIATOR = 'iqn.2026-01.io.lunar.test:admission';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Raw {
  readonly sock: net.Socket;
  readonly closed: Promise<void>;
  isClosed: () => boolean;
}

/** A TCP connection from source address `from` that sends nothing. */
function idle(from: string, port = PORT): Promise<Raw> {
  return new Promise((resolve, reject) => {
    let closed = false;
    const sock = net.connect({ host: HOST, port, localAddress: from }, () => {
      sock.off('error', reject);
      resolve({ sock, closed: done, isClosed: () => closed });
    });
    const done = new Promise<void>((r) =>
      sock.on('close', () => {
        closed = true;
        r();
      }),
    );
    sock.on('error', () => undefined);
    sock.once('error', reject);
  });
}

/** Log lines of the server (JSON) so far. */
function logLines(lunar: LunarProcess): Record<string, unknown>[] {
  return lunar
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('bounded resources for unauthenticated peers (lunar serve, small caps)', () => {
  let lunar: LunarProcess;
  let metricsUrl: string;
  let volume: Volume;
  const held: Raw[] = [];

  const metric = async (name: string, labels: Record<string, string> = {}): Promise<number> => {
    const r = await fetch(metricsUrl);
    return sampleValue(parsePrometheusText(await r.text()), name, labels) ?? NaN;
  };
  /** Opens n idle connections from `from`; returns those still open after the server had time to refuse. */
  const openIdle = async (from: string, n: number): Promise<{ open: Raw[]; closed: Raw[] }> => {
    const all = await Promise.all(Array.from({ length: n }, () => idle(from)));
    await sleep(300);
    held.push(...all);
    return { open: all.filter((c) => !c.isClosed()), closed: all.filter((c) => c.isClosed()) };
  };
  const iscsiInq = async (): Promise<{ code: number; out: string }> => {
    try {
      const { stdout } = await exec('iscsi-inq', ['-i', INITIATOR, `iscsi://${HOST}:${PORT}/${volume.iqn}/0`], { timeout: 20_000 });
      return { code: 0, out: stdout };
    } catch (err) {
      const e = err as { code?: number; stderr?: string };
      return { code: typeof e.code === 'number' ? e.code : -1, out: e.stderr ?? String(err) };
    }
  };
  const releaseHeld = async (): Promise<void> => {
    for (const c of held.splice(0)) c.sock.destroy();
    await sleep(300);
  };

  before(async () => {
    lunar = await startLunarProcess({
      portals: [`${HOST}:${PORT}`],
      args: [
        '--metrics-address',
        '127.0.0.1:0',
        '--csi-endpoint',
        'none',
        '--max-pending-connections',
        '20',
        '--max-pending-per-address',
        '5',
        '--max-sessions-per-initiator',
        '2',
        '--max-sessions-per-address',
        '4',
        '--login-timeout',
        '60',
      ],
    });
    metricsUrl = await readyMetricsUrl(lunar);
    const r = await lunar.cli(['volume', 'create', 'adm', '--size', '8MiB', '--json']);
    assert.equal(r.code, 0, r.stderr);
    volume = JSON.parse(r.stdout) as Volume;
  });

  after(async () => {
    await releaseHeld();
    await lunar?.remove();
  });

  it('closes connections over the per-address cap at accept and counts them', async () => {
    const a = await openIdle('127.0.0.2', 8);
    assert.equal(a.open.length, 5, 'five admitted from 127.0.0.2');
    assert.equal(a.closed.length, 3, 'the rest closed at once');
    assert.equal(await metric('lunar_iscsi_connections_refused_total', { reason: 'pending_per_address' }), 3);
    assert.equal(await metric('lunar_iscsi_pending_connections'), 5);
  });

  it('a real login succeeds while other addresses hold their whole share', async () => {
    const b = await openIdle('127.0.0.3', 7);
    const c = await openIdle('127.0.0.4', 7);
    assert.equal(b.open.length + c.open.length, 10);
    assert.equal(await metric('lunar_iscsi_pending_connections'), 15);
    const inq = await iscsiInq();
    assert.equal(inq.code, 0, inq.out);
    assert.match(inq.out, /LUNAR/);
    assert.equal(await metric('lunar_iscsi_pending_connections'), 15, 'the logged-out connection left the count');
  });

  it('closes connections over the global cap; logins work again once peers leave', async () => {
    const d = await openIdle('127.0.0.5', 7);
    assert.equal(d.open.length, 5, 'the global cap of 20 is reached');
    const e = await openIdle('127.0.0.6', 3);
    assert.equal(e.open.length, 0, 'a new address is refused once 20 are pending');
    // The global cap is checked first: the 2 extra of 127.0.0.5 came when 20 were pending.
    assert.equal(await metric('lunar_iscsi_connections_refused_total', { reason: 'pending_global' }), 2 + 3);
    assert.equal(await metric('lunar_iscsi_connections_refused_total', { reason: 'pending_per_address' }), 3 + 2 + 2);
    const refused = await iscsiInq();
    assert.notEqual(refused.code, 0, 'the initiator is refused too while the cap is full');
    await releaseHeld();
    assert.equal(await metric('lunar_iscsi_pending_connections'), 0, 'every closed connection left the count');
    const inq = await iscsiInq();
    assert.equal(inq.code, 0, inq.out);
  });

  it('answers a session over the per-initiator cap with 0x0302; a reinstatement at the cap is admitted', async () => {
    const sessions: TestInitiator[] = [];
    try {
      for (const isid of ['400000000001', '400000000002']) {
        const i = await TestInitiator.connect(HOST, PORT);
        sessions.push(i);
        const r = await i.login({ initiatorName: INITIATOR, targetName: volume.iqn, isid });
        assert.equal(r.statusClass, 0);
      }
      const third = await TestInitiator.connect(HOST, PORT);
      sessions.push(third);
      const r = await third.login({ initiatorName: INITIATOR, targetName: volume.iqn, isid: '400000000003' });
      assert.equal((r.statusClass << 8) | r.statusDetail, 0x0302, 'out of resources');
      await third.closed;
      assert.equal(await metric('lunar_iscsi_connections_refused_total', { reason: 'sessions_per_initiator' }), 1);
      // Same initiator port (name + ISID) to the same target: it replaces the first session (§6.3.5).
      const again = await TestInitiator.connect(HOST, PORT);
      sessions.push(again);
      const re = await again.login({ initiatorName: INITIATOR, targetName: volume.iqn, isid: '400000000001' });
      assert.equal(re.statusClass, 0, 'a reinstatement is not a new session');
      await sessions[0]!.closed;
      const other = await TestInitiator.connect(HOST, PORT);
      sessions.push(other);
      const o = await other.login({ initiatorName: `${INITIATOR}-other`, targetName: volume.iqn });
      assert.equal(o.statusClass, 0, 'another initiator name has its own count');
    } finally {
      for (const s of sessions) s.close();
    }
    await sleep(200);
    assert.equal(await metric('lunar_iscsi_pending_connections'), 0);
  });

  it('answers a session over the per-address cap with 0x0302, whatever initiator name it gives', async () => {
    const sessions: TestInitiator[] = [];
    try {
      // A peer that logs in without CHAP under a new name each time: bounded by its address.
      for (let k = 0; k < 4; k++) {
        const i = await TestInitiator.connect(HOST, PORT, '127.0.0.20');
        sessions.push(i);
        const r = await i.login({ initiatorName: `${INITIATOR}-name${k}`, targetName: volume.iqn });
        assert.equal(r.statusClass, 0, `session ${k + 1} of 4`);
      }
      const fifth = await TestInitiator.connect(HOST, PORT, '127.0.0.20');
      sessions.push(fifth);
      const r = await fifth.login({ initiatorName: `${INITIATOR}-name4`, targetName: volume.iqn });
      assert.equal((r.statusClass << 8) | r.statusDetail, 0x0302, 'out of resources');
      await fifth.closed;
      assert.equal(await metric('lunar_iscsi_connections_refused_total', { reason: 'sessions_per_address' }), 1);
      const elsewhere = await TestInitiator.connect(HOST, PORT, '127.0.0.21');
      sessions.push(elsewhere);
      const e = await elsewhere.login({ initiatorName: `${INITIATOR}-name4`, targetName: volume.iqn });
      assert.equal(e.statusClass, 0, 'another address has its own count');
      // A session that ends frees its place.
      sessions[0]!.close();
      await sessions[0]!.closed;
      await sleep(100);
      const again = await TestInitiator.connect(HOST, PORT, '127.0.0.20');
      sessions.push(again);
      const a = await again.login({ initiatorName: `${INITIATOR}-name5`, targetName: volume.iqn });
      assert.equal(a.statusClass, 0, 'admitted once one of the four ended');
    } finally {
      for (const s of sessions) s.close();
    }
    await sleep(200);
  });

  it('500 malformed PDUs from one peer give a few log lines and a summary', async () => {
    const i = await TestInitiator.connect(HOST, PORT, '127.0.0.9');
    try {
      const r = await i.login({ initiatorName: `${INITIATOR}-fuzz`, targetName: volume.iqn });
      assert.equal(r.statusClass, 0);
      const bad = Buffer.alloc(48);
      bad[0] = 0x1c; // no such opcode: Reject (§11.17.1), the connection stays
      bad[1] = 0x80;
      for (let k = 0; k < 500; k++) i.socket.write(bad);
      for (let k = 0; k < 500; k++) {
        const got = await i.next(5000);
        assert.ok(got && got.pdu.opcode === 0x3f, `Reject ${k}`);
      }
      const echo = await i.ping(Buffer.from('alive'));
      assert.equal(echo.data.toString(), 'alive');
    } finally {
      i.close();
    }
    const lines = logLines(lunar).filter((l) => l.remote === '127.0.0.9' && l.msg === 'malformed PDU rejected');
    assert.ok(lines.length >= 1 && lines.length <= 5, `${lines.length} lines for 500 malformed PDUs`);
    assert.ok((await metric('lunar_iscsi_log_lines_suppressed_total')) >= 495);
  });

  it('counts login timeouts and sums refusals, timeouts and floods up in a few lines at shutdown', async () => {
    // A second server with a 1 s login timeout.
    const quick = await startLunarProcess({
      portals: [`${HOST}:${PORT + 1}`],
      args: ['--metrics-address', '127.0.0.1:0', '--csi-endpoint', 'none', '--login-timeout', '1', '--max-pending-per-address', '3'],
    });
    try {
      const conns = await Promise.all(Array.from({ length: 6 }, (_, k) => idle(`127.0.1.${1 + (k % 2)}`, PORT + 1)));
      await Promise.all(conns.map((c) => c.closed));
      const url = await readyMetricsUrl(quick);
      const fam = parsePrometheusText(await (await fetch(url)).text());
      assert.equal(sampleValue(fam, 'lunar_iscsi_login_timeouts_total'), 6);
      await quick.stop();
      const lines = logLines(quick).filter((l) => l.event === 'login-timeouts');
      assert.equal(lines.length, 1, 'one summary, not a line per connection');
      assert.match(
        String(lines[0]!.msg),
        /^6 connections closed at the login timeout \(1 s\) in the last minute, from 127\.0\.1\.[12], 127\.0\.1\.[12]$/,
      );
    } finally {
      await quick.remove();
    }
    await lunar.stop();
    const lines = logLines(lunar);
    const refused = lines.filter((l) => l.event === 'connections-refused');
    assert.equal(refused.length, 1);
    // 5 idle ones, and iscsi-inq's attempt(s) while the cap was full.
    const m =
      /^(\d+) connections refused at accept in the last minute \((\d+) over the cap of 20 connections not logged in, 7 over the cap of 5 per address\), from /.exec(
        String(refused[0]!.msg),
      );
    assert.ok(m, String(refused[0]!.msg));
    assert.ok(Number(m[2]) >= 6);
    assert.equal(Number(m[1]), Number(m[2]) + 7);
    const summary = lines.filter((l) => l.event === 'peer-summary' && l.remote === '127.0.0.9');
    assert.equal(summary.length, 1);
    assert.equal(summary[0]!.msg, '500 malformed PDUs from 127.0.0.9 in the last minute');
  });
});
