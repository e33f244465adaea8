// CSI Controller service over Lunar's VolumeService (CSI spec "Controller Service RPC").
// Every request field is checked here and answered with the code the spec's error tables name; the
// volume layer does the work (files, targets, LUN masking) and its VolumeErrors map to gRPC codes in
// errors.ts. The wire contract (volume_context, publish_context, parameters, node ids) is in docs/csi.md.

import { status } from '@grpc/grpc-js';
import {
  PVC_NAME_CONTEXT,
  PVC_NAME_PARAMETER,
  PVC_NAMESPACE_CONTEXT,
  PVC_NAMESPACE_PARAMETER,
  pvcRefFrom,
  type EventSink,
  type PvcRef,
} from '../kube/types.js';
import { naaWwid } from '../util/ids.js';
import { portalAddress } from '../util/portal.js';
import { VolumeError, type Snapshot, type Volume, type VolumeService, type VolumeSource, type VolumeSpec } from '../volumes/types.js';
import { keyList } from './bounded.js';
import { alreadyExists, CsiError, failedPrecondition, invalidArgument, notFound, outOfRange } from './errors.js';
import type {
  ControllerExpandVolumeRequest,
  ControllerExpandVolumeResponse,
  ControllerGetCapabilitiesResponse,
  ControllerGetVolumeRequest,
  ControllerGetVolumeResponse,
  ControllerPublishVolumeRequest,
  ControllerPublishVolumeResponse,
  ControllerRpcType,
  ControllerUnpublishVolumeRequest,
  ControllerUnpublishVolumeResponse,
  CreateSnapshotRequest,
  CreateSnapshotResponse,
  CreateVolumeRequest,
  CreateVolumeResponse,
  CsiSnapshot,
  CsiVolume,
  DeleteSnapshotRequest,
  DeleteSnapshotResponse,
  DeleteVolumeRequest,
  DeleteVolumeResponse,
  GetCapacityRequest,
  GetCapacityResponse,
  GetSnapshotRequest,
  GetSnapshotResponse,
  ListSnapshotsRequest,
  ListSnapshotsResponse,
  ListVolumesRequest,
  ListVolumesResponse,
  StringMap,
  Topology,
  ValidateVolumeCapabilitiesRequest,
  ValidateVolumeCapabilitiesResponse,
  VolumeCondition,
  VolumeContentSource,
} from './types.js';
import {
  CAPACITY_ALIGNMENT,
  capacityBounds,
  checkCapabilities,
  checkCapability,
  isSingleNodeMode,
  MIN_VOLUME_BYTES,
  paginate,
  parseNodeId,
  parseParameters,
  requireName,
  requireString,
  roundDown,
  roundUp,
  sameParameters,
  SIDECAR_PARAMETER_PREFIX,
  toTimestamp,
  unsupportedReason,
  volumeSize,
  MAX_VOLUME_BYTES,
  type CheckedCapability,
} from './validate.js';

/** volume_context / publish_context keys (docs/csi.md). */
export const CTX = {
  targetIqn: 'targetIqn',
  lun: 'lun',
  portals: 'portals',
  wwid: 'wwid',
  serial: 'serial',
  fsType: 'fsType',
  chap: 'chap',
  initiatorName: 'initiatorName',
  chapUser: 'chapUser',
  chapSecret: 'chapSecret',
  mutualUser: 'mutualUser',
  mutualSecret: 'mutualSecret',
  discoveryChapUser: 'discoveryChapUser',
  discoveryChapSecret: 'discoveryChapSecret',
  pvcName: PVC_NAME_CONTEXT,
  pvcNamespace: PVC_NAMESPACE_CONTEXT,
} as const;

