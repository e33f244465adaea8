// Host side of the guest bed: builds (or reuses) the cached Debian guest, creates a network namespace with
// two bridges (one per iSCSI portal subnet) and a tap per guest NIC, boots guests under QEMU (TCG, direct
// kernel boot, NVMe root with snapshot=on), runs commands in them over a virtio-serial control channel
// (guest side: test/guest/guest-files/usr/local/sbin/lunar-agent) and cuts/restores NICs over QMP.
// Everything it creates is registered in a Bed and removed by Bed.close() — and, as a last resort, by a
// synchronous process 'exit' hook — so no QEMU, tap or netns outlives a run.
// Facts and measurements behind the choices: /work/shared/notes/guest-initiator-recipe.md; docs/guest.md.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, readFile, cp, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
/** Repository root, from either test/guest (ts) or dist/test/guest (compiled). */
export const repoRoot = existsSync(path.join(here, '../../package.json')) ? path.resolve(here, '../..') : path.resolve(here, '../../..');
const buildScript = path.join(repoRoot, 'test/guest/build-guest.sh');

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a host command to completion (no shell). */
export function run(cmd: string, args: readonly string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = opts.timeoutMs
      ? setTimeout(() => {
          child.kill('SIGKILL');
        }, opts.timeoutMs)
      : undefined;
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
  });
}

/** Like run() but throws with the command's stderr when it exits non-zero. */
export async function runOk(cmd: string, args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Builds the guest image (or finds it in the cache) and returns the directory holding vmlinuz and root.img. */
export async function buildGuest(): Promise<string> {
  const r = await run('bash', [buildScript], { timeoutMs: 20 * 60_000 });
  if (r.code !== 0) throw new Error(`build-guest.sh failed (${r.code}):\n${r.stderr.slice(-4000)}`);
  const dir = r.stdout.trim().split('\n').pop() ?? '';
  if (!existsSync(path.join(dir, 'root.img')) || !existsSync(path.join(dir, 'vmlinuz'))) {
    throw new Error(`build-guest.sh printed ${JSON.stringify(dir)}, which holds no root.img/vmlinuz`);
  }
  return dir;
}

// ---------------------------------------------------------------------------------------------------------
// Last-resort cleanup: if the test process dies without Bed.close(), kill what we started synchronously.

const liveChildren = new Set<ChildProcess>();
const liveNetns = new Set<string>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  const sweep = (): void => {
    for (const c of liveChildren) {
      try {
        c.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
    for (const ns of liveNetns) spawnSync('ip', ['netns', 'del', ns]);
  };
  process.on('exit', sweep);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      sweep();
      process.exit(130);
    });
  }
}

/** Spawns a long-lived process that Bed cleanup (and the exit hook) will kill. */
export function spawnTracked(cmd: string, args: readonly string[], logFile?: string): ChildProcess {
  installExitHook();
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: false });
  liveChildren.add(child);
  child.on('exit', () => liveChildren.delete(child));
  if (logFile) {
    const out = createWriteStream(logFile);
    child.stdout?.pipe(out, { end: false });
    child.stderr?.pipe(out, { end: false });
    child.on('close', () => out.end());
  } else {
    child.stdout?.resume();
    child.stderr?.resume();
  }
  return child;
}

/** Sends SIGTERM, then SIGKILL after graceMs; resolves when the process is gone. */
export async function stopChild(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = once(child, 'exit');
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(t);
}

// ---------------------------------------------------------------------------------------------------------
// Network: one netns, two bridges = two portal subnets, one tap per guest NIC. No NAT: the target listens on
// the bridge addresses, so SendTargets returns the addresses the guests really use (as in production).

export interface Subnet {
  readonly bridge: string;
  /** Host (target) address, e.g. 198.18.0.1. */
  readonly hostAddress: string;
  readonly prefix: string; // "198.18.0."
}

export const SUBNETS: readonly Subnet[] = [
  { bridge: 'lbr0', hostAddress: '198.18.0.1', prefix: '198.18.0.' },
  { bridge: 'lbr1', hostAddress: '198.18.1.1', prefix: '198.18.1.' },
];

export class Bed {
  readonly guests: Guest[] = [];
  private readonly cleanups: (() => Promise<void>)[] = [];
  private closed = false;

