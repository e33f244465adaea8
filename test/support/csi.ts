// One unary CSI call on a grpc-js client made from proto/csi.proto (loadCsiPackage), as a promise.
import assert from 'node:assert/strict';
import type * as grpc from '@grpc/grpc-js';

type Unary = (req: object, cb: (err: grpc.ServiceError | null, res?: unknown) => void) => void;

export function rpc<R>(client: grpc.Client, method: string, req: object = {}): Promise<R> {
  const fn = (client as unknown as Record<string, Unary | undefined>)[method];
  assert.ok(fn, `no method ${method} on this CSI client`);
  return new Promise((resolve, reject) => fn.call(client, req, (err, res) => (err ? reject(err) : resolve(res as R))));
}
