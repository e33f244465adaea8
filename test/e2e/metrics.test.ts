// `lunar serve --metrics-address` during real I/O: qemu-img (libiscsi) writes and reads a Lunar LU while
// /metrics is scraped; every scrape parses as Prometheus text (test/support/prom-text.ts, strict), the
// per-LU counters and the latency histogram move with the I/O and match what was moved, the session
// gauge sees the initiator logged in, CSI calls are counted by method and code, and free capacity is
// reported. The same server has --kubeconfig pointing at the stand-in API server: a CreateVolume refused
// for lack of space puts an InsufficientCapacity Event on the PVC, and a volume made for a PVC carries it
// in its volume_context (where the node plugin finds it).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { loadCsiPackage } from '../../src/csi/proto.js';
import type { Volume } from '../../src/volumes/types.js';
import { rpc } from '../support/csi.js';
import { FakeApiServer, kubeconfigFor } from '../support/fake-apiserver.js';
import { readyMetricsUrl, startLunarProcess, type LunarProcess } from '../support/lunar.js';
import { parsePrometheusText, sampleValue, type Family } from '../support/prom-text.js';

const exec = promisify(execFile);
const PORTAL = '127.0.0.1:13371';
const MiB = 1024 * 1024;
const SIZE = 32 * MiB;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('/metrics during e2e I/O, and Events on the PVC', () => {
  let work: string;
  let source: string;
  let api: FakeApiServer;
  let lunar: LunarProcess;
  let metricsUrl: string;
  let csiEndpoint: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'lunar-metrics-'));
    source = join(work, 'source.raw');
    const fh = await open(source, 'w');
    await fh.write(randomFillSync(Buffer.allocUnsafe(SIZE)), 0, SIZE, 0);
    await fh.close();
    api = await new FakeApiServer().start();
    api.pvcs.set('apps/huge', { uid: 'uid-huge' });
    api.pvcs.set('apps/db', { uid: 'uid-db' });
    const kubeconfig = join(work, 'kubeconfig');
    await writeFile(kubeconfig, kubeconfigFor(api.url));
    lunar = await startLunarProcess({
      portals: [PORTAL],
      args: ['--metrics-address', '127.0.0.1:0', '--csi-endpoint', 'tcp://127.0.0.1:0', '--kubeconfig', kubeconfig],
    });
    metricsUrl = await readyMetricsUrl(lunar);
    const c = /; CSI (tcp:\/\/\S+?)(;|\s|$)/.exec(lunar.output());
    assert.ok(c, `no CSI address in the ready line:\n${lunar.output()}`);
    csiEndpoint = c[1]!.replace(/^tcp:\/\//, '');
  });

  after(async () => {
    await lunar?.remove();
    await api?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function scrape(): Promise<Map<string, Family>> {
    const r = await fetch(metricsUrl);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    return parsePrometheusText(await r.text());
  }

  async function qemuImg(args: string[]): Promise<void> {
    await exec('qemu-img', args, { maxBuffer: 16 * MiB, timeout: 300_000 });
  }

  /** Runs fn while scraping every 25 ms; returns the scrapes taken during it (each one parsed). */
  async function scrapingDuring(fn: () => Promise<void>): Promise<Map<string, Family>[]> {
    const taken: Map<string, Family>[] = [];
    let done = false;
    const loop = (async () => {
      while (!done) {
        taken.push(await scrape());
        await sleep(25);
      }
    })();
    try {
      await fn();
    } finally {
      done = true;
      await loop;
    }
    return taken;
  }

  it('per-LU commands, bytes, latency and sessions follow qemu-img writing and reading the LU', async () => {
    const r = await lunar.cli(['volume', 'create', 'metered', '--size', '64MiB', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const v = JSON.parse(r.stdout) as Volume;
    const value = (f: Map<string, Family>, name: string, labels: Record<string, string> = {}): number =>
      sampleValue(f, name, { volume: v.id, ...labels }) ?? NaN;

    const idle = await scrape();
    assert.equal(value(idle, 'lunar_lu_commands_total', { op: 'write' }), 0);
    assert.equal(value(idle, 'lunar_lu_bytes_total', { direction: 'write' }), 0);
    assert.equal(value(idle, 'lunar_volume_sessions'), 0);

    const url = `iscsi://${PORTAL}/${v.iqn}/0`;
    const during = await scrapingDuring(() => qemuImg(['convert', '-n', '-f', 'raw', '-O', 'raw', '-t', 'none', source, url]));
    assert.ok(during.length > 0, 'scraped while qemu-img wrote');
    const written = during.map((f) => value(f, 'lunar_lu_bytes_total', { direction: 'write' }));
    for (let i = 1; i < written.length; i++) assert.ok(written[i]! >= written[i - 1]!, `counter went back: ${written.join(',')}`);
    const afterWrite = await scrape();
    assert.ok(value(afterWrite, 'lunar_lu_bytes_total', { direction: 'write' }) >= SIZE, 'every written byte counted');
    assert.ok(value(afterWrite, 'lunar_lu_commands_total', { op: 'write' }) >= SIZE / (2 * MiB), 'write commands counted');
    assert.ok(value(afterWrite, 'lunar_lu_commands_total', { op: 'flush' }) >= 1, 'qemu-img flushes at the end (SYNCHRONIZE CACHE)');
    assert.equal(value(afterWrite, 'lunar_lu_errors_total', { op: 'write' }), 0);

    const back = join(work, 'back.raw');
    const reading = await scrapingDuring(() => qemuImg(['convert', '-f', 'raw', '-O', 'raw', url, back]));
    const f = await scrape();
    assert.ok(value(f, 'lunar_lu_bytes_total', { direction: 'read' }) >= SIZE, 'every read byte counted');
    assert.ok(value(f, 'lunar_lu_commands_total', { op: 'read' }) > 0);
    // The histogram covers every command of the LU, whatever its kind.
    const commands = ['read', 'write', 'flush', 'unmap', 'other'].reduce((n, op) => n + value(f, 'lunar_lu_commands_total', { op }), 0);
    assert.equal(value(f, 'lunar_lu_command_duration_seconds_count'), commands);
    assert.equal(value(f, 'lunar_lu_command_duration_seconds_bucket', { le: '+Inf' }), commands);
    assert.ok(value(f, 'lunar_lu_command_duration_seconds_sum') > 0);
    // qemu-img stays logged in while it copies: some scrape saw its session.
    const sessions = [...during, ...reading].map((s) => value(s, 'lunar_volume_sessions'));
    assert.ok(Math.max(...sessions) >= 1, `sessions seen: ${sessions.join(',')}`);
    assert.equal(value(f, 'lunar_volume_sessions'), 0, 'qemu-img logged out');
    assert.ok((sampleValue(f, 'lunar_capacity_free_bytes') ?? 0) > 0);
    assert.ok((sampleValue(f, 'lunar_capacity_total_bytes') ?? 0) >= (sampleValue(f, 'lunar_capacity_free_bytes') ?? 0));
  });

  it('CSI calls by method and code; no space -> RESOURCE_EXHAUSTED and an InsufficientCapacity Event on the PVC', async () => {
    const pkg = loadCsiPackage();
    const controller = new pkg.Controller(csiEndpoint, grpc.credentials.createInsecure());
    try {
      const caps = [{ block: {}, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' } }];
      const made = await rpc<{ volume: { volume_context: Record<string, string> } }>(controller, 'CreateVolume', {
        name: 'pvc-db',
        capacity_range: { required_bytes: String(16 * MiB) },
        volume_capabilities: caps,
        parameters: { 'csi.storage.k8s.io/pvc/name': 'db', 'csi.storage.k8s.io/pvc/namespace': 'apps' },
      });
      assert.equal(made.volume.volume_context.pvcName, 'db');
      assert.equal(made.volume.volume_context.pvcNamespace, 'apps');
      // A volume recorded without its PVC (made before Lunar kept it) still matches the provisioner's
      // retry that carries one: same volume, no PVC in its context.
      const plain = { name: 'pvc-old', capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: caps };
      const first = await rpc<{ volume: { volume_id: string } }>(controller, 'CreateVolume', { ...plain, parameters: {} });
      const retried = await rpc<{ volume: { volume_id: string; volume_context: Record<string, string> } }>(controller, 'CreateVolume', {
        ...plain,
        parameters: { 'csi.storage.k8s.io/pvc/name': 'old', 'csi.storage.k8s.io/pvc/namespace': 'apps' },
      });
      assert.equal(retried.volume.volume_id, first.volume.volume_id);
      assert.equal(retried.volume.volume_context.pvcName, undefined);

      // A thick 60 TiB volume does not fit in the test machine's data directory.
      await assert.rejects(
        rpc(controller, 'CreateVolume', {
          name: 'pvc-huge',
          capacity_range: { required_bytes: String(60 * 1024 * 1024 * MiB) },
          volume_capabilities: caps,
          parameters: { thin: 'false', 'csi.storage.k8s.io/pvc/name': 'huge', 'csi.storage.k8s.io/pvc/namespace': 'apps' },
        }),
        (err: grpc.ServiceError) => err.code === grpc.status.RESOURCE_EXHAUSTED,
      );
      let event: Record<string, unknown> | undefined;
      for (let i = 0; i < 100 && !event; i++) {
        event = [...api.events.values()].find((e) => e.reason === 'InsufficientCapacity');
        if (!event) await sleep(50);
      }
      assert.ok(event, `no Event recorded; API requests: ${JSON.stringify(api.requests.map((q) => `${q.method} ${q.path}`))}`);
      assert.deepEqual(event.involvedObject, {
        kind: 'PersistentVolumeClaim',
        apiVersion: 'v1',
        namespace: 'apps',
        name: 'huge',
        uid: 'uid-huge',
      });
      assert.equal(event.type, 'Warning');
      assert.match(String(event.message), /volume pvc-huge .* was not created: not enough space .* Free space in Lunar's data directory/);
      assert.deepEqual((event.source as { component: string }).component, 'lunar-controller');
      assert.ok(
        api.requests.some((q) => q.headers.authorization === 'Bearer test-token'),
        "the kubeconfig's token is sent",
      );

      const f = await scrape();
      assert.equal(sampleValue(f, 'lunar_csi_calls_total', { service: 'Controller', method: 'CreateVolume', code: 'OK' }), 3);
      assert.equal(
        sampleValue(f, 'lunar_csi_calls_total', { service: 'Controller', method: 'CreateVolume', code: 'RESOURCE_EXHAUSTED' }),
        1,
      );
      assert.equal(sampleValue(f, 'lunar_csi_call_duration_seconds_count', { service: 'Controller', method: 'CreateVolume' }), 4);
    } finally {
      controller.close();
    }
  });
});
