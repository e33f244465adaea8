// Every Kubernetes API call Lunar makes, as data: which component makes it, on which group/resource, with
// which verb, and why. src/kube/client.ts makes only these calls (each request names its entry), and
// test/deploy checks that the RBAC of charts/lunar and deploy/ grants exactly these to Lunar's own roles.

/** The process making the call: `lunar serve` (controller) or `lunar node` (node plugin). */
export type Component = 'controller' | 'node';

export interface ApiCall {
  readonly component: Component;
  /** API group; '' is the core group. */
  readonly group: string;
  readonly resource: string;
  readonly verb: 'get' | 'list' | 'watch' | 'create' | 'patch';
  readonly why: string;
}

/** The calls of one component; every one is on the core group unless it names another. */
function callsOf(component: Component, calls: readonly (Omit<ApiCall, 'component' | 'group'> & { readonly group?: string })[]): ApiCall[] {
  return calls.map((c) => ({ component, group: '', ...c }));
}

export const API_CALLS: readonly ApiCall[] = [
  ...callsOf('controller', [
    { resource: 'persistentvolumeclaims', verb: 'get', why: 'the PVC a volume was created for (its uid for Events)' },
    { resource: 'events', verb: 'create', why: 'Events on the PVC (formatted, refused, path lost)' },
    { resource: 'events', verb: 'patch', why: 'count and last time of a repeated Event' },
  ]),
  ...callsOf('node', [
    { resource: 'nodes', verb: 'get', why: "the node's topology labels" },
    { resource: 'nodes', verb: 'list', why: 'start of the watch of its own Node (fieldSelector metadata.name)' },
    { resource: 'nodes', verb: 'watch', why: "changes of the node's topology labels" },
    { resource: 'persistentvolumeclaims', verb: 'get', why: 'the PVC of a staged volume (its uid for Events)' },
    { resource: 'events', verb: 'create', why: 'Events on the PVC (staging failed, refused, path lost or back)' },
    { resource: 'events', verb: 'patch', why: 'count and last time of a repeated Event' },
  ]),
];
