// A local HTTP server that answers like the Kubernetes API server for the few calls Lunar makes (the only
// fake the tests allow): PVC get, Event create (409 AlreadyExists on a duplicate name) and merge patch,
// Node get and watch (newline-delimited JSON events; 410 Gone for a resourceVersion older than the
// server's compaction point, as an HTTP answer or as a watch ERROR event). Failures can be queued per
// route: status code, Retry-After, or a dropped connection.

import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Status {
  kind: 'Status';
  apiVersion: 'v1';
  status: 'Failure';
  message: string;
  reason: string;
  code: number;
}

function status(code: number, reason: string, message: string): Status {
  return { kind: 'Status', apiVersion: 'v1', status: 'Failure', message, reason, code };
}

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: unknown;
}

export type Failure = { readonly status: number; readonly retryAfter?: number } | { readonly drop: true };

interface WatchClient {
  readonly name: string;
  readonly res: http.ServerResponse;
}

export class FakeApiServer {
  readonly requests: RecordedRequest[] = [];
  readonly pvcs = new Map<string, { uid: string }>();
  readonly events = new Map<string, Record<string, unknown>>();
  readonly nodes = new Map<string, { labels: Record<string, string>; resourceVersion: number }>();
  /** Watches from a resourceVersion below this get 410 Gone. */
  compactedBelow = 0;
  /** The next Event create is stored and its answer lost (the connection drops): what a timeout looks like. */
  dropAfterStoringNextEvent = false;
  /** 410 delivered as a watch ERROR event (true) or as the HTTP answer (false). */
  goneAsEvent = true;
  private version = 100;
  private readonly failures = new Map<string, Failure[]>();
  private readonly watchers = new Set<WatchClient>();
  private server: http.Server | null = null;
  url = '';

  /** Listens on 127.0.0.1 (a free port), or on the unix socket socketPath (forwarded into a guest's network). */
  async start(socketPath?: string): Promise<this> {
    this.server = http.createServer((req, res) => this.handle(req, res));
    if (socketPath !== undefined) {
      await new Promise<void>((r) => this.server!.listen(socketPath, r));
      this.url = `unix:${socketPath}`;
      return this;
    }
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    for (const w of this.watchers) w.res.destroy();
    this.server?.closeAllConnections();
    await new Promise<void>((r) => this.server?.close(() => r()) ?? r());
  }

  /** Queues failures for "METHOD /path" (path without query). */
  fail(route: string, ...f: Failure[]): void {
    this.failures.set(route, [...(this.failures.get(route) ?? []), ...f]);
  }

  setNode(name: string, labels: Record<string, string>): number {
    this.version += 1;
    const node = { labels, resourceVersion: this.version };
    const existed = this.nodes.has(name);
    this.nodes.set(name, node);
    for (const w of this.watchers) if (w.name === name) this.send(w.res, existed ? 'MODIFIED' : 'ADDED', name, node);
    return this.version;
  }

  /** Ends every open watch from the server side (as the API server does after its timeout). */
  closeWatches(): void {
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
  }

  watchCount(): number {
    return this.watchers.size;
  }

  private nodeObject(name: string, n: { labels: Record<string, string>; resourceVersion: number }): unknown {
    return { apiVersion: 'v1', kind: 'Node', metadata: { name, labels: n.labels, resourceVersion: String(n.resourceVersion) } };
  }

  private send(res: http.ServerResponse, type: string, name: string, n: { labels: Record<string, string>; resourceVersion: number }): void {
    res.write(`${JSON.stringify({ type, object: this.nodeObject(name, n) })}\n`);
  }

