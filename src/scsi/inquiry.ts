// Standard INQUIRY data (SPC-4 §6.6.2).
import type { LogicalUnitIdentity } from './types.js';

/** SPC-4 §6.6.2 Table 142: peripheral device type 00h direct access block device; 1Fh unknown/no device. */
export const PERIPHERAL_DIRECT_ACCESS = 0x00;
export const PERIPHERAL_QUALIFIER_NOT_CAPABLE = 0x03; // 011b: no LU at this LUN
export const PERIPHERAL_UNKNOWN = 0x1f;

/** Version descriptors (SPC-4 Table 144): SAM-5, SPC-4, SBC-3, iSCSI (no version claimed). */
const VERSION_DESCRIPTORS = [0x00a0, 0x0460, 0x04c0, 0x0960];

const STANDARD_LENGTH = 96;

/** Space-padded ASCII field (SPC-4 §4.4.1). */
export function putAscii(b: Buffer, off: number, len: number, s: string): void {
  b.fill(0x20, off, off + len);
  b.write(s.replace(/[^\x20-\x7e]/g, ' ').slice(0, len), off, 'latin1');
}

export interface StandardInquiryOptions {
  readonly identity: LogicalUnitIdentity;
  /** More than one target port reaches this LU (MULTIP). */
  readonly multiPort: boolean;
}

/** SPC-4 §6.6.2: standard INQUIRY data for a direct-access block device with implicit ALUA (TPGS=01b). */
export function encodeStandardInquiry(o: StandardInquiryOptions): Buffer {
  const b = Buffer.alloc(STANDARD_LENGTH);
  b[0] = PERIPHERAL_DIRECT_ACCESS;
  b[1] = 0x00; // RMB=0: not removable
  b[2] = 0x06; // VERSION: SPC-4
  b[3] = 0x10 | 0x02; // HISUP=1, RESPONSE DATA FORMAT=2
  b[4] = STANDARD_LENGTH - 5; // ADDITIONAL LENGTH
  b[5] = 0x10 | 0x08; // TPGS=01b: implicit asymmetric logical unit access; 3PC: EXTENDED COPY
  b[6] = o.multiPort ? 0x10 : 0x00; // MULTIP
  b[7] = 0x02; // CMDQUE=1
  putAscii(b, 8, 8, o.identity.vendor);
  putAscii(b, 16, 16, o.identity.product);
  putAscii(b, 32, 4, o.identity.revision);
  VERSION_DESCRIPTORS.forEach((d, i) => b.writeUInt16BE(d, 58 + 2 * i));
  return b;
}

/** SPC-4 §6.6.2: INQUIRY data for a LUN with no logical unit (peripheral qualifier 011b, type 1Fh). */
export function encodeNoLunInquiry(): Buffer {
  const b = Buffer.alloc(36);
  b[0] = (PERIPHERAL_QUALIFIER_NOT_CAPABLE << 5) | PERIPHERAL_UNKNOWN;
  b[2] = 0x06;
  b[3] = 0x12;
  b[4] = 31;
  return b;
}
