// The iSCSI targets the guest bed runs against, behind one interface: Lunar (the product) or tgt (the
// reference, TARGET=tgt). Both run inside the bed's network namespace and listen on the two bridge
// addresses, port 23260, so SendTargets answers with the addresses the guests really use.

import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, truncate, writeFile } from 'node:fs/promises';
import type { LunarProcess } from '../support/lunar.js';
import path from 'node:path';
import { Bed, run, runOk, sleep, spawnTracked, stopChild, SUBNETS } from './harness.js';

export const PORT = 23260;

export interface ChapPair {
  readonly user: string;
  readonly secret: string;
}

export interface VolumeRequest {
  readonly name: string;
  readonly sizeBytes: number;
  /** Initiator authenticates to the target. */
  readonly chap?: ChapPair;
  /** Target authenticates back to the initiator (needs chap too). */
  readonly mutual?: ChapPair;
}

export interface BedVolume {
  readonly name: string;
  readonly iqn: string;
  /** LUN the initiator sees the disk at (Lunar: 0; tgt: 1, LUN 0 is tgt's controller). */
  readonly lun: number;
  /** Expected Linux WWID ("3" + NAA hex) when the target reports its NAA; undefined for tgt. */
  readonly wwid?: string;
}

export interface TargetSession {
  readonly initiator: string;
  /** Initiator IP address (no port). */
  readonly address: string;
}

export interface BedTarget {
  readonly kind: 'lunar' | 'tgt';
  /** "198.18.0.1:23260", "198.18.1.1:23260" */
  readonly portals: readonly string[];
  createVolume(req: VolumeRequest): Promise<BedVolume>;
  /** Grows the volume's LU online. */
  resize(vol: BedVolume, sizeBytes: number): Promise<void>;
  /** SIGKILL of the target process. */
  kill9(): Promise<void>;
  /** Starts the target again after kill9(), with the same volumes, identities and data. */
  restart(): Promise<void>;
  stop(): Promise<void>;
  /** Target-side log file, for failure reports. */
  readonly logFile: string;
  /** Recent target log output. */
  output(): string;
  /** The target's own view: who is logged in to the volume, from which address (normal sessions only). */
  sessions(vol: BedVolume): Promise<TargetSession[]>;
}

export function targetKind(): 'lunar' | 'tgt' {
  const t = (process.env.TARGET ?? 'lunar').toLowerCase();
  if (t !== 'lunar' && t !== 'tgt') throw new Error(`TARGET must be lunar or tgt, not ${t}`);
  return t;
}

export async function startTarget(kind: 'lunar' | 'tgt', bed: Bed): Promise<BedTarget> {
  const t = kind === 'tgt' ? await TgtTarget.start(bed) : await LunarTarget.start(bed);
  bed.onClose(() => t.stop());
  return t;
}

const portals = SUBNETS.map((s) => `${s.hostAddress}:${PORT}`);

// ---------------------------------------------------------------------------------------------------------
// tgt: tgtd in the netns, configured with tgtadm over its control socket (-C 23260, a file-system unix
// socket, so tgtadm itself needs no netns). tgtd keeps its configuration in memory only: restart() replays
// every tgtadm call made so far.

class TgtTarget implements BedTarget {
  readonly kind = 'tgt';
  readonly portals = portals;
  private proc?: ChildProcess;
  private readonly replay: string[][] = [];
  private nextTid = 1;
  private readonly accounts = new Map<string, string>();
  private readonly tids = new Map<string, { tid: number; file: string }>();
  private constructor(
    private readonly bed: Bed,
    readonly logFile: string,
    private readonly dir: string,
  ) {}

  static readonly control = '23260';

  static async start(bed: Bed): Promise<TgtTarget> {
    const dir = path.join(bed.runDir, 'tgt');
    await mkdir(dir, { recursive: true });
    const t = new TgtTarget(bed, path.join(dir, 'tgtd.log'), dir);
    await t.spawn();
    await t.adm(['--op', 'new', '--mode', 'portal', '--param', `portal=${portals[1]}`]);
    return t;
  }

