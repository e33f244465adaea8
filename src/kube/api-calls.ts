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

export const API_CALLS = [
  {
    component: 'controller',
    group: '',
    resource: 'persistentvolumeclaims',
    verb: 'get',
    why: 'the PVC a volume was created for (its uid for Events)',
  },
  { component: 'controller', group: '', resource: 'events', verb: 'create', why: 'Events on the PVC (formatted, refused, path lost)' },
  { component: 'controller', group: '', resource: 'events', verb: 'patch', why: 'count and last time of a repeated Event' },
  { component: 'node', group: '', resource: 'nodes', verb: 'get', why: "the node's topology labels" },
  {
    component: 'node',
    group: '',
    resource: 'nodes',
    verb: 'list',
    why: 'start of the watch of its own Node (fieldSelector metadata.name)',
  },
  { component: 'node', group: '', resource: 'nodes', verb: 'watch', why: "changes of the node's topology labels" },
  { component: 'node', group: '', resource: 'persistentvolumeclaims', verb: 'get', why: 'the PVC of a staged volume (its uid for Events)' },
  {
    component: 'node',
    group: '',
    resource: 'events',
    verb: 'create',
    why: 'Events on the PVC (staging failed, refused, path lost or back)',
  },
  { component: 'node', group: '', resource: 'events', verb: 'patch', why: 'count and last time of a repeated Event' },
] as const satisfies readonly ApiCall[];

export type ApiCallEntry = (typeof API_CALLS)[number];
