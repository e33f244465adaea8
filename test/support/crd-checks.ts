// Field-by-field checks of the CRD-backed kinds the chart renders, written from what each API documents
// (no CRD or schema file of those projects is in this repository):
//  - VolumeSnapshotClass, snapshot.storage.k8s.io/v1 (kubernetes-csi/external-snapshotter, "VolumeSnapshotClass"
//    in the snapshot API: driver and deletionPolicy required, parameters a string map; cluster-scoped);
//  - StorageProfile, cdi.kubevirt.io/v1beta1 (KubeVirt CDI doc/storageprofile.md: spec.claimPropertySets of
//    accessModes + volumeMode, cloneStrategy copy|snapshot|csi-clone, dataImportCronSourceFormat pvc|snapshot,
//    snapshotClass; cluster-scoped, named after its StorageClass);
//  - ServiceMonitor, monitoring.coreos.com/v1 (Prometheus Operator API reference: spec.selector and
//    spec.endpoints required; endpoint port/targetPort/path/scheme/interval/scrapeTimeout/relabelings...).
// Each check refuses unknown fields (strict field validation) and wrong types, and names the path.

import type { K8sObject } from './chart.js';

type Check = (v: unknown, path: string) => string[];

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const str: Check = (v, p) => (typeof v === 'string' ? [] : [`${p}: must be a string`]);
const bool: Check = (v, p) => (typeof v === 'boolean' ? [] : [`${p}: must be a boolean`]);
const int: Check = (v, p) => (Number.isInteger(v) ? [] : [`${p}: must be an integer`]);
const oneOf =
  (...values: string[]): Check =>
  (v, p) =>
    typeof v === 'string' && values.includes(v) ? [] : [`${p}: must be one of ${values.join(', ')} (is ${JSON.stringify(v)})`];
const pattern =
  (re: RegExp, what: string): Check =>
  (v, p) =>
    typeof v === 'string' && re.test(v) ? [] : [`${p}: must be ${what} (is ${JSON.stringify(v)})`];
const arrayOf =
  (item: Check, minItems = 0): Check =>
  (v, p) => {
    if (!Array.isArray(v)) return [`${p}: must be a list`];
    const out = v.flatMap((x, i) => item(x, `${p}[${i}]`));
    if (v.length < minItems) out.push(`${p}: needs at least ${minItems} item(s)`);
    return out;
  };
const stringMap: Check = (v, p) =>
  isObj(v) ? Object.entries(v).flatMap(([k, x]) => str(x, `${p}.${k}`)) : [`${p}: must be a map of strings`];

/** An object with these fields (required ones marked with a trailing "!"); any other field is refused. */
function object(fields: Record<string, Check>): Check {
  const required = Object.keys(fields)
    .filter((k) => k.endsWith('!'))
    .map((k) => k.slice(0, -1));
  const checks = Object.fromEntries(Object.entries(fields).map(([k, c]) => [k.replace(/!$/, ''), c]));
  return (v, p) => {
    if (!isObj(v)) return [`${p}: must be an object`];
    const out: string[] = [];
    for (const r of required) if (!(r in v)) out.push(`${p}.${r}: required`);
    for (const [k, x] of Object.entries(v)) {
      const c = checks[k];
      if (!c) out.push(`${p}.${k}: unknown field (known: ${Object.keys(checks).join(', ')})`);
      else out.push(...c(x, `${p}.${k}`));
    }
    return out;
  };
}

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function metadata(namespaced: boolean): Check {
  return object({
    'name!': pattern(DNS_SUBDOMAIN, 'a DNS subdomain name'),
    ...(namespaced ? { 'namespace!': pattern(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'a namespace name') } : {}),
    labels: stringMap,
    annotations: stringMap,
  });
}

const labelSelector = object({
  matchLabels: stringMap,
  matchExpressions: arrayOf(object({ 'key!': str, 'operator!': oneOf('In', 'NotIn', 'Exists', 'DoesNotExist'), values: arrayOf(str) })),
});

// Prometheus Operator's Duration: "0" or units y w d h m s ms in that order.
const duration = pattern(
  /^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$/,
  'a duration like 30s',
);