  private async spawn(): Promise<void> {
    const [cmd, args] = this.bed.nsExec('tgtd', ['-f', '-C', TgtTarget.control, '--iscsi', `portal=${portals[0]}`]);
    this.proc = spawnTracked(cmd, args, this.logFile + `.${Date.now()}`);
    for (let i = 0; ; i++) {
      const r = await run('tgtadm', ['-C', TgtTarget.control, '--lld', 'iscsi', '--op', 'show', '--mode', 'sys']);
      if (r.code === 0) break;
      if (i > 100 || this.proc.exitCode !== null) throw new Error(`tgtd did not start: ${r.stderr}`);
      await sleep(100);
    }
  }

  private async adm(args: readonly string[], record = true): Promise<void> {
    await runOk('tgtadm', ['-C', TgtTarget.control, '--lld', 'iscsi', ...args]);
    if (record) this.replay.push([...args]);
  }

  output(): string {
    return `(tgtd log: ${this.logFile}.*)`;
  }

  async sessions(vol: BedVolume): Promise<TargetSession[]> {
    const e = this.tids.get(vol.iqn);
    if (!e) throw new Error(`unknown volume ${vol.iqn}`);
    const out = await runOk('tgtadm', ['-C', TgtTarget.control, '--lld', 'iscsi', '--op', 'show', '--mode', 'target']);
    const res: TargetSession[] = [];
    let initiator = '';
    let current = '';
    for (const line of out.split('\n')) {
      const t = /^Target \d+: (\S+)/.exec(line);
      if (t) current = t[1]!;
      if (current !== vol.iqn) continue;
      const i = /^\s*Initiator: (\S+)/.exec(line);
      if (i) initiator = i[1]!;
      const a = /^\s*IP Address: (\S+)/.exec(line);
      if (a) res.push({ initiator, address: a[1]! });
    }
    return res;
  }

  /** tgt accounts are global to the daemon: create each user once. */
  private async account(user: string, secret: string): Promise<void> {
    const known = this.accounts.get(user);
    if (known === secret) return;
    if (known !== undefined) throw new Error(`tgt account ${user} already has another secret`);
    await this.adm(['--op', 'new', '--mode', 'account', '--user', user, '--password', secret]);
    this.accounts.set(user, secret);
  }

  async createVolume(req: VolumeRequest): Promise<BedVolume> {
    const tid = this.nextTid++;
    const iqn = `iqn.2024-01.io.lunar.tgt:${req.name}`;
    const file = path.join(this.dir, `${req.name}.img`);
    await run('truncate', ['-s', String(req.sizeBytes), file]);
    await this.adm(['--op', 'new', '--mode', 'target', '--tid', String(tid), '-T', iqn]);
    await this.adm(['--op', 'new', '--mode', 'logicalunit', '--tid', String(tid), '--lun', '1', '-b', file]);
    await this.adm(['--op', 'bind', '--mode', 'target', '--tid', String(tid), '-I', 'ALL']);
    if (req.chap) {
      await this.account(req.chap.user, req.chap.secret);
      await this.adm(['--op', 'bind', '--mode', 'account', '--tid', String(tid), '--user', req.chap.user]);
    }
    if (req.mutual) {
      await this.account(req.mutual.user, req.mutual.secret);
      await this.adm(['--op', 'bind', '--mode', 'account', '--tid', String(tid), '--user', req.mutual.user, '--outgoing']);
    }
    this.tids.set(iqn, { tid, file });
    return { name: req.name, iqn, lun: 1 };
  }

  /**
   * tgt has no online resize: grow the file, then delete and re-add the LU (same tid/lun, so the same
   * SCSI identity). The initiator sees the capacity change on its next READ CAPACITY (rescan).
   */
  async resize(vol: BedVolume, sizeBytes: number): Promise<void> {
    const e = this.tids.get(vol.iqn);
    if (!e) throw new Error(`unknown volume ${vol.iqn}`);
    await truncate(e.file, sizeBytes);
    await this.adm(['--op', 'delete', '--mode', 'logicalunit', '--tid', String(e.tid), '--lun', '1'], false);
    await this.adm(['--op', 'new', '--mode', 'logicalunit', '--tid', String(e.tid), '--lun', '1', '-b', e.file], false);
  }