  private constructor(
    readonly netns: string,
    readonly runDir: string,
    readonly imageDir: string,
  ) {}

  /** Creates the netns with both bridges. */
  static async create(imageDir: string): Promise<Bed> {
    installExitHook();
    const netns = `lunar-g${process.pid}`;
    const runDir = await mkdtemp(path.join(os.tmpdir(), 'lunar-guest-'));
    const bed = new Bed(netns, runDir, imageDir);
    await run('ip', ['netns', 'del', netns]); // a leftover of a crashed run with the same pid
    await runOk('ip', ['netns', 'add', netns]);
    liveNetns.add(netns);
    bed.cleanups.push(async () => {
      await run('ip', ['netns', 'del', netns]);
      liveNetns.delete(netns);
    });
    try {
      await bed.ip(['link', 'set', 'lo', 'up']);
      for (const s of SUBNETS) {
        await bed.ip(['link', 'add', s.bridge, 'type', 'bridge']);
        await bed.ip(['addr', 'add', `${s.hostAddress}/24`, 'dev', s.bridge]);
        await bed.ip(['link', 'set', s.bridge, 'up']);
      }
    } catch (e) {
      await bed.close();
      throw e;
    }
    return bed;
  }

  /** `ip ARGS` inside the netns. */
  async ip(args: readonly string[]): Promise<string> {
    return runOk('ip', ['netns', 'exec', this.netns, 'ip', ...args]);
  }

  /** argv prefix that runs a command inside the netns. */
  nsExec(cmd: string, args: readonly string[]): [string, string[]] {
    return ['ip', ['netns', 'exec', this.netns, cmd, ...args]];
  }

  /** Registers an extra cleanup, run in reverse order by close(). */
  onClose(fn: () => Promise<void>): void {
    this.cleanups.push(fn);
  }

  /** Boots guest number `index` (0-based): NIC n on subnet n with address <prefix>.(index+2). */
  async bootGuest(opts: { index: number; memoryMiB?: number; cpus?: number; extraDisk?: string; timeoutMs?: number }): Promise<Guest> {
    const index = opts.index;
    const dir = path.join(this.runDir, `guest${index}`);
    await mkdir(dir, { recursive: true });
    const nics: GuestNic[] = [];
    for (let n = 0; n < SUBNETS.length; n++) {
      const s = SUBNETS[n]!;
      const tap = `lt${index}n${n}`;
      await this.ip(['tuntap', 'add', 'dev', tap, 'mode', 'tap']);
      await this.ip(['link', 'set', tap, 'master', s.bridge]);
      await this.ip(['link', 'set', tap, 'up']);
      nics.push({
        id: `n${n}`,
        tap,
        mac: `52:54:00:4c:${(index + 0x10).toString(16)}:0${n}`,
        address: `${s.prefix}${index + 2}`,
        subnet: s,
      });
    }
    const g = new Guest(this, index, dir, nics);
    this.guests.push(g);
    this.cleanups.push(() => g.kill());
    await g.boot(opts);
    return g;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const errors: unknown[] = [];
    for (const fn of this.cleanups.reverse()) {
      try {
        await fn();
      } catch (e) {
        errors.push(e);
      }
    }
    if (process.env.LUNAR_GUEST_KEEP_RUN !== '1') await rm(this.runDir, { recursive: true, force: true });
    if (errors.length) throw new AggregateError(errors, 'guest bed cleanup failed');
  }
}

export interface GuestNic {
  /** QEMU netdev id, used with QMP set_link. */
  readonly id: string;
  readonly tap: string;
  readonly mac: string;
  readonly address: string;
  readonly subnet: Subnet;
}

/** Thrown by Guest.exec when the command exits non-zero (sh()) — carries the whole result. */
export class GuestCommandError extends Error {
  constructor(
    readonly script: string,
    readonly result: ExecResult,
  ) {
    super(
      `guest command exited ${result.code}: ${script.slice(0, 300)}\n--- stdout\n${result.stdout.slice(-2000)}\n--- stderr\n${result.stderr.slice(-2000)}`,
    );
    this.name = 'GuestCommandError';
  }
}

interface Pending {
  resolve(r: ExecResult): void;
  reject(e: Error): void;
}

