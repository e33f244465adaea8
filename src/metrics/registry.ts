// Lunar's Prometheus metrics (prom-client). Data-path counters live in LuStats (no allocation per
// command) and are turned into samples at scrape time by the metric classes below, which override get();
// CSI calls and node operations are few per second and use prom-client's own counters and histograms.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type MetricType } from 'prom-client';
import { IO_KIND_NAMES } from '../scsi/types.js';
import { LATENCY_BUCKETS, LuStats } from './lu-stats.js';

export type Component = 'controller' | 'node';

/** The node operations timed by lunar_node_operation_duration_seconds. */
export type NodeOperation = 'stage' | 'unstage' | 'publish' | 'unpublish' | 'expand';

/** Sessions per volume (controller) or paths per volume by state (node). */
export interface PathCount {
  readonly volume: string;
  readonly up: number;
  readonly down: number;
}

export interface Capacity {
  readonly availableBytes: number;
  readonly totalBytes?: number;
}

/** What unauthenticated peers cost (the iSCSI server's counters since start; pendingConnections is now). */
export interface PeerCounters {
  /** Connections refused at accept and logins refused "out of resources", by reason. */
  readonly refused: Readonly<Record<string, number>>;
  readonly loginTimeouts: number;
  readonly suppressedLogLines: number;
  readonly pendingConnections: number;
}

type Values<T extends string> = Awaited<ReturnType<Counter<T>['get']>>;
type HistValues<T extends string> = Awaited<ReturnType<Histogram<T>['get']>>;

export class LunarMetrics {
  readonly registry = new Registry();
  private readonly lus = new Map<string, LuStats>();
  private sessions: () => Iterable<readonly [string, number]> = () => [];
  private paths: () => Iterable<PathCount> = () => [];
  private capacity: (() => Promise<Capacity>) | null = null;
  private peers: (() => PeerCounters) | null = null;
  private readonly csiCalls: Counter<'service' | 'method' | 'code'>;
  private readonly csiDuration: Histogram<'service' | 'method'>;
  private readonly nodeOps: Histogram<'operation' | 'result'>;

