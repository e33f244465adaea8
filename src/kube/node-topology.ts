// The node plugin's topology: the values of the configured label keys on its own Node object, kept
// current by a watch (list, then watch from that resourceVersion; on 410 Gone list again; on a closed or
// failed watch start again after a backoff). NodeGetInfo reports segments(); a label that changes while
// the plugin runs is logged, since kubelet only reads topology when the plugin registers.

import type { Logger } from '../log.js';
import type { KubeClient, NodeInfo } from './client.js';
import { backoffMs, DEFAULT_RETRY } from './retry.js';

export interface NodeTopologyOptions {
  readonly client: KubeClient;
  readonly nodeName: string;
  /** Label keys that form the topology segment (LUNAR_TOPOLOGY_KEYS). */
  readonly keys: readonly string[];
  readonly logger: Logger;
}

export class NodeTopology {
  private current: Readonly<Record<string, string>> = {};
  private readonly abort = new AbortController();
  private loop: Promise<void> | null = null;

  constructor(private readonly opts: NodeTopologyOptions) {}

  /** Reads the Node once (throws when it cannot: NodeGetInfo must not report a wrong segment), then watches. */
  async start(): Promise<Readonly<Record<string, string>>> {
    const node = await this.opts.client.getNode(this.opts.nodeName);
    const missing = this.apply(node);
    if (missing.length > 0) {
      throw new Error(`node ${this.opts.nodeName} has no label ${missing.join(', ')}: label it, or remove the key from the topology keys`);
    }
    this.loop = this.watchLoop(node.resourceVersion);
    return this.current;
  }

  segments(): Readonly<Record<string, string>> {
    return this.current;
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  /** Updates the segment from a Node; returns the keys it lacks. */
  private apply(node: NodeInfo): string[] {
    const next: Record<string, string> = {};
    const missing: string[] = [];
    for (const k of this.opts.keys) {
      const v = node.labels[k];
      if (v === undefined) missing.push(k);
      else next[k] = v;
    }
    if (JSON.stringify(next) !== JSON.stringify(this.current) && Object.keys(this.current).length > 0) {
      this.opts.logger.warn(
        { node: this.opts.nodeName, from: this.current, to: next },
        'topology labels changed; kubelet keeps the old segment until the node plugin registers again (restart its pod)',
      );
    }
    this.current = next;
    return missing;
  }

  private async watchLoop(fromVersion: string): Promise<void> {
    let version = fromVersion;
    let failures = 0;
    const signal = this.abort.signal;
    while (!signal.aborted) {
      const seen = { gone: false };
      try {
        await this.opts.client.watchNode(
          this.opts.nodeName,
          version,
          (e) => {
            if (e.type === 'GONE') {
              seen.gone = true;
              return;
            }
            version = e.node.resourceVersion;
            if (e.type !== 'DELETED' && e.type !== 'BOOKMARK') this.apply(e.node);
          },
          signal,
        );
        failures = 0;
        if (seen.gone) {
          const node = await this.opts.client.getNode(this.opts.nodeName);
          version = node.resourceVersion;
          this.apply(node);
        }
      } catch (err) {
        failures += 1;
        this.opts.logger.debug(
          { node: this.opts.nodeName, err: err instanceof Error ? err.message : String(err) },
          'Node watch failed; retrying',
        );
        await new Promise<void>((r) => {
          const t = setTimeout(r, backoffMs(DEFAULT_RETRY, Math.min(failures, 5), err));
          signal.addEventListener(
            'abort',
            () => {
              clearTimeout(t);
              r();
            },
            { once: true },
          );
        });
      }
    }
  }
}