  private json(res: http.ServerResponse, code: number, body: unknown, headers: Record<string, string> = {}): void {
    res.writeHead(code, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const u = new URL(req.url ?? '/', this.url);
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown = undefined;
      if (text !== '') {
        try {
          body = JSON.parse(text);
        } catch {
          body = text;
        }
      }
      this.requests.push({ method: req.method ?? '', path: u.pathname, query: u.searchParams, headers: req.headers, body });
      const route = `${req.method ?? ''} ${u.pathname}`;
      const queued = this.failures.get(route);
      const f = queued?.shift();
      if (f) {
        if ('drop' in f) {
          req.socket.destroy();
          return;
        }
        this.json(
          res,
          f.status,
          status(f.status, 'InternalError', `injected ${f.status}`),
          f.retryAfter !== undefined ? { 'retry-after': String(f.retryAfter) } : {},
        );
        return;
      }
      this.route(req.method ?? '', u, body, req, res);
    });
  }

  private route(method: string, u: URL, body: unknown, req: http.IncomingMessage, res: http.ServerResponse): void {
    let m = /^\/api\/v1\/namespaces\/([^/]+)\/persistentvolumeclaims\/([^/]+)$/.exec(u.pathname);
    if (m && method === 'GET') {
      const pvc = this.pvcs.get(`${m[1]}/${m[2]}`);
      if (!pvc) {
        this.json(res, 404, status(404, 'NotFound', `persistentvolumeclaims "${m[2]}" not found`));
        return;
      }
      this.json(res, 200, {
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        metadata: { namespace: m[1], name: m[2], uid: pvc.uid },
      });
      return;
    }
    m = /^\/api\/v1\/namespaces\/([^/]+)\/events$/.exec(u.pathname);
    if (m && method === 'POST') {
      const ev = body as { metadata?: { name?: string } };
      const key = `${m[1]}/${ev.metadata?.name ?? ''}`;
      if (this.events.has(key)) {
        this.json(res, 409, status(409, 'AlreadyExists', `events "${ev.metadata?.name ?? ''}" already exists`));
        return;
      }
      this.events.set(key, body as Record<string, unknown>);
      if (this.dropAfterStoringNextEvent) {
        this.dropAfterStoringNextEvent = false;
        req.socket.destroy();
        return;
      }
      this.json(res, 201, body);
      return;
    }
    m = /^\/api\/v1\/namespaces\/([^/]+)\/events\/([^/]+)$/.exec(u.pathname);
    if (m && method === 'PATCH') {
      if (req.headers['content-type'] !== 'application/merge-patch+json') {
        this.json(res, 415, status(415, 'UnsupportedMediaType', `the body of the request was in an unknown format`));
        return;
      }
      const key = `${m[1]}/${m[2]}`;
      const ev = this.events.get(key);
      if (!ev) {
        this.json(res, 404, status(404, 'NotFound', `events "${m[2]}" not found`));
        return;
      }
      Object.assign(ev, body);
      this.json(res, 200, ev);
      return;
    }
    m = /^\/api\/v1\/nodes\/([^/]+)$/.exec(u.pathname);
    if (m && method === 'GET') {
      const n = this.nodes.get(m[1]!);
      if (!n) {
        this.json(res, 404, status(404, 'NotFound', `nodes "${m[1]}" not found`));
        return;
      }
      this.json(res, 200, this.nodeObject(m[1]!, n));
      return;
    }
    if (u.pathname === '/api/v1/nodes' && method === 'GET' && u.searchParams.get('watch') === 'true') {
      const name = /^metadata\.name=(.+)$/.exec(u.searchParams.get('fieldSelector') ?? '')?.[1];
      if (!name) {
        this.json(res, 400, status(400, 'BadRequest', 'Lunar watches one node by fieldSelector'));
        return;
      }
      const from = Number(u.searchParams.get('resourceVersion') ?? '0');
      if (from < this.compactedBelow) {
        const gone = status(410, 'Expired', `too old resource version: ${from} (${this.compactedBelow})`);
        if (!this.goneAsEvent) {
          this.json(res, 410, gone);
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(`${JSON.stringify({ type: 'ERROR', object: gone })}\n`);
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
      const w = { name, res };
      this.watchers.add(w);
      res.on('close', () => this.watchers.delete(w));
      const n = this.nodes.get(name);
      if (n && n.resourceVersion > from) this.send(res, 'MODIFIED', name, n);
      return;
    }
    this.json(res, 404, status(404, 'NotFound', `the server could not find the requested resource (${method} ${u.pathname})`));
  }
}

/** A kubeconfig (YAML text) that points a Lunar process at the stand-in API server at `url`, with a bearer token. */
export function kubeconfigFor(url: string, token = 'test-token'): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '  - name: test',
    `    cluster: { server: "${url}", insecure-skip-tls-verify: true }`,
    'users:',
    '  - name: test',
    `    user: { token: ${token} }`,
    'contexts:',
    '  - name: test',
    '    context: { cluster: test, user: test }',
    'current-context: test',
    '',
  ].join('\n');
}
