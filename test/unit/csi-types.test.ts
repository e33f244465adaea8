// src/csi/types.ts against proto/csi.proto: every hand-written interface must name exactly the fields of
// its message (and its oneofs), so a drift on either side fails here. The `satisfies` maps below make
// the TypeScript side fail to compile when an interface gains or loses a field; the test compares the
// same maps with the loaded proto.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { csiProtoPath } from '../../src/csi/proto.js';
import type * as T from '../../src/csi/types.js';
import { enumValues, messageType } from '../support/csi-proto.js';

/** Field names of an interface, minus the virtual oneof discriminators proto-loader adds. */
type Fields<M, Oneofs extends string = never> = Exclude<keyof M & string, Oneofs>;
type FieldMap<M, Oneofs extends string = never> = Record<Fields<M, Oneofs>, true>;

interface Entry {
  readonly fields: Record<string, true>;
  readonly oneofs?: readonly string[];
}

const MESSAGES: Record<string, Entry> = {
  'VolumeCapability.MountVolume': {
    fields: { fs_type: true, mount_flags: true, volume_mount_group: true } satisfies FieldMap<T.MountVolume>,
  },
  'VolumeCapability.AccessMode': { fields: { mode: true } satisfies FieldMap<T.AccessMode> },
  VolumeCapability: {
    fields: { block: true, mount: true, access_mode: true } satisfies FieldMap<T.VolumeCapability, 'access_type'>,
    oneofs: ['access_type'],
  },
  CapacityRange: { fields: { required_bytes: true, limit_bytes: true } satisfies FieldMap<T.CapacityRange> },
  'VolumeContentSource.SnapshotSource': { fields: { snapshot_id: true } satisfies FieldMap<T.SnapshotSource> },
  'VolumeContentSource.VolumeSource': { fields: { volume_id: true } satisfies FieldMap<T.VolumeSourceMsg> },
  VolumeContentSource: { fields: { snapshot: true, volume: true } satisfies FieldMap<T.VolumeContentSource, 'type'>, oneofs: ['type'] },
  Topology: { fields: { segments: true } satisfies FieldMap<T.Topology> },
  TopologyRequirement: { fields: { requisite: true, preferred: true } satisfies FieldMap<T.TopologyRequirement> },
  Volume: {
    fields: {
      capacity_bytes: true,
      volume_id: true,
      volume_context: true,
      content_source: true,
      accessible_topology: true,
    } satisfies FieldMap<T.CsiVolume>,
  },
  VolumeCondition: { fields: { abnormal: true, message: true } satisfies FieldMap<T.VolumeCondition> },
  Snapshot: {
    fields: {
      size_bytes: true,
      snapshot_id: true,
      source_volume_id: true,
      creation_time: true,
      ready_to_use: true,
      group_snapshot_id: true,
    } satisfies FieldMap<T.CsiSnapshot>,
  },
  GetPluginInfoRequest: { fields: {} satisfies FieldMap<T.GetPluginInfoRequest> },
  GetPluginInfoResponse: { fields: { name: true, vendor_version: true, manifest: true } satisfies FieldMap<T.GetPluginInfoResponse> },
  GetPluginCapabilitiesRequest: { fields: {} satisfies FieldMap<T.GetPluginCapabilitiesRequest> },
  'PluginCapability.Service': { fields: { type: true } satisfies FieldMap<T.PluginCapabilityService> },
  'PluginCapability.VolumeExpansion': { fields: { type: true } satisfies FieldMap<T.PluginCapabilityVolumeExpansion> },
  PluginCapability: {
    fields: { service: true, volume_expansion: true } satisfies FieldMap<T.PluginCapability, 'type'>,
    oneofs: ['type'],
  },
  GetPluginCapabilitiesResponse: { fields: { capabilities: true } satisfies FieldMap<T.GetPluginCapabilitiesResponse> },
  ProbeRequest: { fields: {} satisfies FieldMap<T.ProbeRequest> },
  ProbeResponse: { fields: { ready: true } satisfies FieldMap<T.ProbeResponse> },
  CreateVolumeRequest: {
    fields: {
      name: true,
      capacity_range: true,
      volume_capabilities: true,
      parameters: true,
      secrets: true,
      volume_content_source: true,
      accessibility_requirements: true,
      mutable_parameters: true,
    } satisfies FieldMap<T.CreateVolumeRequest>,
  },
  CreateVolumeResponse: { fields: { volume: true } satisfies FieldMap<T.CreateVolumeResponse> },
  DeleteVolumeRequest: { fields: { volume_id: true, secrets: true } satisfies FieldMap<T.DeleteVolumeRequest> },
  DeleteVolumeResponse: { fields: {} satisfies FieldMap<T.DeleteVolumeResponse> },
  ControllerPublishVolumeRequest: {
    fields: {
      volume_id: true,
      node_id: true,
      volume_capability: true,
      readonly: true,
      secrets: true,
      volume_context: true,
    } satisfies FieldMap<T.ControllerPublishVolumeRequest>,
  },
  ControllerPublishVolumeResponse: { fields: { publish_context: true } satisfies FieldMap<T.ControllerPublishVolumeResponse> },
  ControllerUnpublishVolumeRequest: {
    fields: { volume_id: true, node_id: true, secrets: true } satisfies FieldMap<T.ControllerUnpublishVolumeRequest>,
  },
  ControllerUnpublishVolumeResponse: { fields: {} satisfies FieldMap<T.ControllerUnpublishVolumeResponse> },
  ValidateVolumeCapabilitiesRequest: {
    fields: {
      volume_id: true,
      volume_context: true,
      volume_capabilities: true,
      parameters: true,
      secrets: true,
      mutable_parameters: true,
    } satisfies FieldMap<T.ValidateVolumeCapabilitiesRequest>,
  },
  'ValidateVolumeCapabilitiesResponse.Confirmed': {
    fields: {
      volume_context: true,
      volume_capabilities: true,
      parameters: true,
      mutable_parameters: true,
    } satisfies FieldMap<T.ValidateConfirmed>,
  },
  ValidateVolumeCapabilitiesResponse: {
    fields: { confirmed: true, message: true } satisfies FieldMap<T.ValidateVolumeCapabilitiesResponse>,
  },
  ListVolumesRequest: { fields: { max_entries: true, starting_token: true } satisfies FieldMap<T.ListVolumesRequest> },
  'ListVolumesResponse.VolumeStatus': {
    fields: { published_node_ids: true, volume_condition: true } satisfies FieldMap<T.ListVolumesVolumeStatus>,
  },
  'ListVolumesResponse.Entry': { fields: { volume: true, status: true } satisfies FieldMap<T.ListVolumesEntry> },
  ListVolumesResponse: { fields: { entries: true, next_token: true } satisfies FieldMap<T.ListVolumesResponse> },
  ControllerGetVolumeRequest: { fields: { volume_id: true } satisfies FieldMap<T.ControllerGetVolumeRequest> },
  'ControllerGetVolumeResponse.VolumeStatus': {
    fields: { published_node_ids: true, volume_condition: true } satisfies FieldMap<T.ControllerGetVolumeStatus>,
  },
  ControllerGetVolumeResponse: { fields: { volume: true, status: true } satisfies FieldMap<T.ControllerGetVolumeResponse> },
  GetCapacityRequest: {
    fields: { volume_capabilities: true, parameters: true, accessible_topology: true } satisfies FieldMap<T.GetCapacityRequest>,
  },
  GetCapacityResponse: {
    fields: { available_capacity: true, maximum_volume_size: true, minimum_volume_size: true } satisfies FieldMap<T.GetCapacityResponse>,
  },
  ControllerGetCapabilitiesRequest: { fields: {} satisfies FieldMap<T.ControllerGetCapabilitiesRequest> },
  'ControllerServiceCapability.RPC': { fields: { type: true } satisfies FieldMap<T.ControllerServiceCapabilityRpc> },
  ControllerServiceCapability: { fields: { rpc: true } satisfies FieldMap<T.ControllerServiceCapability, 'type'>, oneofs: ['type'] },
  ControllerGetCapabilitiesResponse: { fields: { capabilities: true } satisfies FieldMap<T.ControllerGetCapabilitiesResponse> },
  CreateSnapshotRequest: {
    fields: { source_volume_id: true, name: true, secrets: true, parameters: true } satisfies FieldMap<T.CreateSnapshotRequest>,
  },
  CreateSnapshotResponse: { fields: { snapshot: true } satisfies FieldMap<T.CreateSnapshotResponse> },
  DeleteSnapshotRequest: { fields: { snapshot_id: true, secrets: true } satisfies FieldMap<T.DeleteSnapshotRequest> },
  DeleteSnapshotResponse: { fields: {} satisfies FieldMap<T.DeleteSnapshotResponse> },
  ListSnapshotsRequest: {
    fields: {
      max_entries: true,
      starting_token: true,
      source_volume_id: true,
      snapshot_id: true,
      secrets: true,
    } satisfies FieldMap<T.ListSnapshotsRequest>,
  },
  'ListSnapshotsResponse.Entry': { fields: { snapshot: true } satisfies FieldMap<T.ListSnapshotsEntry> },
  ListSnapshotsResponse: { fields: { entries: true, next_token: true } satisfies FieldMap<T.ListSnapshotsResponse> },
  GetSnapshotRequest: { fields: { snapshot_id: true, secrets: true } satisfies FieldMap<T.GetSnapshotRequest> },
  GetSnapshotResponse: { fields: { snapshot: true } satisfies FieldMap<T.GetSnapshotResponse> },
  ControllerExpandVolumeRequest: {
    fields: {
      volume_id: true,
      capacity_range: true,
      secrets: true,
      volume_capability: true,
    } satisfies FieldMap<T.ControllerExpandVolumeRequest>,
  },
  ControllerExpandVolumeResponse: {
    fields: { capacity_bytes: true, node_expansion_required: true } satisfies FieldMap<T.ControllerExpandVolumeResponse>,
  },
  NodeStageVolumeRequest: {
    fields: {
      volume_id: true,
      publish_context: true,
      staging_target_path: true,
      volume_capability: true,
      secrets: true,
      volume_context: true,
    } satisfies FieldMap<T.NodeStageVolumeRequest>,
  },
  NodeStageVolumeResponse: { fields: {} satisfies FieldMap<T.NodeStageVolumeResponse> },
  NodeUnstageVolumeRequest: { fields: { volume_id: true, staging_target_path: true } satisfies FieldMap<T.NodeUnstageVolumeRequest> },
  NodeUnstageVolumeResponse: { fields: {} satisfies FieldMap<T.NodeUnstageVolumeResponse> },
  NodePublishVolumeRequest: {
    fields: {
      volume_id: true,
      publish_context: true,
      staging_target_path: true,
      target_path: true,
      volume_capability: true,
      readonly: true,
      secrets: true,
      volume_context: true,
    } satisfies FieldMap<T.NodePublishVolumeRequest>,
  },
  NodePublishVolumeResponse: { fields: {} satisfies FieldMap<T.NodePublishVolumeResponse> },
  NodeUnpublishVolumeRequest: { fields: { volume_id: true, target_path: true } satisfies FieldMap<T.NodeUnpublishVolumeRequest> },
  NodeUnpublishVolumeResponse: { fields: {} satisfies FieldMap<T.NodeUnpublishVolumeResponse> },
  NodeGetVolumeStatsRequest: {
    fields: { volume_id: true, volume_path: true, staging_target_path: true } satisfies FieldMap<T.NodeGetVolumeStatsRequest>,
  },
  VolumeUsage: { fields: { available: true, total: true, used: true, unit: true } satisfies FieldMap<T.VolumeUsage> },
  NodeGetVolumeStatsResponse: { fields: { usage: true, volume_condition: true } satisfies FieldMap<T.NodeGetVolumeStatsResponse> },
  NodeGetCapabilitiesRequest: { fields: {} satisfies FieldMap<T.NodeGetCapabilitiesRequest> },
  'NodeServiceCapability.RPC': { fields: { type: true } satisfies FieldMap<T.NodeServiceCapabilityRpc> },
  NodeServiceCapability: { fields: { rpc: true } satisfies FieldMap<T.NodeServiceCapability, 'type'>, oneofs: ['type'] },
  NodeGetCapabilitiesResponse: { fields: { capabilities: true } satisfies FieldMap<T.NodeGetCapabilitiesResponse> },
  NodeGetInfoRequest: { fields: {} satisfies FieldMap<T.NodeGetInfoRequest> },
  NodeGetInfoResponse: {
    fields: { node_id: true, max_volumes_per_node: true, accessible_topology: true } satisfies FieldMap<T.NodeGetInfoResponse>,
  },
  NodeExpandVolumeRequest: {
    fields: {
      volume_id: true,
      volume_path: true,
      capacity_range: true,
      staging_target_path: true,
      volume_capability: true,
      secrets: true,
    } satisfies FieldMap<T.NodeExpandVolumeRequest>,
  },
  NodeExpandVolumeResponse: { fields: { capacity_bytes: true } satisfies FieldMap<T.NodeExpandVolumeResponse> },
};

