// The node-plugin bed: `lunar serve` (CSI Identity + Controller, two portals) on the host inside the guest
// bed's network namespace, `lunar node` inside QEMU guests (the host's built Lunar on the read-only
// virtio-lunar disk, started through the guest agent), and grpc-js clients for both.
//
// Reaching the plugin in the guest: it listens on tcp://<guest NIC 0 address>:PORT. That address lives only
// in the bed's network namespace, while the test process stays outside it; so a small forwarder runs in
// the namespace (`ip netns exec`) and relays a unix socket in the run directory to that TCP address. Unix
// sockets are file-system objects, not network-namespace ones, so the test (and csi-sanity) dial
// unix://<run dir>/guestN-csi.sock. The controller's CSI endpoint is a unix socket in its data directory,
// reachable the same way.
//
// Also here: what the tests check in a guest after an unstage ("nothing of the volume left"), signatures
// written into a volume's backing file, and a /proc/*/cmdline sampler (secrets never in a process's argv).
// Used by test/guest/node-plugin.test.ts, bench/node-stage.ts and test/guest/csi-sanity-run.ts.

import { existsSync } from 'node:fs';
import { mkdir, open, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadCsiPackage } from '../../src/csi/proto.js';
import { startLunarProcess, type LunarProcess } from '../support/lunar.js';
import { Bed, sleep, spawnTracked, stopChild, SUBNETS, type Guest } from './harness.js';
import { q } from './initiator.js';
import { PORT } from './targets.js';

export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;
/** TCP port of `lunar node` in every guest. */
export const NODE_PORT = 10000;
/** The plugin's state dir in the guest (the hostPath of the DaemonSet). */
export const NODE_STATE_DIR = '/var/lib/lunar-node';
export const KUBELET_DIR = '/var/lib/kubelet';
export const PLUGIN_LOG = '/run/lunar-node.log';

const pkg = loadCsiPackage();
/**
 * Reconnect quickly: grpc-js backs off up to 120 s between connection attempts, far longer than a plugin
 * restart in the guest takes; the forwarder accepts at once and drops the connection while the plugin is down.
 */
const CHANNEL_OPTIONS: grpc.ChannelOptions = { 'grpc.initial_reconnect_backoff_ms': 200, 'grpc.max_reconnect_backoff_ms': 1000 };

// ---------------------------------------------------------------------------------------------------------
// gRPC

export type CsiClient = grpc.Client;
type Unary = (req: object, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: unknown) => void) => void;

/** One unary CSI call with a deadline (default 120 s: TCG guests are slow). */
export function call<R>(client: CsiClient, method: string, req: object = {}, timeoutMs = 120_000): Promise<R> {
  const fn = (client as unknown as Record<string, Unary | undefined>)[method];
  if (!fn) return Promise.reject(new Error(`no method ${method} on this CSI client`));
  return new Promise((resolve, reject) =>
    fn.call(client, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
      if (err) {
        const e = new Error(`${method}: ${grpc.status[err.code]} ${err.details}`) as Error & { code?: number };
        e.code = err.code;
        reject(e);
      } else resolve(res as R);
    }),
  );
}

/** The gRPC status name of a failed call() ("NOT_FOUND"), or "OK". */
export async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (e) {
    const c = (e as { code?: number }).code;
    return c === undefined ? `not a gRPC error: ${String(e)}` : (grpc.status[c] ?? String(c));
  }
}

// ---------------------------------------------------------------------------------------------------------
// The controller on the host

export interface Controller {
  readonly proc: LunarProcess;
  readonly endpoint: string; // unix:///...
  readonly controller: CsiClient;
  readonly identity: CsiClient;
  readonly portals: readonly string[];
  /** Backing file of a volume (for writing signatures from the host). */
  volumeFile(volumeId: string): string;
}