const CAPABILITIES: readonly ControllerRpcType[] = [
  'CREATE_DELETE_VOLUME',
  'PUBLISH_UNPUBLISH_VOLUME',
  'LIST_VOLUMES',
  'GET_CAPACITY',
  'CREATE_DELETE_SNAPSHOT',
  'LIST_SNAPSHOTS',
  'CLONE_VOLUME',
  'EXPAND_VOLUME',
  'LIST_VOLUMES_PUBLISHED_NODES',
  'VOLUME_CONDITION',
  'GET_VOLUME',
  'SINGLE_NODE_MULTI_WRITER',
  'GET_SNAPSHOT',
];

export interface ControllerOptions {
  readonly volumes: VolumeService;
  /** The topology segment every Lunar volume is accessible from (same as the node plugins report). */
  readonly topology?: Readonly<Record<string, string>>;
  /** Events on the PVC of a volume that cannot be created or grown; default none. */
  readonly events?: EventSink;
  /** The SendTargets discovery CHAP the target requires (`lunar serve --discovery-chap`): in every publish_context. */
  readonly discoveryChap?: { readonly user: string; readonly secret: string } | null;
}

function chapMode(v: Volume): 'none' | 'chap' | 'mutual' {
  if (!v.chap) return 'none';
  return v.chap.mutualUser !== undefined ? 'mutual' : 'chap';
}

function sourceOf(v: Volume): VolumeContentSource | null {
  if (!v.source) return null;
  return v.source.kind === 'snapshot'
    ? { snapshot: { snapshot_id: v.source.id }, type: 'snapshot' }
    : { volume: { volume_id: v.source.id }, type: 'volume' };
}

/** A synchronous handler's answer as a promise: what it throws becomes a rejection, as in the async ones. */
function answer<T>(fn: () => T): Promise<T> {
  return new Promise((resolve) => {
    resolve(fn());
  });
}

function topologyMatches(segments: Readonly<Record<string, string>>, t: Topology): boolean {
  return Object.entries(t.segments).every(([k, v]) => segments[k] === v);
}

export class ControllerService {
  private readonly volumes: VolumeService;
  private readonly topology: Readonly<Record<string, string>> | undefined;
  private readonly events: EventSink | undefined;
  private readonly discoveryChap: { readonly user: string; readonly secret: string } | null;

  constructor(opts: ControllerOptions) {
    this.volumes = opts.volumes;
    this.discoveryChap = opts.discoveryChap ?? null;
    this.events = opts.events;
    this.topology = opts.topology && Object.keys(opts.topology).length > 0 ? opts.topology : undefined;
  }

  // ---- projections ------------------------------------------------------------------------------

  /** volume_context: what the node plugin needs to find and check the LU; never secrets. */
  volumeContext(v: Volume): StringMap {
    const ctx: StringMap = {
      [CTX.targetIqn]: v.iqn,
      [CTX.lun]: String(v.lun),
      [CTX.portals]: v.portals.map(portalAddress).join(','),
      [CTX.wwid]: naaWwid(v.naa),
      [CTX.serial]: v.serial,
      [CTX.chap]: chapMode(v),
    };
    const fsType = v.parameters.fsType;
    if (fsType) ctx[CTX.fsType] = fsType;
    // The PVC the volume was created for: the node plugin puts its Events (formatted, staging failed,
    // path lost) on it.
    const pvc = pvcRefFrom(v.parameters);
    if (pvc) {
      ctx[CTX.pvcName] = pvc.name;
      ctx[CTX.pvcNamespace] = pvc.namespace;
    }
    return ctx;
  }

  toCsiVolume(v: Volume): CsiVolume {
    return {
      capacity_bytes: String(v.sizeBytes),
      volume_id: v.id,
      volume_context: this.volumeContext(v),
      content_source: sourceOf(v),
      accessible_topology: this.topology ? [{ segments: { ...this.topology } }] : [],
    };
  }

