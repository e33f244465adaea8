// Validation of Kubernetes objects the way the API server does it on `kubectl apply` (strict field
// validation, the default since Kubernetes 1.27):
//  1. the OpenAPI schema of the object's kind (types, enums, required fields): kubernetes-models, whose
//     validators are generated from a recent release's OpenAPI document;
//  2. no unknown field anywhere (what OpenAPI schemas do not forbid but strict validation refuses): walked
//     along the field tables of @kubernetes/client-node's generated models (getAttributeTypeMap), which
//     come from the same OpenAPI document. Only this test helper reads those tables; Lunar's code reaches
//     the client through src/kube alone.
// CRD-backed kinds have no schema in either package: crd-checks.ts checks them field by field.

import { createRequire } from 'node:module';
import * as k8s from '@kubernetes/client-node';
import type { K8sObject } from './chart.js';
import { checkCrdObject, CRD_KINDS } from './crd-checks.js';

const require = createRequire(import.meta.url);

interface AttributeType {
  readonly name: string;
  readonly baseName: string;
  readonly type: string;
}
interface ModelClass {
  getAttributeTypeMap(): AttributeType[];
}

function modelClass(name: string): ModelClass | undefined {
  const c = (k8s as unknown as Record<string, unknown>)[name];
  if (typeof c === 'function' && 'getAttributeTypeMap' in c) return c as unknown as ModelClass;
  return undefined;
}

// Types whose values are not objects with a field table.
const LEAF_TYPES = new Set(['string', 'number', 'boolean', 'Date', 'any', 'object', 'IntOrString']);

/** Unknown fields of value against client-node's model `type`, as "path: unknown field" lines. */
export function unknownFields(value: unknown, type: string, path: string): string[] {
  if (value === null || value === undefined || LEAF_TYPES.has(type)) return [];
  const arr = /^Array<(.+)>$/.exec(type);
  if (arr) return Array.isArray(value) ? value.flatMap((v, i) => unknownFields(v, arr[1]!, `${path}[${i}]`)) : [];
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    return typeof value === 'object' ? Object.entries(value).flatMap(([k, v]) => unknownFields(v, map[1]!, `${path}.${k}`)) : [];
  }
  const cls = modelClass(type);
  if (!cls || typeof value !== 'object' || Array.isArray(value)) return [];
  const attrs = cls.getAttributeTypeMap();
  const out: string[] = [];
  for (const [k, v] of Object.entries(value)) {
    const a = attrs.find((x) => x.baseName === k);
    if (!a) out.push(`${path}.${k}: unknown field (${type} has ${attrs.map((x) => x.baseName).join(', ')})`);
    else out.push(...unknownFields(v, a.type, `${path}.${k}`));
  }
  return out;
}

/** client-node's model name of a built-in kind: V1StatefulSet, V1ClusterRole, ... */
function clientModelName(o: K8sObject): string {
  const version = o.apiVersion.split('/').pop() ?? '';
  return `${version.charAt(0).toUpperCase()}${version.slice(1)}${o.kind}`;
}

interface ValidatingModel {
  validate(): void;
}
type ModelCtor = new (data: unknown) => ValidatingModel;

/** kubernetes-models' class of a built-in kind, or undefined when the package has none. */
function schemaModel(o: K8sObject): ModelCtor | undefined {
  try {
    const mod = require(`kubernetes-models/${o.apiVersion}/${o.kind}`) as Record<string, unknown>;
    const c = mod[o.kind];
    return typeof c === 'function' ? (c as ModelCtor) : undefined;
  } catch {
    return undefined;
  }
}

/** Problems of one object (empty: valid). Unknown kinds are a problem: nothing goes unchecked. */
export function validateObject(o: K8sObject): string[] {
  const where = `${o.kind}/${o.metadata.name}`;
  if (typeof o.apiVersion !== 'string' || typeof o.kind !== 'string') return [`${where}: apiVersion and kind are required`];
  if (CRD_KINDS.has(`${o.apiVersion}/${o.kind}`)) return checkCrdObject(o).map((p) => `${where}: ${p}`);
  const Model = schemaModel(o);
  const name = clientModelName(o);
  if (!Model || !modelClass(name)) return [`${where}: ${o.apiVersion} ${o.kind} is not a known Kubernetes kind`];
  const problems: string[] = [];
  try {
    new Model(o).validate();
  } catch (err) {
    problems.push(`${where}: ${err instanceof Error ? err.message : String(err)}`);
  }
  problems.push(...unknownFields(o, name, where));
  return problems;
}
