// Mode parameters (SPC-4 §7.5, SBC-3 §6.4): MODE SENSE(6)/(10) encoding and MODE SELECT(6)/(10) parsing.
import { decodeModeSelect, decodeModeSense } from './cdb.js';
import { Asc, ScsiError, SenseKey, invalidFieldInCdb, invalidFieldInParameterList, parameterListLengthError } from './sense.js';

/** The mutable mode parameters of one LU (current values; nothing is saveable). */
export interface ModeState {
  /** Caching page WCE: write-back cache enabled (writes complete before fdatasync). */
  wce: boolean;
  /** Control page SWP: software write protect. */
  swp: boolean;
}

export const defaultModeState = (): ModeState => ({ wce: true, swp: false });

/** PC field values (SPC-4 §6.11 Table 172). */
export const PageControl = { CURRENT: 0, CHANGEABLE: 1, DEFAULT: 2, SAVED: 3 } as const;

export const ModePage = {
  CACHING: 0x08,
  CONTROL: 0x0a,
  INFORMATIONAL_EXCEPTIONS_CONTROL: 0x1c,
  ALL: 0x3f,
} as const;

/** A bit MODE SELECT may change (set in the page's changeable mask), and the state field that holds it. */
interface ChangeableBit {
  readonly byte: number;
  readonly mask: number;
  readonly field: keyof ModeState;
}

interface PageDef {
  readonly page: number;
  readonly subpage: number;
  /** PAGE LENGTH: the bytes after the page's header (SPC-4 §7.5.7). */
  readonly pageLength: number;
  /** The fields with one value for the current and the default page (none of them changeable). */
  fixed?(b: Buffer): void;
  readonly changeable: readonly ChangeableBit[];
}

/**
 * One encoded page for a PC value (SPC-4 §6.11 Table 172): the changeable mask, or the current or
 * default values. SPC-4 §7.5.7: a subpage 0 page has the page_0 format (PAGE CODE, 8-bit PAGE LENGTH),
 * any other the sub_page format (SPF=1, SUBPAGE CODE, 16-bit PAGE LENGTH).
 */
function encodePage(def: PageDef, pc: number, s: ModeState): Buffer {
  let b: Buffer;
  if (def.subpage === 0) {
    b = Buffer.alloc(2 + def.pageLength);
    b[0] = def.page;
    b[1] = def.pageLength;
  } else {
    b = Buffer.alloc(4 + def.pageLength);
    b[0] = 0x40 | def.page; // SPF=1
    b[1] = def.subpage;
    b.writeUInt16BE(def.pageLength, 2);
  }
  if (pc === PageControl.CHANGEABLE) {
    for (const c of def.changeable) b[c.byte]! |= c.mask;
    return b;
  }
  def.fixed?.(b);
  const values = pc === PageControl.DEFAULT ? defaultModeState() : s;
  for (const c of def.changeable) if (values[c.field]) b[c.byte]! |= c.mask;
  return b;
}

/** Apply a validated page from MODE SELECT to the state. */
function applyPage(def: PageDef, page: Buffer, s: ModeState): void {
  for (const c of def.changeable) s[c.field] = (page[c.byte]! & c.mask) !== 0;
}

/** SBC-3 §6.4.5 Caching mode page (08h), page length 12h: WCE (RCD=0). */
const caching: PageDef = {
  page: ModePage.CACHING,
  subpage: 0,
  pageLength: 0x12,
  changeable: [{ byte: 2, mask: 0x04, field: 'wce' }],
};

/** SPC-4 §7.5.8 Control mode page (0Ah), page length 0Ah: SWP. */
const control: PageDef = {
  page: ModePage.CONTROL,
  subpage: 0,
  pageLength: 0x0a,
  fixed(b) {
    b[2] = 0x02; // TST=000b (one task set), D_SENSE=0 (fixed format), GLTSD=1 (no saved log parameters)
    b[3] = 0x10; // QUEUE ALGORITHM MODIFIER=1 (unrestricted reordering), QERR=00b
    // byte 4: UA_INTLCK_CTRL=00b; SWP is changeable. byte 5: TAS=0.
    b.writeUInt16BE(0xffff, 8); // BUSY TIMEOUT PERIOD: unlimited
  },
  changeable: [{ byte: 4, mask: 0x08, field: 'swp' }],
};

/** SPC-4 §7.5.9 Control Extension mode page (0Ah/01h), page length 1Ch. */
const controlExtension: PageDef = {
  page: ModePage.CONTROL,
  subpage: 0x01,
  pageLength: 0x1c,
  // byte 6 MAXIMUM SENSE DATA LENGTH=0: no limit.
  changeable: [],
};

/** SPC-4 §7.5.11 Informational Exceptions Control mode page (1Ch), page length 0Ah. */
const informationalExceptions: PageDef = {
  page: ModePage.INFORMATIONAL_EXCEPTIONS_CONTROL,
  subpage: 0,
  pageLength: 0x0a,
  fixed(b) {
    b[2] = 0x08; // DEXCPT=1: no informational exceptions reported
  },
  changeable: [],
};

/** Ascending page code order; subpages after their page. */
const PAGES: readonly PageDef[] = [caching, control, controlExtension, informationalExceptions];

/** Pages selected by a MODE SENSE page/subpage code pair (SPC-4 §6.11 Table 173). */
function selectPages(pageCode: number, subpage: number): PageDef[] | null {
  if (pageCode === ModePage.ALL) {
    if (subpage === 0x00) return PAGES.filter((p) => p.subpage === 0);
    if (subpage === 0xff) return [...PAGES];
    return null;
  }
  const matches = PAGES.filter((p) => p.page === pageCode && (subpage === 0xff || p.subpage === subpage));
  return matches.length > 0 ? matches : null;
}