  /** publish_context: the volume_context again, the admitted initiator, and the CHAP credentials (discovery and session). */
  publishContext(v: Volume, initiatorName: string): StringMap {
    const ctx: StringMap = { ...this.volumeContext(v), [CTX.initiatorName]: initiatorName };
    // The node's discovery must log in with them before it sees the target (docs/csi.md, the same
    // decision as the session CHAP below).
    if (this.discoveryChap) {
      ctx[CTX.discoveryChapUser] = this.discoveryChap.user;
      ctx[CTX.discoveryChapSecret] = this.discoveryChap.secret;
    }
    if (v.chap) {
      ctx[CTX.chapUser] = v.chap.user;
      ctx[CTX.chapSecret] = v.chap.secret;
      if (v.chap.mutualUser !== undefined && v.chap.mutualSecret !== undefined) {
        ctx[CTX.mutualUser] = v.chap.mutualUser;
        ctx[CTX.mutualSecret] = v.chap.mutualSecret;
      }
    }
    return ctx;
  }

  toCsiSnapshot(s: Snapshot): CsiSnapshot {
    return {
      size_bytes: String(s.sizeBytes),
      snapshot_id: s.id,
      source_volume_id: s.sourceVolumeId,
      creation_time: toTimestamp(s.createdAt),
      ready_to_use: s.readyToUse,
      group_snapshot_id: '',
    };
  }

  private async conditionOf(id: string): Promise<VolumeCondition> {
    try {
      const c = await this.volumes.condition(id);
      return { abnormal: c.abnormal, message: c.message };
    } catch (err) {
      return { abnormal: true, message: `condition check failed: ${err instanceof Error ? err.message : String(err)}` };
    }
  }

  private getVolume(id: string, field: string): Volume {
    const v = this.volumes.get(id);
    if (!v) throw notFound(`${field}: volume ${JSON.stringify(id)} does not exist`);
    return v;
  }

  private checkSupported(caps: readonly CheckedCapability[], field: string): void {
    caps.forEach((c, i) => {
      const reason = unsupportedReason(c, `${field}[${i}]`);
      if (reason) throw invalidArgument(reason);
    });
  }

  /**
   * An InsufficientCapacity Event on the PVC when the volume layer found no space. Not awaited: the
   * answer does not wait for the API server (PvcEvents retries, then logs; it never rejects).
   */
  private reportNoSpace(pvc: PvcRef, err: unknown, what: string): void {
    if (!this.events || !(err instanceof VolumeError) || err.code !== 'resource-exhausted') return;
    void this.events.record(
      pvc,
      'InsufficientCapacity',
      `${what}: ${err.message}. Free space in Lunar's data directory on the storage node (or give it a larger disk), ` +
        'ask for a smaller volume, or use a thin StorageClass (parameter thin: "true").',
    );
  }

  // ---- RPCs -------------------------------------------------------------------------------------

