// The paths of the staged volumes, watched: every few seconds (and on each NodeGetVolumeStats) the same
// sysfs check VolumeCondition reports (stats.ts pathStates) runs on every staged volume. A path that goes
// down raises a PathFailed Event on the volume's PVC naming it, a path that comes back PathRestored; the
// counts of up and down paths per volume feed the lunar_volume_paths gauge. Kubelet polls
// NodeGetVolumeStats only when its volume-health feature is on, hence the plugin's own check.

import type { PathCount } from '../metrics/registry.js';
import type { StagingRecord } from './staging-record.js';
import { pathStates, type PathState } from './stats.js';
import { hostFor, type NodeEnv, type PathObserver } from './types.js';

export class PathMonitor implements PathObserver {
  /** Per volume: how many paths are up, and the message of each path that is down. */
  private readonly seen = new Map<string, { up: number; down: Map<string, string> }>();
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(private readonly env: NodeEnv) {}

  /** Starts the periodic check (first run at once). */
  start(intervalMs: number): void {
    this.running = this.checkAll();
    this.timer = setInterval(() => {
      this.running ??= this.checkAll();
    }, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running?.catch(() => undefined);
  }

  /** Up and down paths of each staged volume as last checked. */
  counts(): PathCount[] {
    return [...this.seen].map(([volume, s]) => ({ volume, up: s.up, down: s.down.size }));
  }

  /** Checks every staged volume once; volumes no longer staged are forgotten. */
  async checkAll(): Promise<void> {
    try {
      const records = (await this.env.records.list()).filter((r) => r.phase === 'staged');
      for (const v of [...this.seen.keys()]) if (!records.some((r) => r.volumeId === v)) this.seen.delete(v);
      const fs = hostFor(this.env, Infinity).fs;
      for (const r of records) await this.observe(r, await pathStates(fs, r));
    } catch (err) {
      this.env.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'path check failed');
    } finally {
      this.running = null;
    }
  }

  /** Takes one check's result: Events for each path that changed state since the last one. */
  observe(r: StagingRecord, states: readonly PathState[]): Promise<void> {
    const before = this.seen.get(r.volumeId);
    const down = new Map(states.flatMap((s) => (s.down === null ? [] : [[s.path, s.down] as const])));
    this.seen.set(r.volumeId, { up: states.length - down.size, down });
    const events = this.env.events;
    const pvc = r.pvc;
    for (const [path, why] of down) {
      if (before?.down.has(path)) continue;
      this.env.log.warn({ volumeId: r.volumeId, path, why }, 'path down');
      if (events && pvc) {
        void events.record(
          pvc,
          'PathFailed',
          `volume ${r.volumeId}: ${why}; I/O goes on over the ${states.length - down.size} other path(s). Check the node's network to the portal and iscsid`,
        );
      }
    }
    if (!before) return Promise.resolve();
    for (const path of before.down.keys()) {
      if (down.has(path)) continue;
      this.env.log.info({ volumeId: r.volumeId, path }, 'path restored');
      if (events && pvc) void events.record(pvc, 'PathRestored', `volume ${r.volumeId}: ${path} is back`);
    }
    return Promise.resolve();
  }
}
