// `lunar node` as a process over tcp://, with a host tree of its own (--host-root-dir on a temporary
// directory): Identity (no CONTROLLER_SERVICE; Probe not ready while iscsid's socket is absent, ready once
// it answers), NodeGetInfo's node_id from the tree's initiatorname.iscsi, NodeGetCapabilities, argument
// errors answered with the right code before anything runs on the host, one log line per call, and bad
// command lines refused; with --topology-keys and --kubeconfig (the stand-in API server) the segment from
// its Node's labels, and with --metrics-address a /metrics scrape with the CSI calls and node operations. The steps that need a kernel initiator run in the QEMU guest (test/guest).

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { after } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { loadCsiPackage } from '../../src/csi/proto.js';
import { rpc } from '../support/csi.js';
import { FakeApiServer, kubeconfigFor } from '../support/fake-apiserver.js';
import { parsePrometheusText, sampleValue } from '../support/prom-text.js';

const CLI = join(process.cwd(), 'dist', 'src', 'cli.js');
const dirs: string[] = [];
const children: ChildProcess[] = [];
const apis: FakeApiServer[] = [];
after(async () => {
  for (const c of children) c.kill('SIGKILL');
  for (const a of apis) await a.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface NodeProc {
  address: string;
  metrics: string | null;
  stderr: () => string;
  exited: Promise<number>;
}

function hostTree(initiator: string | null): string {
  const root = mkdtempSync(join(tmpdir(), 'lunar-node-host-'));
  dirs.push(root);
  mkdirSync(join(root, 'etc/iscsi'), { recursive: true });
  if (initiator !== null) writeFileSync(join(root, 'etc/iscsi/initiatorname.iscsi'), `## generated\nInitiatorName=${initiator}\n`);
  return root;
}

function startNode(args: string[]): Promise<NodeProc> {
  const child = spawn(process.execPath, [CLI, 'node', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LUNAR_LOG_LEVEL: 'info' },
  });
  children.push(child);
  let out = '';
  let err = '';
  const exited = new Promise<number>((r) => child.once('exit', (c) => r(c ?? 1)));
  return new Promise((resolve, reject) => {
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = / on (tcp:\/\/[^\s;]+)(?:; metrics http:\/\/(\S+)\/metrics)?\n/.exec(out);
      if (m) resolve({ address: m[1]!.replace('tcp://', ''), metrics: m[2] ?? null, stderr: () => err, exited });
    });
    void exited.then((c) => reject(new Error(`lunar node exited ${c}: ${err}`)));
  });
}

function clients(address: string): { identity: grpc.Client; node: grpc.Client } {
  const pkg = loadCsiPackage();
  return {
    identity: new pkg.Identity(address, grpc.credentials.createInsecure()),
    node: new pkg.Node(address, grpc.credentials.createInsecure()),
  };
}

async function codeOf(p: Promise<unknown>): Promise<number> {
  return p.then(
    () => grpc.status.OK,
    (e: unknown) => (e as grpc.ServiceError).code,
  );
}

