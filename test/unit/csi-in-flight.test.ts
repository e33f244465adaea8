// src/csi/in-flight.ts, the per-object guard of a CSI service, on its own and behind a real grpc-js
// server (startCsiPluginServer serving Identity + a Node service with the wait policy on a unix socket):
// a second call on a key waits for the first, a call whose deadline comes first is answered ABORTED, and
// a first call that fails or throws releases its key.
import assert from 'node:assert/strict';
import { after, before, describe, it, test } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { CsiError } from '../../src/csi/errors.js';
import { inFlightGuard, waitUntilFor } from '../../src/csi/in-flight.js';
import { startCsiPluginServer, type CsiServer } from '../../src/csi/plugin-server.js';
import { loadCsiPackage } from '../../src/csi/proto.js';
import type { GetPluginCapabilitiesResponse } from '../../src/csi/types.js';
import { rpc } from '../support/csi.js';

type Staging = (req: object, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null) => void) => void;

const isCode = (code: grpc.status) => (e: unknown) => e instanceof CsiError && e.code === code;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A promise and the functions that settle it. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: Error) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

test('waitUntilFor: no deadline = no limit; else a tenth of the time left before it, at most 1 s', () => {
  assert.equal(waitUntilFor(Infinity, 1000), Infinity);
  assert.equal(waitUntilFor(1000 + 500, 1000), 1000 + 450);
  assert.equal(waitUntilFor(1000 + 60_000, 1000), 1000 + 59_000);
  assert.equal(waitUntilFor(500, 1000), 1000, 'a deadline already past gives up at once');
});

describe('fail-fast guard', () => {
  it('answers ABORTED while a key is held, naming the object; free again once released', async () => {
    const g = inFlightGuard('fail-fast');
    const release = await g.acquire(['volume:v1', 'volume name:a'], { waitUntil: Infinity });
    await assert.rejects(g.acquire(['volume:v1'], { waitUntil: Infinity }), (e: unknown) => {
      assert.ok(isCode(grpc.status.ABORTED)(e));
      assert.match((e as Error).message, /an operation on volume v1 is already in progress; retry after it completes/);
      return true;
    });
    (await g.acquire(['volume:v2'], { waitUntil: Infinity }))();
    release();
    release(); // a second release changes nothing
    assert.equal(g.isHeld('volume:v1'), false);
    (await g.acquire(['volume:v1'], { waitUntil: Infinity }))();
  });
});

describe('wait guard', () => {
  it('a second call waits for the first; waiters are served in arrival order', async () => {
    const g = inFlightGuard('wait');
    const order: string[] = [];
    const first = await g.acquire(['volume:v1'], { waitUntil: Infinity });
    const second = g.acquire(['volume:v1'], { waitUntil: Infinity }).then((r) => {
      order.push('second');
      return r;
    });
    const third = g.acquire(['volume:v1'], { waitUntil: Infinity }).then((r) => {
      order.push('third');
      return r;
    });
    await sleep(20);
    assert.deepEqual(order, [], 'nobody gets the key while the first holds it');
    first();
    (await second)();
    (await third)();
    assert.deepEqual(order, ['second', 'third']);
    assert.equal(g.isHeld('volume:v1'), false);
  });

  it('a call still waiting when its limit comes is answered ABORTED and leaves the queue', async () => {
    const g = inFlightGuard('wait');
    const first = await g.acquire(['volume:v1'], { waitUntil: Infinity });
    const t0 = Date.now();
    await assert.rejects(g.acquire(['volume:v1'], { waitUntil: Date.now() + 80 }), (e: unknown) => {
      assert.ok(isCode(grpc.status.ABORTED)(e));
      assert.match((e as Error).message, /an operation on volume v1 is still in progress after waiting \d+ ms/);
      return true;
    });
    assert.ok(Date.now() - t0 >= 70, 'it waited until its limit');
    assert.equal(g.isHeld('volume:v1'), true, 'the first call still holds its key');
    first();
    assert.equal(g.isHeld('volume:v1'), false, 'the timed-out waiter does not take the key afterwards');
  });

  it('keys taken before a timeout on a later key are released', async () => {
    const g = inFlightGuard('wait');
    const holdB = await g.acquire(['snapshot:b'], { waitUntil: Infinity });
    await assert.rejects(g.acquire(['volume:a', 'snapshot:b'], { waitUntil: Date.now() + 50 }), isCode(grpc.status.ABORTED));
    assert.equal(g.isHeld('volume:a'), false);
    holdB();
  });

  it('a cancelled call stops waiting with CANCELLED', async () => {
    const g = inFlightGuard('wait');
    const first = await g.acquire(['volume:v1'], { waitUntil: Infinity });
    const ac = new AbortController();
    const waiting = g.acquire(['volume:v1'], { waitUntil: Infinity, signal: ac.signal });
    ac.abort();
    await assert.rejects(waiting, isCode(grpc.status.CANCELLED));
    first();
    assert.equal(g.isHeld('volume:v1'), false);
  });
});