export class Guest {
  private qemu?: ChildProcess;
  private ctl?: net.Socket;
  private qmp?: Qmp;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private helloWaiters: (() => void)[] = [];
  private exited?: Promise<void>;
  /** Milliseconds from QEMU spawn to the agent's HELLO. */
  bootMs = 0;
  readonly consoleLog: string;

  constructor(
    readonly bed: Bed,
    readonly index: number,
    readonly dir: string,
    readonly nics: readonly GuestNic[],
  ) {
    this.consoleLog = path.join(dir, 'console.log');
  }

  get initiatorName(): string {
    return `iqn.2024-01.io.lunar.guest:g${this.index}`;
  }

  async boot(opts: { memoryMiB?: number; cpus?: number; extraDisk?: string; timeoutMs?: number }): Promise<void> {
    const img = this.bed.imageDir;
    const ctlPath = path.join(this.dir, 'ctl.sock');
    const qmpPath = path.join(this.dir, 'qmp.sock');
    const accel =
      process.env.LUNAR_GUEST_ACCEL === 'kvm'
        ? ['-enable-kvm', '-cpu', 'host,-arch-capabilities']
        : ['-accel', 'tcg,thread=multi', '-cpu', 'max'];
    const args = [
      ...accel,
      '-smp',
      String(opts.cpus ?? 2),
      '-m',
      String(opts.memoryMiB ?? 1024),
      '-machine',
      'q35',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-no-reboot',
      '-kernel',
      path.join(img, 'vmlinuz'),
      '-append',
      'console=ttyS0 root=/dev/nvme0n1 rw rootfstype=ext4 quiet loglevel=4 systemd.show_status=0 mitigations=off',
      '-drive',
      `file=${path.join(img, 'root.img')},if=none,id=root,format=raw,snapshot=on`,
      '-device',
      'nvme,drive=root,serial=root',
      ...(opts.extraDisk
        ? ['-drive', `file=${opts.extraDisk},if=none,id=extra,format=raw,readonly=on`, '-device', 'virtio-blk-pci,drive=extra,serial=lunar']
        : []),
      ...this.nics.flatMap((n) => [
        '-netdev',
        `tap,id=${n.id},ifname=${n.tap},script=no,downscript=no`,
        '-device',
        `virtio-net-pci,netdev=${n.id},mac=${n.mac}`,
      ]),
      '-device',
      'virtio-serial-pci',
      '-chardev',
      `socket,id=ctl,path=${ctlPath},server=on,wait=off`,
      '-device',
      'virtserialport,chardev=ctl,name=lunar.ctl',
      '-serial',
      `file:${this.consoleLog}`,
      '-qmp',
      `unix:${qmpPath},server=on,wait=off`,
    ];
    await writeFile(path.join(this.dir, 'qemu.cmd'), ['qemu-system-x86_64', ...args].join(' ') + '\n');
    const t0 = Date.now();
    const [cmd, argv] = this.bed.nsExec('qemu-system-x86_64', args);
    const qemu = spawnTracked(cmd, argv, path.join(this.dir, 'qemu.log'));
    this.qemu = qemu;
    this.exited = once(qemu, 'exit').then(() => undefined);
    const died = this.exited.then(async () => {
      throw new Error(`QEMU of guest ${this.index} exited (code ${qemu.exitCode}); console tail:\n${await this.consoleTail()}`);
    });
    died.catch(() => undefined);
    const deadline = t0 + (opts.timeoutMs ?? 180_000);
    // QEMU creates the sockets shortly after start; race every wait against its exit (recipe pitfall 11).
    this.ctl = await Promise.race([connectRetry(ctlPath, deadline), died]);
    this.attachCtl(this.ctl);
    this.qmp = await Promise.race([Qmp.connect(qmpPath, deadline), died]);
    const hello = new Promise<void>((resolve) => this.helloWaiters.push(resolve));
    const pinger = setInterval(() => this.ctl?.write('P\n'), 2000);
    let timer: NodeJS.Timeout | undefined;
    const silent = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`guest ${this.index} agent silent after ${opts.timeoutMs ?? 180_000} ms`)),
        deadline - Date.now(),
      );
    });
    try {
      await Promise.race([hello, died, silent]);
    } finally {
      clearInterval(pinger);
      clearTimeout(timer);
    }
    this.bootMs = Date.now() - t0;
    // Network: static addresses on the NICs found by MAC (no DHCP/DNS in the bed).
    const netScript = this.nics
      .map(
        (n) =>
          `d=$(grep -l '^${n.mac}$' /sys/class/net/*/address | head -1 | xargs dirname | xargs basename); ip addr add ${n.address}/24 dev "$d"; ip link set "$d" up; echo "${n.id} $d"`,
      )
      .join('\n');
    const out = await this.sh(`ip link set lo up\n${netScript}\necho InitiatorName=${this.initiatorName} > /etc/iscsi/initiatorname.iscsi`);
    this.nicNames = new Map(
      out
        .trim()
        .split('\n')
        .map((l) => l.split(' ') as [string, string]),
    );
  }

  /** NIC id (n0, n1) -> guest interface name. */
  nicNames = new Map<string, string>();

  private attachCtl(sock: net.Socket): void {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        this.onLine(line);
      }
    });
    sock.on('error', () => undefined);
    sock.on('close', () => {
      for (const p of this.pending.values()) p.reject(new Error(`control channel of guest ${this.index} closed`));
      this.pending.clear();
    });
  }

  private onLine(line: string): void {
    if (line === 'HELLO' || line === 'PONG') {
      for (const w of this.helloWaiters.splice(0)) w();
      return;
    }
    const m = /^R (\d+) (\d+) \.(\S*) \.(\S*)$/.exec(line);
    if (!m) return;
    const p = this.pending.get(Number(m[1]));
    if (!p) return;
    this.pending.delete(Number(m[1]));
    p.resolve({
      code: Number(m[2]),
      stdout: Buffer.from(m[3]!, 'base64').toString('utf8'),
      stderr: Buffer.from(m[4]!, 'base64').toString('utf8'),
    });
  }

  /** Runs a bash script in the guest; resolves with its exit code and output (never throws on non-zero). */
  exec(script: string, timeoutS = 120): Promise<ExecResult> {
    const ctl = this.ctl;
    if (!ctl || ctl.destroyed) return Promise.reject(new Error(`guest ${this.index} is not running`));
    const id = this.nextId++;
    return new Promise<ExecResult>((resolve, reject) => {
      // The guest's `timeout` enforces timeoutS; the host waits a little longer for the reply.
      const t = setTimeout(
        () => {
          this.pending.delete(id);
          reject(new Error(`guest ${this.index}: no reply after ${timeoutS + 30} s to: ${script.slice(0, 200)}`));
        },
        (timeoutS + 30) * 1000,
      );
      this.pending.set(id, {
        resolve: (r) => {
          clearTimeout(t);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(t);
          reject(e);
        },
      });
      ctl.write(`C ${id} ${timeoutS} ${Buffer.from(script).toString('base64')}\n`);
    });
  }

  /** Runs a bash script (with `set -e -o pipefail`) and returns stdout; throws GuestCommandError on failure. */
  async sh(script: string, timeoutS = 120): Promise<string> {
    const full = `set -eo pipefail\n${script}`;
    const r = await this.exec(full, timeoutS);
    if (r.code !== 0) throw new GuestCommandError(script, r);
    return r.stdout;
  }

  /** QMP set_link on NIC n0/n1: the guest sees carrier loss and every packet is dropped. */
  async setLink(nicId: string, up: boolean): Promise<void> {
    if (!this.qmp) throw new Error('no QMP');
    await this.qmp.command('set_link', { name: nicId, up });
  }

  async consoleTail(chars = 3000): Promise<string> {
    try {
      return (await readFile(this.consoleLog, 'utf8')).slice(-chars);
    } catch {
      return '(no console log)';
    }
  }

  /** Powers the guest off (no clean shutdown needed: the root disk is snapshot=on) and waits for QEMU to exit. */
  async kill(): Promise<void> {
    this.ctl?.destroy();
    if (this.qmp) {
      let t: NodeJS.Timeout | undefined;
      await Promise.race([this.qmp.command('quit', {}).catch(() => undefined), new Promise<void>((r) => (t = setTimeout(r, 2000)))]);
      clearTimeout(t);
      this.qmp.close();
    }
    if (this.qemu) await stopChild(this.qemu, 3000);
    for (const n of this.nics) await run('ip', ['netns', 'exec', this.bed.netns, 'ip', 'link', 'del', n.tap]);
  }
}

