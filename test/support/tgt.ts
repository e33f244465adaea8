// Test support: run tgt (the reference iSCSI target, Debian package `tgt`) on a loopback port with one
// sparse, thin-provisioned file LU, and stop it reliably.
//
// tgtd ignores SIGTERM while targets exist, so stop() deletes the target (--force), then the system
// (`--op delete --mode system` makes tgtd exit), and only then falls back to SIGKILL. Every tgtd
// started here is also killed when the test process exits.

import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface StartTgtOptions {
  /** iSCSI portal port on 127.0.0.1. */
  port: number;
  /** tgtd management channel (`-C`); default: the portal port. */
  controlPort?: number;
  /** Target IQN; default iqn.2026-01.io.lunar.test:tgt-<port>. */
  iqn?: string;
  /** LU size in bytes; default 1 GiB. */
  size?: number;
  /** thin_provisioning=1 on the LU (UNMAP, WRITE SAME UNMAP, LBPME); default true. */
  thin?: boolean;
  /** LUN of the file LU; default 1 (tgt keeps LUN 0 for its controller LU). */
  lun?: number;
}

export interface TgtProcess {
  readonly iqn: string;
  readonly lun: number;
  readonly port: number;
  readonly controlPort: number;
  readonly pid: number;
  /** Backing file of the LU. */
  readonly backingFile: string;
  /** iscsi://127.0.0.1:PORT/IQN/LUN */
  url(lun?: number): string;
  /** tgtd's stdout+stderr so far (last 64 KiB). */
  output(): string;
  /** Delete target and system, wait for exit (SIGKILL after 5 s), remove the backing file. */
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHook = false;
function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  process.on('exit', () => {
    for (const c of live) {
      try {
        c.kill('SIGKILL');
      } catch {
        // gone
      }
    }
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Run tgtadm with the given control port; resolves with exit code and output, never rejects. */
export function tgtadm(controlPort: number, args: string[], timeoutMs = 10_000): Promise<{ code: number; out: string }> {
  return new Promise((res) => {
    execFile('tgtadm', ['-C', String(controlPort), ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      res({ code, out: `${stdout}${stderr}` });
    });
  });
}

async function mustTgtadm(controlPort: number, args: string[]): Promise<void> {
  const r = await tgtadm(controlPort, args);
  if (r.code !== 0) throw new Error(`tgtadm ${args.join(' ')} failed (${r.code}): ${r.out.trim()}`);
}

function waitExit(c: ChildProcess, ms: number): Promise<boolean> {
  if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve(true);
  return new Promise((res) => {
    const t = setTimeout(() => res(false), ms);
    c.once('exit', () => {
      clearTimeout(t);
      res(true);
    });
  });
}

export async function startTgt(opts: StartTgtOptions): Promise<TgtProcess> {
  installExitHook();
  const port = opts.port;
  const controlPort = opts.controlPort ?? port;
  const iqn = opts.iqn ?? `iqn.2026-01.io.lunar.test:tgt-${port}`;
  const lun = opts.lun ?? 1;
  const dir = mkdtempSync(join(tmpdir(), 'lunar-tgt-'));
  const backingFile = join(dir, 'lu.img');
  // Sparse file: ftruncate only, no data written.
  const fh = await fsp.open(backingFile, 'w');
  await fh.truncate(opts.size ?? 1024 ** 3);
  await fh.close();

  let log = '';
  const child = spawn('tgtd', ['-f', '-C', String(controlPort), '--iscsi', `portal=127.0.0.1:${port}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  child.on('exit', () => live.delete(child));
  const append = (b: Buffer): void => {
    log += b.toString('utf8');
    if (log.length > 65536) log = log.slice(-65536);
  };
  child.stdout.on('data', append);
  child.stderr.on('data', append);
  const spawnError = new Promise<Error>((res) => child.once('error', res));

  const kill = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await waitExit(child, 5000);
    }
  };

  try {
    // Wait for the management channel.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const early = await Promise.race([spawnError, sleep(100).then(() => null)]);
      if (early) throw new Error(`cannot run tgtd: ${early.message}`);
      if (child.exitCode !== null) throw new Error(`tgtd exited with ${child.exitCode}: ${log.trim()}`);
      const r = await tgtadm(controlPort, ['--op', 'show', '--mode', 'system'], 2000);
      if (r.code === 0) break;
      if (Date.now() > deadline) throw new Error(`tgtd management port ${controlPort} not answering: ${r.out.trim()} ${log.trim()}`);
    }
    /** tgtadm --lld iscsi --op <op> --mode <mode> --tid 1 <more>: target 1 is the only one. */
    const adm = (op: string, mode: string, ...more: string[]): Promise<void> =>
      mustTgtadm(controlPort, ['--lld', 'iscsi', '--op', op, '--mode', mode, '--tid', '1', ...more]);
    await adm('new', 'target', '-T', iqn);
    await adm('new', 'logicalunit', '--lun', String(lun), '-b', backingFile);
    if (opts.thin ?? true) await adm('update', 'logicalunit', '--lun', String(lun), '--params', 'thin_provisioning=1');
    await adm('bind', 'target', '-I', 'ALL');
  } catch (e) {
    await kill();
    await fsp.rm(dir, { recursive: true, force: true });
    throw e;
  }

  let stopped = false;
  return {
    iqn,
    lun,
    port,
    controlPort,
    pid: child.pid ?? -1,
    backingFile,
    url: (l = lun) => `iscsi://127.0.0.1:${port}/${iqn}/${l}`,
    output: () => log,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      if (child.exitCode === null && child.signalCode === null) {
        await tgtadm(controlPort, ['--lld', 'iscsi', '--op', 'delete', '--force', '--mode', 'target', '--tid', '1'], 5000);
        await tgtadm(controlPort, ['--op', 'delete', '--mode', 'system'], 5000);
        if (!(await waitExit(child, 5000))) await kill();
      }
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}
