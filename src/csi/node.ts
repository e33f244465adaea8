// CSI Node service (CSI spec "Node Service RPC"), thin: each RPC checks its request fields (answering
// INVALID_ARGUMENT naming the field), calls one node operation (src/node) with the call's deadline, and
// maps what that throws to a gRPC code with the one table below. nodeBinding() says which volume each
// call locks: the wait policy (in-flight.ts), so a retry of a slow stage waits for it until shortly before
// its own deadline and then gets ABORTED, never a permanent "operation locked".

import { status } from '@grpc/grpc-js';
import { HostError, type HostErrorKind } from '../host/errors.js';
import { readInitiatorName } from '../host/iscsid.js';
import { pvcRefFrom } from '../kube/types.js';
import type { NodeOperation } from '../metrics/registry.js';
import { expandVolume } from '../node/expand.js';
import { publishVolume, unpublishVolume } from '../node/publish.js';
import { parsePublishContext } from '../node/publish-context.js';
import { stageVolume } from '../node/stage.js';
import { volumeStats } from '../node/stats.js';
import type { NodeEnv } from '../node/types.js';
import { unstageVolume } from '../node/unstage.js';
import { CsiError, invalidArgument, notFound, toCsiError } from './errors.js';
import type { CsiServiceBinding } from './plugin-server.js';
import type {
  NodeExpandVolumeRequest,
  NodeExpandVolumeResponse,
  NodeGetCapabilitiesResponse,
  NodeGetInfoResponse,
  NodeGetVolumeStatsRequest,
  NodeGetVolumeStatsResponse,
  NodePublishVolumeRequest,
  NodePublishVolumeResponse,
  NodeRpcType,
  NodeStageVolumeRequest,
  NodeStageVolumeResponse,
  NodeUnpublishVolumeRequest,
  NodeUnpublishVolumeResponse,
  NodeUnstageVolumeRequest,
  NodeUnstageVolumeResponse,
  VolumeCapability,
} from './types.js';
import type { CallContext, MethodSpec } from './unary-call.js';
import { capacityBounds, checkCapability, DEFAULT_FS_TYPE, parseNodeId, requireString, unsupportedReason } from './validate.js';

/** The one table: host/node error kinds -> gRPC status. */
const HOST_ERROR_STATUS: Readonly<Record<HostErrorKind, status>> = {
  timeout: status.DEADLINE_EXCEEDED,
  unavailable: status.UNAVAILABLE,
  failed: status.INTERNAL,
  busy: status.FAILED_PRECONDITION,
  precondition: status.FAILED_PRECONDITION,
  'not-found': status.NOT_FOUND,
  conflict: status.ALREADY_EXISTS,
};

export function nodeCsiError(err: unknown): CsiError {
  if (err instanceof HostError) return new CsiError(HOST_ERROR_STATUS[err.kind], err.message);
  return toCsiError(err);
}

const CAPABILITIES: readonly NodeRpcType[] = [
  'STAGE_UNSTAGE_VOLUME',
  'GET_VOLUME_STATS',
  'EXPAND_VOLUME',
  'VOLUME_CONDITION',
  'SINGLE_NODE_MULTI_WRITER',
];

const MAX_PATH_BYTES = 4096;
const requirePath = (v: string | undefined, field: string): string => {
  const p = requireString(v, field, MAX_PATH_BYTES);
  if (!p.startsWith('/')) throw invalidArgument(`${field} ${JSON.stringify(p)} must be an absolute path`);
  return withoutTrailingSlash(p);
};
const withoutTrailingSlash = (p: string): string => p.replace(/\/+$/, '') || '/';

/**
 * volume_path of NodeGetVolumeStats / NodeExpandVolume: a path where the volume is. A relative path
 * cannot be one, so it is NOT_FOUND (CSI spec: "a volume corresponding to the specified volume_id does not
 * exist on specified volume_path"), as an absolute path without the volume is; only a missing one is
 * INVALID_ARGUMENT.
 */
const requireVolumePath = (v: string | undefined, volumeId: string): string => {
  const p = requireString(v, 'volume_path', MAX_PATH_BYTES);
  if (!p.startsWith('/')) throw notFound(`volume ${volumeId} is not at volume_path ${JSON.stringify(p)}: not an absolute path`);
  return withoutTrailingSlash(p);
};

function capabilityOf(
  cap: VolumeCapability | null,
  field: string,
  ctxFsType?: string,
): { accessType: 'mount' | 'block'; fsType: string; mountFlags: string[] } {
  const c = checkCapability(cap, field);
  const why = unsupportedReason(c, field);
  if (why) throw invalidArgument(why);
  if (c.accessType === 'block') return { accessType: 'block', fsType: '', mountFlags: [] };
  return { accessType: 'mount', fsType: c.fsType || ctxFsType || DEFAULT_FS_TYPE, mountFlags: [...(cap?.mount?.mount_flags ?? [])] };
}