async function connectRetry(p: string, deadline: number): Promise<net.Socket> {
  for (;;) {
    try {
      const s = net.createConnection(p);
      await once(s, 'connect');
      return s;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(50);
    }
  }
}

/** Minimal QMP client (one command at a time is all the bed needs). */
class Qmp {
  private buf = '';
  private waiters: ((msg: Record<string, unknown>) => void)[] = [];
  private constructor(private readonly sock: net.Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i).trim();
        this.buf = this.buf.slice(i + 1);
        if (!line) continue;
        const msg = JSON.parse(line) as Record<string, unknown>;
        if ('event' in msg) continue;
        this.waiters.shift()?.(msg);
      }
    });
    sock.on('error', () => undefined);
  }

  static async connect(p: string, deadline: number): Promise<Qmp> {
    const q = new Qmp(await connectRetry(p, deadline));
    await q.next(); // greeting
    await q.command('qmp_capabilities', {});
    return q;
  }

  private next(): Promise<Record<string, unknown>> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  async command(execute: string, args: Record<string, unknown>): Promise<unknown> {
    const reply = this.next();
    this.sock.write(JSON.stringify({ execute, arguments: args }) + '\n');
    const msg = await reply;
    if ('error' in msg) throw new Error(`QMP ${execute}: ${JSON.stringify(msg.error)}`);
    return msg.return;
  }

  close(): void {
    this.sock.destroy();
  }
}

