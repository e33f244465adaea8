// Hand-written TypeScript shapes of the CSI v1 messages Lunar's Identity and Controller services use
// (proto/csi.proto, package csi.v1). They describe objects as @grpc/proto-loader produces and accepts
// them with { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true }:
//  - field names are the proto names (snake_case);
//  - int64 fields decode to decimal strings (Int64); on encode a string or a number is accepted;
//  - enums decode to their value names;
//  - unset message fields decode to null, unset scalars/maps/repeated to their defaults;
//  - a oneof adds a virtual property naming the member that is set (e.g. access_type: 'mount').
// Written by hand (not generated) so that the code reads with the spec's names and only what Lunar uses
// is typed; test/unit/csi-types.test.ts compares every interface here with the loaded proto, so a
// drift between the two fails a test.

/** proto int64 as decoded with longs: String. */
export type Int64 = string;
/** What an int64 field accepts on encode. */
export type Int64In = string | number;
export type StringMap = Record<string, string>;

// ---- common messages ------------------------------------------------------------------------------

export type AccessModeName =
  | 'UNKNOWN'
  | 'SINGLE_NODE_WRITER'
  | 'SINGLE_NODE_READER_ONLY'
  | 'MULTI_NODE_READER_ONLY'
  | 'MULTI_NODE_SINGLE_WRITER'
  | 'MULTI_NODE_MULTI_WRITER'
  | 'SINGLE_NODE_SINGLE_WRITER'
  | 'SINGLE_NODE_MULTI_WRITER';

/** VolumeCapability.BlockVolume (intentionally empty). */
export type BlockVolume = Record<string, never>;

/** VolumeCapability.MountVolume */
export interface MountVolume {
  fs_type: string;
  mount_flags: string[];
  volume_mount_group: string;
}

/** VolumeCapability.AccessMode */
export interface AccessMode {
  mode: AccessModeName;
}

/** VolumeCapability; oneof access_type { block, mount }. */
export interface VolumeCapability {
  block?: BlockVolume | null;
  mount?: MountVolume | null;
  access_mode: AccessMode | null;
  /** oneof access_type: which member is set. */
  access_type?: 'block' | 'mount';
}

/** CapacityRange */
export interface CapacityRange {
  required_bytes: Int64;
  limit_bytes: Int64;
}

/** VolumeContentSource.SnapshotSource */
export interface SnapshotSource {
  snapshot_id: string;
}
/** VolumeContentSource.VolumeSource */
export interface VolumeSourceMsg {
  volume_id: string;
}
/** VolumeContentSource; oneof type { snapshot, volume }. */
export interface VolumeContentSource {
  snapshot?: SnapshotSource | null;
  volume?: VolumeSourceMsg | null;
  type?: 'snapshot' | 'volume';
}

/** Topology */
export interface Topology {
  segments: StringMap;
}

/** TopologyRequirement */
export interface TopologyRequirement {
  requisite: Topology[];
  preferred: Topology[];
}

/** Volume (as sent). */
export interface CsiVolume {
  capacity_bytes: Int64In;
  volume_id: string;
  volume_context: StringMap;
  content_source: VolumeContentSource | null;
  accessible_topology: Topology[];
}

/** VolumeCondition */
export interface VolumeCondition {
  abnormal: boolean;
  message: string;
}

/** google.protobuf.Timestamp */
export interface Timestamp {
  seconds: Int64In;
  nanos: number;
}

/** google.protobuf.BoolValue */
export interface BoolValue {
  value: boolean;
}

/** google.protobuf.Int64Value */
export interface Int64Value {
  value: Int64In;
}

/** Snapshot (as sent). */
export interface CsiSnapshot {
  size_bytes: Int64In;
  snapshot_id: string;
  source_volume_id: string;
  creation_time: Timestamp | null;
  ready_to_use: boolean;
  group_snapshot_id: string;
}

// ---- Identity ------------------------------------------------------------------------------------

export type GetPluginInfoRequest = Record<string, never>;
export interface GetPluginInfoResponse {
  name: string;
  vendor_version: string;
  manifest: StringMap;
}

export type GetPluginCapabilitiesRequest = Record<string, never>;

export type PluginServiceType =
  'UNKNOWN' | 'CONTROLLER_SERVICE' | 'VOLUME_ACCESSIBILITY_CONSTRAINTS' | 'GROUP_CONTROLLER_SERVICE' | 'SNAPSHOT_METADATA_SERVICE';
export type VolumeExpansionType = 'UNKNOWN' | 'ONLINE' | 'OFFLINE';