test('lunar node over tcp://: Identity without CONTROLLER_SERVICE, Probe not ready without iscsid, NodeGetInfo, capabilities, argument errors', async () => {
  const root = hostTree('iqn.2024-01.io.e2e:guest');
  const state = join(root, 'state');
  const n = await startNode([
    '--endpoint',
    'tcp://127.0.0.1:0',
    '--node-name',
    'worker-1',
    '--host-root-dir',
    root,
    '--state-dir',
    state,
    '--iscsid-socket',
    `@lunar-e2e-absent-${process.pid}`,
  ]);
  const { identity, node } = clients(n.address);
  try {
    const info = await rpc<{ name: string }>(identity, 'GetPluginInfo');
    assert.equal(info.name, 'iscsi.lunar.dev');
    const caps = await rpc<{ capabilities: { service?: { type: string } }[] }>(identity, 'GetPluginCapabilities');
    assert.ok(!caps.capabilities.some((c) => c.service?.type === 'CONTROLLER_SERVICE'), JSON.stringify(caps));
    assert.ok(!caps.capabilities.some((c) => c.service?.type === 'VOLUME_ACCESSIBILITY_CONSTRAINTS'), 'no topology: not advertised');
    assert.equal(n.metrics, null, 'no /metrics unless asked');
    assert.deepEqual((await rpc<{ ready: { value: boolean } }>(identity, 'Probe')).ready, { value: false });

    const ni = await rpc<{ node_id: string; max_volumes_per_node: string }>(node, 'NodeGetInfo');
    assert.equal(ni.node_id, 'worker-1#iqn.2024-01.io.e2e:guest');
    const nc = await rpc<{ capabilities: { rpc: { type: string } }[] }>(node, 'NodeGetCapabilities');
    assert.deepEqual(
      nc.capabilities.map((c) => c.rpc.type),
      ['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME', 'VOLUME_CONDITION', 'SINGLE_NODE_MULTI_WRITER'],
    );

    const cap = { mount: { fs_type: 'ext4' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
    assert.equal(
      await codeOf(rpc(node, 'NodeStageVolume', { staging_target_path: '/s', volume_capability: cap, publish_context: { a: 'b' } })),
      grpc.status.INVALID_ARGUMENT,
    );
    assert.equal(
      await codeOf(rpc(node, 'NodeStageVolume', { volume_id: 'v', staging_target_path: '/s', volume_capability: cap })),
      grpc.status.INVALID_ARGUMENT,
    );
    assert.equal(
      await codeOf(rpc(node, 'NodeStageVolume', { volume_id: 'v', staging_target_path: '/s', publish_context: { targetIqn: 'x' } })),
      grpc.status.INVALID_ARGUMENT,
    );
    assert.equal(
      await codeOf(
        rpc(node, 'NodePublishVolume', { volume_id: 'v', staging_target_path: '/s', target_path: 'rel', volume_capability: cap }),
      ),
      grpc.status.INVALID_ARGUMENT,
    );
    assert.equal(await codeOf(rpc(node, 'NodeUnstageVolume', { volume_id: 'v' })), grpc.status.INVALID_ARGUMENT);
    assert.equal(await codeOf(rpc(node, 'NodeGetVolumeStats', { volume_id: 'v', volume_path: '/nowhere' })), grpc.status.NOT_FOUND);
    assert.equal(
      await codeOf(
        rpc(node, 'NodePublishVolume', { volume_id: 'v', staging_target_path: '/s', target_path: '/t', volume_capability: cap }),
      ),
      grpc.status.FAILED_PRECONDITION,
    );
    // Unstage of a volume this node never staged (and nothing mounted there): OK, idempotent.
    assert.equal(
      await codeOf(rpc(node, 'NodeUnstageVolume', { volume_id: 'v', staging_target_path: join(root, 'never-staged') })),
      grpc.status.OK,
    );

    // One log line per call, with the volume id and the duration.
    await new Promise((r) => setTimeout(r, 100));
    const lines = n
      .stderr()
      .split('\n')
      .filter((l) => l.includes('"rpc":"NodeGetVolumeStats"') || l.includes('"rpc":"NodeUnstageVolume"'));
    assert.ok(lines.length >= 2, n.stderr());
    for (const l of lines) {
      const o = JSON.parse(l) as Record<string, unknown>;
      assert.equal(o.volumeId, 'v');
      assert.equal(typeof o.durationMs, 'number');
    }
    assert.match(n.stderr(), /"endpoint":"tcp:\/\/127\.0\.0\.1:\d+".*listening/);
  } finally {
    identity.close();
    node.close();
  }
});

test('Probe is ready while iscsid answers on its socket; topology advertised when configured', async () => {
  const name = `lunar-e2e-iscsid-${process.pid}`;
  const fakeIscsid = net.createServer((s) => s.end());
  await new Promise<void>((r) => fakeIscsid.listen({ path: `\0${name}` }, r));
  const root = hostTree('iqn.2024-01.io.e2e:guest');
  const n = await startNode([
    '--endpoint',
    'tcp://127.0.0.1:0',
    '--node-name',
    'worker-2',
    '--host-root-dir',
    root,
    '--state-dir',
    join(root, 'state'),
    '--iscsid-socket',
    `@${name}`,
    '--topology',
    'topology.lunar.dev/zone=z1',
    '--max-volumes',
    '32',
  ]);
  const { identity, node } = clients(n.address);
  try {
    assert.deepEqual((await rpc<{ ready: { value: boolean } }>(identity, 'Probe')).ready, { value: true });
    const caps = await rpc<{ capabilities: { service?: { type: string } }[] }>(identity, 'GetPluginCapabilities');
    assert.ok(caps.capabilities.some((c) => c.service?.type === 'VOLUME_ACCESSIBILITY_CONSTRAINTS'));
    const ni = await rpc<{ max_volumes_per_node: string; accessible_topology: { segments: Record<string, string> } }>(node, 'NodeGetInfo');
    assert.equal(ni.max_volumes_per_node, '32');
    assert.deepEqual(ni.accessible_topology.segments, { 'topology.lunar.dev/zone': 'z1' });
  } finally {
    identity.close();
    node.close();
    fakeIscsid.close();
  }
});

function scrape(address: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get(`http://${address}/metrics`, { agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => (body += d));
        res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`HTTP ${res.statusCode}`))));
      })
      .on('error', reject);
  });
}

