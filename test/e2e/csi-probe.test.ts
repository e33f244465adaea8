// The controller's CSI Probe (what the livenessprobe sidecar and so kubelet's liveness and readiness
// checks see): ready once the state is loaded and the portals listen, not ready when a portal's
// listener is gone.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { loadCsiPackage } from '../../src/csi/proto.js';
import type { ProbeResponse } from '../../src/csi/types.js';
import { startLunar } from '../../src/server.js';
import { rpc } from '../support/csi.js';

const PORT = 13380;

test('Probe: ready with the target listening and the state loaded; not ready once a portal stops listening', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'lunar-probe-'));
  const lunar = await startLunar({ dataDir, portals: [{ host: '127.0.0.1', port: PORT, tpgt: 1 }], logger: pino({ level: 'silent' }) });
  const identity = new (loadCsiPackage().Identity)(lunar.csiEndpoint ?? '', grpc.credentials.createInsecure());
  try {
    assert.deepEqual((await rpc<ProbeResponse>(identity, 'Probe')).ready, { value: true });
    assert.equal(lunar.ready(), true);
    await lunar.iscsi.close();
    assert.deepEqual((await rpc<ProbeResponse>(identity, 'Probe')).ready, { value: false });
    assert.equal(lunar.ready(), false);
  } finally {
    identity.close();
    await lunar.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
