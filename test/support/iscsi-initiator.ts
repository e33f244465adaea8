// A minimal iSCSI initiator (RFC 7143) for tests, benchmarks and tools: login (None/CHAP, mutual),
// SCSI commands with immediate/unsolicited/solicited data, NOP, text, logout, and raw PDU access so that
// tests can send malformed input. Not a production initiator: one connection, ERL 0, no retries.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { chapMd5, decodeBinary, encodeHex } from '../../src/iscsi/chap.js';
import { crc32cUpdate, digestBytes, readDigest } from '../../src/iscsi/digest.js';
import {
  BHS_LENGTH,
  decodePdu,
  encodeLun,
  encodePdu,
  pad4,
  readBhsPrefix,
  RESERVED_TAG,
  type InitiatorPdu,
  type ScsiCommandPdu,
  type TargetPdu,
} from '../../src/iscsi/pdu.js';
import { encodeText, parseText, type TextPair } from '../../src/iscsi/text.js';
import { loginRequest } from './iscsi-pdus.js';

export interface ReceivedPdu {
  pdu: TargetPdu;
  data: Buffer;
}

export interface InitiatorLoginOptions {
  initiatorName: string;
  targetName?: string;
  sessionType?: 'Normal' | 'Discovery';
  isid?: string;
  tsih?: number;
  chap?: { user: string; secret: string; mutual?: { user: string; secret: string } };
  /** Extra operational keys to offer (override defaults). */
  keys?: Record<string, string>;
}

export interface LoginOutcome {
  statusClass: number;
  statusDetail: number;
  tsih: number;
  keys: Map<string, string>;
}

export interface CommandResult {
  status: number;
  response: number;
  data: Buffer;
  sense: Buffer | null;
  residualCount: number;
  overflow: boolean;
  underflow: boolean;
  /** R2Ts received while sending the data. */
  r2ts: number;
}

export class IscsiError extends Error {
  override readonly name = 'IscsiError';
}

