// dm-multipath for Lunar's volumes, on a node whose own multipath.conf Lunar never touches:
//  - a drop-in /etc/multipath/conf.d/lunar.conf (multipathd reads config_dir, /etc/multipath/conf.d by
//    default) with a `devices` entry for Lunar's LUs (vendor LUNAR, product VOLUME): path grouping, the
//    checker and the timers that lose no I/O on a path cut; it applies to Lunar's devices only;
//  - the volume's WWID added to the wwids file with `multipath -a`, which is what makes the device a
//    multipath path under `find_multipaths strict` (the default of several distributions) or `yes`, and
//    removed again (`multipath -w`) at unstage when Lunar added it (not when the host listed it before);
//  - the map found by its dm uuid "mpath-<wwid>" in sysfs and waited for until it holds every path and
//    every path has the map's size (a path that has not re-read its capacity yet is not settled);
//  - `multipath -f` at unstage, `multipathd resize map` at expansion.

import { hostError } from './errors.js';
import { pollUntil, retryWhile } from './poll.js';
import { describeFailure, runOk, type RunResult, type RunSpec } from './runner.js';
import { blockSize } from './scsi-sysfs.js';
import type { Host } from './types.js';

export const DROP_IN_PATH = '/etc/multipath/conf.d/lunar.conf';

/** Timers of Lunar's multipath devices (docs/node.md "Timers"). */
export interface MultipathTimers {
  /** Seconds after a transport failure before I/O fails over to another path (overrides the session's replacement_timeout). */
  readonly fastIoFailTmo: number;
  /**
   * Path checker intervals to queue I/O when no path is left before failing it, or multipath's own
   * "queue" (queue until a path returns) or "fail" (fail at once). With "queue", unstage turns queueing
   * off on the map (after the unmount has written everything back) before flushing it, so an
   * unreachable target cannot hang the unstage.
   */
  readonly noPathRetry: number | 'queue' | 'fail';
}

export const DEFAULT_MULTIPATH_TIMERS: MultipathTimers = { fastIoFailTmo: 5, noPathRetry: 12 };

/** The drop-in's text (pure). */
export function dropInText(t: MultipathTimers): string {
  return [
    '# Written by the Lunar CSI node plugin (lunar node) for Lunar volumes only; rewritten when its',
    "# settings change. Set the timers with lunar node's flags, not here (docs/node.md).",
    'devices {',
    '\tdevice {',
    '\t\tvendor "LUNAR"',
    '\t\tproduct "VOLUME"',
    '\t\tpath_grouping_policy multibus',
    '\t\tpath_selector "round-robin 0"',
    '\t\trr_min_io_rq 1',
    '\t\tpath_checker tur',
    '\t\tfailback immediate',
    `\t\tfast_io_fail_tmo ${t.fastIoFailTmo}`,
    `\t\tno_path_retry ${t.noPathRetry}`,
    '\t}',
    '}',
    '',
  ].join('\n');
}

const spec = (h: Host, cmd: string, args: string[]): RunSpec => ({ cmd, args, timeoutMs: h.timeouts.device, deadline: h.deadline });

/** Writes the drop-in when it differs and makes multipathd read it; true when it changed. */
export async function ensureDropIn(h: Host, t: MultipathTimers): Promise<boolean> {
  const want = dropInText(t);
  if ((await h.fs.readText(DROP_IN_PATH)) === want) return false;
  await h.fs.writeAtomic(DROP_IN_PATH, want, 0o644);
  await runOk(h.runner, spec(h, 'multipathd', ['reconfigure']));
  return true;
}

/** multipath's wwids file (compiled in: multipath-tools' DEFAULT_WWIDS_FILE, STATE_DIR "/wwids"). */
export const WWIDS_FILE = '/etc/multipath/wwids';

/** The WWIDs the wwids file lists ("/<wwid>/" lines; a missing file lists none). */
export async function listedWwids(h: Host): Promise<Set<string>> {
  const text = (await h.fs.readText(WWIDS_FILE)) ?? '';
  const out = new Set<string>();
  for (const l of text.split('\n')) {
    const m = /^\/(.+)\/$/.exec(l.trim());
    if (m) out.add(m[1]!);
  }
  return out;
}

/** Whether the wwids file lists wwid. */
export async function wwidListed(h: Host, wwid: string): Promise<boolean> {
  return (await listedWwids(h)).has(wwid);
}

/**
 * Removes wwid from the wwids file (`multipath -w WWID`: a WWID that names no map is taken as is), when it
 * is listed. Only for WWIDs Lunar added itself: an entry the host had before is the host's.
 */
export async function removeWwid(h: Host, wwid: string): Promise<void> {
  if (!(await wwidListed(h, wwid))) return;
  await runOk(h.runner, spec(h, 'multipath', ['-w', wwid]));
}

/** Adds the WWID of the path device (/dev/sdX) to the wwids file (idempotent). */
export async function addWwid(h: Host, blockName: string): Promise<void> {
  await runOk(h.runner, spec(h, 'multipath', ['-a', `/dev/${blockName}`]));
}

