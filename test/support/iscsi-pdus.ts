// PDUs that tests build by hand, with the fields they rarely change filled in.
import type { LoginRequest } from '../../src/iscsi/pdu.js';

/**
 * A Login Request (RFC 7143 §11.12) of a new session's first connection: T=1 from the operational stage
 * to full feature phase (CSG=1, NSG=3), version 0, TSIH 0, CID 0, no data; `over` on top.
 */
export function loginRequest(over: Partial<LoginRequest> = {}): LoginRequest {
  return {
    opcode: 0x03,
    dataSegmentLength: 0,
    transit: true,
    continue: false,
    csg: 1,
    nsg: 3,
    versionMax: 0,
    versionMin: 0,
    isid: '400001370000',
    tsih: 0,
    initiatorTaskTag: 1,
    cid: 0,
    cmdSN: 1,
    expStatSN: 0,
    ...over,
  };
}