/** Told the result and duration of each stage, unstage, publish, unpublish and expand (metrics). */
export type NodeOperationObserver = (operation: NodeOperation, ok: boolean, seconds: number) => void;

export class NodeService {
  constructor(
    private readonly env: NodeEnv,
    private readonly observe?: NodeOperationObserver,
  ) {}

  /** Runs one node operation, timing it for the observer. */
  private async timed<T>(operation: NodeOperation, run: () => Promise<T>): Promise<T> {
    const t0 = process.hrtime.bigint();
    const seconds = (): number => Number(process.hrtime.bigint() - t0) / 1e9;
    try {
      const out = await run();
      this.observe?.(operation, true, seconds());
      return out;
    } catch (err) {
      this.observe?.(operation, false, seconds());
      throw err;
    }
  }

  async nodeGetInfo(): Promise<NodeGetInfoResponse> {
    const iqn = await readInitiatorName(this.env.hostFs);
    const nodeId = `${this.env.config.nodeName}#${iqn}`;
    // The form ControllerPublishVolume parses: a wrong one is the node's misconfiguration, said here.
    try {
      parseNodeId(nodeId);
    } catch (err) {
      throw new CsiError(status.FAILED_PRECONDITION, `this node's id is not valid: ${(err as Error).message}`);
    }
    const topo = this.env.config.topology;
    return {
      node_id: nodeId,
      max_volumes_per_node: String(this.env.config.maxVolumes),
      accessible_topology: topo && Object.keys(topo).length > 0 ? { segments: { ...topo } } : null,
    };
  }

  nodeGetCapabilities(): NodeGetCapabilitiesResponse {
    return { capabilities: CAPABILITIES.map((type) => ({ rpc: { type } })) };
  }

  async nodeStageVolume(r: NodeStageVolumeRequest, ctx: CallContext): Promise<NodeStageVolumeResponse> {
    const volumeId = requireString(r.volume_id, 'volume_id');
    const stagingPath = requirePath(r.staging_target_path, 'staging_target_path');
    const fsFromContext = r.volume_context.fsType ?? r.publish_context.fsType;
    const cap = capabilityOf(r.volume_capability, 'volume_capability', fsFromContext);
    if (Object.keys(r.publish_context).length === 0) {
      throw invalidArgument('publish_context is required: give what ControllerPublishVolume returned (targetIqn, portals, lun, wwid)');
    }
    const target = parsePublishContext(r.publish_context, r.secrets);
    const pvc = pvcRefFrom(r.volume_context);
    try {
      await this.timed('stage', () => stageVolume(this.env, { volumeId, stagingPath, ...cap, target, pvc }, ctx.deadline, ctx.steps));
    } catch (err) {
      if (pvc && this.env.events) {
        const why = nodeCsiError(err).message;
        void this.env.events.record(
          pvc,
          'StagingFailed',
          `volume ${volumeId} could not be staged on node ${this.env.config.nodeName}: ${why}`,
        );
      }
      throw err;
    }
    return {};
  }

  async nodeUnstageVolume(r: NodeUnstageVolumeRequest, ctx: CallContext): Promise<NodeUnstageVolumeResponse> {
    const volumeId = requireString(r.volume_id, 'volume_id');
    const stagingPath = requirePath(r.staging_target_path, 'staging_target_path');
    await this.timed('unstage', () => unstageVolume(this.env, volumeId, stagingPath, ctx.deadline, ctx.steps));
    return {};
  }

  async nodePublishVolume(r: NodePublishVolumeRequest, ctx: CallContext): Promise<NodePublishVolumeResponse> {
    const volumeId = requireString(r.volume_id, 'volume_id');
    const stagingPath = requirePath(r.staging_target_path, 'staging_target_path');
    const targetPath = requirePath(r.target_path, 'target_path');
    const cap = capabilityOf(r.volume_capability, 'volume_capability');
    await this.timed('publish', () =>
      publishVolume(
        this.env,
        { volumeId, stagingPath, targetPath, accessType: cap.accessType, readonly: r.readonly, mountFlags: cap.mountFlags },
        ctx.deadline,
      ),
    );
    return {};
  }

  async nodeUnpublishVolume(r: NodeUnpublishVolumeRequest, ctx: CallContext): Promise<NodeUnpublishVolumeResponse> {
    const volumeId = requireString(r.volume_id, 'volume_id');
    const targetPath = requirePath(r.target_path, 'target_path');
    await this.timed('unpublish', () => unpublishVolume(this.env, volumeId, targetPath, ctx.deadline));
    return {};
  }