test('--topology-keys from the Node object through --kubeconfig; --metrics-address serves CSI calls and node operations', async () => {
  const api = await new FakeApiServer().start();
  apis.push(api);
  api.setNode('worker-4', { 'topology.lunar.dev/zone': 'rack-7', 'kubernetes.io/hostname': 'worker-4', other: 'x' });
  const root = hostTree('iqn.2024-01.io.e2e:guest');
  const kubeconfig = join(root, 'kubeconfig');
  writeFileSync(kubeconfig, kubeconfigFor(api.url));
  const n = await startNode([
    '--endpoint',
    'tcp://127.0.0.1:0',
    '--node-name',
    'worker-4',
    '--host-root-dir',
    root,
    '--state-dir',
    join(root, 'state'),
    '--iscsid-socket',
    `@lunar-e2e-absent-${process.pid}`,
    '--topology-keys',
    'topology.lunar.dev/zone,kubernetes.io/hostname',
    '--kubeconfig',
    kubeconfig,
    '--metrics-address',
    '127.0.0.1:0',
  ]);
  const { identity, node } = clients(n.address);
  try {
    const caps = await rpc<{ capabilities: { service?: { type: string } }[] }>(identity, 'GetPluginCapabilities');
    assert.ok(
      caps.capabilities.some((c) => c.service?.type === 'VOLUME_ACCESSIBILITY_CONSTRAINTS'),
      JSON.stringify(caps),
    );
    const ni = await rpc<{ accessible_topology: { segments: Record<string, string> } }>(node, 'NodeGetInfo');
    assert.deepEqual(ni.accessible_topology.segments, { 'topology.lunar.dev/zone': 'rack-7', 'kubernetes.io/hostname': 'worker-4' });
    assert.ok(
      api.requests.some((r) => r.method === 'GET' && r.path === '/api/v1/nodes/worker-4'),
      'the Node object was read from the API server',
    );
    assert.ok(n.metrics, 'metrics address printed');
    await rpc(node, 'NodeUnstageVolume', { volume_id: 'v', staging_target_path: join(root, 'never-staged') });
    await codeOf(rpc(node, 'NodeGetVolumeStats', { volume_id: 'v', volume_path: '/nowhere' }));
    const m = parsePrometheusText(await scrape(n.metrics));
    assert.equal(sampleValue(m, 'lunar_csi_calls_total', { service: 'Node', method: 'NodeGetInfo', code: 'OK' }), 1);
    assert.equal(sampleValue(m, 'lunar_csi_calls_total', { service: 'Node', method: 'NodeGetVolumeStats', code: 'NOT_FOUND' }), 1);
    assert.equal(sampleValue(m, 'lunar_csi_calls_total', { service: 'Identity', method: 'GetPluginCapabilities', code: 'OK' }), 1);
    assert.equal(sampleValue(m, 'lunar_node_operation_duration_seconds_count', { operation: 'unstage', result: 'ok' }), 1);
    assert.equal(sampleValue(m, 'lunar_node_operation_duration_seconds_count', { operation: 'stage' }), undefined);
    assert.ok(m.has('lunar_volume_paths'), 'paths-by-state family present');
  } finally {
    identity.close();
    node.close();
  }
});