/**
 * Hook for later node-plugin tests: an ext4 image holding the host's built Lunar (dist/ + production
 * node_modules + package.json + proto/ + the native addon), attached read-only as a virtio disk (serial "lunar"); mount it in the guest
 * with `mount -o ro /dev/disk/by-id/virtio-lunar /opt/lunar` and run `/usr/local/bin/node /opt/lunar/dist/src/cli.js`.
 */
export async function buildLunarDisk(runDir: string): Promise<string> {
  const stage = path.join(runDir, 'lunar-stage');
  await mkdir(stage, { recursive: true });
  await cp(path.join(repoRoot, 'dist'), path.join(stage, 'dist'), { recursive: true });
  await cp(path.join(repoRoot, 'package.json'), path.join(stage, 'package.json'));
  await cp(path.join(repoRoot, 'proto'), path.join(stage, 'proto'), { recursive: true }); // csi.proto, loaded at run time
  // The N-API addon (build/Release/lunar_native.node), which `lunar serve` loads: a complete install.
  const addon = path.join(repoRoot, 'build', 'Release', 'lunar_native.node');
  if (existsSync(addon)) {
    await mkdir(path.join(stage, 'build', 'Release'), { recursive: true });
    await cp(addon, path.join(stage, 'build', 'Release', 'lunar_native.node'));
  }
  // Production packages only: package-lock.json marks every package only the dev dependencies need
  // ("dev": true); skipping them halves the copy (eslint, typescript, prettier, ... are not needed in a guest).
  const lock = JSON.parse(await readFile(path.join(repoRoot, 'package-lock.json'), 'utf8')) as {
    packages?: Record<string, { dev?: boolean }>;
  };
  const devOnly = new Set(
    Object.entries(lock.packages ?? {})
      .filter(([k, v]) => k.startsWith('node_modules/') && v.dev === true)
      .map(([k]) => k),
  );
  await cp(path.join(repoRoot, 'node_modules'), path.join(stage, 'node_modules'), {
    recursive: true,
    filter: (src) => {
      const rel = path.relative(repoRoot, src).split(path.sep);
      // node_modules/<name> or node_modules/@scope/<name>: the package's own directory
      const pkgDir = rel[1]?.startsWith('@') ? rel.slice(0, 3) : rel.slice(0, 2);
      return !devOnly.has(pkgDir.join('/'));
    },
  });
  const img = path.join(runDir, 'lunar.img');
  const du = await runOk('du', ['-sm', stage]);
  const sizeMiB = Number(du.split('\t')[0]) + 64;
  await runOk('mkfs.ext4', ['-q', '-L', 'lunar', '-d', stage, img, `${sizeMiB}M`]);
  await rm(stage, { recursive: true, force: true });
  return img;
}
