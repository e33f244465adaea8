// Renders charts/lunar through test/chart/render.go (Go text/template + Sprig + Helm's functions: see
// that file) and reads deploy/. The renderer is built once per source hash into a cache directory
// ($LUNAR_CACHE_DIR, else $XDG_CACHE_HOME/lunar, else ~/.cache/lunar), with Debian's Go in GOPATH mode.

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

/** The repository root (holds package.json named lunar), from src/ or dist/. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const p = join(dir, 'package.json');
    if (existsSync(p) && (JSON.parse(readFileSync(p, 'utf8')) as { name?: string }).name === 'lunar') return dir;
    dir = dirname(dir);
  }
  throw new Error('repository root not found');
}

export const ROOT = repoRoot();
export const CHART_DIR = join(ROOT, 'charts', 'lunar');
export const DEPLOY_DIR = join(ROOT, 'deploy');

/** A Kubernetes object as rendered or read (plain JSON). */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

export interface Rendered {
  readonly source: string;
  readonly object: K8sObject;
}

/** The API versions of the optional CRDs, as .Capabilities.APIVersions entries. */
export const CRD_APIS = {
  snapshot: 'snapshot.storage.k8s.io/v1/VolumeSnapshotClass',
  cdi: 'cdi.kubevirt.io/v1beta1/StorageProfile',
  monitoring: 'monitoring.coreos.com/v1/ServiceMonitor',
} as const;

function cacheRoot(): string {
  const base = process.env.LUNAR_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'lunar');
  return base;
}

let rendererPath: string | undefined;

/** Builds (or finds in the cache) the renderer binary. */
export function renderer(): string {
  if (rendererPath) return rendererPath;
  const source = join(ROOT, 'test', 'chart', 'render.go');
  const goVersion = spawnSync('go', ['version'], { encoding: 'utf8' });
  if (goVersion.status !== 0) {
    throw new Error(
      'go is not installed: the chart tests need golang-go, golang-github-masterminds-sprig-dev, golang-k8s-sigs-yaml-dev and golang-github-xeipuuv-gojsonschema-dev (.ci/packages.txt)',
    );
  }
  const hash = createHash('sha256').update(readFileSync(source)).update(goVersion.stdout).digest('hex').slice(0, 16);
  const dir = join(cacheRoot(), `chart-render-${hash}`);
  const bin = join(dir, 'render');
  if (!existsSync(bin)) {
    mkdirSync(dir, { recursive: true });
    const tmp = `${bin}.${process.pid}.tmp`;
    const r = spawnSync('go', ['build', '-o', tmp, source], {
      encoding: 'utf8',
      env: {
        ...process.env,
        GO111MODULE: 'off',
        GOPATH: '/usr/share/gocode',
        GOCACHE: join(cacheRoot(), 'go-build'),
        GOFLAGS: '',
        CGO_ENABLED: '0',
      },
    });
    if (r.status !== 0) throw new Error(`building ${relative(ROOT, source)} failed:\n${r.stderr}`);
    renameSync(tmp, bin);
  }
  rendererPath = bin;
  return bin;
}

export interface RenderOptions {
  /** Values files (paths) or objects, coalesced over values.yaml in order. */
  readonly values?: readonly (string | Record<string, unknown>)[];
  readonly apiVersions?: readonly string[];
  readonly release?: string;
  readonly namespace?: string;
}

export interface RenderResult {
  readonly status: number;
  readonly stderr: string;
  readonly manifests: Rendered[];
  readonly notes: string;
}

