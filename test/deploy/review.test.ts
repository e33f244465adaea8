// What reviewers of CSI deployments miss, checked on the chart's render (defaults and every override) and
// on deploy/: the node container's mounts and their propagation, the sidecars' socket paths against
// Lunar's own endpoint flags (parsed by Lunar's parser), hostNetwork where the portals and iscsid need it,
// RBAC against the API calls src/kube/api-calls.ts declares (no more, no less), and the sidecars'
// timeouts against Lunar's slowest bounded step.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';
import { describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { parseOptions } from '../../src/cli/args.js';
import type { Command } from '../../src/cli/command.js';
import { parseEndpoint } from '../../src/csi/endpoint.js';
import { DEFAULT_TUNING } from '../../src/iscsi/negotiation.js';
import { API_CALLS } from '../../src/kube/api-calls.js';
import { DEFAULT_TIMEOUT_SECONDS } from '../../src/scsi/commands.js';
import { CHART_DIR, CRD_APIS, DEPLOY_DIR, listFiles, readYamlObjects, renderChart, ROOT, type K8sObject } from '../support/chart.js';

interface Mount {
  name: string;
  mountPath: string;
  mountPropagation?: string;
  readOnly?: boolean;
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string } };
}
interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: EnvVar[];
  volumeMounts?: Mount[];
  securityContext?: { privileged?: boolean; runAsUser?: number; runAsNonRoot?: boolean; readOnlyRootFilesystem?: boolean };
}
interface Volume {
  name: string;
  hostPath?: { path: string; type?: string };
  emptyDir?: unknown;
}
interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  volumes: Volume[];
  hostNetwork?: boolean;
  hostPID?: boolean;
  dnsPolicy?: string;
  serviceAccountName: string;
}
interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

const podSpec = (o: K8sObject): PodSpec => (o.spec as { template: { spec: PodSpec } }).template.spec;
const container = (spec: PodSpec, name: string): Container => {
  const c = spec.containers.find((x) => x.name === name);
  assert.ok(c, `container ${name}`);
  return c;
};
/** The value after `flag` in args, or of `flag=value`. */
function flag(c: Container, name: string): string | undefined {
  const args = c.args ?? [];
  const i = args.indexOf(name);
  if (i >= 0) return args[i + 1];
  return args.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);
}
/** Seconds of a Go duration (150s, 2m, 1m30s). */
function seconds(d: string): number {
  let total = 0;
  for (const m of d.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    total += Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] as 'ms' | 's' | 'm' | 'h'];
  }
  return total;
}

interface Install {
  readonly label: string;
  readonly objects: K8sObject[];
  readonly kubeletDir: string;
}

const installs: Install[] = [
  {
    label: 'chart defaults',
    objects: renderChart({ apiVersions: [CRD_APIS.snapshot, CRD_APIS.cdi] }).manifests.map((m) => m.object),
    kubeletDir: '/var/lib/kubelet',
  },
  ...readdirSync(join(CHART_DIR, 'ci'))
    .filter((f) => f.endsWith('-values.yaml'))
    .map((f) => ({
      label: `chart ${f}`,
      objects: renderChart({ values: [join(CHART_DIR, 'ci', f)], apiVersions: Object.values(CRD_APIS) }).manifests.map((m) => m.object),
      kubeletDir: f === 'minimal-values.yaml' ? '/var/lib/k0s/kubelet' : '/var/lib/kubelet',
    })),
  {
    label: 'deploy/',
    objects: listFiles(DEPLOY_DIR)
      .filter((f) => f.endsWith('.yaml'))
      .flatMap((f) => readYamlObjects(join(DEPLOY_DIR, f))),
    kubeletDir: '/var/lib/kubelet',
  },
];

const one = (objs: K8sObject[], kind: string): K8sObject => {
  const found = objs.filter((o) => o.kind === kind);
  assert.equal(found.length, 1, `exactly one ${kind}`);
  return found[0]!;
};

