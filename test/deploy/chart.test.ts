// charts/lunar through Helm's template engine (test/chart/render.go): renders with the defaults and with
// each documented override file (charts/lunar/ci/*-values.yaml), every object passes the Kubernetes
// OpenAPI schemas with strict field validation (CRD kinds: crd-checks.ts), bad values are refused by
// values.schema.json with a message naming the key, and NOTES.txt renders.

import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CHART_DIR, CRD_APIS, objectKey, renderChart, renderChartRaw, ROOT, type K8sObject, type Rendered } from '../support/chart.js';
import { validateObject } from '../support/k8s-validate.js';

const ALL_APIS = [CRD_APIS.snapshot, CRD_APIS.cdi, CRD_APIS.monitoring];
const OVERRIDES = readdirSync(join(CHART_DIR, 'ci'))
  .filter((f) => f.endsWith('-values.yaml'))
  .sort();

function kinds(manifests: readonly Rendered[]): string[] {
  return manifests.map((m) => objectKey(m.object)).sort();
}

function find(manifests: readonly Rendered[], kind: string, name?: string): K8sObject {
  const o = manifests.find((m) => m.object.kind === kind && (name === undefined || m.object.metadata.name === name));
  assert.ok(o, `no ${kind}${name ? ` ${name}` : ''} rendered`);
  return o.object;
}

interface Container {
  name: string;
  args?: string[];
  env?: { name: string; value?: string }[];
}
function podContainers(o: K8sObject): Container[] {
  const spec = o.spec as { template: { spec: { containers: Container[] } } };
  return spec.template.spec.containers;
}

describe('chart: render with defaults', () => {
  const { manifests, notes } = renderChart({ apiVersions: ALL_APIS });

  it('renders every object the install needs', () => {
    const k = kinds(manifests);
    for (const want of [
      'CSIDriver//iscsi.lunar.dev',
      'StatefulSet/lunar/lunar-controller',
      'DaemonSet/lunar/lunar-node',
      'StorageClass//lunar-ext4',
      'StorageClass//lunar-xfs',
      'StorageClass//lunar-block-rwx',
      'VolumeSnapshotClass//lunar-snapshots',
      'StorageProfile//lunar-block-rwx',
      'ServiceAccount/lunar/lunar-controller',
      'ServiceAccount/lunar/lunar-node',
      'Pod/lunar/lunar-test',
      'PersistentVolumeClaim/lunar/lunar-test',
    ]) {
      assert.ok(k.includes(want), `${want} missing from ${k.join(', ')}`);
    }
    assert.ok(!k.some((x) => x.startsWith('Namespace/')), 'Helm creates the namespace (--create-namespace), not the chart by default');
    assert.ok(!k.some((x) => x.startsWith('ServiceMonitor/')), 'ServiceMonitor is off by default');
  });

  it('every object passes the Kubernetes schemas (strict: no unknown field)', () => {
    const problems = manifests.flatMap((m) => validateObject(m.object).map((p) => `${m.source}: ${p}`));
    assert.deepEqual(problems, []);
  });

  it('the validation itself refuses a typo, a wrong type and an unknown kind', () => {
    const ds = structuredClone(find(manifests, 'DaemonSet')) as K8sObject & {
      spec: { template: { spec: { containers: { volumeMounts: Record<string, unknown>[] }[]; hostPID: unknown } } };
    };
    const mount = ds.spec.template.spec.containers[0]!.volumeMounts[1]!;
    mount.mountPropogation = mount.mountPropagation;
    delete mount.mountPropagation;
    ds.spec.template.spec.hostPID = 'yes';
    const problems = validateObject(ds).join('\n');
    assert.match(problems, /volumeMounts\[1\]\.mountPropogation: unknown field/);
    assert.match(problems, /hostPID must be boolean/);
    assert.match(
      validateObject({ apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'w' } }).join(),
      /not a known Kubernetes kind/,
    );
    const vsc = structuredClone(find(manifests, 'VolumeSnapshotClass'));
    vsc.deletionPolicy = 'Keep';
    vsc.parameter = {};
    assert.deepEqual(validateObject(vsc), [
      'VolumeSnapshotClass/lunar-snapshots: .deletionPolicy: must be one of Delete, Retain (is "Keep")',
      'VolumeSnapshotClass/lunar-snapshots: .parameter: unknown field (known: apiVersion, kind, metadata, driver, deletionPolicy, parameters)',
    ]);
  });

  it('no StorageClass is the default class unless asked', () => {
    for (const m of manifests.filter((x) => x.object.kind === 'StorageClass')) {
      assert.equal(m.object.metadata.annotations?.['storageclass.kubernetes.io/is-default-class'], 'false', m.object.metadata.name);
    }
  });

  it('binds volumes immediately without topology (the target is reachable from every node)', () => {
    for (const m of manifests.filter((x) => x.object.kind === 'StorageClass')) {
      assert.equal(m.object.volumeBindingMode, 'Immediate', m.object.metadata.name);
      assert.equal(m.object.allowedTopologies, undefined);
    }
  });

  it('NOTES.txt tells how to check the install', () => {
    assert.match(notes, /kubectl label node <storage-node> lunar\.dev\/storage-node=true/);
    assert.match(notes, /helm test lunar -n lunar/);
    assert.match(notes, /lunar status/);
    assert.match(notes, /kubectl get csinode/);
    assert.doesNotMatch(notes, /<no value>|map\[/);
  });

  it('without the CRDs in the cluster, the CRD-backed objects are left out', () => {
    const bare = renderChart();
    const k = kinds(bare.manifests);
    assert.ok(!k.some((x) => x.startsWith('VolumeSnapshotClass/') || x.startsWith('StorageProfile/')), k.join(', '));
  });
});

