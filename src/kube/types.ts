// The Kubernetes-API seam. Rule: only src/kube/client.ts imports @kubernetes/client-node, and it makes only
// the calls src/kube/api-calls.ts declares; the rest of Lunar sees the small interfaces below. Nothing that
// goes wrong with the API server ever fails a CSI call or the data path: Events and topology are reported
// best-effort (retried with backoff, then logged).

/** The PersistentVolumeClaim a volume was provisioned for. */
export interface PvcRef {
  readonly namespace: string;
  readonly name: string;
}

/** CreateVolume parameter keys external-provisioner adds with --extra-create-metadata. */
export const PVC_NAME_PARAMETER = 'csi.storage.k8s.io/pvc/name';
export const PVC_NAMESPACE_PARAMETER = 'csi.storage.k8s.io/pvc/namespace';
/** volume_context keys that carry them to the node plugin (docs/csi.md). */
export const PVC_NAME_CONTEXT = 'pvcName';
export const PVC_NAMESPACE_CONTEXT = 'pvcNamespace';

/**
 * The PVC named by CreateVolume parameters (or a volume's stored parameters) or by a volume_context, or
 * null when neither names one (a volume created outside Kubernetes, or without --extra-create-metadata).
 */
export function pvcRefFrom(map: Readonly<Record<string, string>> | undefined | null): PvcRef | null {
  if (!map) return null;
  const name = map[PVC_NAME_PARAMETER] ?? map[PVC_NAME_CONTEXT];
  const namespace = map[PVC_NAMESPACE_PARAMETER] ?? map[PVC_NAMESPACE_CONTEXT];
  return name && namespace ? { name, namespace } : null;
}

/**
 * Event reasons Lunar reports on a PVC, each with its type. The message says what happened and what the
 * user can do about it.
 */
export const EVENT_REASONS = {
  /** A new, empty filesystem was made on the volume (first stage). */
  VolumeFormatted: 'Normal',
  /** The volume was not formatted because it already holds data (a filesystem, partition table, LVM/RAID). */
  VolumeHoldsData: 'Warning',
  /** NodeStageVolume failed. */
  StagingFailed: 'Warning',
  /** One iSCSI path of a staged volume is down; I/O continues on the others. */
  PathFailed: 'Warning',
  /** A path that was down is back. */
  PathRestored: 'Normal',
  /** The controller refused to create or grow the volume: no space for it in the data directory. */
  InsufficientCapacity: 'Warning',
} as const;

export type EventReason = keyof typeof EVENT_REASONS;

/** Where Events go: the controller and the node plugin each hold one. */
export interface EventSink {
  /** Records an Event on the PVC; resolves once recorded or given up on (never rejects). */
  record(pvc: PvcRef, reason: EventReason, message: string): Promise<void>;
}