/**
 * Enum value names typed in types.ts, checked against the proto's enums. Each map names every member of
 * its union type once (`satisfies Record<…, true>`), so the TypeScript side fails to compile when a union
 * gains or loses a name.
 */
const ENUMS: Record<string, Record<string, true>> = {
  'VolumeCapability.AccessMode.Mode': {
    UNKNOWN: true,
    SINGLE_NODE_WRITER: true,
    SINGLE_NODE_READER_ONLY: true,
    MULTI_NODE_READER_ONLY: true,
    MULTI_NODE_SINGLE_WRITER: true,
    MULTI_NODE_MULTI_WRITER: true,
    SINGLE_NODE_SINGLE_WRITER: true,
    SINGLE_NODE_MULTI_WRITER: true,
  } satisfies Record<T.AccessModeName, true>,
  'PluginCapability.Service.Type': {
    UNKNOWN: true,
    CONTROLLER_SERVICE: true,
    VOLUME_ACCESSIBILITY_CONSTRAINTS: true,
    GROUP_CONTROLLER_SERVICE: true,
    SNAPSHOT_METADATA_SERVICE: true,
  } satisfies Record<T.PluginServiceType, true>,
  'PluginCapability.VolumeExpansion.Type': { UNKNOWN: true, ONLINE: true, OFFLINE: true } satisfies Record<T.VolumeExpansionType, true>,
  'ControllerServiceCapability.RPC.Type': {
    UNKNOWN: true,
    CREATE_DELETE_VOLUME: true,
    PUBLISH_UNPUBLISH_VOLUME: true,
    LIST_VOLUMES: true,
    GET_CAPACITY: true,
    CREATE_DELETE_SNAPSHOT: true,
    LIST_SNAPSHOTS: true,
    CLONE_VOLUME: true,
    PUBLISH_READONLY: true,
    EXPAND_VOLUME: true,
    LIST_VOLUMES_PUBLISHED_NODES: true,
    VOLUME_CONDITION: true,
    GET_VOLUME: true,
    SINGLE_NODE_MULTI_WRITER: true,
    MODIFY_VOLUME: true,
    GET_SNAPSHOT: true,
  } satisfies Record<T.ControllerRpcType, true>,
};

