// proto/csi.proto (package csi.v1) loaded for grpc-js, with the proto-loader options that the message
// shapes in types.ts describe.

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** proto/csi.proto, found from dist/src/csi/ or src/csi/. */
export function csiProtoPath(): string {
  for (const rel of ['../../../proto/csi.proto', '../../proto/csi.proto']) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(p)) return p;
  }
  throw new Error('proto/csi.proto not found next to the Lunar installation');
}

export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** The CSI services a plugin can serve (the proto's service names). */
export type CsiServiceName = 'Identity' | 'Controller' | 'Node';

export type CsiPackage = Readonly<Record<CsiServiceName, grpc.ServiceClientConstructor>>;

/** Loads proto/csi.proto as grpc-js service constructors (package csi.v1). */
export function loadCsiPackage(): CsiPackage {
  const def = protoLoader.loadSync(csiProtoPath(), PROTO_LOADER_OPTIONS);
  const root = grpc.loadPackageDefinition(def);
  const csi = root.csi as grpc.GrpcObject | undefined;
  const v1 = csi?.v1 as grpc.GrpcObject | undefined;
  const pick = (name: CsiServiceName): grpc.ServiceClientConstructor => {
    const svc = v1?.[name];
    if (typeof svc !== 'function' || !('service' in svc)) throw new Error(`csi.v1.${name} missing from proto/csi.proto`);
    return svc;
  };
  return { Identity: pick('Identity'), Controller: pick('Controller'), Node: pick('Node') };
}
