// The one module that talks to the Kubernetes API server (@kubernetes/client-node 1.x: its 2.x line needs
// Node >= 22.19, Lunar runs on Node 20 and 22). Each method is one declared call of api-calls.ts, retried
// with backoff (retry.ts); answers other than 2xx become KubeApiError with the HTTP status. Kept thin —
// no caching, no logic — so that the tests' stand-in API server (a local HTTP server answering as the API
// server does) exercises exactly what runs in a cluster.

import * as k8s from '@kubernetes/client-node';
import { API_CALLS, type ApiCall, type Component } from './api-calls.js';
import { DEFAULT_RETRY, KubeApiError, withRetry, type RetryPolicy } from './retry.js';

export interface PvcInfo {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
}

export interface NodeInfo {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly resourceVersion: string;
}

/** A core/v1 Event as Lunar writes it. */
export interface EventBody {
  readonly name: string;
  readonly namespace: string;
  readonly involvedObject: { kind: 'PersistentVolumeClaim'; namespace: string; name: string; uid?: string; apiVersion: 'v1' };
  readonly type: 'Normal' | 'Warning';
  readonly reason: string;
  readonly message: string;
  readonly source: { component: string; host?: string };
  readonly count: number;
  readonly firstTimestamp: Date;
  readonly lastTimestamp: Date;
}