/** PluginCapability.Service */
export interface PluginCapabilityService {
  type: PluginServiceType;
}
/** PluginCapability.VolumeExpansion */
export interface PluginCapabilityVolumeExpansion {
  type: VolumeExpansionType;
}
/** PluginCapability; oneof type { service, volume_expansion }. */
export interface PluginCapability {
  service?: PluginCapabilityService | null;
  volume_expansion?: PluginCapabilityVolumeExpansion | null;
  type?: 'service' | 'volume_expansion';
}
export interface GetPluginCapabilitiesResponse {
  capabilities: PluginCapability[];
}

export type ProbeRequest = Record<string, never>;
export interface ProbeResponse {
  ready: BoolValue | null;
}

// ---- Controller ----------------------------------------------------------------------------------

export interface CreateVolumeRequest {
  name: string;
  capacity_range: CapacityRange | null;
  volume_capabilities: VolumeCapability[];
  parameters: StringMap;
  secrets: StringMap;
  volume_content_source: VolumeContentSource | null;
  accessibility_requirements: TopologyRequirement | null;
  mutable_parameters: StringMap;
}
export interface CreateVolumeResponse {
  volume: CsiVolume;
}

export interface DeleteVolumeRequest {
  volume_id: string;
  secrets: StringMap;
}
export type DeleteVolumeResponse = Record<string, never>;

export interface ControllerPublishVolumeRequest {
  volume_id: string;
  node_id: string;
  volume_capability: VolumeCapability | null;
  readonly: boolean;
  secrets: StringMap;
  volume_context: StringMap;
}
export interface ControllerPublishVolumeResponse {
  publish_context: StringMap;
}

export interface ControllerUnpublishVolumeRequest {
  volume_id: string;
  node_id: string;
  secrets: StringMap;
}
export type ControllerUnpublishVolumeResponse = Record<string, never>;

export interface ValidateVolumeCapabilitiesRequest {
  volume_id: string;
  volume_context: StringMap;
  volume_capabilities: VolumeCapability[];
  parameters: StringMap;
  secrets: StringMap;
  mutable_parameters: StringMap;
}
/** ValidateVolumeCapabilitiesResponse.Confirmed */
export interface ValidateConfirmed {
  volume_context: StringMap;
  volume_capabilities: VolumeCapability[];
  parameters: StringMap;
  mutable_parameters: StringMap;
}
export interface ValidateVolumeCapabilitiesResponse {
  confirmed: ValidateConfirmed | null;
  message: string;
}

export interface ListVolumesRequest {
  max_entries: number;
  starting_token: string;
}
/** ListVolumesResponse.VolumeStatus */
export interface ListVolumesVolumeStatus {
  published_node_ids: string[];
  volume_condition: VolumeCondition | null;
}
/** ListVolumesResponse.Entry */
export interface ListVolumesEntry {
  volume: CsiVolume;
  status: ListVolumesVolumeStatus | null;
}
export interface ListVolumesResponse {
  entries: ListVolumesEntry[];
  next_token: string;
}

export interface ControllerGetVolumeRequest {
  volume_id: string;
}
/** ControllerGetVolumeResponse.VolumeStatus */
export interface ControllerGetVolumeStatus {
  published_node_ids: string[];
  volume_condition: VolumeCondition | null;
}
export interface ControllerGetVolumeResponse {
  volume: CsiVolume;
  status: ControllerGetVolumeStatus;
}

export interface GetCapacityRequest {
  volume_capabilities: VolumeCapability[];
  parameters: StringMap;
  accessible_topology: Topology | null;
}
export interface GetCapacityResponse {
  available_capacity: Int64In;
  maximum_volume_size: Int64Value | null;
  minimum_volume_size: Int64Value | null;
}

export type ControllerGetCapabilitiesRequest = Record<string, never>;
export type ControllerRpcType =
  | 'UNKNOWN'
  | 'CREATE_DELETE_VOLUME'
  | 'PUBLISH_UNPUBLISH_VOLUME'
  | 'LIST_VOLUMES'
  | 'GET_CAPACITY'
  | 'CREATE_DELETE_SNAPSHOT'
  | 'LIST_SNAPSHOTS'
  | 'CLONE_VOLUME'
  | 'PUBLISH_READONLY'
  | 'EXPAND_VOLUME'
  | 'LIST_VOLUMES_PUBLISHED_NODES'
  | 'VOLUME_CONDITION'
  | 'GET_VOLUME'
  | 'SINGLE_NODE_MULTI_WRITER'
  | 'MODIFY_VOLUME'
  | 'GET_SNAPSHOT';