export class TestInitiator {
  readonly socket: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  private readonly queue: ReceivedPdu[] = [];
  private waiter: (() => void) | null = null;
  private closedFlag = false;
  readonly closed: Promise<void>;
  headerDigest = false;
  dataDigest = false;
  cmdSN = 1;
  expStatSN = 0;
  itt = 1;
  isid = '';
  tsih = 0;
  maxXmit = 8192;
  firstBurst = 65536;
  maxBurst = 262144;
  immediateData = true;
  initialR2T = true;
  /** Answer NOP-In pings automatically (default true). */
  answerPings = true;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.closedFlag = true;
        this.wake();
        resolve();
      });
    });
    socket.on('error', () => undefined);
    socket.on('data', (c: Buffer) => this.onData(c));
  }

  /** localAddress: the source address (any of 127/8 reaches a loopback portal). */
  static connect(host: string, port: number, localAddress?: string): Promise<TestInitiator> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port, ...(localAddress ? { localAddress } : {}) }, () => {
        s.off('error', reject);
        resolve(new TestInitiator(s));
      });
      s.once('error', reject);
    });
  }

  get isClosed(): boolean {
    return this.closedFlag;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  private onData(c: Buffer): void {
    try {
      this.parse(c);
    } catch {
      // A broken stream from the target: drop the connection (waiters see it closed).
      this.socket.destroy();
    }
  }

  private parse(c: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, c]) : c;
    for (;;) {
      if (this.buf.length < BHS_LENGTH) break;
      const p = readBhsPrefix(this.buf);
      const hl = BHS_LENGTH + p.totalAhsLength * 4;
      const hd = this.headerDigest ? 4 : 0;
      const dl = p.dataSegmentLength + pad4(p.dataSegmentLength);
      const dd = this.dataDigest && p.dataSegmentLength > 0 ? 4 : 0;
      const total = hl + hd + dl + dd;
      if (this.buf.length < total) break;
      const header = this.buf.subarray(0, hl);
      if (hd && crc32cUpdate(0, header) !== readDigest(this.buf, hl)) throw new IscsiError('header digest mismatch from target');
      const data = Buffer.from(this.buf.subarray(hl + hd, hl + hd + p.dataSegmentLength));
      if (dd) {
        const crc = crc32cUpdate(0, this.buf.subarray(hl + hd, hl + hd + dl));
        if (crc !== readDigest(this.buf, hl + hd + dl)) throw new IscsiError('data digest mismatch from target');
      }
      const pdu = decodePdu(Buffer.from(header)) as TargetPdu;
      this.buf = this.buf.subarray(total);
      if (
        'statSN' in pdu &&
        pdu.opcode !== 0x31 &&
        !(pdu.opcode === 0x25 && !pdu.statusPresent) &&
        !(pdu.opcode === 0x20 && pdu.initiatorTaskTag === RESERVED_TAG)
      ) {
        this.expStatSN = (pdu.statSN + 1) >>> 0;
      }
      if (pdu.opcode === 0x20 && pdu.initiatorTaskTag === RESERVED_TAG && this.answerPings) {
        this.send({
          opcode: 0x00,
          immediate: true,
          dataSegmentLength: 0,
          lun: 0n,
          initiatorTaskTag: RESERVED_TAG,
          targetTransferTag: pdu.targetTransferTag,
          cmdSN: this.cmdSN,
          expStatSN: this.expStatSN,
        });
      }
      this.queue.push({ pdu, data });
    }
    this.wake();
  }

  /** Next PDU from the target, or null when the connection closed / timeout elapsed. */
  async next(timeoutMs = 5000): Promise<ReceivedPdu | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const q = this.queue.shift();
      if (q) return q;
      if (this.closedFlag) return null;
      const left = deadline - Date.now();
      if (left <= 0) return null;
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          this.waiter = null;
          resolve();
        }, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  /** Next PDU that is not an unsolicited NOP-In. */
  async expect(timeoutMs = 5000): Promise<ReceivedPdu> {
    for (;;) {
      const r = await this.next(timeoutMs);
      if (!r) throw new IscsiError(this.closedFlag ? 'connection closed by target' : 'timeout waiting for a PDU');
      if (r.pdu.opcode === 0x20 && r.pdu.initiatorTaskTag === RESERVED_TAG) continue;
      return r;
    }
  }

  sendRaw(b: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(b);
  }

  send(pdu: InitiatorPdu, data?: Buffer): void {
    const h = encodePdu(pdu);
    const parts: Buffer[] = [h];
    if (this.headerDigest) parts.push(digestBytes(crc32cUpdate(0, h)));
    if (data && data.length > 0) {
      const padded = Buffer.concat([data, Buffer.alloc(pad4(data.length))]);
      parts.push(padded);
      if (this.dataDigest) parts.push(digestBytes(crc32cUpdate(0, padded)));
    }
    this.sendRaw(Buffer.concat(parts));
  }

  nextItt(): number {
    const t = this.itt;
    this.itt = (this.itt + 1) >>> 0;
    return t;
  }

  /**
   * A SCSI Command PDU (RFC 7143 §11.3) with no data segment: SIMPLE, LUN 0, F bit set, a zero CDB, the
   * next ITT and the current CmdSN; `over` on top. The caller sends it and advances cmdSN.
   */
  scsiCommandPdu(over: Partial<ScsiCommandPdu> = {}): ScsiCommandPdu {
    return {
      opcode: 0x01,
      immediate: false,
      dataSegmentLength: 0,
      final: true,
      read: false,
      write: false,
      attr: 1,
      lun: 0n,
      initiatorTaskTag: over.initiatorTaskTag ?? this.nextItt(),
      expectedDataTransferLength: 0,
      cmdSN: this.cmdSN,
      expStatSN: this.expStatSN,
      cdb: Buffer.alloc(16),
      bidiReadLength: null,
      ...over,
    };
  }

  /** Full login to full feature phase (security stage when CHAP is given). */
  async login(o: InitiatorLoginOptions): Promise<LoginOutcome> {
    this.isid = o.isid ?? `80${randomBytes(3).toString('hex')}0000`.slice(0, 12);
    this.tsih = o.tsih ?? 0;
    const itt = this.nextItt();
    const keys = new Map<string, string>();
    const ops: Record<string, string> = {
      HeaderDigest: 'None',
      DataDigest: 'None',
      MaxRecvDataSegmentLength: '262144',
      ...(o.sessionType === 'Discovery'
        ? {}
        : {
            InitialR2T: 'No',
            ImmediateData: 'Yes',
            MaxBurstLength: '1048576',
            FirstBurstLength: '262144',
            MaxOutstandingR2T: '4',
            MaxConnections: '1',
          }),
      DefaultTime2Wait: '2',
      DefaultTime2Retain: '0',
      ErrorRecoveryLevel: '0',
      ...o.keys,
    };
    const identity: TextPair[] = [
      { key: 'InitiatorName', value: o.initiatorName },
      { key: 'SessionType', value: o.sessionType ?? 'Normal' },
    ];
    if (o.targetName) identity.push({ key: 'TargetName', value: o.targetName });
    const exchange = async (csg: number, nsg: number, transit: boolean, pairs: TextPair[]): Promise<ReceivedPdu> => {
      const data = encodeText(pairs);
      this.send(
        loginRequest({
          dataSegmentLength: data.length,
          transit,
          csg,
          nsg,
          isid: this.isid,
          tsih: this.tsih,
          initiatorTaskTag: itt,
          cmdSN: this.cmdSN,
          expStatSN: this.expStatSN,
        }),
        data,
      );
      const r = await this.expect();
      if (r.pdu.opcode !== 0x23) throw new IscsiError(`expected Login Response, got opcode 0x${r.pdu.opcode.toString(16)}`);
      for (const p of parseText(r.data)) keys.set(p.key, p.value);
      return r;
    };
    const outcome = (r: ReceivedPdu): LoginOutcome => {
      const p = r.pdu as Extract<TargetPdu, { opcode: 0x23 }>;
      return { statusClass: p.statusClass, statusDetail: p.statusDetail, tsih: p.tsih, keys };
    };
    let r: ReceivedPdu;
    if (o.chap) {
      r = await exchange(0, 1, false, [...identity, { key: 'AuthMethod', value: 'CHAP,None' }]);
      if ((r.pdu as { statusClass: number }).statusClass !== 0) return outcome(r);
      r = await exchange(0, 1, false, [{ key: 'CHAP_A', value: '5' }]);
      if ((r.pdu as { statusClass: number }).statusClass !== 0) return outcome(r);
      const id = Number(keys.get('CHAP_I'));
      const challenge = decodeBinary(keys.get('CHAP_C') ?? '') ?? Buffer.alloc(0);
      const answer: TextPair[] = [
        { key: 'CHAP_N', value: o.chap.user },
        { key: 'CHAP_R', value: encodeHex(chapMd5(id, o.chap.secret, challenge)) },
      ];
      let myId = 0;
      let myChallenge = Buffer.alloc(0);
      if (o.chap.mutual) {
        myId = randomBytes(1)[0]!;
        myChallenge = randomBytes(16);
        answer.push({ key: 'CHAP_I', value: String(myId) }, { key: 'CHAP_C', value: encodeHex(myChallenge) });
      }
      r = await exchange(0, 1, true, answer);
      if ((r.pdu as { statusClass: number }).statusClass !== 0) return outcome(r);
      if (o.chap.mutual) {
        const got = decodeBinary(keys.get('CHAP_R') ?? '');
        const want = chapMd5(myId, o.chap.mutual.secret, myChallenge);
        if (keys.get('CHAP_N') !== o.chap.mutual.user || !got || !got.equals(want)) throw new IscsiError('target failed mutual CHAP');
      }
      const pairs = Object.entries(ops).map(([key, value]) => ({ key, value }));
      r = await exchange(1, 3, true, pairs);
    } else {
      const pairs = [...identity, ...Object.entries(ops).map(([key, value]) => ({ key, value }))];
      r = await exchange(1, 3, true, pairs);
    }
    const res = outcome(r);
    if (res.statusClass === 0) {
      const lr = r.pdu as Extract<TargetPdu, { opcode: 0x23 }>;
      if (!lr.transit || lr.nsg !== 3) throw new IscsiError('target did not move to full feature phase');
      this.tsih = lr.tsih;
      this.cmdSN = lr.expCmdSN;
      this.maxXmit = Number(keys.get('MaxRecvDataSegmentLength') ?? 8192);
      this.firstBurst = Number(keys.get('FirstBurstLength') ?? 65536);
      this.maxBurst = Number(keys.get('MaxBurstLength') ?? 262144);
      this.immediateData = (keys.get('ImmediateData') ?? 'Yes') === 'Yes';
      this.initialR2T = (keys.get('InitialR2T') ?? 'Yes') === 'Yes';
      this.headerDigest = keys.get('HeaderDigest') === 'CRC32C';
      this.dataDigest = keys.get('DataDigest') === 'CRC32C';
    }
    return res;
  }

  /** Execute one SCSI command; handles immediate, unsolicited and R2T-solicited data. */
  async command(
    cdb: Buffer,
    o: { lun?: number; readLength?: number; writeData?: Buffer; immediate?: boolean; expectedLength?: number } = {},
  ): Promise<CommandResult> {
    const itt = this.nextItt();
    const write = o.writeData ?? null;
    const edtl = o.expectedLength ?? (write ? write.length : (o.readLength ?? 0));
    const full = Buffer.alloc(16);
    cdb.copy(full, 0, 0, Math.min(16, cdb.length));
    const cdbField = cdb.length > 16 ? cdb : full;
    const lun = encodeLun(o.lun ?? 0);
    const immLen = write && this.immediateData ? Math.min(write.length, this.firstBurst, this.maxXmit) : 0;
    const unsolEnd = write && !this.initialR2T ? Math.min(write.length, this.firstBurst) : immLen;
    const cmdSN = this.cmdSN;
    if (!o.immediate) this.cmdSN = (this.cmdSN + 1) >>> 0;
    this.send(
      {
        opcode: 0x01,
        immediate: !!o.immediate,
        dataSegmentLength: immLen,
        final: unsolEnd === immLen,
        read: (o.readLength ?? 0) > 0,
        write: !!write,
        attr: 1,
        lun,
        initiatorTaskTag: itt,
        expectedDataTransferLength: edtl,
        cmdSN,
        expStatSN: this.expStatSN,
        cdb: cdbField,
        bidiReadLength: null,
      },
      write ? write.subarray(0, immLen) : undefined,
    );
    const sendRange = (from: number, to: number, ttt: number): void => {
      let sn = 0;
      for (let off = from; off < to; off += this.maxXmit) {
        const n = Math.min(this.maxXmit, to - off);
        this.send(
          {
            opcode: 0x05,
            dataSegmentLength: n,
            final: off + n === to,
            lun,
            initiatorTaskTag: itt,
            targetTransferTag: ttt,
            expStatSN: this.expStatSN,
            dataSN: sn++,
            bufferOffset: off,
          },
          write!.subarray(off, off + n),
        );
      }
    };
    if (write && unsolEnd > immLen) sendRange(immLen, unsolEnd, RESERVED_TAG);
    const chunks: Buffer[] = [];
    let r2ts = 0;
    for (;;) {
      const r = await this.expect(10000);
      const p = r.pdu;
      if (p.opcode === 0x31 && p.initiatorTaskTag === itt) {
        r2ts++;
        sendRange(p.bufferOffset, p.bufferOffset + p.desiredDataTransferLength, p.targetTransferTag);
        continue;
      }
      if (p.opcode === 0x25 && p.initiatorTaskTag === itt) {
        chunks.push(r.data);
        if (p.statusPresent) {
          return {
            status: p.status,
            response: 0,
            data: Buffer.concat(chunks),
            sense: null,
            residualCount: p.residualCount,
            overflow: p.overflow,
            underflow: p.underflow,
            r2ts,
          };
        }
        continue;
      }
      if (p.opcode === 0x21 && p.initiatorTaskTag === itt) {
        const sense = r.data.length >= 2 ? r.data.subarray(2, 2 + r.data.readUInt16BE(0)) : null;
        return {
          status: p.status,
          response: p.response,
          data: Buffer.concat(chunks),
          sense,
          residualCount: p.residualCount,
          overflow: p.overflow,
          underflow: p.underflow,
          r2ts,
        };
      }
      if (p.opcode === 0x3f) throw new IscsiError(`command rejected, reason 0x${p.reason.toString(16)}`);
      throw new IscsiError(`unexpected PDU opcode 0x${p.opcode.toString(16)} while waiting for task ${itt}`);
    }
  }

  /** NOP-Out ping with data; resolves with the NOP-In echo. */
  async ping(data: Buffer = Buffer.alloc(0)): Promise<ReceivedPdu> {
    const itt = this.nextItt();
    this.send(
      {
        opcode: 0x00,
        immediate: true,
        dataSegmentLength: data.length,
        lun: 0n,
        initiatorTaskTag: itt,
        targetTransferTag: RESERVED_TAG,
        cmdSN: this.cmdSN,
        expStatSN: this.expStatSN,
      },
      data,
    );
    const r = await this.expect();
    if (r.pdu.opcode !== 0x20 || r.pdu.initiatorTaskTag !== itt)
      throw new IscsiError(`expected NOP-In for ${itt}, got opcode 0x${r.pdu.opcode.toString(16)}`);
    return r;
  }

  /** Text request (e.g. SendTargets=All), following continuations. */
  async text(pairs: TextPair[]): Promise<TextPair[]> {
    const itt = this.nextItt();
    let data = encodeText(pairs);
    let ttt = RESERVED_TAG;
    const parts: Buffer[] = [];
    for (;;) {
      this.send(
        {
          opcode: 0x04,
          immediate: false,
          dataSegmentLength: data.length,
          final: true,
          continue: false,
          lun: 0n,
          initiatorTaskTag: itt,
          targetTransferTag: ttt,
          cmdSN: this.cmdSN,
          expStatSN: this.expStatSN,
        },
        data,
      );
      this.cmdSN = (this.cmdSN + 1) >>> 0;
      const r = await this.expect();
      if (r.pdu.opcode !== 0x24) throw new IscsiError(`expected Text Response, got 0x${r.pdu.opcode.toString(16)}`);
      parts.push(r.data);
      if (r.pdu.final) break;
      ttt = r.pdu.targetTransferTag;
      data = Buffer.alloc(0);
    }
    return parseText(Buffer.concat(parts));
  }

  async logout(): Promise<number> {
    const itt = this.nextItt();
    this.send({
      opcode: 0x06,
      immediate: true,
      dataSegmentLength: 0,
      reasonCode: 0,
      initiatorTaskTag: itt,
      cid: 0,
      cmdSN: this.cmdSN,
      expStatSN: this.expStatSN,
    });
    const r = await this.expect();
    if (r.pdu.opcode !== 0x26) throw new IscsiError(`expected Logout Response, got 0x${r.pdu.opcode.toString(16)}`);
    return r.pdu.response;
  }

  close(): void {
    this.socket.destroy();
  }
}
