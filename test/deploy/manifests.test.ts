// deploy/: every file parses and passes the Kubernetes schemas (strict); each directory's Kustomization
// lists exactly its YAML files (so `kubectl apply -k` and `kubectl apply -f` install the same objects);
// and deploy/ is the chart rendered with its defaults — same objects, images, flags, mounts.

import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { readFileSync } from 'node:fs';
import {
  DEPLOY_APIS,
  DEPLOY_DIR,
  DEPLOY_VALUES,
  deployFileOf,
  listFiles,
  objectKey,
  plainManifests,
  readYamlObjects,
  renderChart,
  type K8sObject,
} from '../support/chart.js';
import { validateObject } from '../support/k8s-validate.js';

const files = listFiles(DEPLOY_DIR).sort();
const yamlFiles = files.filter((f) => f.endsWith('.yaml'));
const deployed = new Map<string, K8sObject[]>(yamlFiles.map((f) => [f, readYamlObjects(join(DEPLOY_DIR, f))]));

describe('deploy/: plain manifests', () => {
  it('has the core install and the optional CRD-backed parts', () => {
    for (const f of [
      'Kustomization',
      'namespace.yaml',
      'csidriver.yaml',
      'rbac.yaml',
      'controller.yaml',
      'node.yaml',
      'storageclasses.yaml',
    ]) {
      assert.ok(files.includes(f), `deploy/${f} missing`);
    }
    assert.ok(files.includes(join('snapshot', 'volumesnapshotclass.yaml')));
    assert.ok(files.includes(join('kubevirt', 'storageprofile.yaml')));
  });

  it('every object passes the Kubernetes schemas (strict: no unknown field)', () => {
    const problems = [...deployed].flatMap(([f, objs]) => objs.flatMap((o) => validateObject(o).map((p) => `deploy/${f}: ${p}`)));
    assert.deepEqual(problems, []);
  });

  it('each Kustomization lists exactly the YAML files of its directory, which exist', () => {
    const dirs = new Set(files.map((f) => dirname(f)));
    for (const dir of dirs) {
      const k = parse(readFileSync(join(DEPLOY_DIR, dir, 'Kustomization'), 'utf8')) as {
        apiVersion: string;
        kind: string;
        resources: string[];
      };
      assert.equal(k.apiVersion, 'kustomize.config.k8s.io/v1beta1');
      assert.equal(k.kind, 'Kustomization');
      const here = readdirSync(join(DEPLOY_DIR, dir)).filter((f) => f.endsWith('.yaml'));
      assert.deepEqual([...k.resources].sort(), here.sort(), `deploy/${dir}/Kustomization`);
    }
  });

  it('no file is named kustomization.yaml (kubectl apply -f would read it as an object)', () => {
    assert.ok(!files.some((f) => /kustomization\.ya?ml$/i.test(f)), files.join(', '));
  });

  it('namespaced objects carry the namespace; the Namespace allows privileged pods', () => {
    for (const [f, objs] of deployed) {
      for (const o of objs) {
        const clusterScoped = [
          'Namespace',
          'CSIDriver',
          'ClusterRole',
          'ClusterRoleBinding',
          'StorageClass',
          'VolumeSnapshotClass',
          'StorageProfile',
          'PersistentVolume',
        ];
        if (clusterScoped.includes(o.kind)) assert.equal(o.metadata.namespace, undefined, `${f}: ${objectKey(o)}`);
        else assert.equal(o.metadata.namespace, 'lunar', `${f}: ${objectKey(o)}`);
      }
    }
    const ns = deployed.get('namespace.yaml')?.[0];
    assert.equal(ns?.metadata.labels?.['pod-security.kubernetes.io/enforce'], 'privileged');
  });
});

describe('deploy/ agrees with the chart rendered with its defaults', () => {
  const rendered = plainManifests(renderChart({ values: [DEPLOY_VALUES], apiVersions: DEPLOY_APIS }).manifests);
  const fromDeploy = [...deployed.values()].flat();

  it('the same objects', () => {
    assert.deepEqual(fromDeploy.map(objectKey).sort(), rendered.map(objectKey).sort());
  });

  it('each object identical (images, flags, env, mounts, RBAC rules, parameters)', () => {
    const byKey = new Map(fromDeploy.map((o) => [objectKey(o), o]));
    for (const r of rendered) assert.deepEqual(byKey.get(objectKey(r)), r, `${objectKey(r)} differs: run npm run deploy:generate`);
  });

  it('each object in its file', () => {
    for (const [f, objs] of deployed) for (const o of objs) assert.equal(deployFileOf(o), f, objectKey(o));
  });

  it('no Helm test hook and no Helm label in deploy/', () => {
    const text = JSON.stringify(fromDeploy);
    assert.doesNotMatch(text, /helm\.sh\/hook|helm\.sh\/chart|"Helm"/);
  });
});