  constructor(readonly component: Component) {
    const lus = this.lus;
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'lunar_' });

    const luCounter = <T extends string>(name: string, help: string, labelNames: T[], values: () => Values<T>['values']): void => {
      class LuCounter extends Counter<T> {
        override async get(): Promise<Values<T>> {
          const base = await super.get();
          return { ...base, values: values() };
        }
      }
      new LuCounter({ name, help, labelNames, registers });
    };
    luCounter(
      'lunar_lu_commands_total',
      'SCSI commands answered, by volume and kind (read, write, flush, unmap, other)',
      ['volume', 'op'],
      () => [...lus].flatMap(([volume, s]) => IO_KIND_NAMES.map((op, i) => ({ labels: { volume, op }, value: s.commands[i]! }))),
    );
    luCounter('lunar_lu_bytes_total', 'Bytes read and written, by volume', ['volume', 'direction'], () =>
      [...lus].flatMap(([volume, s]) => [
        { labels: { volume, direction: 'read' }, value: s.readBytes },
        { labels: { volume, direction: 'write' }, value: s.writeBytes },
      ]),
    );
    luCounter(
      'lunar_lu_errors_total',
      'SCSI commands that ended with a status other than GOOD or CONDITION MET (or were aborted), by volume and kind',
      ['volume', 'op'],
      () => [...lus].flatMap(([volume, s]) => IO_KIND_NAMES.map((op, i) => ({ labels: { volume, op }, value: s.errors[i]! }))),
    );
    luCounter(
      'lunar_lu_space_allocation_failures_total',
      'SCSI commands that failed because the data directory had no space left (ENOSPC: DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT), by volume',
      ['volume'],
      () => [...lus].map(([volume, s]) => ({ labels: { volume }, value: s.spaceAllocationFailures })),
    );
    const latencyName = 'lunar_lu_command_duration_seconds';
    const latencyHelp = 'SCSI command latency, from command received to status sent, by volume';
    class LuLatency extends Histogram<'volume'> {
      // prom-client's registry reads histograms through getForPromString(); both views are the LuStats buckets.
      override get(): Promise<HistValues<'volume'>> {
        const values: HistValues<'volume'>['values'] = [];
        for (const [volume, s] of lus) {
          let cumulative = 0;
          LATENCY_BUCKETS.forEach((le, i) => {
            cumulative += s.buckets[i]!;
            const labels = { volume, le }; // le: the bucket label, as prom-client writes it for its own histograms
            values.push({ metricName: `${latencyName}_bucket`, labels, value: cumulative });
          });
          cumulative += s.buckets[LATENCY_BUCKETS.length]!;
          const inf = { volume, le: '+Inf' };
          values.push({ metricName: `${latencyName}_bucket`, labels: inf, value: cumulative });
          values.push({ metricName: `${latencyName}_sum`, labels: { volume }, value: s.latencySum });
          values.push({ metricName: `${latencyName}_count`, labels: { volume }, value: cumulative });
        }
        return Promise.resolve({
          name: latencyName,
          help: latencyHelp,
          // prom-client's typings declare an enum MetricType that its CommonJS build does not export.
          type: 'histogram' as unknown as MetricType,
          aggregator: 'sum',
          collect: () => undefined,
          values,
        });
      }

      getForPromString(): Promise<HistValues<'volume'>> {
        return this.get();
      }
    }
    new LuLatency({
      name: latencyName,
      help: latencyHelp,
      labelNames: ['volume'],
      buckets: [...LATENCY_BUCKETS],
      registers,
    });

    const sessions = (): Iterable<readonly [string, number]> => this.sessions();
    const paths = (): Iterable<PathCount> => this.paths();
    new Gauge({
      name: 'lunar_volume_sessions',
      help: 'iSCSI sessions logged in to each volume (controller)',
      labelNames: ['volume'],
      registers,
      collect() {
        this.reset();
        for (const [volume, n] of sessions()) this.set({ volume }, n);
      },
    });
    new Gauge({
      name: 'lunar_volume_paths',
      help: 'Paths (sessions through one portal and iface) of each staged volume, by state (node)',
      labelNames: ['volume', 'state'],
      registers,
      collect() {
        this.reset();
        for (const p of paths()) {
          this.set({ volume: p.volume, state: 'up' }, p.up);
          this.set({ volume: p.volume, state: 'down' }, p.down);
        }
      },
    });
    const capacity = (): (() => Promise<Capacity>) | null => this.capacity;
    new Gauge({
      name: 'lunar_capacity_free_bytes',
      help: 'Free space for new volumes in the data directory (controller)',
      registers,
      async collect() {
        const c = capacity();
        if (c) this.set((await c()).availableBytes);
      },
    });
    new Gauge({
      name: 'lunar_capacity_total_bytes',
      help: "Size of the data directory's filesystem (controller)",
      registers,
      async collect() {
        const c = capacity();
        const total = c ? (await c()).totalBytes : undefined;
        if (total !== undefined) this.set(total);
      },
    });
    const peers = (): PeerCounters | null => this.peers?.() ?? null;
    luCounter(
      'lunar_iscsi_connections_refused_total',
      'iSCSI connections closed at accept over a cap on connections not logged in (pending_global, pending_per_address), and logins answered "out of resources" over the sessions-per-initiator or per-address cap (sessions_per_initiator, sessions_per_address)',
      ['reason'],
      () => Object.entries(peers()?.refused ?? {}).map(([reason, value]) => ({ labels: { reason }, value })),
    );
    luCounter('lunar_iscsi_login_timeouts_total', 'iSCSI connections closed because login did not complete in time', [], () => {
      const p = peers();
      return p ? [{ labels: {}, value: p.loginTimeouts }] : [];
    });
    luCounter(
      'lunar_iscsi_log_lines_suppressed_total',
      'Warn lines caused by iSCSI peers (malformed PDUs, rejects, refused logins) not written one by one but counted in per-peer summaries',
      [],
      () => {
        const p = peers();
        return p ? [{ labels: {}, value: p.suppressedLogLines }] : [];
      },
    );
    new Gauge({
      name: 'lunar_iscsi_pending_connections',
      help: 'iSCSI connections that have not completed login',
      registers,
      collect() {
        const p = peers();
        if (p) this.set(p.pendingConnections);
      },
    });
    this.csiCalls = new Counter({
      name: 'lunar_csi_calls_total',
      help: 'CSI calls answered, by service, method and gRPC code',
      labelNames: ['service', 'method', 'code'],
      registers,
    });
    this.csiDuration = new Histogram({
      name: 'lunar_csi_call_duration_seconds',
      help: 'CSI call durations, by service and method',
      labelNames: ['service', 'method'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers,
    });
    this.nodeOps = new Histogram({
      name: 'lunar_node_operation_duration_seconds',
      help: 'NodeStage, NodeUnstage, NodePublish, NodeUnpublish and NodeExpand durations, by result (node)',
      labelNames: ['operation', 'result'],
      buckets: [0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120],
      registers,
    });
  }

  /** The counters of a volume's LU, created on first use (once per LU, not per command). */
  lu(volume: string): LuStats {
    let s = this.lus.get(volume);
    if (!s) {
      s = new LuStats();
      this.lus.set(volume, s);
    }
    return s;
  }

  /** A command of the volume's LU failed for want of space (counted in lunar_lu_space_allocation_failures_total). */
  spaceAllocationFailed(volume: string): void {
    this.lu(volume).spaceAllocationFailures += 1;
  }

  /** Forgets a deleted volume's counters. */
  removeLu(volume: string): void {
    this.lus.delete(volume);
  }

  observeCsiCall(service: string, method: string, code: string, seconds: number): void {
    this.csiCalls.inc({ service, method, code });
    this.csiDuration.observe({ service, method }, seconds);
  }

  observeNodeOperation(operation: NodeOperation, ok: boolean, seconds: number): void {
    this.nodeOps.observe({ operation, result: ok ? 'ok' : 'error' }, seconds);
  }

  setSessionsSource(fn: () => Iterable<readonly [string, number]>): void {
    this.sessions = fn;
  }

  setPathsSource(fn: () => Iterable<PathCount>): void {
    this.paths = fn;
  }

  setPeerSource(fn: () => PeerCounters): void {
    this.peers = fn;
  }

  setCapacitySource(fn: () => Promise<Capacity>): void {
    this.capacity = fn;
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