test('proto/csi.proto is package csi.v1 with the CSI services', () => {
  const text = readFileSync(csiProtoPath(), 'utf8');
  assert.match(text, /^package csi\.v1;$/m);
  assert.match(text, /^syntax = "proto3";$/m);
  for (const svc of ['Identity', 'Controller', 'GroupController', 'SnapshotMetadata', 'Node']) {
    assert.match(text, new RegExp(`^service ${svc} \\{`, 'm'), `service ${svc}`);
  }
  assert.match(text, /bool csi_secret = 1059;/);
  assert.match(text, /Apache License, Version 2\.0/);
});

for (const [name, entry] of Object.entries(MESSAGES)) {
  test(`types.ts matches csi.v1.${name}`, () => {
    const msg = messageType(name);
    assert.deepEqual(Object.keys(entry.fields).sort(), msg.field.map((f) => f.name).sort());
    assert.deepEqual([...(entry.oneofs ?? [])].sort(), msg.oneofDecl.map((o) => o.name).sort());
  });
}

for (const [name, values] of Object.entries(ENUMS)) {
  test(`types.ts matches enum csi.v1.${name}`, () => {
    assert.deepEqual(Object.keys(values).sort(), enumValues(name).sort());
  });
}

test('every field the proto marks (csi_secret) is a "secrets" map, which the log redaction covers', () => {
  const text = readFileSync(csiProtoPath(), 'utf8');
  const marked = [...text.matchAll(/^\s*(.+?)\s+(\w+)\s*=\s*\d+\s*\n?\s*\[[^\]]*\(csi_secret\) = true/gm)].map((m) => m[2]);
  assert.ok(marked.length >= 10, `found ${marked.length} csi_secret fields`);
  assert.deepEqual([...new Set(marked)], ['secrets']);
});