/** ControllerServiceCapability.RPC */
export interface ControllerServiceCapabilityRpc {
  type: ControllerRpcType;
}
/** ControllerServiceCapability; oneof type { rpc }. */
export interface ControllerServiceCapability {
  rpc?: ControllerServiceCapabilityRpc | null;
  type?: 'rpc';
}
export interface ControllerGetCapabilitiesResponse {
  capabilities: ControllerServiceCapability[];
}

export interface CreateSnapshotRequest {
  source_volume_id: string;
  name: string;
  secrets: StringMap;
  parameters: StringMap;
}
export interface CreateSnapshotResponse {
  snapshot: CsiSnapshot;
}

export interface DeleteSnapshotRequest {
  snapshot_id: string;
  secrets: StringMap;
}
export type DeleteSnapshotResponse = Record<string, never>;

export interface ListSnapshotsRequest {
  max_entries: number;
  starting_token: string;
  source_volume_id: string;
  snapshot_id: string;
  secrets: StringMap;
}
/** ListSnapshotsResponse.Entry */
export interface ListSnapshotsEntry {
  snapshot: CsiSnapshot;
}
export interface ListSnapshotsResponse {
  entries: ListSnapshotsEntry[];
  next_token: string;
}

export interface GetSnapshotRequest {
  snapshot_id: string;
  secrets: StringMap;
}
export interface GetSnapshotResponse {
  snapshot: CsiSnapshot;
}

export interface ControllerExpandVolumeRequest {
  volume_id: string;
  capacity_range: CapacityRange | null;
  secrets: StringMap;
  volume_capability: VolumeCapability | null;
}
export interface ControllerExpandVolumeResponse {
  capacity_bytes: Int64In;
  node_expansion_required: boolean;
}

// ---- Node ----------------------------------------------------------------------------------------

export interface NodeStageVolumeRequest {
  volume_id: string;
  publish_context: StringMap;
  staging_target_path: string;
  volume_capability: VolumeCapability | null;
  secrets: StringMap;
  volume_context: StringMap;
}
export type NodeStageVolumeResponse = Record<string, never>;

export interface NodeUnstageVolumeRequest {
  volume_id: string;
  staging_target_path: string;
}
export type NodeUnstageVolumeResponse = Record<string, never>;

export interface NodePublishVolumeRequest {
  volume_id: string;
  publish_context: StringMap;
  staging_target_path: string;
  target_path: string;
  volume_capability: VolumeCapability | null;
  readonly: boolean;
  secrets: StringMap;
  volume_context: StringMap;
}
export type NodePublishVolumeResponse = Record<string, never>;

export interface NodeUnpublishVolumeRequest {
  volume_id: string;
  target_path: string;
}
export type NodeUnpublishVolumeResponse = Record<string, never>;

export interface NodeGetVolumeStatsRequest {
  volume_id: string;
  volume_path: string;
  staging_target_path: string;
}
export type VolumeUsageUnit = 'UNKNOWN' | 'BYTES' | 'INODES';
/** VolumeUsage */
export interface VolumeUsage {
  available: Int64In;
  total: Int64In;
  used: Int64In;
  unit: VolumeUsageUnit;
}
export interface NodeGetVolumeStatsResponse {
  usage: VolumeUsage[];
  volume_condition: VolumeCondition | null;
}

export type NodeGetCapabilitiesRequest = Record<string, never>;
export type NodeRpcType =
  | 'UNKNOWN'
  | 'STAGE_UNSTAGE_VOLUME'
  | 'GET_VOLUME_STATS'
  | 'EXPAND_VOLUME'
  | 'VOLUME_CONDITION'
  | 'SINGLE_NODE_MULTI_WRITER'
  | 'VOLUME_MOUNT_GROUP';
/** NodeServiceCapability.RPC */
export interface NodeServiceCapabilityRpc {
  type: NodeRpcType;
}
/** NodeServiceCapability; oneof type { rpc }. */
export interface NodeServiceCapability {
  rpc?: NodeServiceCapabilityRpc | null;
  type?: 'rpc';
}
export interface NodeGetCapabilitiesResponse {
  capabilities: NodeServiceCapability[];
}

export type NodeGetInfoRequest = Record<string, never>;
export interface NodeGetInfoResponse {
  node_id: string;
  max_volumes_per_node: Int64In;
  accessible_topology: Topology | null;
}

export interface NodeExpandVolumeRequest {
  volume_id: string;
  volume_path: string;
  capacity_range: CapacityRange | null;
  staging_target_path: string;
  volume_capability: VolumeCapability | null;
  secrets: StringMap;
}
export interface NodeExpandVolumeResponse {
  capacity_bytes: Int64In;
}