/** Runs the renderer; never throws for a template or values error (see status and stderr). */
export function renderChartRaw(opts: RenderOptions = {}): RenderResult {
  const tmp = mkdtempSync(join(tmpdir(), 'lunar-values-'));
  try {
    const args = ['-chart', CHART_DIR, '-release', opts.release ?? 'lunar', '-namespace', opts.namespace ?? 'lunar'];
    (opts.values ?? []).forEach((v, i) => {
      if (typeof v === 'string') {
        args.push('-f', resolve(ROOT, v));
      } else {
        const file = join(tmp, `values-${i}.json`);
        writeFileSync(file, JSON.stringify(v));
        args.push('-f', file);
      }
    });
    for (const a of opts.apiVersions ?? []) args.push('-api-version', a);
    const r = spawnSync(renderer(), args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    if (r.status !== 0) return { status: r.status ?? 1, stderr: r.stderr, manifests: [], notes: '' };
    const out = JSON.parse(r.stdout) as { manifests: Rendered[]; notes: string };
    return { status: 0, stderr: r.stderr, manifests: out.manifests, notes: out.notes };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Renders and throws on any failure. */
export function renderChart(opts: RenderOptions = {}): { manifests: Rendered[]; notes: string } {
  const r = renderChartRaw(opts);
  if (r.status !== 0) throw new Error(`chart did not render (exit ${r.status}):\n${r.stderr}`);
  return r;
}

/** Every YAML document of a file (empty documents dropped); throws on a YAML error naming the file. */
export function readYamlObjects(file: string): K8sObject[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'));
  const out: K8sObject[] = [];
  for (const d of docs) {
    if (d.errors.length > 0) throw new Error(`${relative(ROOT, file)}: ${d.errors.map((e) => e.message).join('; ')}`);
    const v: unknown = d.toJS();
    if (v !== null && v !== undefined) out.push(v as K8sObject);
  }
  return out;
}

/** Files under a directory, recursively, relative to it. */
export function listFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? listFiles(p).map((f) => join(name, f)) : [name];
  });
}

/** "Kind/namespace/name" of an object. */
export function objectKey(o: K8sObject): string {
  return `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}

/** Values deploy/ is rendered with: the chart's defaults, plus the Namespace (Helm has --create-namespace). */
export const DEPLOY_VALUES: Record<string, unknown> = { createNamespace: true };
/** The optional APIs deploy/ assumes for its subdirectories snapshot/ and kubevirt/. */
export const DEPLOY_APIS: readonly string[] = [CRD_APIS.snapshot, CRD_APIS.cdi];

/**
 * What a plain-manifest install gets from a Helm render: no `helm test` hooks, no labels that name Helm.
 * deploy/ is exactly this for DEPLOY_VALUES (test/chart/generate-deploy.ts writes it; test/deploy checks it).
 */
export function plainManifests(rendered: readonly Rendered[]): K8sObject[] {
  return rendered
    .filter((r) => r.object.metadata.annotations?.['helm.sh/hook'] === undefined)
    .map((r) => stripHelm(structuredClone(r.object)));
}

function stripHelm(v: K8sObject): K8sObject {
  const walk = (x: unknown): void => {
    if (Array.isArray(x)) {
      x.forEach(walk);
    } else if (typeof x === 'object' && x !== null) {
      const o = x as Record<string, unknown>;
      const labels = o.labels;
      if (typeof labels === 'object' && labels !== null) {
        const l = labels as Record<string, unknown>;
        delete l['helm.sh/chart'];
        if (l['app.kubernetes.io/managed-by'] === 'Helm') l['app.kubernetes.io/managed-by'] = 'kubectl';
      }
      Object.values(o).forEach(walk);
    }
  };
  walk(v);
  return v;
}

/** The file of deploy/ an object belongs in. */
export function deployFileOf(o: K8sObject): string {
  const component = o.metadata.labels?.['app.kubernetes.io/component'];
  switch (o.kind) {
    case 'Namespace':
      return 'namespace.yaml';
    case 'CSIDriver':
      return 'csidriver.yaml';
    case 'ServiceAccount':
    case 'ClusterRole':
    case 'ClusterRoleBinding':
    case 'Role':
    case 'RoleBinding':
      return 'rbac.yaml';
    case 'StorageClass':
      return 'storageclasses.yaml';
    case 'VolumeSnapshotClass':
      return join('snapshot', 'volumesnapshotclass.yaml');
    case 'StorageProfile':
      return join('kubevirt', 'storageprofile.yaml');
    default:
      if (component === 'controller') return 'controller.yaml';
      if (component === 'node') return 'node.yaml';
      throw new Error(`no deploy/ file for ${objectKey(o)}`);
  }
}