const relabelConfig = object({
  sourceLabels: arrayOf(pattern(/^[a-zA-Z_][a-zA-Z0-9_]*$/, 'a label name')),
  separator: str,
  targetLabel: str,
  regex: str,
  modulus: int,
  replacement: str,
  action: oneOf(
    ...[
      'replace',
      'keep',
      'drop',
      'hashmod',
      'labelmap',
      'labeldrop',
      'labelkeep',
      'lowercase',
      'uppercase',
      'keepequal',
      'dropequal',
    ].flatMap((a) => [a, a.charAt(0).toUpperCase() + a.slice(1)]),
  ),
});

const endpoint: Check = (v, p) => {
  const out = object({
    port: str,
    targetPort: (x, q) => (typeof x === 'string' || Number.isInteger(x) ? [] : [`${q}: must be a port name or number`]),
    path: pattern(/^\//, 'an absolute HTTP path'),
    scheme: oneOf('http', 'https', 'HTTP', 'HTTPS'),
    params: (x, q) =>
      isObj(x) ? Object.entries(x).flatMap(([k, y]) => arrayOf(str)(y, `${q}.${k}`)) : [`${q}: must be a map of string lists`],
    interval: duration,
    scrapeTimeout: duration,
    honorLabels: bool,
    honorTimestamps: bool,
    trackTimestampsStaleness: bool,
    followRedirects: bool,
    enableHttp2: bool,
    filterRunning: bool,
    proxyUrl: str,
    metricRelabelings: arrayOf(relabelConfig),
    relabelings: arrayOf(relabelConfig),
  })(v, p);
  if (isObj(v) && v.port !== undefined && v.targetPort !== undefined) out.push(`${p}: port and targetPort are mutually exclusive`);
  if (isObj(v) && v.port === undefined && v.targetPort === undefined) out.push(`${p}: needs port (a Service port name) or targetPort`);
  return out;
};

const ACCESS_MODES = ['ReadWriteOnce', 'ReadOnlyMany', 'ReadWriteMany', 'ReadWriteOncePod'];

const CHECKS: Record<string, Check> = {
  'snapshot.storage.k8s.io/v1/VolumeSnapshotClass': object({
    'apiVersion!': str,
    'kind!': str,
    'metadata!': (v, p) => {
      const out = metadata(false)(v, p);
      const d = isObj(v) && isObj(v.annotations) ? v.annotations['snapshot.storage.kubernetes.io/is-default-class'] : undefined;
      if (d !== undefined && d !== 'true' && d !== 'false') out.push(`${p}.annotations: is-default-class must be "true" or "false"`);
      return out;
    },
    'driver!': pattern(/^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$/, 'a CSI driver name'),
    'deletionPolicy!': oneOf('Delete', 'Retain'),
    parameters: stringMap,
  }),
  'cdi.kubevirt.io/v1beta1/StorageProfile': object({
    'apiVersion!': str,
    'kind!': str,
    'metadata!': metadata(false),
    'spec!': object({
      claimPropertySets: arrayOf(
        object({ 'accessModes!': arrayOf(oneOf(...ACCESS_MODES), 1), 'volumeMode!': oneOf('Filesystem', 'Block') }),
      ),
      cloneStrategy: oneOf('copy', 'snapshot', 'csi-clone'),
      dataImportCronSourceFormat: oneOf('pvc', 'snapshot'),
      snapshotClass: str,
    }),
  }),
  'monitoring.coreos.com/v1/ServiceMonitor': object({
    'apiVersion!': str,
    'kind!': str,
    'metadata!': metadata(true),
    'spec!': object({
      jobLabel: str,
      targetLabels: arrayOf(str),
      podTargetLabels: arrayOf(str),
      'endpoints!': arrayOf(endpoint, 1),
      'selector!': labelSelector,
      namespaceSelector: object({ any: bool, matchNames: arrayOf(str) }),
      sampleLimit: int,
      targetLimit: int,
      labelLimit: int,
      labelNameLengthLimit: int,
      labelValueLengthLimit: int,
    }),
  }),
};

/** "apiVersion/Kind" of the CRD-backed kinds checked here. */
export const CRD_KINDS: ReadonlySet<string> = new Set(Object.keys(CHECKS));

export function checkCrdObject(o: K8sObject): string[] {
  const check = CHECKS[`${o.apiVersion}/${o.kind}`];
  if (!check) return [`no check for ${o.apiVersion} ${o.kind}`];
  return check(o, '');
}