  async createVolume(req: CreateVolumeRequest): Promise<CreateVolumeResponse> {
    const name = requireName(req.name, 'name');
    const caps = checkCapabilities(req.volume_capabilities, 'volume_capabilities');
    this.checkSupported(caps, 'volume_capabilities');
    const params = parseParameters(req.parameters);
    if (Object.keys(req.mutable_parameters).length > 0) {
      throw invalidArgument('mutable_parameters are not supported: Lunar has no MODIFY_VOLUME capability (VolumeAttributesClass)');
    }
    // The filesystem the node formats: parameters.fsType or the mount capability's fs_type.
    const mountFs = [...new Set(caps.filter((c) => c.accessType === 'mount' && c.fsType !== '').map((c) => c.fsType))];
    if (mountFs.length > 1) throw invalidArgument(`volume_capabilities ask for different fs_type values (${mountFs.join(', ')}); give one`);
    if (params.fsType !== undefined && mountFs[0] !== undefined && params.fsType !== mountFs[0]) {
      throw invalidArgument(`parameters.fsType ${params.fsType} and volume_capabilities mount.fs_type ${mountFs[0]} disagree`);
    }
    const fsType = params.fsType ?? mountFs[0];
    // The PVC (external-provisioner --extra-create-metadata) is kept with the volume for its Events. A
    // volume recorded before Lunar kept it matches a retry without it (the idempotency compares parameters).
    const existing = this.volumes.getByName(name);
    const pvc = pvcRefFrom(req.parameters);
    const keepPvc = pvc !== null && (!existing || PVC_NAME_PARAMETER in existing.parameters);
    const stored: Record<string, string> = {
      ...params.stored,
      ...(fsType !== undefined ? { fsType } : {}),
      ...(keepPvc ? { [PVC_NAME_PARAMETER]: pvc.name, [PVC_NAMESPACE_PARAMETER]: pvc.namespace } : {}),
    };
    const bounds = capacityBounds(req.capacity_range);

    let source: VolumeSource | undefined;
    let sourceBytes: number | undefined;
    const cs = req.volume_content_source;
    if (cs) {
      if (cs.snapshot) {
        const id = requireString(cs.snapshot.snapshot_id, 'volume_content_source.snapshot.snapshot_id');
        const snap = this.volumes.getSnapshot(id);
        if (!snap) throw notFound(`volume_content_source: snapshot ${JSON.stringify(id)} does not exist`);
        source = { kind: 'snapshot', id };
        sourceBytes = snap.sizeBytes;
      } else if (cs.volume) {
        const id = requireString(cs.volume.volume_id, 'volume_content_source.volume.volume_id');
        const vol = this.volumes.get(id);
        if (!vol) throw notFound(`volume_content_source: volume ${JSON.stringify(id)} does not exist`);
        source = { kind: 'volume', id };
        sourceBytes = vol.sizeBytes;
      } else {
        throw invalidArgument('volume_content_source must set snapshot or volume');
      }
    }

    const req7 = req.accessibility_requirements;
    if (this.topology && req7 && req7.requisite.length > 0) {
      const seg = this.topology;
      if (!req7.requisite.some((t) => topologyMatches(seg, t))) {
        throw new CsiError(
          status.RESOURCE_EXHAUSTED,
          `accessibility_requirements.requisite does not include this Lunar's topology ${JSON.stringify(seg)}`,
        );
      }
    }

    // create() decides whether a volume of this name matches (sizeRange: the CSI capacity_range); a
    // mismatch is ALREADY_EXISTS with the difference named (errors.ts maps the code). A size for a new
    // volume is only worked out when there is none yet, so that a retry after the source has changed
    // still finds its volume.
    const sizeBytes = existing?.sizeBytes ?? volumeSize(bounds, sourceBytes);
    const spec: VolumeSpec = {
      name,
      sizeBytes,
      sizeRange: { minBytes: bounds.required, ...(bounds.limit !== 0 ? { maxBytes: bounds.limit } : {}) },
      thin: params.thin,
      chap: params.chap === 'none' ? { mode: 'none' } : { mode: params.chap },
      masked: true,
      ...(params.portals ? { portals: params.portals } : {}),
      ...(source ? { source } : {}),
      parameters: stored,
    };
    try {
      const v = await this.volumes.create(spec);
      return { volume: this.toCsiVolume(v) };
    } catch (err) {
      if (pvc) this.reportNoSpace(pvc, err, `volume ${name} (${sizeBytes} bytes) was not created`);
      throw err;
    }
  }

  async deleteVolume(req: DeleteVolumeRequest): Promise<DeleteVolumeResponse> {
    const id = requireString(req.volume_id, 'volume_id');
    const v = this.volumes.get(id);
    if (v) {
      const nodes = Object.keys(v.publications);
      if (nodes.length > 0) {
        throw failedPrecondition(
          `volume ${id} is still published to node(s) ${nodes.join(', ')}; call ControllerUnpublishVolume for each first`,
        );
      }
    }
    await this.volumes.delete(id);
    return {};
  }