export type WatchEvent =
  | { readonly type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK'; readonly node: NodeInfo }
  /** The resourceVersion is too old (410 Gone, as a watch ERROR event or as the answer): list again. */
  | { readonly type: 'GONE' };

export interface KubeClientOptions {
  readonly component: Component;
  readonly retry?: RetryPolicy;
}

/**
 * Where the API server is: in a pod (service account), a kubeconfig file (its current context), or an
 * explicit URL and token (tests, out of cluster).
 */
export type KubeTarget =
  { readonly inCluster: true } | { readonly kubeconfig: string } | { readonly server: string; readonly token?: string };

/** An instance of one of client-node's model classes (plain data holders) with these fields. */
function model<T extends object>(C: new () => T, fields: Partial<T>): T {
  return Object.assign(new C(), fields);
}

function call(component: Component, resource: string, verb: string): ApiCall {
  const c = API_CALLS.find((x) => x.component === component && x.resource === resource && x.verb === verb);
  if (!c) throw new Error(`Kubernetes API call ${verb} ${resource} by the ${component} is not declared in src/kube/api-calls.ts`);
  return c;
}

/** Maps client-node's errors to KubeApiError (status + the Status message) and leaves transport errors. */
function translate(err: unknown): unknown {
  if (err instanceof k8s.ApiException) {
    const e = err as k8s.ApiException<unknown>;
    let message = `HTTP ${e.code}`;
    try {
      const body: unknown = typeof e.body === 'string' ? JSON.parse(e.body) : e.body;
      if (typeof body === 'object' && body !== null && typeof (body as { message?: unknown }).message === 'string') {
        message = `${message}: ${(body as { message: string }).message}`;
      }
    } catch {
      // the body is not a Status object
    }
    const headers = e.headers as Record<string, string | undefined>;
    const retryAfter = Number(headers['retry-after'] ?? headers['Retry-After']);
    return new KubeApiError(e.code, message, Number.isFinite(retryAfter) ? retryAfter : undefined);
  }
  return err;
}

export class KubeClient {
  private readonly core: k8s.CoreV1Api;
  private readonly kc: k8s.KubeConfig;
  private readonly retry: RetryPolicy;

  constructor(
    target: KubeTarget,
    private readonly opts: KubeClientOptions,
  ) {
    this.kc = new k8s.KubeConfig();
    if ('inCluster' in target) {
      this.kc.loadFromCluster();
    } else if ('kubeconfig' in target) {
      this.kc.loadFromFile(target.kubeconfig);
    } else {
      this.kc.loadFromOptions({
        // client-node takes plain http only with skipTLSVerify (there is no TLS to verify); https is verified.
        clusters: [{ name: 'lunar', server: target.server, skipTLSVerify: target.server.startsWith('http://') }],
        users: [{ name: 'lunar', ...(target.token !== undefined ? { token: target.token } : {}) }],
        contexts: [{ name: 'lunar', cluster: 'lunar', user: 'lunar' }],
        currentContext: 'lunar',
      });
    }
    this.core = this.kc.makeApiClient(k8s.CoreV1Api);
    this.retry = opts.retry ?? DEFAULT_RETRY;
  }

  /** Runs the call `entry` declares, retried; a final failure names the call. */
  private async run<T>(entry: ApiCall, fn: () => Promise<T>): Promise<T> {
    return withRetry(async () => {
      try {
        return await fn();
      } catch (err) {
        const e = translate(err);
        if (e instanceof KubeApiError)
          throw new KubeApiError(e.status, `${entry.verb} ${entry.resource}: ${e.message}`, e.retryAfterSeconds);
        throw e;
      }
    }, this.retry);
  }

  /** The PVC, or null when it does not exist (404). */
  async getPvc(namespace: string, name: string): Promise<PvcInfo | null> {
    const entry = call(this.opts.component, 'persistentvolumeclaims', 'get');
    try {
      const pvc = await this.run(entry, () => this.core.readNamespacedPersistentVolumeClaim({ namespace, name }));
      return { namespace, name, uid: pvc.metadata?.uid ?? '' };
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 404) return null;
      throw err;
    }
  }

  /** Creates an Event; a KubeApiError 409 means one of that name exists (then patchEventCount). */
  async createEvent(e: EventBody): Promise<void> {
    const entry = call(this.opts.component, 'events', 'create');
    await this.run(entry, () =>
      this.core.createNamespacedEvent({
        namespace: e.namespace,
        body: model(k8s.CoreV1Event, {
          metadata: model(k8s.V1ObjectMeta, { name: e.name, namespace: e.namespace }),
          involvedObject: model(k8s.V1ObjectReference, e.involvedObject),
          type: e.type,
          reason: e.reason,
          message: e.message,
          source: model(k8s.V1EventSource, e.source),
          count: e.count,
          firstTimestamp: e.firstTimestamp,
          lastTimestamp: e.lastTimestamp,
          reportingComponent: e.source.component,
          reportingInstance: e.source.host ?? '',
        }),
      }),
    );
  }

  /** Sets count and lastTimestamp of an existing Event (a JSON merge patch). */
  async patchEventCount(namespace: string, name: string, count: number, lastTimestamp: Date): Promise<void> {
    const entry = call(this.opts.component, 'events', 'patch');
    await this.run(entry, () =>
      this.core.patchNamespacedEvent(
        { namespace, name, body: { count, lastTimestamp: lastTimestamp.toISOString() } },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      ),
    );
  }

  async getNode(name: string): Promise<NodeInfo> {
    const entry = call(this.opts.component, 'nodes', 'get');
    const n = await this.run(entry, () => this.core.readNode({ name }));
    return { name, labels: { ...(n.metadata?.labels ?? {}) }, resourceVersion: n.metadata?.resourceVersion ?? '' };
  }

  /**
   * Watches one Node from resourceVersion. Resolves when the watch ends (server closed it, transport
   * error, abort); `GONE` is delivered when the resourceVersion is too old, after which the caller lists
   * again (getNode) and watches from the new version.
   */
  async watchNode(name: string, resourceVersion: string, onEvent: (e: WatchEvent) => void, signal: AbortSignal): Promise<void> {
    call(this.opts.component, 'nodes', 'list');
    call(this.opts.component, 'nodes', 'watch');
    const watch = new k8s.Watch(this.kc);
    await new Promise<void>((resolve, reject) => {
      let controller: AbortController | undefined;
      const onAbort = (): void => controller?.abort();
      signal.addEventListener('abort', onAbort, { once: true });
      const finish = (err: unknown): void => {
        signal.removeEventListener('abort', onAbort);
        const status = typeof err === 'object' && err !== null ? (err as { statusCode?: unknown }).statusCode : undefined;
        if (status === 410) {
          onEvent({ type: 'GONE' });
          resolve();
        } else if (err && !signal.aborted) {
          reject(
            typeof status === 'number'
              ? new KubeApiError(status, `watch of node ${name}: HTTP ${status}`)
              : err instanceof Error
                ? err
                : new Error(`watch of node ${name} failed: ${JSON.stringify(err)}`),
          );
        } else {
          resolve();
        }
      };
      watch
        .watch(
          '/api/v1/nodes',
          { fieldSelector: `metadata.name=${name}`, resourceVersion, allowWatchBookmarks: true },
          (type: string, obj: unknown) => {
            if (type === 'ERROR') {
              const code = typeof obj === 'object' && obj !== null ? (obj as { code?: unknown }).code : undefined;
              if (code === 410) onEvent({ type: 'GONE' });
              return;
            }
            if (type !== 'ADDED' && type !== 'MODIFIED' && type !== 'DELETED' && type !== 'BOOKMARK') return;
            const meta = typeof obj === 'object' && obj !== null ? (obj as { metadata?: k8s.V1ObjectMeta }).metadata : undefined;
            onEvent({
              type,
              node: { name, labels: { ...(meta?.labels ?? {}) }, resourceVersion: meta?.resourceVersion ?? resourceVersion },
            });
          },
          finish,
        )
        .then((c) => {
          controller = c;
          if (signal.aborted) c.abort();
        }, finish);
    });
  }
}