test('--topology-keys naming a label the Node lacks: lunar node refuses to start, naming it', async () => {
  const api = await new FakeApiServer().start();
  apis.push(api);
  api.setNode('worker-5', { 'kubernetes.io/hostname': 'worker-5' });
  const root = hostTree('iqn.2024-01.io.e2e:guest');
  const kubeconfig = join(root, 'kubeconfig');
  writeFileSync(
    kubeconfig,
    `apiVersion: v1\nkind: Config\nclusters:\n  - name: t\n    cluster: { server: "${api.url}", insecure-skip-tls-verify: true }\nusers:\n  - name: t\n    user: {}\ncontexts:\n  - name: t\n    context: { cluster: t, user: t }\ncurrent-context: t\n`,
  );
  const child = spawn(
    process.execPath,
    [CLI, 'node', '--endpoint', 'tcp://127.0.0.1:0', '--node-name', 'worker-5', '--host-root-dir', root, '--state-dir', join(root, 's')],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LUNAR_TOPOLOGY_KEYS: 'topology.lunar.dev/zone', LUNAR_KUBECONFIG: kubeconfig },
    },
  );
  children.push(child);
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const code = await new Promise<number>((r) => child.once('exit', (c) => r(c ?? 1)));
  assert.notEqual(code, 0);
  assert.match(err, /no label topology\.lunar\.dev\/zone/);
});

test('NodeGetInfo without /etc/iscsi/initiatorname.iscsi: FAILED_PRECONDITION saying what to install', async () => {
  const root = hostTree(null);
  const n = await startNode([
    '--endpoint',
    'tcp://127.0.0.1:0',
    '--node-name',
    'worker-3',
    '--host-root-dir',
    root,
    '--state-dir',
    join(root, 'state'),
  ]);
  const { identity, node } = clients(n.address);
  try {
    await assert.rejects(rpc(node, 'NodeGetInfo'), (e: grpc.ServiceError) => {
      assert.equal(e.code, grpc.status.FAILED_PRECONDITION);
      assert.match(e.details, /initiatorname\.iscsi is missing.*open-iscsi/);
      return true;
    });
  } finally {
    identity.close();
    node.close();
  }
});

test('bad command lines exit 2 with what to fix', async () => {
  const runCli = (args: string[], env: Record<string, string> = {}): Promise<{ code: number; err: string }> =>
    new Promise((resolve) => {
      const env0: Record<string, string | undefined> = { ...process.env, ...env };
      delete env0.CSI_ENDPOINT;
      delete env0.NODE_NAME;
      const c = spawn(process.execPath, [CLI, 'node', ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...env0, ...env } });
      let err = '';
      c.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
      c.once('exit', (code) => resolve({ code: code ?? 1, err }));
    });
  let r = await runCli(['--node-name', 'n']);
  assert.equal(r.code, 2);
  assert.match(r.err, /--endpoint \(or CSI_ENDPOINT\) is required/);
  r = await runCli(['--endpoint', 'tcp://127.0.0.1:0']);
  assert.equal(r.code, 2);
  assert.match(r.err, /--node-name/);
  r = await runCli(['--endpoint', 'tcp://127.0.0.1:0', '--node-name', 'n', '--host-exec', 'chroot']);
  assert.equal(r.code, 2);
  assert.match(r.err, /direct or nsenter/);
  // multipath's own "queue" and "fail" are taken (with queue, unstage disables queueing before the flush).
  r = await runCli(['--endpoint', 'tcp://127.0.0.1:0', '--node-name', 'n', '--no-path-retry', 'sometimes']);
  assert.equal(r.code, 2);
  assert.match(r.err, /whole number .*, queue or fail/);
  r = await runCli(['--endpoint', 'tcp://127.0.0.1:0', '--node-name', 'n', '--metrics-address', '9874']);
  assert.equal(r.code, 2);
  assert.match(r.err, /--metrics-address: .*expected :PORT, HOST:PORT or none/);
  r = await runCli(['--endpoint', 'tcp://127.0.0.1:0', '--node-name', 'n', '--topology-keys', 'zone', '--kubeconfig', 'none']);
  assert.equal(r.code, 2);
  assert.match(r.err, /--topology-keys needs the Kubernetes API/);
  r = await runCli(['--endpoint', 'tcp://127.0.0.1:0', '--node-name', 'n', '--topology-keys', 'bad key'], { LUNAR_KUBECONFIG: '/x' });
  assert.equal(r.code, 2);
  assert.match(r.err, /not a Kubernetes label key/);
  r = await runCli([], { CSI_ENDPOINT: 'bogus://x', NODE_NAME: 'n' });
  assert.equal(r.code, 1);
  assert.match(r.err, /use unix:\/\/\/path\/csi.sock or tcp:\/\/host:port/);
});