  /**
   * NOT_FOUND for a volume this node has not staged, before the volume_path is judged: the CSI spec's
   * answer for an unknown volume_id (NodeGetVolumeStats, NodeExpandVolume) wins over a malformed path.
   */
  private async requireStaged(volumeId: string): Promise<void> {
    const rec = await this.env.records.load(volumeId);
    if (rec?.phase !== 'staged') throw nodeCsiError(new HostError('not-found', `volume ${volumeId} is not staged on this node`));
  }

  async nodeGetVolumeStats(r: NodeGetVolumeStatsRequest, ctx: CallContext): Promise<NodeGetVolumeStatsResponse> {
    const volumeId = requireString(r.volume_id, 'volume_id');
    requireString(r.volume_path, 'volume_path');
    await this.requireStaged(volumeId);
    const volumePath = requireVolumePath(r.volume_path, volumeId);
    const s = await volumeStats(this.env, volumeId, volumePath, ctx.deadline);
    const usage: NodeGetVolumeStatsResponse['usage'] = [];
    if (s.bytes)
      usage.push({ unit: 'BYTES', total: String(s.bytes.total), available: String(s.bytes.available), used: String(s.bytes.used) });
    if (s.inodes)
      usage.push({ unit: 'INODES', total: String(s.inodes.total), available: String(s.inodes.available), used: String(s.inodes.used) });
    return { usage, volume_condition: s.condition };
  }

  async nodeExpandVolume(r: NodeExpandVolumeRequest, ctx: CallContext): Promise<NodeExpandVolumeResponse> {
    const volumeId = requireString(r.volume_id, 'volume_id');
    requireString(r.volume_path, 'volume_path');
    await this.requireStaged(volumeId);
    const volumePath = requireVolumePath(r.volume_path, volumeId);
    const bounds = capacityBounds(r.capacity_range);
    if (r.volume_capability) capabilityOf(r.volume_capability, 'volume_capability');
    const size = await this.timed('expand', () => expandVolume(this.env, volumeId, volumePath, bounds.required, ctx.deadline));
    return { capacity_bytes: String(size) };
  }
}

/** A call on one volume: locks it, logs its id, maps host errors. */
function onVolume<Req extends { volume_id: string }, Res>(call: (r: Req, ctx: CallContext) => Promise<Res>): MethodSpec<Req, Res> {
  return {
    call: (r, ctx) =>
      call(r, ctx).catch((err: unknown) => {
        throw nodeCsiError(err);
      }),
    locks: (r) => [`volume:${r.volume_id}`],
    ids: (r) => ({ volumeId: r.volume_id }),
    // Unstage and the rest must work whatever iscsid's state: a failure says what is wrong.
    needsReady: false,
  };
}

export function nodeBinding(node: NodeService): CsiServiceBinding {
  return {
    name: 'Node',
    inFlight: 'wait',
    methods: (rpc) => ({
      NodeStageVolume: rpc(
        'NodeStageVolume',
        onVolume((r: NodeStageVolumeRequest, c) => node.nodeStageVolume(r, c)),
      ),
      NodeUnstageVolume: rpc(
        'NodeUnstageVolume',
        onVolume((r: NodeUnstageVolumeRequest, c) => node.nodeUnstageVolume(r, c)),
      ),
      NodePublishVolume: rpc(
        'NodePublishVolume',
        onVolume((r: NodePublishVolumeRequest, c) => node.nodePublishVolume(r, c)),
      ),
      NodeUnpublishVolume: rpc(
        'NodeUnpublishVolume',
        onVolume((r: NodeUnpublishVolumeRequest, c) => node.nodeUnpublishVolume(r, c)),
      ),
      NodeGetVolumeStats: rpc('NodeGetVolumeStats', {
        ...onVolume((r: NodeGetVolumeStatsRequest, c) => node.nodeGetVolumeStats(r, c)),
        // Read-only and polled by kubelet: never queued behind a stage.
        locks: () => [],
        quiet: true,
      }),
      NodeExpandVolume: rpc(
        'NodeExpandVolume',
        onVolume((r: NodeExpandVolumeRequest, c) => node.nodeExpandVolume(r, c)),
      ),
      NodeGetCapabilities: rpc('NodeGetCapabilities', { call: () => node.nodeGetCapabilities(), needsReady: false, quiet: true }),
      NodeGetInfo: rpc('NodeGetInfo', {
        call: () =>
          node.nodeGetInfo().catch((err: unknown) => {
            throw nodeCsiError(err);
          }),
        needsReady: false,
      }),
    }),
  };
}