describe('a node-only plugin server with the wait policy', () => {
  const pkg = loadCsiPackage();
  let dir: string;
  let server: CsiServer;
  let node: grpc.Client;
  let identity: grpc.Client;
  let controller: grpc.Client;
  /** What NodeStageVolume does next, per volume id: a function the test sets. */
  const behaviour = new Map<string, () => Promise<object>>();
  const log: string[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lunar-inflight-'));
    server = await startCsiPluginServer({
      endpoint: `unix://${join(dir, 'csi.sock')}`,
      pluginName: 'iscsi.lunar.dev',
      version: '0.0.0-test',
      ready: () => true,
      logger: pino({ level: 'silent' }),
      services: [
        {
          name: 'Node',
          inFlight: 'wait',
          methods: (rpcWrap) => ({
            NodeStageVolume: rpcWrap('NodeStageVolume', {
              call: (r: { volume_id: string }) => {
                log.push(`start ${r.volume_id}`);
                const b = behaviour.get(r.volume_id);
                return b ? b() : Promise.resolve({});
              },
              locks: (r) => [`volume:${r.volume_id}`],
              ids: (r) => ({ volumeId: r.volume_id }),
              needsReady: true,
            }),
          }),
        },
      ],
    });
    const creds = grpc.credentials.createInsecure();
    node = new pkg.Node(server.address, creds);
    identity = new pkg.Identity(server.address, creds);
    controller = new pkg.Controller(server.address, creds);
  });

  after(async () => {
    node.close();
    identity.close();
    controller.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** Resolves once the server has started NodeStageVolume on volumeId `times` times in all. */
  async function started(volumeId: string, times = 1): Promise<void> {
    while (log.filter((l) => l === `start ${volumeId}`).length < times) await sleep(5);
  }

  /** NodeStageVolume with a deadline; resolves with the gRPC status code. */
  function stage(volumeId: string, deadlineMs: number): Promise<grpc.status> {
    return new Promise((resolve) => {
      const fn = (node as unknown as { NodeStageVolume: Staging }).NodeStageVolume;
      fn.call(node, { volume_id: volumeId }, { deadline: Date.now() + deadlineMs }, (err: grpc.ServiceError | null) => {
        resolve(err ? err.code : grpc.status.OK);
      });
    });
  }

  it('Identity advertises no CONTROLLER_SERVICE and the Controller service is not served', async () => {
    const caps = await rpc<GetPluginCapabilitiesResponse>(identity, 'GetPluginCapabilities');
    assert.deepEqual(caps.capabilities, []);
    await assert.rejects(rpc(controller, 'ListVolumes', {}), (e: unknown) => (e as grpc.ServiceError).code === grpc.status.UNIMPLEMENTED);
  });

  it('a second call on a volume waits and then runs; one whose deadline comes first gets ABORTED', async () => {
    const gate = deferred<object>();
    behaviour.set('v1', () => gate.promise);
    log.length = 0;
    const first = stage('v1', 20_000);
    await started('v1');
    behaviour.delete('v1');
    const second = stage('v1', 20_000);
    const impatient = stage('v1', 1500);
    const other = await stage('v2', 5000);
    assert.equal(other, grpc.status.OK, 'another volume is not held up');
    assert.equal(await impatient, grpc.status.ABORTED, 'ABORTED reaches the caller before its deadline');
    assert.deepEqual(log, ['start v1', 'start v2'], 'the waiting calls did not run');
    gate.resolve({});
    assert.equal(await first, grpc.status.OK);
    assert.equal(await second, grpc.status.OK);
    assert.deepEqual(log, ['start v1', 'start v2', 'start v1']);
  });

  it('a first call that fails or throws releases the volume', async () => {
    const gate = deferred<object>();
    behaviour.set('v3', () => gate.promise);
    const failing = stage('v3', 20_000);
    await started('v3');
    behaviour.set('v3', () => {
      throw new CsiError(grpc.status.FAILED_PRECONDITION, 'thrown by the second call');
    });
    const waiting = stage('v3', 20_000);
    gate.reject(new CsiError(grpc.status.INTERNAL, 'the first call crashed'));
    assert.equal(await failing, grpc.status.INTERNAL);
    assert.equal(await waiting, grpc.status.FAILED_PRECONDITION, 'the waiter ran once the first call failed');
    behaviour.delete('v3');
    assert.equal(await stage('v3', 2000), grpc.status.OK, 'a call that threw released the volume too');
  });
});
