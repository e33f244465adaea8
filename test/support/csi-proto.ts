// Messages and enums of proto/csi.proto as proto-loader reads it: what the CSI spec defines, for tests
// that check Lunar's types and answers against the spec rather than against Lunar's own lists.
import assert from 'node:assert/strict';
import * as protoLoader from '@grpc/proto-loader';
import { csiProtoPath, PROTO_LOADER_OPTIONS } from '../../src/csi/proto.js';

export interface ProtoField {
  name: string;
  oneofIndex?: number;
}
export interface ProtoEnum {
  name: string;
  value: { name: string }[];
}
export interface ProtoMessage {
  name: string;
  field: ProtoField[];
  oneofDecl: { name: string }[];
  nestedType: ProtoMessage[];
  enumType: ProtoEnum[];
}

const definitions = protoLoader.loadSync(csiProtoPath(), PROTO_LOADER_OPTIONS);

/** A message by dotted path ("VolumeCapability.MountVolume"): proto-loader lists top-level types only. */
export function messageType(name: string): ProtoMessage {
  const [top, ...nested] = name.split('.');
  const def = definitions[`csi.v1.${top}`] as { type?: ProtoMessage; format?: string } | undefined;
  assert.ok(def && def.format === 'Protocol Buffer 3 DescriptorProto', `csi.v1.${top} is not a message of proto/csi.proto`);
  let msg = def.type as ProtoMessage;
  for (const part of nested) {
    const next = msg.nestedType.find((n) => n.name === part);
    assert.ok(next, `csi.v1.${name}: no nested message ${part}`);
    msg = next;
  }
  return msg;
}

/** The value names of an enum nested in a message ("ControllerServiceCapability.RPC.Type"). */
export function enumValues(name: string): string[] {
  const parts = name.split('.');
  const last = parts.pop() as string;
  const e = messageType(parts.join('.')).enumType.find((x) => x.name === last);
  assert.ok(e, `enum csi.v1.${name} missing`);
  return e.value.map((v) => v.name);
}