/** `discoveryChap`: the target requires CHAP on SendTargets discovery (given by environment, not argv). */
export async function startController(bed: Bed, opts: { discoveryChap?: string } = {}): Promise<Controller> {
  const dataDir = path.join(bed.runDir, 'lunar');
  await mkdir(dataDir, { recursive: true });
  const sock = path.join(dataDir, 'csi.sock');
  const portals = SUBNETS.map((s) => `${s.hostAddress}:${PORT}`);
  const proc = await startLunarProcess({
    dataDir,
    portals,
    netns: bed.netns,
    args: ['--csi-endpoint', `unix://${sock}`],
    env: {
      LUNAR_LOG_LEVEL: process.env.LUNAR_LOG_LEVEL ?? 'info',
      ...(opts.discoveryChap ? { LUNAR_DISCOVERY_CHAP: opts.discoveryChap } : {}),
    },
  });
  bed.onClose(async () => {
    await writeFile(path.join(dataDir, 'serve.log'), proc.output());
    await proc.stop();
  });
  const endpoint = `unix://${sock}`;
  const controller = new pkg.Controller(endpoint, grpc.credentials.createInsecure());
  const identity = new pkg.Identity(endpoint, grpc.credentials.createInsecure());
  bed.onClose(() => {
    controller.close();
    identity.close();
    return Promise.resolve();
  });
  return { proc, endpoint, controller, identity, portals, volumeFile: (id) => path.join(dataDir, 'volumes', `${id}.img`) };
}

// ---------------------------------------------------------------------------------------------------------
// The node plugin in a guest

export interface NodeStartOptions {
  /** Pass one --iface per guest NIC (iscsiadm iface binding); default: the default iface. */
  readonly ifaces?: boolean;
  /** Run as the DaemonSet does: own mount namespace, /dev /sys kubelet dir shared, host commands via nsenter. */
  readonly pod?: boolean;
  readonly extraArgs?: readonly string[];
}

/** A forwarder in the bed's netns: unix socket (host file system) -> TCP address in the netns. */
export async function forward(bed: Bed, sockPath: string, host: string, port: number): Promise<() => Promise<void>> {
  const js = `const net=require('net'),fs=require('fs');const [s,h,p]=process.argv.slice(1);try{fs.unlinkSync(s)}catch{}
net.createServer((c)=>{const u=net.connect(Number(p),h);c.pipe(u);u.pipe(c);const end=()=>{c.destroy();u.destroy()};c.on('error',end);u.on('error',end);c.on('close',end);u.on('close',end)}).listen(s,()=>console.log('ready'));`;
  const [cmd, args] = bed.nsExec(process.execPath, ['-e', js, sockPath, host, String(port)]);
  const child = spawnTracked(cmd, args, `${sockPath}.log`);
  for (let i = 0; !existsSync(sockPath); i++) {
    if (child.exitCode !== null || i > 200) throw new Error(`CSI forwarder for ${host}:${port} did not start`);
    await sleep(50);
  }
  return () => stopChild(child, 1000);
}

/** The other way: TCP host:port inside the bed's netns (where the guests reach it) -> a unix socket on the host. */
export async function forwardIn(bed: Bed, host: string, port: number, sockPath: string): Promise<() => Promise<void>> {
  const js = `const net=require('net');const [s,h,p]=process.argv.slice(1);
net.createServer((c)=>{const u=net.connect(s);c.pipe(u);u.pipe(c);const end=()=>{c.destroy();u.destroy()};c.on('error',end);u.on('error',end);c.on('close',end);u.on('close',end)}).listen(Number(p),h,()=>console.log('ready'));`;
  const [cmd, args] = bed.nsExec(process.execPath, ['-e', js, sockPath, host, String(port)]);
  const child = spawnTracked(cmd, args);
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      if (d.includes('ready')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`forwarder ${host}:${port} -> ${sockPath} exited ${code}`)));
  });
  await ready;
  return () => stopChild(child, 1000);
}

export class NodePlugin {
  node!: CsiClient;
  identity!: CsiClient;
  pid = 0;
  /** NodeGetInfo node_id ("g0#iqn..."). */
  nodeId = '';
  private stopForward?: () => Promise<void>;
  readonly sockPath: string;

  /** `base`: the options of every start (a pod-mode start adds `pod` to them). */
  constructor(
    readonly g: Guest,
    readonly base: NodeStartOptions = {},
  ) {
    this.sockPath = path.join(g.bed.runDir, `guest${g.index}-csi.sock`);
  }

  get nodeName(): string {
    return `g${this.g.index}`;
  }