  async controllerPublishVolume(req: ControllerPublishVolumeRequest): Promise<ControllerPublishVolumeResponse> {
    const id = requireString(req.volume_id, 'volume_id');
    const nodeId = requireString(req.node_id, 'node_id', 256);
    const cap = checkCapability(req.volume_capability, 'volume_capability');
    const reason = unsupportedReason(cap, 'volume_capability');
    if (reason) throw invalidArgument(reason);
    if (req.readonly) {
      throw invalidArgument(
        'readonly must be false: Lunar has no PUBLISH_READONLY capability; the node plugin makes the mount or device read-only (NodePublishVolume.readonly)',
      );
    }
    const v = this.getVolume(id, 'volume_id');
    let node: ReturnType<typeof parseNodeId>;
    try {
      node = parseNodeId(nodeId);
    } catch (err) {
      // An id no Lunar node plugin reports names no node: the spec's "Node does not exist".
      throw notFound(err instanceof Error ? err.message : String(err));
    }
    const ctx = req.volume_context;
    const mine = this.volumeContext(v);
    for (const [k, val] of Object.entries(ctx)) {
      if (k in mine && mine[k] !== val) {
        throw invalidArgument(`volume_context.${k} ${JSON.stringify(val)} does not match volume ${id} (${JSON.stringify(mine[k])})`);
      }
    }
    const current = v.publications[nodeId];
    if (current !== undefined) {
      if (current !== node.initiatorName) {
        throw alreadyExists(`volume ${id} is published to node ${nodeId} for initiator ${current}, not ${node.initiatorName}`);
      }
      return { publish_context: this.publishContext(v, current) };
    }
    const others = Object.keys(v.publications);
    if (isSingleNodeMode(cap.mode) && others.length > 0) {
      throw failedPrecondition(
        `volume ${id} is already published to node ${others.join(', ')} and access mode ${cap.mode} allows one node; unpublish it there first`,
      );
    }
    const published = await this.volumes.publish(id, nodeId, node.initiatorName);
    return { publish_context: this.publishContext(published, node.initiatorName) };
  }

  async controllerUnpublishVolume(req: ControllerUnpublishVolumeRequest): Promise<ControllerUnpublishVolumeResponse> {
    const id = requireString(req.volume_id, 'volume_id');
    const nodeId = req.node_id;
    if (Buffer.byteLength(nodeId) > 256) throw invalidArgument('node_id is longer than 256 bytes');
    const v = this.volumes.get(id);
    // Unknown volume or node: nothing is published there, which is what the caller wants (spec: OK).
    if (!v) return {};
    const nodes = nodeId === '' ? Object.keys(v.publications) : nodeId in v.publications ? [nodeId] : [];
    for (const n of nodes) await this.volumes.unpublish(id, n);
    return {};
  }

  validateVolumeCapabilities(req: ValidateVolumeCapabilitiesRequest): Promise<ValidateVolumeCapabilitiesResponse> {
    return answer(() => this.validateCapabilities(req));
  }

  private validateCapabilities(req: ValidateVolumeCapabilitiesRequest): ValidateVolumeCapabilitiesResponse {
    const id = requireString(req.volume_id, 'volume_id');
    const caps = checkCapabilities(req.volume_capabilities, 'volume_capabilities');
    const v = this.getVolume(id, 'volume_id');
    const unconfirmed = (message: string): ValidateVolumeCapabilitiesResponse => ({ confirmed: null, message });
    const mine = this.volumeContext(v);
    for (const [k, val] of Object.entries(req.volume_context)) {
      if (mine[k] !== val) return unconfirmed(`volume_context.${k} ${JSON.stringify(val)} does not match volume ${id}`);
    }
    if (Object.keys(req.mutable_parameters).length > 0) return unconfirmed('Lunar has no mutable parameters');
    const given = req.parameters;
    if (Object.keys(given).length > 0) {
      let lunarKeys: Readonly<Record<string, string>>;
      try {
        lunarKeys = parseParameters(given).stored;
      } catch (err) {
        return unconfirmed(err instanceof Error ? err.message : String(err));
      }
      const volKeys = Object.fromEntries(Object.entries(v.parameters).filter(([k]) => k in lunarKeys));
      if (!sameParameters(volKeys, lunarKeys)) {
        return unconfirmed(`parameters ${JSON.stringify(lunarKeys)} differ from volume ${id}'s ${JSON.stringify(v.parameters)}`);
      }
    }
    for (const [i, c] of caps.entries()) {
      const reason = unsupportedReason(c, `volume_capabilities[${i}]`);
      if (reason) return unconfirmed(reason);
      const fs = v.parameters.fsType;
      if (c.accessType === 'mount' && c.fsType !== '' && fs !== undefined && c.fsType !== fs) {
        return unconfirmed(`volume_capabilities[${i}].mount.fs_type ${c.fsType} differs from the volume's fsType ${fs}`);
      }
    }
    return {
      confirmed: {
        volume_context: req.volume_context,
        volume_capabilities: req.volume_capabilities,
        parameters: given,
        mutable_parameters: {},
      },
      message: '',
    };
  }

