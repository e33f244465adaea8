// tgtd (Debian package tgt) as the reference target for the benchmarks: one target, LUN 1 on a
// sparse file with the rdwr backing store, bound to one loopback portal, stopped reliably.
// (test/support/tgt.ts serves the tests; this one puts the backing file where the benchmark says,
// beside Lunar's, and sets target login parameters before the first login.)

import { spawn, type ChildProcess } from 'node:child_process';
import { execOk, exec, sleep } from './util.js';

export interface TgtOptions {
  /** TCP port on 127.0.0.1. */
  readonly port: number;
  /** tgtd management channel number (-C): the unix socket /var/run/tgtd/socket.N. */
  readonly controlPort: number;
  readonly backingFile: string;
  readonly iqn: string;
  /** thin_provisioning=1 on the LU (as Lunar's thin volumes: LBPME, UNMAP); the read/write path is the same. */
  readonly thin?: boolean;
  /** Target-level iSCSI parameters set with `tgtadm --op update --mode target` (e.g. InitialR2T=No). */
  readonly params?: ReadonlyMap<string, string>;
}

export interface TgtTarget {
  readonly pid: number;
  readonly url: string;
  readonly version: string;
  /** One more target (tid >= 2) with LUN 1 on `backingFile`, same settings as the first; returns its URL. */
  addTarget(tid: number, iqn: string, backingFile: string): Promise<string>;
  stop(): Promise<void>;
}

const TID = '1';

function tgtadm(controlPort: number, args: readonly string[]): Promise<unknown> {
  return execOk('tgtadm', ['-C', String(controlPort), ...args], { timeoutMs: 15_000 });
}

/** Stops a tgtd left behind on this control port by an earlier, interrupted run. */
async function stopStale(controlPort: number): Promise<void> {
  const show = await exec('tgtadm', ['-C', String(controlPort), '--op', 'show', '--mode', 'system'], {
    timeoutMs: 5_000,
  });
  if (show.code !== 0) return;
  await exec('tgtadm', ['-C', String(controlPort), '--lld', 'iscsi', '--op', 'delete', '--force', '--mode', 'target', '--tid', TID]);
  await exec('tgtadm', ['-C', String(controlPort), '--op', 'delete', '--mode', 'system']);
  await sleep(500);
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

export async function startTgt(opts: TgtOptions): Promise<TgtTarget> {
  await stopStale(opts.controlPort);
  const version = (await exec('tgtd', ['-V'])).stdout.trim() || 'unknown';
  const child = spawn('tgtd', ['-f', '-C', String(opts.controlPort), '--iscsi', `portal=127.0.0.1:${opts.port}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const keep = (b: Buffer): void => {
    log = (log + b.toString('utf8')).slice(-4000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  // Never leave tgtd behind, even when the benchmark dies.
  const killOnExit = (): void => {
    child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  const tids = [TID];
  const stop = async (): Promise<void> => {
    process.removeListener('exit', killOnExit);
    if (child.exitCode !== null || child.signalCode !== null) return;
    // tgtd ignores SIGTERM while targets exist: delete them, then the system.
    for (const tid of tids) {
      await exec('tgtadm', [
        '-C',
        String(opts.controlPort),
        '--lld',
        'iscsi',
        '--op',
        'delete',
        '--force',
        '--mode',
        'target',
        '--tid',
        tid,
      ]);
    }
    await exec('tgtadm', ['-C', String(opts.controlPort), '--op', 'delete', '--mode', 'system']);
    if (!(await waitExit(child, 5_000))) {
      child.kill('SIGKILL');
      await waitExit(child, 5_000);
    }
  };

  const setupTarget = async (tid: string, iqn: string, backingFile: string): Promise<void> => {
    const base = ['--lld', 'iscsi', '--mode'];
    await tgtadm(opts.controlPort, [...base, 'target', '--op', 'new', '--tid', tid, '-T', iqn]);
    if (!tids.includes(tid)) tids.push(tid);
    await tgtadm(opts.controlPort, [
      ...base,
      'logicalunit',
      '--op',
      'new',
      '--tid',
      tid,
      '--lun',
      '1',
      '--bstype',
      'rdwr',
      '-b',
      backingFile,
    ]);
    if (opts.thin) {
      await tgtadm(opts.controlPort, [
        ...base,
        'logicalunit',
        '--op',
        'update',
        '--tid',
        tid,
        '--lun',
        '1',
        '--params',
        'thin_provisioning=1',
      ]);
    }
    for (const [name, value] of opts.params ?? new Map<string, string>()) {
      await tgtadm(opts.controlPort, [...base, 'target', '--op', 'update', '--tid', tid, '--name', name, '--value', value]);
    }
    await tgtadm(opts.controlPort, [...base, 'target', '--op', 'bind', '--tid', tid, '-I', 'ALL']);
  };

  try {
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`tgtd exited (${child.exitCode}): ${log.trim()}`);
      const r = await exec('tgtadm', ['-C', String(opts.controlPort), '--op', 'show', '--mode', 'system'], {
        timeoutMs: 5_000,
      });
      if (r.code === 0) break;
      if (Date.now() > deadline) throw new Error(`tgtd did not answer on control port ${opts.controlPort}: ${log.trim()}`);
      await sleep(100);
    }
    await setupTarget(TID, opts.iqn, opts.backingFile);
  } catch (e) {
    await stop();
    throw e;
  }
  if (child.pid === undefined) throw new Error('tgtd has no pid');
  return {
    pid: child.pid,
    url: `iscsi://127.0.0.1:${opts.port}/${opts.iqn}/1`,
    version,
    addTarget: async (tid, iqn, backingFile) => {
      if (!Number.isInteger(tid) || tid < 2) throw new RangeError(`tid ${tid}: 2 or more expected`);
      await setupTarget(String(tid), iqn, backingFile);
      return `iscsi://127.0.0.1:${opts.port}/${iqn}/1`;
    },
    stop,
  };
}