export interface ModeSenseParams {
  readonly blocks: number;
  readonly blockSize: number;
  /** WP bit: the LU is write protected (read-only or SWP). */
  readonly writeProtected: boolean;
  readonly state: ModeState;
}

/** SPC-4 §6.11/§6.12 + SBC-3 §6.4.2: full mode parameter data (caller truncates to allocation length). */
export function encodeModeSense(cdb: Buffer, p: ModeSenseParams): Buffer {
  const c = decodeModeSense(cdb);
  if (c.pc === PageControl.SAVED) {
    throw new ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.SAVING_PARAMETERS_NOT_SUPPORTED, { field: { cdb: true, byte: 2, bit: 7 } });
  }
  const pages = selectPages(c.pageCode, c.subpageCode);
  if (!pages) throw invalidFieldInCdb(c.subpageCode !== 0 ? 3 : 2);
  const body = Buffer.concat(pages.map((pg) => encodePage(pg, c.pc, p.state)));
  // SBC-3 §6.4.2 device-specific parameter: WP (bit 7), DPOFUA (bit 4).
  const deviceSpecific = (p.writeProtected ? 0x80 : 0) | 0x10;
  let desc: Buffer = Buffer.alloc(0);
  if (!c.dbd) {
    if (c.llbaa) {
      desc = Buffer.alloc(16); // SBC-3 §6.4.2.3 long LBA block descriptor
      desc.writeBigUInt64BE(BigInt(p.blocks), 0);
      desc.writeUInt32BE(p.blockSize, 12);
    } else {
      desc = Buffer.alloc(8); // SBC-3 §6.4.2.2 short LBA block descriptor
      desc.writeUInt32BE(Math.min(p.blocks, 0xffffffff), 0);
      desc.writeUInt32BE(p.blockSize & 0xffffff, 4);
    }
  }
  if (c.ten) {
    const h = Buffer.alloc(8);
    h.writeUInt16BE(6 + desc.length + body.length, 0);
    h[3] = deviceSpecific;
    h[4] = desc.length === 16 ? 0x01 : 0x00; // LONGLBA
    h.writeUInt16BE(desc.length, 6);
    return Buffer.concat([h, desc, body]);
  }
  const h = Buffer.alloc(4);
  h[0] = Math.min(0xff, 3 + desc.length + body.length);
  h[2] = deviceSpecific;
  h[3] = desc.length;
  return Buffer.concat([h, desc, body]);
}

/**
 * SPC-4 §6.9/§6.10: validate a MODE SELECT parameter list against the changeable masks and return the
 * new state (the caller installs it and raises MODE PARAMETERS CHANGED). Nothing is saveable: SP=1 fails.
 */
export function parseModeSelect(cdb: Buffer, data: Buffer | null, p: ModeSenseParams): ModeState {
  const c = decodeModeSelect(cdb);
  if (c.sp) throw invalidFieldInCdb(1, 0);
  const next: ModeState = { ...p.state };
  if (c.parameterListLength === 0) return next;
  const hdrLen = c.ten ? 8 : 4;
  if (!data || data.length < Math.min(c.parameterListLength, hdrLen) || c.parameterListLength < hdrLen) {
    throw parameterListLengthError();
  }
  const list = data.subarray(0, Math.min(c.parameterListLength, data.length));
  if (!c.pf && list.length > hdrLen) throw invalidFieldInCdb(1, 4); // only page format is understood
  const bdl = c.ten ? list.readUInt16BE(6) : list[3]!;
  if (list[c.ten ? 2 : 1] !== 0) throw invalidFieldInParameterList(c.ten ? 2 : 1); // MEDIUM TYPE
  let off = hdrLen;
  if (bdl > 0) {
    const long = c.ten && (list[4]! & 0x01) !== 0;
    const size = long ? 16 : 8;
    if (bdl !== size || off + bdl > list.length) throw parameterListLengthError();
    const blockLength = long ? list.readUInt32BE(off + 12) : list.readUInt32BE(off + 4) & 0xffffff;
    if (blockLength !== p.blockSize) throw invalidFieldInParameterList(off + (long ? 12 : 5));
    off += bdl;
  }
  while (off < list.length) {
    if (off + 2 > list.length) throw parameterListLengthError();
    const spf = (list[off]! & 0x40) !== 0;
    const pageCode = list[off]! & 0x3f;
    const subpage = spf ? list[off + 1]! : 0;
    const hdr = spf ? 4 : 2;
    if (off + hdr > list.length) throw parameterListLengthError();
    const pageLen = hdr + (spf ? list.readUInt16BE(off + 2) : list[off + 1]!);
    const def = PAGES.find((d) => d.page === pageCode && d.subpage === subpage);
    if (!def) throw invalidFieldInParameterList(off);
    const current = encodePage(def, PageControl.CURRENT, next);
    const mask = encodePage(def, PageControl.CHANGEABLE, next);
    if (pageLen !== current.length) throw invalidFieldInParameterList(off + 1);
    if (off + pageLen > list.length) throw parameterListLengthError();
    const page = list.subarray(off, off + pageLen);
    for (let i = hdr; i < pageLen; i++) {
      if ((page[i]! ^ current[i]!) & ~mask[i]! & 0xff) throw invalidFieldInParameterList(off + i);
    }
    applyPage(def, page, next);
    off += pageLen;
  }
  return next;
}