for (const inst of installs) {
  describe(`review: ${inst.label}`, () => {
    const ctrl = podSpec(one(inst.objects, 'StatefulSet'));
    const node = podSpec(one(inst.objects, 'DaemonSet'));

    it('controller sidecars dial the socket Lunar serves (--csi-endpoint), through the same volume', () => {
      const lunar = container(ctrl, 'lunar');
      assert.equal(lunar.args?.[0], 'serve');
      const endpoint = parseEndpoint(flag(lunar, '--csi-endpoint') ?? '');
      assert.equal(endpoint.kind, 'unix');
      const path = endpoint.path;
      const lunarMount = lunar.volumeMounts?.find((m) => m.mountPath === dirname(path));
      assert.ok(lunarMount, `lunar mounts ${dirname(path)}`);
      assert.ok(ctrl.volumes.find((v) => v.name === lunarMount.name)?.emptyDir !== undefined, 'the controller socket is on an emptyDir');
      for (const name of ['csi-provisioner', 'csi-attacher', 'csi-resizer', 'csi-snapshotter', 'liveness-probe']) {
        const c = container(ctrl, name);
        assert.equal(flag(c, '--csi-address'), path, `${name} --csi-address`);
        assert.ok(
          c.volumeMounts?.some((m) => m.name === lunarMount.name && m.mountPath === dirname(path)),
          `${name} mounts the socket volume`,
        );
      }
    });

    it('node sidecars and kubelet reach the socket the node plugin serves (--endpoint)', () => {
      const plugin = container(node, 'lunar-node');
      assert.equal(plugin.args?.[0], 'node');
      const endpoint = parseEndpoint(flag(plugin, '--endpoint') ?? '');
      const path = endpoint.kind === 'unix' ? endpoint.path : '';
      const mount = plugin.volumeMounts?.find((m) => m.mountPath === dirname(path));
      assert.ok(mount, `lunar-node mounts ${dirname(path)}`);
      const hostDir = node.volumes.find((v) => v.name === mount.name)?.hostPath?.path;
      assert.equal(hostDir, `${inst.kubeletDir}/plugins/iscsi.lunar.dev`, 'socket directory on the host, under the kubelet plugins dir');
      const registrar = container(node, 'node-driver-registrar');
      assert.equal(flag(registrar, '--csi-address'), path);
      assert.equal(
        flag(registrar, '--kubelet-registration-path'),
        posix.join(hostDir, posix.basename(path)),
        'kubelet dials the same socket',
      );
      const reg = registrar.volumeMounts?.find((m) => m.mountPath === '/registration');
      assert.equal(node.volumes.find((v) => v.name === reg?.name)?.hostPath?.path, `${inst.kubeletDir}/plugins_registry`);
      assert.equal(flag(container(node, 'liveness-probe'), '--csi-address'), path);
      assert.equal(flag(plugin, '--node-name'), '$(NODE_NAME)');
      assert.equal(plugin.env?.find((e) => e.name === 'NODE_NAME')?.valueFrom?.fieldRef?.fieldPath, 'spec.nodeName');
    });

    it("the node plugin's host mounts: same paths as on the host, Bidirectional only for the kubelet dir", () => {
      const plugin = container(node, 'lunar-node');
      assert.equal(plugin.securityContext?.privileged, true, 'Bidirectional propagation and device access need privileged');
      const byPath = new Map((plugin.volumeMounts ?? []).map((m) => [m.mountPath, m]));
      const stateDir = flag(plugin, '--state-dir');
      assert.ok(stateDir?.startsWith('/'), '--state-dir');
      for (const p of [inst.kubeletDir, '/dev', '/sys', '/etc/iscsi', '/var/lib/iscsi', '/run/udev', '/etc/multipath', stateDir ?? '']) {
        const m = byPath.get(p);
        assert.ok(m, `lunar-node mounts ${p}`);
        assert.equal(node.volumes.find((v) => v.name === m.name)?.hostPath?.path, p, `${p} is the host's ${p}`);
        assert.notEqual(m.readOnly, true, `${p} is writable`);
      }
      assert.equal(byPath.get(inst.kubeletDir)?.mountPropagation, 'Bidirectional', 'mounts under the kubelet dir must reach the host');
      for (const c of node.containers) {
        for (const m of c.volumeMounts ?? []) {
          if (c.name === 'lunar-node' && m.mountPath === inst.kubeletDir) continue;
          assert.notEqual(m.mountPropagation, 'Bidirectional', `${c.name} ${m.mountPath}: Bidirectional is for the kubelet dir only`);
        }
        if (c.name !== 'lunar-node') assert.notEqual(c.securityContext?.privileged, true, `${c.name} needs no privilege`);
      }
      assert.equal(node.hostPID, true, 'nsenter into the host PID 1 needs hostPID');
      assert.equal(node.hostNetwork, true, "iscsid's control socket is in the host's network namespace");
      assert.equal(node.dnsPolicy, 'ClusterFirstWithHostNet');
      assert.ok(['nsenter', 'direct'].includes(flag(plugin, '--host-exec') ?? ''), '--host-exec');
    });

    it('every mount names a volume of the pod, and every volume is mounted', () => {
      for (const spec of [ctrl, node]) {
        const names = new Set(spec.volumes.map((v) => v.name));
        const mounted = new Set<string>();
        for (const c of [...spec.containers, ...(spec.initContainers ?? [])]) {
          for (const m of c.volumeMounts ?? []) {
            mounted.add(m.name);
            const fromClaim =
              m.name === 'data' && (one(inst.objects, 'StatefulSet').spec as { volumeClaimTemplates?: unknown[] }).volumeClaimTemplates;
            assert.ok(names.has(m.name) || fromClaim, `${c.name} mounts unknown volume ${m.name}`);
          }
        }
        for (const n of names) assert.ok(mounted.has(n), `volume ${n} is not mounted`);
      }
    });

    it("the controller is on hostNetwork, its portals on the node's addresses", () => {
      assert.equal(ctrl.hostNetwork, true, 'initiators dial the portals: they must be the node addresses');
      assert.equal(ctrl.dnsPolicy, 'ClusterFirstWithHostNet');
      const lunar = container(ctrl, 'lunar');
      const args = lunar.args ?? [];
      const portals = args.filter((_, i) => args[i - 1] === '--portal');
      assert.ok(portals.length >= 1, 'at least one --portal');
      if (portals.some((p) => p.includes('$(POD_IP)'))) {
        assert.equal(
          lunar.env?.find((e) => e.name === 'POD_IP')?.valueFrom?.fieldRef?.fieldPath,
          'status.podIP',
          'POD_IP is the node address on hostNetwork',
        );
      }
      const sts = one(inst.objects, 'StatefulSet').spec as { replicas: number };
      assert.equal(sts.replicas, 1, 'one controller: it owns the data directory');
    });

    it('the controller runs non-root unless asked, with a read-only root and no capabilities', () => {
      const lunar = container(ctrl, 'lunar');
      assert.equal(lunar.securityContext?.readOnlyRootFilesystem, true);
      if (lunar.securityContext.runAsUser !== 0) {
        assert.equal(lunar.securityContext.runAsNonRoot, true);
        const init = ctrl.initContainers?.find((c) => c.name === 'data-owner');
        if (!(one(inst.objects, 'StatefulSet').spec as { volumeClaimTemplates?: unknown }).volumeClaimTemplates) {
          assert.ok(init, 'a hostPath data directory is made the non-root user own');
        }
      }
    });

    it("Lunar's own RBAC is exactly the API calls src/kube declares; nothing grants secrets or wildcards", () => {
      const roles = new Map(
        inst.objects.filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role').map((o) => [o.metadata.name, (o.rules ?? []) as Rule[]]),
      );
      const bindings = inst.objects.filter((o) => o.kind === 'ClusterRoleBinding' || o.kind === 'RoleBinding');
      const triples = (rules: Rule[]): string[] =>
        rules.flatMap((r) => r.apiGroups.flatMap((g) => r.resources.flatMap((res) => r.verbs.map((v) => `${g}/${res}/${v}`)))).sort();
      for (const component of ['controller', 'node'] as const) {
        const sa = component === 'controller' ? ctrl.serviceAccountName : node.serviceAccountName;
        const bound = bindings
          .filter((b) => (b.subjects as { kind: string; name: string }[]).some((s) => s.kind === 'ServiceAccount' && s.name === sa))
          .map((b) => (b.roleRef as { name: string }).name);
        const apiRole = bound.find((n) => n.endsWith(`-${component}-api`));
        assert.ok(apiRole, `${sa} is bound to its -${component}-api role`);
        const declared = [
          ...new Set(API_CALLS.filter((c) => c.component === component).map((c) => `${c.group}/${c.resource}/${c.verb}`)),
        ].sort();
        assert.deepEqual(triples(roles.get(apiRole) ?? []), declared, `${apiRole} grants exactly src/kube/api-calls.ts`);
        if (component === 'node') assert.deepEqual(bound, [apiRole], 'the node plugin has no other role');
        else
          assert.deepEqual(bound.map((n) => n.replace(/^.*-(provisioner|attacher|resizer|snapshotter|controller-api)$/, '$1')).sort(), [
            'attacher',
            'controller-api',
            'provisioner',
            'resizer',
            'snapshotter',
          ]);
      }
      for (const [name, rules] of roles) {
        for (const r of rules) {
          assert.ok(!r.verbs.includes('*') && !r.resources.includes('*') && !r.apiGroups.includes('*'), `${name}: no wildcards`);
          assert.ok(!r.resources.includes('secrets'), `${name}: Lunar's CHAP secrets travel in publish_context, no role reads Secrets`);
        }
      }
    });

    it("the sidecars' --timeout outlasts Lunar's slowest bounded step", () => {
      // Bounded steps of a controller call: a snapshot or clone quiesces the LU, waiting for the writes in
      // flight, each bounded by the command timeout Lunar reports (REPORT SUPPORTED OPERATION CODES); an
      // unpublish ends sessions, bounded by the login/logout timer; shutdown gives calls 5 s.
      const slowest = Math.max(DEFAULT_TIMEOUT_SECONDS, DEFAULT_TUNING.loginTimeoutMs / 1000, 5);
      for (const name of ['csi-provisioner', 'csi-attacher', 'csi-resizer', 'csi-snapshotter']) {
        const t = flag(container(ctrl, name), '--timeout');
        assert.ok(t, `${name} sets --timeout (the defaults, 10-60 s, are shorter than a quiesce)`);
        assert.ok(seconds(t) > slowest, `${name} --timeout ${t} > ${slowest} s`);
      }
      assert.ok(container(ctrl, 'csi-provisioner').args?.includes('--extra-create-metadata'), 'PVC name/namespace reach CreateVolume');
    });

    it('images are pinned to released versions, never latest', () => {
      for (const spec of [ctrl, node]) {
        for (const c of [...spec.containers, ...(spec.initContainers ?? [])]) {
          const tag = c.image.slice(c.image.lastIndexOf(':') + 1);
          assert.ok(c.image.includes(':') && tag !== 'latest' && tag !== '', `${c.name}: ${c.image}`);
          if (c.image.startsWith('registry.k8s.io/sig-storage/')) assert.match(tag, /^v\d+\.\d+\.\d+$/, `${c.name}: ${c.image}`);
        }
      }
    });

    it('the CSIDriver matches what Lunar implements', () => {
      const d = one(inst.objects, 'CSIDriver');
      assert.equal(d.metadata.name, 'iscsi.lunar.dev');
      assert.deepEqual(d.spec, { attachRequired: true, podInfoOnMount: true, fsGroupPolicy: 'File', volumeLifecycleModes: ['Persistent'] });
    });

    it('StorageClasses and the StorageProfile give KubeVirt RWX block with CSI clones', () => {
      const classes = inst.objects.filter((o) => o.kind === 'StorageClass');
      for (const sc of classes) {
        assert.equal(sc.provisioner, 'iscsi.lunar.dev');
        assert.equal(sc.allowVolumeExpansion, true);
        const params = sc.parameters as Record<string, string>;
        for (const k of Object.keys(params))
          assert.ok(
            ['fsType', 'chap', 'thin', 'portals'].includes(k) || k.startsWith('csi.storage.k8s.io/'),
            `${sc.metadata.name}: parameter ${k} is one Lunar takes`,
          );
      }
      const profile = inst.objects.find((o) => o.kind === 'StorageProfile');
      if (profile) {
        assert.ok(
          classes.some((c) => c.metadata.name === profile.metadata.name),
          'a StorageProfile is named after its StorageClass',
        );
        assert.deepEqual(profile.spec, {
          claimPropertySets: [
            { accessModes: ['ReadWriteMany'], volumeMode: 'Block' },
            { accessModes: ['ReadWriteOnce'], volumeMode: 'Filesystem' },
          ],
          cloneStrategy: 'csi-clone',
        });
      }
    });
  });
}