  async kill9(): Promise<void> {
    if (!this.proc) return;
    const gone = once(this.proc, 'exit');
    this.proc.kill('SIGKILL');
    await gone;
  }

  async restart(): Promise<void> {
    await this.spawn();
    for (const a of this.replay) await this.adm(a, false);
  }

  async stop(): Promise<void> {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    // tgtd ignores SIGTERM while a target exists (recipe pitfall 9): delete targets first.
    for (const { tid } of this.tids.values()) {
      await run('tgtadm', [
        '-C',
        TgtTarget.control,
        '--lld',
        'iscsi',
        '--op',
        'delete',
        '--mode',
        'target',
        '--tid',
        String(tid),
        '--force',
      ]);
    }
    await run('tgtadm', ['-C', TgtTarget.control, '--lld', 'iscsi', '--op', 'delete', '--mode', 'system']);
    await stopChild(this.proc, 3000);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Lunar: `node dist/src/cli.js serve` inside the netns through test/support/lunar.ts (loaded at
// run time), volumes made with the CLI.

class LunarTarget implements BedTarget {
  readonly kind = 'lunar';
  readonly portals = portals;
  private constructor(
    private readonly proc: LunarProcess,
    readonly logFile: string,
  ) {}

  static async start(bed: Bed): Promise<LunarTarget> {
    // Loaded only when TARGET=lunar, so a broken Lunar build cannot stop the tgt comparison run.
    const { startLunarProcess } = await import('../support/lunar.js');
    const dataDir = path.join(bed.runDir, 'lunar');
    await mkdir(dataDir, { recursive: true });
    const proc = await startLunarProcess({
      dataDir,
      portals: [...portals],
      netns: bed.netns,
      env: { LUNAR_LOG_LEVEL: process.env.LUNAR_LOG_LEVEL ?? 'info' },
    });
    const t = new LunarTarget(proc, path.join(dataDir, 'serve.log'));
    bed.onClose(() => writeFile(t.logFile, proc.output()));
    return t;
  }

  /** Last lines of the server's log (for failure messages). */
  output(): string {
    return this.proc.output();
  }

  private async cli(args: string[]): Promise<string> {
    const r = await this.proc.cli(args);
    if (r.code !== 0) throw new Error(`lunar ${args.join(' ')} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
    return r.stdout;
  }

  async createVolume(req: VolumeRequest): Promise<BedVolume> {
    const args = ['volume', 'create', req.name, '--size', String(req.sizeBytes), '--json'];
    if (req.chap) args.push('--chap', `${req.chap.user}:${req.chap.secret}`);
    if (req.mutual) args.push('--mutual-chap', `${req.mutual.user}:${req.mutual.secret}`);
    const out = await this.cli(args);
    const v = JSON.parse(out) as { iqn?: unknown; naa?: unknown; lun?: unknown; volume?: { iqn?: unknown; naa?: unknown } };
    const src = v.volume ?? v;
    if (typeof src.iqn !== 'string' || typeof src.naa !== 'string') throw new Error(`lunar volume create --json gave no iqn/naa: ${out}`);
    return { name: req.name, iqn: src.iqn, lun: 0, wwid: `3${src.naa.toLowerCase()}` };
  }

  async sessions(vol: BedVolume): Promise<TargetSession[]> {
    const out = await this.cli(['sessions', '--volume', vol.name, '--json']);
    const list = JSON.parse(out) as { initiatorName: string; remoteAddress: string; discovery: boolean }[];
    return list
      .filter((x) => !x.discovery)
      .map((x) => ({
        initiator: x.initiatorName,
        address: x.remoteAddress.replace(/^::ffff:/, '').replace(/^\[?([^\]]*?)\]?(:\d+)?$/, '$1'),
      }));
  }

  async resize(vol: BedVolume, sizeBytes: number): Promise<void> {
    await this.cli(['volume', 'resize', vol.name, '--size', String(sizeBytes)]);
  }

  kill9(): Promise<void> {
    return this.proc.kill9();
  }

  restart(): Promise<void> {
    return this.proc.restart();
  }

  stop(): Promise<void> {
    return this.proc.stop();
  }
}