  async listVolumes(req: ListVolumesRequest): Promise<ListVolumesResponse> {
    const { page, nextToken } = paginate(this.volumes.list(), (v) => v.id, 'v', req.max_entries, req.starting_token);
    const entries = await Promise.all(
      page.map(async (v) => ({
        volume: this.toCsiVolume(v),
        status: { published_node_ids: Object.keys(v.publications), volume_condition: await this.conditionOf(v.id) },
      })),
    );
    return { entries, next_token: nextToken };
  }

  async controllerGetVolume(req: ControllerGetVolumeRequest): Promise<ControllerGetVolumeResponse> {
    const id = requireString(req.volume_id, 'volume_id');
    const v = this.getVolume(id, 'volume_id');
    return {
      volume: this.toCsiVolume(v),
      status: { published_node_ids: Object.keys(v.publications), volume_condition: await this.conditionOf(id) },
    };
  }

  async getCapacity(req: GetCapacityRequest): Promise<GetCapacityResponse> {
    const caps = req.volume_capabilities.map((c, i) => checkCapability(c, `volume_capabilities[${i}]`));
    const params = parseParameters(req.parameters);
    const none: GetCapacityResponse = { available_capacity: '0', maximum_volume_size: null, minimum_volume_size: null };
    if (caps.some((c, i) => unsupportedReason(c, `volume_capabilities[${i}]`) !== null)) return none;
    const t = req.accessible_topology;
    if (this.topology && t && !topologyMatches(this.topology, t)) return none;
    const { availableBytes } = await this.volumes.capacity();
    const available = Math.max(0, roundDown(availableBytes));
    return {
      available_capacity: String(available),
      // A preallocated volume needs its whole size now; a thin (sparse) one has no such bound.
      maximum_volume_size: params.thin ? null : { value: String(available) },
      minimum_volume_size: { value: String(MIN_VOLUME_BYTES) },
    };
  }

  controllerGetCapabilities(): Promise<ControllerGetCapabilitiesResponse> {
    return answer(() => ({ capabilities: CAPABILITIES.map((type) => ({ rpc: { type } })) }));
  }

  async createSnapshot(req: CreateSnapshotRequest): Promise<CreateSnapshotResponse> {
    const sourceId = requireString(req.source_volume_id, 'source_volume_id');
    const name = requireName(req.name, 'name');
    const unknown = Object.keys(req.parameters).filter((k) => !k.startsWith(SIDECAR_PARAMETER_PREFIX));
    if (unknown.length > 0) {
      throw invalidArgument(
        `parameters: unknown key${unknown.length > 1 ? 's' : ''} ${keyList(unknown)}; Lunar takes no snapshot parameters`,
      );
    }
    const existing = this.volumes.getSnapshotByName(name);
    if (existing) {
      if (existing.sourceVolumeId !== sourceId) {
        throw alreadyExists(
          `a snapshot named ${JSON.stringify(name)} already exists (${existing.id}) of volume ${existing.sourceVolumeId}, not ${sourceId}`,
        );
      }
      return { snapshot: this.toCsiSnapshot(existing) };
    }
    this.getVolume(sourceId, 'source_volume_id');
    const snap = await this.volumes.createSnapshot(sourceId, name);
    return { snapshot: this.toCsiSnapshot(snap) };
  }