/** Environment variables a Lunar command reads: `env.NAME` in its command module, main.ts and log.ts. */
function envRead(command: string): Set<string> {
  const files = [join(ROOT, 'src', 'cli', `${command}.ts`), join(ROOT, 'src', 'cli', 'main.ts'), join(ROOT, 'src', 'log.ts')];
  return new Set(files.flatMap((f) => [...readFileSync(f, 'utf8').matchAll(/\benv\.([A-Z][A-Z0-9_]*)/g)].map((m) => m[1]!)));
}

/** A Lunar command's module (its option table). */
async function commandOf(command: string): Promise<Command> {
  const mod = (await import(pathToFileURL(join(ROOT, 'dist', 'src', 'cli', `${command}.js`)).href)) as Record<string, Command | undefined>;
  const cmd = mod[command];
  assert.ok(cmd, `src/cli/${command}.ts exports the ${command} command`);
  return cmd;
}

for (const inst of installs) {
  describe(`review: ${inst.label}: every flag and LUNAR_ variable given to Lunar is one it reads`, () => {
    const lunarContainers: [string, Container][] = [
      ['serve', container(podSpec(one(inst.objects, 'StatefulSet')), 'lunar')],
      // `lunar node` is checked once its command module exists (src/cli/node.ts, the node plugin's work).
      ...(existsSync(join(ROOT, 'src', 'cli', 'node.ts'))
        ? [['node', container(podSpec(one(inst.objects, 'DaemonSet')), 'lunar-node')] as [string, Container]]
        : []),
    ];
    for (const [command, c] of lunarContainers) {
      it(`lunar ${command}`, async () => {
        assert.equal(c.args?.[0], command);
        // Lunar's own parser, strict: an option the command does not have is refused.
        const cmd = await commandOf(command);
        assert.doesNotThrow(() => parseOptions((c.args ?? []).slice(1), cmd.options), `lunar ${command} ${(c.args ?? []).join(' ')}`);
        const read = envRead(command);
        // Variables the pod spec only substitutes into args ($(POD_IP)) are Kubernetes', not Lunar's.
        const substituted = new Set((c.args ?? []).flatMap((a) => [...a.matchAll(/\$\(([A-Z_][A-Z0-9_]*)\)/g)].map((m) => m[1]!)));
        for (const e of c.env ?? []) {
          if (substituted.has(e.name)) continue;
          assert.ok(read.has(e.name), `lunar ${command} never reads ${e.name} (it reads ${[...read].sort().join(' ')})`);
        }
      });
    }
  });
}

describe('review: the flags given to `lunar serve` are flags it has', () => {
  it('lunar --help lists --data-dir, --portal and --csi-endpoint', () => {
    const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'src', 'cli.js'), '--help'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const lunar = container(podSpec(one(installs[0]!.objects, 'StatefulSet')), 'lunar');
    for (const f of (lunar.args ?? []).filter((a) => a.startsWith('--'))) assert.ok(r.stdout.includes(f), `lunar --help has ${f}`);
  });
});