/** Asks multipathd to (re)consider a path: after `multipath -a` it builds or extends the map at once. */
export async function addPath(h: Host, blockName: string): Promise<void> {
  const s = spec(h, 'multipathd', ['add', 'path', blockName]);
  const r = await h.runner.run(s);
  // "ok", or "fail" when the path is in a map already; the wait for the map decides.
  if (r.code !== 0 && r.code !== 1) throw hostError('failed', describeFailure(s, r));
}

export interface MultipathMap {
  /** dm name (/dev/mapper/<name>). */
  readonly name: string;
  /** Kernel name ("dm-3"): /dev/dm-3 is made by devtmpfs, with no wait for udev. */
  readonly kernelName: string;
  /** Path devices ("sdb", "sdc"). */
  readonly slaves: readonly string[];
  readonly sizeBytes: number;
}

/** The map whose dm uuid is mpath-<wwid>, or null. */
export async function findMap(h: Host, wwid: string): Promise<MultipathMap | null> {
  for (const k of await h.fs.readdir('/sys/block')) {
    if (!k.startsWith('dm-')) continue;
    const uuid = ((await h.fs.readText(`/sys/block/${k}/dm/uuid`)) ?? '').trim();
    if (uuid !== `mpath-${wwid}`) continue;
    const name = ((await h.fs.readText(`/sys/block/${k}/dm/name`)) ?? '').trim();
    const slaves = (await h.fs.readdir(`/sys/block/${k}/slaves`)).sort();
    return { name, kernelName: k, slaves, sizeBytes: (await blockSize(h.fs, k)) ?? 0 };
  }
  return null;
}

/** Waits for the map of wwid holding every path in paths, each of the map's size. */
export async function waitForMap(h: Host, wwid: string, paths: readonly string[], intervalMs = 200): Promise<MultipathMap> {
  let last = 'no map yet';
  return pollUntil(
    async () => {
      const m = await findMap(h, wwid);
      if (!m) return undefined;
      const missing = paths.filter((p) => !m.slaves.includes(p));
      if (missing.length > 0) {
        last = `map ${m.name} lacks ${missing.join(', ')}`;
        return undefined;
      }
      for (const p of paths) {
        const size = await blockSize(h.fs, p);
        if (size !== m.sizeBytes) {
          last = `path ${p} has ${size ?? 'no'} bytes, map ${m.name} ${m.sizeBytes}`;
          return undefined;
        }
      }
      return m;
    },
    {
      timeoutMs: h.timeouts.mapWait,
      deadline: h.deadline,
      intervalMs,
      firstIntervalMs: Math.min(10, intervalMs),
      what: `multipath map of WWID ${wwid} with paths ${paths.join(', ')}`,
    },
    () => last,
  );
}

/** How often, and how far apart, `multipath -f` is tried again while the map is "in use" with no holder. */
export const FLUSH_RETRIES = 5;
export const FLUSH_RETRY_MS = 600;

/**
 * Flushes the map's buffers and removes the map (the paths stay). A map in use is an error; but right after
 * the unmount a short-lived opener (udev's blkid on the change event, multipathd's checker) can hold it for
 * a moment, so "in use" with no holder in sysfs (no partition, LVM or other dm device on top) is tried again
 * a few times, within the deadline, before it is answered as busy.
 */
export async function flushMap(h: Host, map: Pick<MultipathMap, 'name' | 'kernelName'>, retryMs = FLUSH_RETRY_MS): Promise<void> {
  await runOk(h.runner, spec(h, 'blockdev', ['--flushbufs', `/dev/${map.kernelName}`]));
  const s = spec(h, 'multipath', ['-f', map.name]);
  const inUse = (r: RunResult): boolean => /in use|busy/i.test(r.stderr + r.stdout);
  const holders = (): Promise<string[]> => h.fs.readdir(`/sys/block/${map.kernelName}/holders`);
  const { result: r, attempts } = await retryWhile(
    () => h.runner.run(s),
    async (r) => r.code !== 0 && inUse(r) && (await holders()).length === 0,
    { attempts: FLUSH_RETRIES, intervalMs: retryMs, deadline: h.deadline },
  );
  if (r.code === 0) return;
  const heldBy = inUse(r) ? await holders() : [];
  const held = heldBy.length > 0 ? ` (held by ${heldBy.join(', ')})` : attempts > 1 ? ` (still in use after ${attempts} tries)` : '';
  throw hostError(inUse(r) ? 'busy' : 'failed', describeFailure(s, r) + held);
}

/** Stops the map queueing I/O when no path is left (multipathd disablequeueing): a flush of a map whose
 * target is gone then fails instead of hanging. Only needed with no_path_retry queue. */
export async function disableQueueing(h: Host, name: string): Promise<void> {
  await runOk(h.runner, spec(h, 'multipathd', ['disablequeueing', 'map', name]));
}

/** Makes the map take its paths' new size. */
export async function resizeMap(h: Host, name: string): Promise<void> {
  const s = spec(h, 'multipathd', ['resize', 'map', name]);
  const r = await runOk(h.runner, s);
  if (/fail/i.test(r.stdout)) throw hostError('failed', describeFailure(s, r));
}