describe('chart: documented overrides (charts/lunar/ci/*-values.yaml)', () => {
  it('has override files', () => assert.ok(OVERRIDES.length >= 5, OVERRIDES.join(', ')));

  for (const file of OVERRIDES) {
    it(`${file} renders and validates`, () => {
      const { manifests } = renderChart({ values: [join(CHART_DIR, 'ci', file)], apiVersions: ALL_APIS });
      const problems = manifests.flatMap((m) => validateObject(m.object).map((p) => `${m.source}: ${p}`));
      assert.deepEqual(problems, []);
    });
  }

  it('multipath: one --portal per portal, one --iface per NIC, mutual CHAP, discovery CHAP from a Secret', () => {
    const { manifests } = renderChart({ values: [join(CHART_DIR, 'ci', 'multipath-values.yaml')] });
    const lunar = podContainers(find(manifests, 'StatefulSet')).find((c) => c.name === 'lunar')!;
    assert.deepEqual(
      lunar.args?.filter((_, i, a) => a[i - 1] === '--portal'),
      ['10.0.0.5:3260', '10.0.1.5:3260'],
    );
    const chapEnv = lunar.env?.find((e) => e.name === 'LUNAR_DISCOVERY_CHAP') as
      { valueFrom?: { secretKeyRef?: { name: string; key: string } } } | undefined;
    assert.deepEqual(chapEnv?.valueFrom?.secretKeyRef, { name: 'lunar-discovery-chap', key: 'credentials' });
    assert.ok(!(lunar.args ?? []).some((a) => a.includes('discovery-chap')), 'secrets never on the command line');
    const node = podContainers(find(manifests, 'DaemonSet')).find((c) => c.name === 'lunar-node')!;
    assert.deepEqual(
      node.args?.filter((_, i, a) => a[i - 1] === '--iface'),
      ['ens4', 'ens5'],
    );
    assert.equal(node.args?.[(node.args ?? []).indexOf('--no-path-retry') + 1], 'queue');
    for (const m of manifests.filter((x) => x.object.kind === 'StorageClass')) {
      assert.equal((m.object.parameters as Record<string, string>).chap, 'mutual');
    }
  });

  it('topology: WaitForFirstConsumer, allowedTopologies, the provisioner Topology gate, Lunar told the segment', () => {
    const { manifests } = renderChart({ values: [join(CHART_DIR, 'ci', 'topology-values.yaml')] });
    for (const m of manifests.filter((x) => x.object.kind === 'StorageClass')) {
      assert.equal(m.object.volumeBindingMode, 'WaitForFirstConsumer');
      assert.deepEqual(m.object.allowedTopologies, [
        { matchLabelExpressions: [{ key: 'topology.iscsi.lunar.dev/zone', values: ['rack-1'] }] },
      ]);
    }
    const containers = podContainers(find(manifests, 'StatefulSet'));
    assert.ok(containers.find((c) => c.name === 'csi-provisioner')?.args?.includes('--feature-gates=Topology=true'));
    assert.equal(
      containers.find((c) => c.name === 'lunar')?.env?.find((e) => e.name === 'LUNAR_TOPOLOGY')?.value,
      'topology.iscsi.lunar.dev/zone=rack-1',
    );
    const node = podContainers(find(manifests, 'DaemonSet')).find((c) => c.name === 'lunar-node')!;
    assert.equal(node.env?.find((e) => e.name === 'LUNAR_TOPOLOGY_KEYS')?.value, 'topology.iscsi.lunar.dev/zone');
  });

  it('local PV: a Retain PV pinned to the node, claimed by the StatefulSet; root needs no init container', () => {
    const { manifests } = renderChart({ values: [join(CHART_DIR, 'ci', 'local-pv-values.yaml')] });
    const pv = find(manifests, 'PersistentVolume');
    const spec = pv.spec as { persistentVolumeReclaimPolicy: string; local: { path: string }; nodeAffinity: unknown };
    assert.equal(spec.persistentVolumeReclaimPolicy, 'Retain');
    assert.equal(spec.local.path, '/mnt/lunar');
    assert.match(JSON.stringify(spec.nodeAffinity), /"storage-1"/);
    const sts = find(manifests, 'StatefulSet').spec as {
      volumeClaimTemplates: { spec: { volumeName: string } }[];
      template: { spec: { initContainers?: unknown[]; volumes: { name: string }[] } };
    };
    assert.equal(sts.volumeClaimTemplates[0]?.spec.volumeName, pv.metadata.name);
    assert.equal(sts.template.spec.initContainers, undefined);
    assert.ok(!sts.template.spec.volumes.some((v) => v.name === 'data'), 'data comes from the claim template');
  });

  it('monitoring: a ServiceMonitor selecting both metrics Services, on the configured ports', () => {
    const { manifests } = renderChart({ values: [join(CHART_DIR, 'ci', 'monitoring-values.yaml')], apiVersions: ALL_APIS });
    const sm = find(manifests, 'ServiceMonitor');
    assert.equal(sm.metadata.labels?.release, 'prometheus');
    const ports = manifests
      .filter((m) => m.object.kind === 'Service')
      .flatMap((m) =>
        (m.object.spec as { ports: { name: string; port: number }[] }).ports.filter((p) => p.name === 'metrics').map((p) => p.port),
      )
      .sort();
    assert.deepEqual(ports, [19873, 19874]);
  });

  it('minimal: only the classes asked for, the default annotation where asked, no metrics ports', () => {
    const { manifests } = renderChart({ values: [join(CHART_DIR, 'ci', 'minimal-values.yaml')], apiVersions: ALL_APIS });
    const classes = manifests.filter((m) => m.object.kind === 'StorageClass');
    assert.deepEqual(
      classes.map((m) => m.object.metadata.name),
      ['lunar-ext4'],
    );
    assert.equal(classes[0]?.object.metadata.annotations?.['storageclass.kubernetes.io/is-default-class'], 'true');
    assert.equal(classes[0].object.reclaimPolicy, 'Retain');
    assert.ok(!kinds(manifests).some((k) => /^(VolumeSnapshotClass|StorageProfile|ServiceMonitor)\//.test(k)));
    const ds = find(manifests, 'DaemonSet');
    assert.match(JSON.stringify(ds), /"--kubelet-registration-path=\/var\/lib\/k0s\/kubelet\/plugins\/iscsi\.lunar\.dev\/csi\.sock"/);
    assert.doesNotMatch(JSON.stringify(manifests), /"metrics"/);
  });
});

describe('chart: values.schema.json refuses bad values, naming the key', () => {
  const cases: [string, RegExp][] = [
    ['port-string.yaml', /controller\.iscsiPort: Invalid type\. Expected: integer, given: string/],
    ['unknown-top.yaml', /- storageClass: Additional property storageClass is not allowed/],
    ['unknown-nested.yaml', /- node\.iface: Additional property iface is not allowed/],
    ['enum.yaml', /node\.hostExec: .*"nsenter", "direct"/],
    ['portal.yaml', /controller\.portals\.0: Does not match pattern/],
    ['duration.yaml', /sidecars\.timeout: Does not match pattern/],
    ['chap.yaml', /- chap: chap must be one of the following: "none", "chap", "mutual"/],
  ];
  for (const [file, message] of cases) {
    it(file, () => {
      const r = renderChartRaw({ values: [join(ROOT, 'test', 'deploy', 'bad-values', file)] });
      assert.equal(r.status, 2, `exit status (stderr: ${r.stderr})`);
      assert.match(r.stderr, /values don't meet the specifications of the schema/);
      assert.match(r.stderr, message);
    });
  }

  it('refuses an object given where a list belongs, naming the key', () => {
    const r = renderChartRaw({ values: [{ node: { ifaces: 'eth1' } }] });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /node\.ifaces: Invalid type\. Expected: array, given: string/);
  });

  it('a null in an override deletes the key, and then the schema asks for it', () => {
    const r = renderChartRaw({ values: [{ image: { repository: null } }] });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /image: repository is required/);
  });
});

describe('chart: template-time requirements', () => {
  it('localPV without a node name fails with the reason', () => {
    const r = renderChartRaw({ values: [{ storage: { type: 'localPV' } }] });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /storage\.localPV\.nodeName is required with storage\.type localPV/);
  });

  it('topology without a value fails with the reason', () => {
    const r = renderChartRaw({ values: [{ controller: { topology: { enabled: true } } }] });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /controller\.topology\.value is required when topology is enabled/);
  });

  it('another release name prefixes every name and binds the right ServiceAccounts', () => {
    const { manifests } = renderChart({ release: 'storage', namespace: 'kube-storage' });
    assert.ok(find(manifests, 'StatefulSet', 'storage-lunar-controller'));
    for (const m of manifests.filter((x) => x.object.kind === 'ClusterRoleBinding')) {
      const subjects = m.object.subjects as { name: string; namespace: string }[];
      assert.equal(subjects[0]?.namespace, 'kube-storage');
      assert.match(subjects[0].name, /^storage-lunar-(controller|node)$/);
    }
  });
});