  async deleteSnapshot(req: DeleteSnapshotRequest): Promise<DeleteSnapshotResponse> {
    const id = requireString(req.snapshot_id, 'snapshot_id');
    await this.volumes.deleteSnapshot(id);
    return {};
  }

  listSnapshots(req: ListSnapshotsRequest): Promise<ListSnapshotsResponse> {
    return answer(() => this.snapshotPage(req));
  }

  private snapshotPage(req: ListSnapshotsRequest): ListSnapshotsResponse {
    let list: readonly Snapshot[];
    if (req.snapshot_id) {
      const s = this.volumes.getSnapshot(req.snapshot_id);
      list = s ? [s] : [];
    } else {
      list = this.volumes.listSnapshots();
    }
    if (req.source_volume_id) list = list.filter((s) => s.sourceVolumeId === req.source_volume_id);
    const { page, nextToken } = paginate(list, (s) => s.id, 's', req.max_entries, req.starting_token);
    return { entries: page.map((s) => ({ snapshot: this.toCsiSnapshot(s) })), next_token: nextToken };
  }

  getSnapshot(req: GetSnapshotRequest): Promise<GetSnapshotResponse> {
    return answer(() => {
      const id = requireString(req.snapshot_id, 'snapshot_id');
      const s = this.volumes.getSnapshot(id);
      if (!s) throw notFound(`snapshot_id: snapshot ${JSON.stringify(id)} does not exist`);
      return { snapshot: this.toCsiSnapshot(s) };
    });
  }

  async controllerExpandVolume(req: ControllerExpandVolumeRequest): Promise<ControllerExpandVolumeResponse> {
    const id = requireString(req.volume_id, 'volume_id');
    if (!req.capacity_range) throw invalidArgument('capacity_range is required');
    const { required, limit } = capacityBounds(req.capacity_range);
    if (required === 0) throw invalidArgument('capacity_range.required_bytes is required for an expansion');
    let nodeExpansion = true;
    if (req.volume_capability) {
      const cap = checkCapability(req.volume_capability, 'volume_capability');
      const reason = unsupportedReason(cap, 'volume_capability');
      if (reason) throw invalidArgument(reason);
      // A block volume is used as the device itself: the initiator picks up the new size (UA 2A/09).
      nodeExpansion = cap.accessType === 'mount';
    }
    const v = this.getVolume(id, 'volume_id');
    if (v.sizeBytes >= required) {
      if (limit !== 0 && v.sizeBytes > limit) {
        throw outOfRange(`volume ${id} already has ${v.sizeBytes} bytes, more than limit_bytes (${limit}); Lunar never shrinks a volume`);
      }
      return { capacity_bytes: String(v.sizeBytes), node_expansion_required: nodeExpansion };
    }
    const target = roundUp(required);
    if (limit !== 0 && target > limit) {
      throw outOfRange(
        `required_bytes (${required}) rounded up to Lunar's ${CAPACITY_ALIGNMENT}-byte alignment is ${target}, more than limit_bytes (${limit})`,
      );
    }
    if (target > MAX_VOLUME_BYTES) throw outOfRange(`requested size ${target} is larger than Lunar supports (${MAX_VOLUME_BYTES})`);
    try {
      const grown = await this.volumes.resize(id, target);
      return { capacity_bytes: String(grown.sizeBytes), node_expansion_required: nodeExpansion };
    } catch (err) {
      const pvc = pvcRefFrom(v.parameters);
      if (pvc) this.reportNoSpace(pvc, err, `volume ${id} was not grown to ${target} bytes`);
      throw err;
    }
  }
}
