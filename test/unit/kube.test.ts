// src/kube against a local HTTP server that answers like the API server (test/support/fake-apiserver.ts):
// the declared calls, retries with backoff (503, 429 + Retry-After, dropped connections) and their bound,
// final 4xx answers, Events on the PVC (create, 409 -> patch count, missing PVC, server down), and the
// node topology watch (label changes, 410 Gone as an event and as an answer, server-side close).

import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { KubeClient } from '../../src/kube/client.js';
import type { Logger } from '../../src/log.js';
import { PvcEvents, pvcRefFrom } from '../../src/kube/events.js';
import { NodeTopology } from '../../src/kube/node-topology.js';
import { backoffMs, DEFAULT_RETRY, KubeApiError } from '../../src/kube/retry.js';
import { FakeApiServer } from '../support/fake-apiserver.js';

const FAST = { attempts: 4, baseMs: 5, maxMs: 20 };

function capture(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('kube client against a stand-in API server', () => {
  let api: FakeApiServer;
  let client: KubeClient;
  before(async () => {
    api = await new FakeApiServer().start();
    client = new KubeClient({ server: api.url, token: 'test-token' }, { component: 'controller', retry: FAST });
  });
  after(() => api.close());

  it('gets a PVC with the bearer token; a missing PVC is null', async () => {
    api.pvcs.set('apps/db', { uid: 'uid-1' });
    assert.deepEqual(await client.getPvc('apps', 'db'), { namespace: 'apps', name: 'db', uid: 'uid-1' });
    const req = api.requests.at(-1)!;
    assert.equal(req.path, '/api/v1/namespaces/apps/persistentvolumeclaims/db');
    assert.equal(req.headers.authorization, 'Bearer test-token');
    assert.equal(await client.getPvc('apps', 'nope'), null);
  });

  it('retries 503, 429 (Retry-After) and dropped connections, then succeeds', async () => {
    const route = 'GET /api/v1/namespaces/apps/persistentvolumeclaims/db';
    api.fail(route, { status: 503 }, { status: 429, retryAfter: 0 }, { drop: true });
    const before = api.requests.length;
    assert.equal((await client.getPvc('apps', 'db'))?.uid, 'uid-1');
    assert.equal(api.requests.length - before, 4);
  });

  it('gives up after the bounded number of attempts with the status and the call named', async () => {
    const route = 'GET /api/v1/namespaces/apps/persistentvolumeclaims/db';
    api.fail(route, { status: 500 }, { status: 500 }, { status: 500 }, { status: 500 }, { status: 500 });
    const before = api.requests.length;
    await assert.rejects(client.getPvc('apps', 'db'), (err: unknown) => {
      assert.ok(err instanceof KubeApiError);
      assert.equal(err.status, 500);
      assert.match(err.message, /get persistentvolumeclaims: HTTP 500: injected 500/);
      return true;
    });
    assert.equal(api.requests.length - before, FAST.attempts);
    api.fail(route); // leave the queue as it is (one 500 left over is consumed below)
    await client.getPvc('apps', 'db').catch(() => undefined);
  });

  it('does not retry a 403 (RBAC refusal): one request, the message from the Status', async () => {
    api.fail('GET /api/v1/nodes/n1', { status: 403 });
    const before = api.requests.length;
    const node = new KubeClient({ server: api.url }, { component: 'node', retry: FAST });
    await assert.rejects(node.getNode('n1'), /get nodes: HTTP 403/);
    assert.equal(api.requests.length - before, 1);
  });

  it('refuses a call src/kube/api-calls.ts does not declare for the component', async () => {
    // The controller never reads Nodes: not declared, so not made (and not granted by RBAC).
    await assert.rejects(client.getNode('n1'), /get nodes by the controller is not declared/);
  });

  it('backoff: full jitter, capped, Retry-After first', () => {
    assert.equal(
      backoffMs(DEFAULT_RETRY, 10, new Error('x'), () => 0.999999),
      DEFAULT_RETRY.maxMs - 1,
    );
    assert.equal(
      backoffMs(DEFAULT_RETRY, 0, new Error('x'), () => 0.5),
      100,
    );
    assert.equal(backoffMs(DEFAULT_RETRY, 0, new KubeApiError(429, 'slow down', 2)), 2000);
  });
});

describe('Events on the PVC', () => {
  let api: FakeApiServer;
  before(async () => {
    api = await new FakeApiServer().start();
    api.pvcs.set('apps/db', { uid: 'uid-db' });
  });
  after(() => api.close());

  it('finds the PVC from the provisioner parameters or the volume context', () => {
    assert.deepEqual(pvcRefFrom({ 'csi.storage.k8s.io/pvc/name': 'db', 'csi.storage.k8s.io/pvc/namespace': 'apps', fsType: 'xfs' }), {
      name: 'db',
      namespace: 'apps',
    });
    assert.deepEqual(pvcRefFrom({ pvcName: 'db', pvcNamespace: 'apps', targetIqn: 'iqn.x' }), { name: 'db', namespace: 'apps' });
    assert.equal(pvcRefFrom({ 'csi.storage.k8s.io/pvc/name': 'db' }), null);
    assert.equal(pvcRefFrom(undefined), null);
  });

  it('records an Event on the PVC, then counts repeats with a merge patch', async () => {
    const { logger } = capture();
    const t = new Date('2026-01-02T03:04:05Z');
    const events = new PvcEvents({
      client: new KubeClient({ server: api.url }, { component: 'node', retry: FAST }),
      component: 'lunar-node',
      host: 'worker-1',
      logger,
      now: () => t,
    });
    const msg = 'refused to format /dev/dm-3: it holds an xfs filesystem; Lunar never formats a volume that holds data';
    await events.record({ namespace: 'apps', name: 'db' }, 'VolumeHoldsData', msg);
    assert.equal(api.events.size, 1);
    const [key, ev] = [...api.events][0]!;
    assert.match(key, /^apps\/db\.[0-9a-f]{16}$/);
    assert.deepEqual(ev.involvedObject, { kind: 'PersistentVolumeClaim', apiVersion: 'v1', namespace: 'apps', name: 'db', uid: 'uid-db' });
    assert.equal(ev.type, 'Warning');
    assert.equal(ev.reason, 'VolumeHoldsData');
    assert.equal(ev.message, msg);
    assert.deepEqual(ev.source, { component: 'lunar-node', host: 'worker-1' });
    assert.equal(ev.count, 1);
    await events.record({ namespace: 'apps', name: 'db' }, 'VolumeHoldsData', msg);
    const patch = api.requests.at(-1)!;
    assert.equal(patch.method, 'PATCH');
    assert.equal(patch.headers['content-type'], 'application/merge-patch+json');
    assert.equal(ev.count, 2);
    assert.equal(ev.lastTimestamp, t.toISOString());
  });

  it('a create answered 409 (stored before a timeout) becomes a count patch', async () => {
    const { logger, lines } = capture();
    const client = new KubeClient({ server: api.url }, { component: 'controller', retry: FAST });
    const events = new PvcEvents({ client, component: 'lunar-controller', logger });
    api.dropAfterStoringNextEvent = true;
    const n = api.requests.length;
    await events.record({ namespace: 'apps', name: 'db' }, 'VolumeFormatted', 'formatted ext4 on /dev/dm-1 (a new, empty filesystem)');
    assert.deepEqual(
      api.requests.slice(n).map((r) => r.method),
      ['GET', 'POST', 'POST', 'PATCH'],
    );
    const created = [...api.events.values()].find((e) => e.reason === 'VolumeFormatted')!;
    assert.equal(created.type, 'Normal');
    assert.equal(created.count, 2, 'the retried create found it stored: counted, not duplicated');
    assert.deepEqual(
      lines.filter((l) => l.level === 40),
      [],
    );
  });

  it('a PVC that is gone gets no Event; an unreachable API server costs a warning, never an exception', async () => {
    const { logger, lines } = capture();
    const events = new PvcEvents({
      client: new KubeClient({ server: api.url }, { component: 'node', retry: FAST }),
      component: 'lunar-node',
      logger,
    });
    const before = api.events.size;
    await events.record({ namespace: 'apps', name: 'deleted' }, 'StagingFailed', 'x');
    assert.equal(api.events.size, before);
    const down = new PvcEvents({
      client: new KubeClient({ server: 'http://127.0.0.1:9' }, { component: 'node', retry: FAST }),
      component: 'lunar-node',
      logger,
    });
    await down.record({ namespace: 'apps', name: 'db' }, 'PathFailed', 'path 10.0.0.5:3260 via ens4 lost');
    const warn = lines.find((l) => l.msg === 'could not record Event on the PVC');
    assert.ok(warn, JSON.stringify(lines));
    assert.equal(warn.pvc, 'apps/db');
  });

  it('messages longer than the API server takes are cut to 1024 characters', async () => {
    const { logger } = capture();
    const events = new PvcEvents({
      client: new KubeClient({ server: api.url }, { component: 'node', retry: FAST }),
      component: 'lunar-node',
      logger,
    });
    await events.record({ namespace: 'apps', name: 'db' }, 'StagingFailed', 'y'.repeat(5000));
    const ev = [...api.events.values()].find((e) => e.reason === 'StagingFailed')!;
    assert.equal((ev.message as string).length, 1024);
  });
});

describe('node topology from the Node object, kept current by a watch', () => {
  it('reads the labels, follows changes, relists on 410 Gone (event and answer), rewatches after a close', async () => {
    const api = await new FakeApiServer().start();
    const { logger, lines } = capture();
    const client = new KubeClient({ server: api.url }, { component: 'node', retry: FAST });
    api.setNode('worker-1', { 'topology.iscsi.lunar.dev/zone': 'rack-1', other: 'x' });
    const topo = new NodeTopology({ client, nodeName: 'worker-1', keys: ['topology.iscsi.lunar.dev/zone'], logger });
    try {
      assert.deepEqual(await topo.start(), { 'topology.iscsi.lunar.dev/zone': 'rack-1' });
      await until(() => api.watchCount() === 1, 'the watch');
      const watchReq = api.requests.find((r) => r.query.get('watch') === 'true')!;
      assert.equal(watchReq.query.get('fieldSelector'), 'metadata.name=worker-1');

      api.setNode('worker-1', { 'topology.iscsi.lunar.dev/zone': 'rack-2' });
      await until(() => topo.segments()['topology.iscsi.lunar.dev/zone'] === 'rack-2', 'the label change');
      assert.ok(lines.some((l) => l.msg?.toString().startsWith('topology labels changed')));

      // The server compacts past our version and closes the watch: the rewatch gets 410 as an ERROR
      // event, Lunar lists again (GET node) and watches from the fresh version.
      const gets = (): number => api.requests.filter((r) => r.method === 'GET' && r.path === '/api/v1/nodes/worker-1').length;
      const before = gets();
      api.compactedBelow = 1000;
      api.closeWatches();
      api.setNode('worker-1', { 'topology.iscsi.lunar.dev/zone': 'rack-3' }); // not seen by any watch
      await until(() => gets() > before, 'the relist after 410');
      await until(() => topo.segments()['topology.iscsi.lunar.dev/zone'] === 'rack-3', 'the relisted labels');

      // Same with 410 as the HTTP answer to the watch request.
      api.goneAsEvent = false;
      api.compactedBelow = 10_000;
      const before2 = gets();
      api.closeWatches();
      await until(() => gets() > before2, 'the relist after HTTP 410');
      api.compactedBelow = 0;
      await until(() => api.watchCount() === 1, 'the watch from the new version');
      api.setNode('worker-1', { 'topology.iscsi.lunar.dev/zone': 'rack-4' });
      await until(() => topo.segments()['topology.iscsi.lunar.dev/zone'] === 'rack-4', 'changes after the relist');
    } finally {
      await topo.stop();
      await api.close();
    }
  });

  it('refuses to start when the node lacks a topology label, naming it', async () => {
    const api = await new FakeApiServer().start();
    const { logger } = capture();
    api.setNode('worker-2', {});
    const topo = new NodeTopology({
      client: new KubeClient({ server: api.url }, { component: 'node', retry: FAST }),
      nodeName: 'worker-2',
      keys: ['topology.iscsi.lunar.dev/zone'],
      logger,
    });
    await assert.rejects(topo.start(), /node worker-2 has no label topology\.iscsi\.lunar\.dev\/zone/);
    await api.close();
  });
});