  /** host-side endpoint of the plugin (through the forwarder) */
  get endpoint(): string {
    return `unix://${this.sockPath}`;
  }

  /** Mounts the Lunar disk, starts `lunar node` and waits until its endpoint answers Probe. */
  async start(extra: NodeStartOptions = {}): Promise<void> {
    const g = this.g;
    const opts = { ...this.base, ...extra };
    const args = [
      'node',
      '--endpoint',
      `tcp://${g.nics[0]!.address}:${NODE_PORT}`,
      '--node-name',
      this.nodeName,
      '--state-dir',
      NODE_STATE_DIR,
      '--log-level',
      'debug',
      ...(opts.ifaces ? [...g.nicNames.values()].flatMap((d) => ['--iface', d]) : []),
      ...(opts.pod ? ['--host-exec', 'nsenter'] : []),
      ...(opts.extraArgs ?? []),
    ];
    const cmdline = `/usr/local/bin/node /opt/lunar/dist/src/cli.js ${args.map(q).join(' ')}`;
    const prep = `mountpoint -q /opt/lunar || { mkdir -p /opt/lunar; d=/dev/disk/by-id/virtio-lunar; [ -e $d ] || d=/dev/$(grep -l '^lunar$' /sys/block/vd*/serial | head -1 | cut -d/ -f4); mount -o ro $d /opt/lunar; }
mkdir -p ${KUBELET_DIR} ${NODE_STATE_DIR}
modprobe -a iscsi_tcp dm_multipath dm_round_robin
systemctl is-active -q multipathd || systemctl start multipathd
echo "=== start $(date +%s.%N) ${opts.pod ? 'pod' : 'direct'}" >> ${PLUGIN_LOG}`;
    // Pod mode (as the DaemonSet runs it): the kubelet dir is a shared mount on the node; the plugin gets its
    // own mount namespace where only /dev, /sys and the kubelet dir stay shared with the host (Bidirectional
    // hostPath volumes), everything else private, and /usr/sbin is hidden — a container image holds no
    // iscsiadm, multipath or mkfs, so every host command must go through nsenter into PID 1.
    // The kubelet dir as its own shared mount (its own peer group, as when it is a separate file system):
    // a bind mount left in the peer group of / would show every mount under it twice in the host namespace.
    const pod = `mountpoint -q ${KUBELET_DIR} || { mount --bind ${KUBELET_DIR} ${KUBELET_DIR}; mount --make-private ${KUBELET_DIR}; }
mount --make-shared ${KUBELET_DIR}
setsid unshare --mount --propagation unchanged -- bash -c '
for m in $(awk "{print \\$5}" /proc/self/mountinfo | sort -r); do
  case "$m" in /dev|/dev/*|/sys|/sys/*|${KUBELET_DIR}|${KUBELET_DIR}/*) ;; *) mount --make-private "$m" 2>/dev/null || true;; esac
done
mount -t tmpfs -o ro,mode=0755 container-image /usr/sbin
exec ${cmdline.replace(/'/g, '')}' >> ${PLUGIN_LOG} 2>&1 < /dev/null &
echo $!`;
    const direct = `setsid ${cmdline} >> ${PLUGIN_LOG} 2>&1 < /dev/null &\necho $!`;
    const out = await g.sh(`${prep}\n${opts.pod ? pod : direct}`, 60);
    this.pid = Number(out.trim().split('\n').pop());
    if (!this.stopForward) this.stopForward = await forward(g.bed, this.sockPath, g.nics[0]!.address, NODE_PORT);
    this.node?.close();
    this.identity?.close();
    this.node = new pkg.Node(this.endpoint, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    this.identity = new pkg.Identity(this.endpoint, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    // Under TCG on a loaded 2-core host, Node takes tens of seconds to load Lunar (grpc-js, proto-loader).
    const deadline = Date.now() + 240_000;
    for (;;) {
      try {
        await call(this.identity, 'Probe', {}, 5000);
        break;
      } catch (e) {
        const alive = (await g.exec(`kill -0 ${this.pid}`)).code === 0;
        if (!alive || Date.now() > deadline) {
          const diag = (await g.exec(`ps -o pid,stat,etime,time,wchan:20,args -p ${this.pid}; ss -ltnp; uptime`)).stdout;
          throw new Error(
            `lunar node in guest ${g.index} ${alive ? 'does not answer Probe' : 'exited'} (${String(e)}); log tail:\n${await this.logTail()}\n${diag}`,
          );
        }
        await sleep(500);
      }
    }
    const info = await call<{ node_id: string }>(this.node, 'NodeGetInfo', {});
    this.nodeId = info.node_id;
  }

  /** kill -9 of the plugin (a crash or an OOM kill), waiting until it is gone. */
  async kill9(): Promise<void> {
    await this.g.sh(
      `kill -9 ${this.pid} 2>/dev/null || true; for i in $(seq 100); do kill -0 ${this.pid} 2>/dev/null || exit 0; sleep 0.1; done; exit 1`,
    );
  }

  /** SIGTERM and wait. */
  async stop(): Promise<void> {
    await this.g.exec(
      `kill ${this.pid} 2>/dev/null; for i in $(seq 100); do kill -0 ${this.pid} 2>/dev/null || exit 0; sleep 0.1; done; kill -9 ${this.pid}`,
    );
  }

  async restart(opts: NodeStartOptions = {}): Promise<void> {
    await this.kill9();
    await this.start(opts);
  }

  async log(): Promise<string> {
    return (await this.g.exec(`cat ${PLUGIN_LOG}`)).stdout;
  }

  async logTail(n = 40): Promise<string> {
    return (await this.g.exec(`tail -n ${n} ${PLUGIN_LOG}`)).stdout;
  }

  async close(): Promise<void> {
    this.node?.close();
    this.identity?.close();
    await this.stopForward?.();
  }
}

// ---------------------------------------------------------------------------------------------------------
// CSI request shapes the tests use

export type Fs = 'ext4' | 'xfs' | 'block';
export type AccessMode = 'SINGLE_NODE_WRITER' | 'MULTI_NODE_MULTI_WRITER' | 'SINGLE_NODE_MULTI_WRITER';

export function capability(fs: Fs, mode: AccessMode = 'SINGLE_NODE_WRITER', mountFlags: string[] = []): object {
  return fs === 'block' ? { block: {}, access_mode: { mode } } : { mount: { fs_type: fs, mount_flags: mountFlags }, access_mode: { mode } };
}

export interface CsiVolume {
  volume_id: string;
  capacity_bytes: string;
  volume_context: Record<string, string>;
}

/** Kubelet's paths for a volume: the staging dir (globalmount) and the pod's target path. */
export function kubeletPaths(volumeId: string, pod = 'pod1'): { staging: string; target: string } {
  return {
    staging: `${KUBELET_DIR}/plugins/kubernetes.io/csi/iscsi.lunar.dev/${volumeId}/globalmount`,
    target: `${KUBELET_DIR}/pods/${pod}/volumes/kubernetes.io~csi/${volumeId}/mount`,
  };
}

export async function createVolume(
  c: Controller,
  name: string,
  fs: Fs,
  sizeBytes: number,
  opts: { mode?: AccessMode; parameters?: Record<string, string> } = {},
): Promise<CsiVolume> {
  const r = await call<{ volume: CsiVolume }>(c.controller, 'CreateVolume', {
    name,
    capacity_range: { required_bytes: String(sizeBytes) },
    volume_capabilities: [capability(fs, opts.mode)],
    parameters: opts.parameters ?? {},
  });
  return r.volume;
}

export async function controllerPublish(
  c: Controller,
  vol: CsiVolume,
  n: NodePlugin,
  fs: Fs,
  mode?: AccessMode,
): Promise<Record<string, string>> {
  const r = await call<{ publish_context: Record<string, string> }>(c.controller, 'ControllerPublishVolume', {
    volume_id: vol.volume_id,
    node_id: n.nodeId,
    volume_capability: capability(fs, mode),
    readonly: false,
    volume_context: vol.volume_context,
  });
  return r.publish_context;
}

export async function controllerUnpublish(c: Controller, vol: CsiVolume, n: NodePlugin): Promise<void> {
  await call(c.controller, 'ControllerUnpublishVolume', { volume_id: vol.volume_id, node_id: n.nodeId });
}

/** The staging dir of the volume made in the guest, as the CO makes it before NodeStage. */
export async function makeStagingDir(n: NodePlugin, vol: CsiVolume): Promise<void> {
  await n.g.sh(`mkdir -p ${q(kubeletPaths(vol.volume_id).staging)}`);
}

/** kubelet's side of NodeStage: the staging dir exists (the CO creates it; stagingDirMade: done already), then the call. */
export async function nodeStage(
  n: NodePlugin,
  vol: CsiVolume,
  publishContext: Record<string, string>,
  fs: Fs,
  opts: { mode?: AccessMode; mountFlags?: string[]; timeoutMs?: number; secrets?: Record<string, string>; stagingDirMade?: boolean } = {},
): Promise<void> {
  const { staging } = kubeletPaths(vol.volume_id);
  if (!opts.stagingDirMade) await makeStagingDir(n, vol);
  await call(
    n.node,
    'NodeStageVolume',
    {
      volume_id: vol.volume_id,
      publish_context: publishContext,
      staging_target_path: staging,
      volume_capability: capability(fs, opts.mode, opts.mountFlags),
      secrets: opts.secrets ?? {},
      volume_context: vol.volume_context,
    },
    opts.timeoutMs,
  );
}

export async function nodePublish(
  n: NodePlugin,
  vol: CsiVolume,
  publishContext: Record<string, string>,
  fs: Fs,
  pod = 'pod1',
  mode?: AccessMode,
): Promise<string> {
  const { staging, target } = kubeletPaths(vol.volume_id, pod);
  // The CO creates the parent of target_path; the plugin creates target_path itself (CSI spec, NodePublishVolume).
  await n.g.sh(`mkdir -p ${q(path.posix.dirname(target))}`);
  await call(n.node, 'NodePublishVolume', {
    volume_id: vol.volume_id,
    publish_context: publishContext,
    staging_target_path: staging,
    target_path: target,
    volume_capability: capability(fs, mode),
    readonly: false,
    secrets: {},
    volume_context: vol.volume_context,
  });
  return target;
}

export async function nodeUnpublish(n: NodePlugin, vol: CsiVolume, pod = 'pod1'): Promise<void> {
  await call(n.node, 'NodeUnpublishVolume', { volume_id: vol.volume_id, target_path: kubeletPaths(vol.volume_id, pod).target });
}

export async function nodeUnstage(n: NodePlugin, vol: CsiVolume): Promise<void> {
  await call(n.node, 'NodeUnstageVolume', { volume_id: vol.volume_id, staging_target_path: kubeletPaths(vol.volume_id).staging });
}

export interface VolumeStats {
  usage: { available: string; total: string; used: string; unit: string }[];
  volume_condition: { abnormal: boolean; message: string } | null;
}

export function volumeStats(n: NodePlugin, vol: CsiVolume, volumePath: string): Promise<VolumeStats> {
  return call<VolumeStats>(n.node, 'NodeGetVolumeStats', {
    volume_id: vol.volume_id,
    volume_path: volumePath,
    staging_target_path: kubeletPaths(vol.volume_id).staging,
  });
}

// ---------------------------------------------------------------------------------------------------------
// What is left of a volume in a guest

export interface Leftovers {
  sessions: string[];
  nodeRecords: string[];
  maps: string[];
  scsiDevices: string[];
  mounts: string[];
  stagingRecord: boolean;
  /** The WWID still listed in multipath's wwids file (Lunar adds it at stage and removes it at unstage). */
  wwidListed: boolean;
}

/** Everything of the volume (target IQN, WWID) still present in the guest. */
export async function leftovers(g: Guest, vol: CsiVolume): Promise<Leftovers> {
  const iqn = vol.volume_context.targetIqn!;
  const wwid = vol.volume_context.wwid!.toLowerCase();
  const out = await g.sh(`iqn=${q(iqn)}; wwid=${q(wwid)}
for s in /sys/class/iscsi_session/session*; do [ -e "$s" ] && [ "$(cat $s/targetname)" = "$iqn" ] && echo "S $(basename $s)"; done
iscsiadm -m node 2>/dev/null | grep -F " $iqn" | sed 's/^/N /' || true
for d in /sys/block/dm-*; do [ -e "$d/dm/uuid" ] && case "$(cat $d/dm/uuid)" in mpath-$wwid) echo "M $(cat $d/dm/name)";; esac; done
for d in /sys/block/sd*; do [ -e "$d/device/wwid" ] || continue; w=$(tr A-F a-f < $d/device/wwid | tr -d ' '); [ "$w" = "naa.\${wwid#3}" ] && echo "D $(basename $d)"; done
grep -F ${q(vol.volume_id)} /proc/self/mountinfo | awk '{print "T", $5}' || true
[ -e ${NODE_STATE_DIR}/staged/${vol.volume_id}.json ] && echo R || true
grep -qxF "/$wwid/" /etc/multipath/wwids 2>/dev/null && echo W || true`);
  const l: Leftovers = { sessions: [], nodeRecords: [], maps: [], scsiDevices: [], mounts: [], stagingRecord: false, wwidListed: false };
  for (const line of out.split('\n')) {
    const [k, ...rest] = line.split(' ');
    const v = rest.join(' ');
    if (k === 'S') l.sessions.push(v);
    else if (k === 'N') l.nodeRecords.push(v);
    else if (k === 'M') l.maps.push(v);
    else if (k === 'D') l.scsiDevices.push(v);
    else if (k === 'T') l.mounts.push(v);
    else if (k === 'R') l.stagingRecord = true;
    else if (k === 'W') l.wwidListed = true;
  }
  return l;
}

export const nothingLeft: Leftovers = {
  sessions: [],
  nodeRecords: [],
  maps: [],
  scsiDevices: [],
  mounts: [],
  stagingRecord: false,
  wwidListed: false,
};

/** iSCSI sessions of the guest to a target IQN. */
export async function sessionsTo(g: Guest, iqn: string): Promise<number> {
  return Number(
    (
      await g.sh(
        `n=0; for s in /sys/class/iscsi_session/session*; do [ -e "$s" ] && [ "$(cat $s/targetname)" = ${q(iqn)} ] && n=$((n+1)); done; echo $n`,
      )
    ).trim(),
  );
}

/** The multipath map of the volume: name and the state of each path (multipathd's view). */
export async function mapOf(
  g: Guest,
  wwid: string,
): Promise<{ name: string; paths: { dev: string; dm: string; chk: string }[] } | undefined> {
  const out = await g.sh(`multipathd show maps raw format '%w %n' 2>/dev/null | awk '$1=="${wwid}"{print "M", $2}'
multipathd show paths raw format '%w %d %t %T' 2>/dev/null | awk '$1=="${wwid}"{print "P", $2, $3, $4}'`);
  let name: string | undefined;
  const paths: { dev: string; dm: string; chk: string }[] = [];
  for (const l of out.trim().split('\n')) {
    const f = l.trim().split(/\s+/);
    if (f[0] === 'M') name = f[1];
    if (f[0] === 'P') paths.push({ dev: f[1]!, dm: f[2]!, chk: f[3]! });
  }
  return name ? { name, paths } : undefined;
}

// ---------------------------------------------------------------------------------------------------------
// Signatures written from the host into a volume's backing file, before it is staged

export type Signature = 'ext4' | 'dos-partition-table' | 'lvm2';

/**
 * Writes a signature into the first MiB of a volume file: an ext4 superblock (mkfs.ext4 of the host), an MBR
 * partition table with one Linux partition, or an LVM2 physical-volume label (no lvm2 on the host: the label
 * is written as LVM2 lays it out, lib/label/label.c — "LABELONE" in sector 1, CRC over bytes 20..511 with
 * LVM's initial value 0xf597a6cf — which libblkid checks before it reports LVM2_member).
 */
export async function writeSignature(file: string, sig: Signature): Promise<void> {
  if (sig === 'ext4') {
    const { runOk } = await import('./harness.js');
    // mkfs.ext4 on a 64 MiB window at the start of the file (the rest of the LU stays as it is).
    const tmp = `${file}.sig`;
    await runOk('mkfs.ext4', ['-q', '-F', tmp, '64M']);
    const src = await open(tmp, 'r');
    const dst = await open(file, 'r+');
    const buf = Buffer.alloc(4 * MiB);
    for (let off = 0; off < 64 * MiB; off += buf.length) {
      const { bytesRead } = await src.read(buf, 0, buf.length, off);
      if (bytesRead > 0 && buf.subarray(0, bytesRead).some((b) => b !== 0)) await dst.write(buf, 0, bytesRead, off);
    }
    await src.close();
    await dst.sync();
    await dst.close();
    const { rm } = await import('node:fs/promises');
    await rm(tmp);
    return;
  }
  const sector0 = Buffer.alloc(512);
  const sector1 = Buffer.alloc(512);
  if (sig === 'dos-partition-table') {
    const e = sector0.subarray(446, 462);
    e[4] = 0x83; // Linux
    e.writeUInt32LE(2048, 8);
    e.writeUInt32LE(65536, 12);
    sector0.writeUInt32LE(0x1234abcd, 440); // disk signature
    sector0[510] = 0x55;
    sector0[511] = 0xaa;
  } else {
    sector1.write('LABELONE', 0, 'latin1');
    sector1.writeBigUInt64LE(1n, 8); // sector_xl
    sector1.writeUInt32LE(32, 20); // offset_xl
    sector1.write('LVM2 001', 24, 'latin1');
    sector1.write('lunarTESTpvUUIDlunarTESTpvUUID00', 32, 'latin1'); // pv_uuid (32 chars)
    sector1.writeBigUInt64LE(64n * 1024n * 1024n, 64); // device_size_xl
    sector1.writeUInt32LE(lvmCrc(sector1.subarray(20)), 16);
  }
  const fh = await open(file, 'r+');
  await fh.write(sector0, 0, 512, 0);
  await fh.write(sector1, 0, 512, 512);
  await fh.sync();
  await fh.close();
}

/** LVM2's calc_crc (lib/misc/crc.c): CRC-32 (reflected 0xedb88320) from 0xf597a6cf, no final inversion. */
function lvmCrc(buf: Buffer): number {
  let crc = 0xf597a6cf;
  for (const b of buf) {
    crc ^= b;
    for (let i = 0; i < 8; i++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return crc >>> 0;
}

// ---------------------------------------------------------------------------------------------------------
// argv sampler: one Node process in the guest reads every /proc/*/cmdline every few ms until stopped

export function argvSamplerScript(tag: string): string {
  const js = `import { readdirSync, readFileSync, existsSync, writeFileSync } from 'node:fs';
const tag = process.argv[2];
const seen = new Map();
let rounds = 0;
while (!existsSync('/run/' + tag + '.stop')) {
  rounds++;
  for (const p of readdirSync('/proc')) {
    if (!/^\\d+$/.test(p)) continue;
    let c;
    try { c = readFileSync('/proc/' + p + '/cmdline', 'latin1').replace(/\\0/g, ' ').trim(); } catch { continue; }
    if (c) seen.set(c, (seen.get(c) ?? 0) + 1);
  }
}
writeFileSync('/run/' + tag + '.argv', JSON.stringify({ rounds, cmdlines: [...seen.keys()] }));
`;
  return `rm -f /run/${tag}.stop /run/${tag}.argv
echo ${Buffer.from(js).toString('base64')} | base64 -d > /run/${tag}.mjs
exec /usr/local/bin/node /run/${tag}.mjs ${tag}`;
}

/** Starts the sampler; the returned function stops it and gives every distinct command line seen. */
export async function sampleArgv(g: Guest, tag: string): Promise<() => Promise<{ rounds: number; cmdlines: string[] }>> {
  const done = g.exec(argvSamplerScript(tag), 900);
  for (let i = 0; (await g.exec(`pgrep -f /run/${tag}.mjs >/dev/null`)).code !== 0; i++) {
    if (i > 100) throw new Error('argv sampler did not start');
    await sleep(100);
  }
  await sleep(500); // Node's start under TCG: let the first rounds run
  return async () => {
    await g.sh(`touch /run/${tag}.stop`);
    const r = await done;
    if (r.code !== 0) throw new Error(`argv sampler failed: ${r.stderr}`);
    return JSON.parse(await g.sh(`cat /run/${tag}.argv`)) as { rounds: number; cmdlines: string[] };
  };
}
