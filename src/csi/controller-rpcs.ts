// The Controller service's gRPC methods: which ControllerService call each RPC makes, which objects it
// locks (fail-fast: a second call on a locked object is answered ABORTED) and which ids it logs.
// ControllerModifyVolume is not listed: plugin-server.ts answers it UNIMPLEMENTED (and logs it).

import type { ControllerService } from './controller.js';
import type { CsiServiceBinding } from './plugin-server.js';
import type { MethodSpec } from './unary-call.js';
import type {
  ControllerExpandVolumeRequest,
  ControllerGetVolumeRequest,
  ControllerPublishVolumeRequest,
  ControllerUnpublishVolumeRequest,
  CreateSnapshotRequest,
  CreateVolumeRequest,
  DeleteSnapshotRequest,
  DeleteVolumeRequest,
  GetCapacityRequest,
  GetSnapshotRequest,
  ListSnapshotsRequest,
  ListVolumesRequest,
  ValidateVolumeCapabilitiesRequest,
} from './types.js';

const vol = (id: string): string => `volume:${id}`;

/** A call that works on one existing volume: locks it and logs its id (and the node's, when given). */
function onVolume<Req extends { volume_id: string; node_id?: string }, Res>(call: (r: Req) => Promise<Res>): MethodSpec<Req, Res> {
  return {
    call,
    locks: (r) => [vol(r.volume_id)],
    ids: (r) => ({ volumeId: r.volume_id, ...(r.node_id !== undefined ? { nodeId: r.node_id } : {}) }),
    needsReady: true,
  };
}

export function controllerBinding(controller: ControllerService): CsiServiceBinding {
  return {
    name: 'Controller',
    inFlight: 'fail-fast',
    methods: (rpc) => ({
      CreateVolume: rpc('CreateVolume', {
        call: (r: CreateVolumeRequest) => controller.createVolume(r),
        locks: (r) => [
          `volume name:${r.name}`,
          ...(r.volume_content_source?.volume ? [vol(r.volume_content_source.volume.volume_id)] : []),
          ...(r.volume_content_source?.snapshot ? [`snapshot:${r.volume_content_source.snapshot.snapshot_id}`] : []),
        ],
        ids: (r) => ({ name: r.name }),
        needsReady: true,
      }),
      DeleteVolume: rpc(
        'DeleteVolume',
        onVolume((r: DeleteVolumeRequest) => controller.deleteVolume(r)),
      ),
      ControllerPublishVolume: rpc(
        'ControllerPublishVolume',
        onVolume((r: ControllerPublishVolumeRequest) => controller.controllerPublishVolume(r)),
      ),
      ControllerUnpublishVolume: rpc(
        'ControllerUnpublishVolume',
        onVolume((r: ControllerUnpublishVolumeRequest) => controller.controllerUnpublishVolume(r)),
      ),
      ValidateVolumeCapabilities: rpc('ValidateVolumeCapabilities', {
        call: (r: ValidateVolumeCapabilitiesRequest) => controller.validateVolumeCapabilities(r),
        ids: (r) => ({ volumeId: r.volume_id }),
        needsReady: true,
      }),
      ListVolumes: rpc('ListVolumes', { call: (r: ListVolumesRequest) => controller.listVolumes(r), needsReady: true }),
      GetCapacity: rpc('GetCapacity', { call: (r: GetCapacityRequest) => controller.getCapacity(r), needsReady: true }),
      ControllerGetCapabilities: rpc('ControllerGetCapabilities', {
        call: () => controller.controllerGetCapabilities(),
        needsReady: false,
        quiet: true,
      }),
      ControllerGetVolume: rpc('ControllerGetVolume', {
        call: (r: ControllerGetVolumeRequest) => controller.controllerGetVolume(r),
        ids: (r) => ({ volumeId: r.volume_id }),
        needsReady: true,
      }),
      CreateSnapshot: rpc('CreateSnapshot', {
        call: (r: CreateSnapshotRequest) => controller.createSnapshot(r),
        // The source is locked too: a snapshot must not race a delete or a resize of its volume.
        locks: (r) => [`snapshot name:${r.name}`, vol(r.source_volume_id)],
        ids: (r) => ({ volumeId: r.source_volume_id, name: r.name }),
        needsReady: true,
      }),
      DeleteSnapshot: rpc('DeleteSnapshot', {
        call: (r: DeleteSnapshotRequest) => controller.deleteSnapshot(r),
        locks: (r) => [`snapshot:${r.snapshot_id}`],
        ids: (r) => ({ snapshotId: r.snapshot_id }),
        needsReady: true,
      }),
      ListSnapshots: rpc('ListSnapshots', { call: (r: ListSnapshotsRequest) => controller.listSnapshots(r), needsReady: true }),
      GetSnapshot: rpc('GetSnapshot', {
        call: (r: GetSnapshotRequest) => controller.getSnapshot(r),
        ids: (r) => ({ snapshotId: r.snapshot_id }),
        needsReady: true,
      }),
      ControllerExpandVolume: rpc('ControllerExpandVolume', {
        ...onVolume((r: ControllerExpandVolumeRequest) => controller.controllerExpandVolume(r)),
        results: (res) => ({ capacityBytes: Number(res.capacity_bytes), nodeExpansionRequired: res.node_expansion_required }),
      }),
    }),
  };
}
