// One CSI endpoint for a driver deployed in two parts, as a CO sees the driver as a whole: the node
// plugin in a guest (Identity + Node, no CONTROLLER_SERVICE) and the controller on the host (Identity +
// Controller). Every call is relayed byte for byte (no decoding), with its metadata and deadline, and the
// answer or gRPC status comes back unchanged:
//   /csi.v1.Node/*        → the node plugin
//   /csi.v1.Identity/*    → the controller (its GetPluginCapabilities carries CONTROLLER_SERVICE)
//   /csi.v1.Controller/*  → the controller
// Why: csi-sanity (kubernetes-csi/csi-test v5.4.0, pkg/sanity/node.go, the Node Service BeforeEach) decides
// whether to ControllerPublish before NodeStage from GetPluginCapabilities on --csi.endpoint, not on
// --csi.controllerendpoint; against the node plugin alone it never publishes, and the node specs stage a
// volume that is masked from the node. In Kubernetes the external-attacher asks the controller's Identity.

import * as grpc from '@grpc/grpc-js';
import { loadCsiPackage } from '../../src/csi/proto.js';

const pass = (b: Buffer): Buffer => b;

export interface DriverEndpoint {
  readonly endpoint: string; // unix:///...
  /** calls relayed so far, by target */
  readonly relayed: { node: number; controller: number };
  close(): Promise<void>;
}

/** Serves `unix://<sock>` relaying Node calls to `nodeEndpoint`, Identity and Controller calls to `controllerEndpoint`. */
export async function startDriverEndpoint(
  sock: string,
  nodeEndpoint: string,
  controllerEndpoint: string,
  channelOptions: grpc.ChannelOptions = {},
): Promise<DriverEndpoint> {
  const pkg = loadCsiPackage();
  const nodeClient = new grpc.Client(nodeEndpoint, grpc.credentials.createInsecure(), channelOptions);
  const ctlClient = new grpc.Client(controllerEndpoint, grpc.credentials.createInsecure(), channelOptions);
  const relayed = { node: 0, controller: 0 };
  const server = new grpc.Server();
  const routes: Array<['Identity' | 'Node' | 'Controller', grpc.Client, 'node' | 'controller']> = [
    ['Identity', ctlClient, 'controller'],
    ['Controller', ctlClient, 'controller'],
    ['Node', nodeClient, 'node'],
  ];
  for (const [svc, client, to] of routes) {
    for (const def of Object.values(pkg[svc].service)) {
      const handler: grpc.handleUnaryCall<Buffer, Buffer> = (call, cb) => {
        relayed[to]++;
        const md = call.metadata.clone();
        client.makeUnaryRequest(def.path, pass, pass, call.request, md, { deadline: call.getDeadline() }, (err, res) => {
          if (err) cb({ code: err.code, details: err.details, metadata: err.metadata });
          else cb(null, res);
        });
      };
      server.register(def.path, handler, pass, pass, 'unary');
    }
  }
  const endpoint = `unix://${sock}`;
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(endpoint, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())),
  );
  return {
    endpoint,
    relayed,
    async close() {
      await new Promise<void>((r) => server.tryShutdown(() => r()));
      nodeClient.close();
      ctlClient.close();
    },
  };
}
