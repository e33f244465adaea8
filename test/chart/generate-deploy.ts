// Writes deploy/ from charts/lunar rendered with its defaults (DEPLOY_VALUES): one file per concern, a
// `Kustomization` per directory (named without .yaml so that `kubectl apply -f deploy/` skips it while
// `kubectl apply -k deploy/` reads it). deploy/snapshot/ and deploy/kubevirt/ hold the objects whose CRDs
// the cluster may not have. Run: npm run deploy:generate. test/deploy/manifests.test.ts checks deploy/
// against a fresh render, so an edit of the chart without regenerating fails the tests.

import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { format, resolveConfig } from 'prettier';
import { stringify } from 'yaml';
import {
  DEPLOY_APIS,
  DEPLOY_DIR,
  DEPLOY_VALUES,
  deployFileOf,
  plainManifests,
  renderChart,
  ROOT,
  type K8sObject,
} from '../support/chart.js';

const HEADER =
  '# Generated from charts/lunar with its default values by `npm run deploy:generate`; do not edit by hand.\n' +
  '# Install: kubectl apply -k deploy/ (or -f deploy/); then deploy/snapshot and deploy/kubevirt if the cluster has those CRDs.\n';

const DIR_NOTES: Record<string, string> = {
  '.': 'Lunar: namespace, CSIDriver, RBAC, controller, node plugin, StorageClasses.',
  snapshot: 'VolumeSnapshotClass: needs the snapshot CRDs and snapshot-controller (kubernetes-csi/external-snapshotter).',
  kubevirt: "CDI StorageProfile of the block StorageClass: needs KubeVirt's CDI.",
};

async function main(): Promise<void> {
  const { manifests } = renderChart({ values: [DEPLOY_VALUES], apiVersions: DEPLOY_APIS });
  const files = new Map<string, K8sObject[]>();
  for (const o of plainManifests(manifests)) {
    const f = deployFileOf(o);
    files.set(f, [...(files.get(f) ?? []), o]);
  }
  const prettierConfig = (await resolveConfig(join(ROOT, 'package.json'))) ?? {};
  for (const name of readdirSync(DEPLOY_DIR, { withFileTypes: true }).map((d) => d.name)) {
    rmSync(join(DEPLOY_DIR, name), { recursive: true, force: true });
  }
  const byDir = new Map<string, string[]>();
  for (const [file, objects] of [...files.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    const text = HEADER + objects.map((o) => stringify(o, { lineWidth: 0 })).join('---\n');
    const path = join(DEPLOY_DIR, file);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, await format(text, { ...prettierConfig, parser: 'yaml' }));
    const dir = dirname(file);
    byDir.set(dir, [...(byDir.get(dir) ?? []), file.slice(dir === '.' ? 0 : dir.length + 1)]);
  }
  for (const [dir, list] of byDir) {
    // Order matters for -k only through kustomize's own kind ordering; list files in a readable order.
    const order = ['namespace.yaml', 'csidriver.yaml', 'rbac.yaml', 'controller.yaml', 'node.yaml', 'storageclasses.yaml'];
    const sorted = [...list].sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99) || a.localeCompare(b));
    const k =
      `# ${DIR_NOTES[dir] ?? dir}\n` +
      HEADER +
      stringify({ apiVersion: 'kustomize.config.k8s.io/v1beta1', kind: 'Kustomization', resources: sorted });
    writeFileSync(join(DEPLOY_DIR, dir, 'Kustomization'), await format(k, { ...prettierConfig, parser: 'yaml' }));
  }
  process.stdout.write(`deploy/: ${[...files.keys()].join(', ')}\n`);
}

await main();
