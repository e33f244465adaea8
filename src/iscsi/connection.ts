// One TCP connection: PDU framing from the byte stream (RFC 7143 §11.1), digests (§13.1), batched writes,
// the login phase (§6.3), then full feature phase handed to a PduHandler (the session).
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { outputSlabs, SLAB_SIZE } from './buffer-pool.js';
import { crc32cUpdate, DIGEST_LENGTH, readDigest } from './digest.js';
import { IscsiProtocolError, RejectReason } from './errors.js';
import { LoginStateMachine, type LoginContext, type LoginResult } from './login.js';
import { socketFd } from './own-socket.js';
import type { PeerEvent, PeerLog } from './peer-log.js';
import {
  BHS_LENGTH,
  decodePdu,
  encodePdu,
  pad4,
  readBhsPrefix,
  isInitiatorOpcode,
  Opcode,
  type InitiatorPdu,
  type TargetPdu,
} from './pdu.js';

/** §11.12.1 / §13.12: login PDUs carry at most 8192 bytes of data before operational negotiation. */
const LOGIN_MAX_DATA = 8192;
/** Pause reading while this much is queued for the socket (back-pressure). */
const WRITE_HIGH_WATER = 16 * 1024 * 1024;
const ZERO_PAD = Buffer.alloc(4);
/**
 * Outgoing PDUs are gathered per event-loop turn and handed to the socket in one go (one writev):
 * headers and data segments up to COPY_LIMIT bytes are copied into a slab, larger data segments are
 * passed by reference between slab pieces. Copying a 4 KiB segment costs less than the stream
 * machinery of a separate write() for it (measured with callgrind, see docs/benchmarks.md).
 * Slabs come from the thread's pool (buffer-pool.ts outputSlabs) when a turn has something to send and
 * go back to it once the socket's write of them completed: an idle connection holds none.
 */
const COPY_LIMIT = 16 * 1024;
/** Data-Out still missing from which the next socket read goes straight into the command's buffer (readInto). */
const DIRECT_READ_MIN = 16 * 1024;
/** A data segment from this size on makes the next read a header alone (readInto). */
const LARGE_SEGMENT = 64 * 1024;
/** One per thread: the header is copied out of it before the next read (pump, transient). */
let headerReadBuffer: Buffer | null = null;

/** Full feature phase handler (the session). */
export interface PduHandler {
  /**
   * Where the data segment of this PDU should land (a view of exactly dataSegmentLength bytes), so that
   * Data-Out and immediate data are copied once, straight into the command's buffer. null: gather it.
   */
  dataSink(pdu: InitiatorPdu): Buffer | null;
  handle(pdu: InitiatorPdu, data: Buffer): void;
  /** A PDU that could not be decoded was rejected; a command among them still uses up its CmdSN. */
  rejected(header: Buffer): void;
  /** The connection is gone (after close); abort everything. */
  connectionClosed(reason: string): void;
}

/** afterWrite() callbacks of a write that has none (never pushed to). */
const NO_CALLBACKS: readonly (() => void)[] = [];

export interface ConnectionHooks {
  readonly login: Omit<LoginContext, 'remoteAddress'>;
  readonly logger: Logger;
  /** Warn lines this connection's peer causes go through it (rate-limited per remote address); absent: logged as they come. */
  readonly peerLog?: PeerLog;
  /** sendmsg(MSG_DONTWAIT) on the socket's descriptor: bytes taken or -errno (IscsiServerOptions.sendNoWait). */
  readonly sendNoWait?: (fd: number, buffers: readonly Buffer[]) => number;
  /** Login finished: create (or reinstate) the session and return its handler. */
  loginComplete(conn: IscsiConnection, result: LoginResult): { handler: PduHandler; tsih: number; maxCmdSN: number };
  /** Connection ended (for bookkeeping). */
  closed(conn: IscsiConnection): void;
}

interface PendingPdu {
  pdu: InitiatorPdu | null;
  /** Decoding failed; the data segment is skipped and the error answered. */
  error: IscsiProtocolError | null;
  header: Buffer;
  dataLength: number;
  /** dataLength + padding + data digest bytes still to consume. */
  remaining: number;
  sink: Buffer | null;
  pieces: Buffer[];
  filled: number;
  crc: number;
  digest: Buffer | null;
}

export class IscsiConnection {
  readonly remoteAddress: string;
  readonly localAddress: string;
  readonly startedAt = Date.now();
  phase: 'login' | 'ffp' | 'closed' = 'login';
  headerDigest = false;
  dataDigest = false;
  /** Largest data segment we accept. */
  maxRecvDataSegmentLength = LOGIN_MAX_DATA;
  /** StatSN for the next status-carrying PDU (§4.2.2.2). */
  statSN = 0;
  private readonly chunks: Buffer[] = [];
  private head = 0;
  private avail = 0;
  private pending: PendingPdu | null = null;
  private readonly login: LoginStateMachine;
  private handler: PduHandler | null = null;
  /**
   * Bytes [slabStart, slabEnd) of slab are queued but not yet handed to the socket; bytes before
   * slabStart are the socket's. null: nothing queued since the last flush.
   */
  private slab: Buffer | null = null;
  private slabStart = 0;
  private slabEnd = 0;
  /** Slabs of this turn's output (the current one included): back to the pool when its write completed. */
  private slabsOut: Buffer[] = [];
  /** Pieces for the socket in order (slab views and large data segments), written at the end of the loop turn. */
  private readonly out: Buffer[] = [];
  private outBytes = 0;
  private flushScheduled = false;
  /** Inside receive(): PDUs queued now leave when it returns (flushAfterReceive), not at the end of the turn. */
  private receiving = false;
  private flushAfterReceive = false;
  private loginTimer: NodeJS.Timeout | null = null;
  private closeReason = '';
  lastReceived = Date.now();

  constructor(
    readonly socket: Socket,
    private readonly hooks: ConnectionHooks,
  ) {
    this.remoteAddress = socket.remoteAddress ?? '';
    this.localAddress = socket.localAddress ?? '';
    this.statSN = (Math.random() * 0x7fffffff) >>> 0;
    this.login = new LoginStateMachine({ ...hooks.login, remoteAddress: this.remoteAddress });
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (e) => this.close(`socket error: ${e.message}`));
    socket.on('close', () => this.close('peer closed'));
    socket.on('drain', () => {
      if (this.phase !== 'closed') socket.resume();
    });
    if (hooks.login.tuning.loginTimeoutMs > 0) {
      this.loginTimer = setTimeout(() => this.close('login timeout'), hooks.login.tuning.loginTimeoutMs);
      this.loginTimer.unref();
    }
  }

  get logger(): Logger {
    return this.hooks.logger;
  }

  // ------------------------------------------------------------ reading

  private onData(chunk: Buffer): void {
    if (this.phase === 'closed') return;
    this.lastReceived = Date.now();
    this.chunks.push(chunk);
    this.avail += chunk.length;
    try {
      this.pump();
    } catch (e) {
      // Every error is answered here: the process never dies because of a peer.
      this.protocolFailure(e);
    }
  }

  /**
   * Bytes read into a buffer that is reused once this returns (net.Socket `onread`, see
   * own-socket.ts): what must outlive the call (headers, data without a sink, an incomplete header)
   * is copied; Data-Out with a sink is copied once, straight into its command's buffer, as always.
   */
  receive(chunk: Buffer): void {
    this.transient = true;
    this.receiving = true;
    try {
      this.onData(chunk);
    } finally {
      this.transient = false;
      this.receiving = false;
      // Commands answered synchronously (page-cache reads, small writes) have their Data-In and status
      // queued by now: they leave with this read's callback, one write for all of them, instead of
      // after the microtask checkpoint and libuv's check phase (a QD1 command's latency).
      if (this.flushAfterReceive) {
        this.flushAfterReceive = false;
        this.flush();
      }
      if (this.avail > 0) {
        const rest = Buffer.allocUnsafe(this.avail);
        this.consume(this.avail, (piece) => piece.copy(rest, rest.length - this.avail));
        this.chunks.length = 0;
        this.head = 0;
        this.chunks.push(rest);
        this.avail = rest.length;
      } else {
        this.chunks.length = 0;
        this.head = 0;
      }
    }
  }

  /** The chunks being parsed are reused after this turn (receive()). */
  private transient = false;

  /**
   * Where the socket's next read should land (own-socket.ts readInto): the rest of the data segment of
   * the PDU being received when it goes to a command's buffer (dataSink) and at least DIRECT_READ_MIN
   * bytes of it are missing, so that the kernel copies Data-Out straight into that buffer (one copy
   * instead of two, see docs/benchmarks.md). Only the data bytes: padding, digest and the next PDU come
   * in the next read, into the shared buffer. The view stays valid until that read: the buffer belongs
   * to a task still waiting for this data, which goes back to its pool only after the task completed
   * (session.ts complete()), and a task cannot complete before all its data arrived.
   */
  readInto(): Buffer | null {
    if (this.phase !== 'ffp') return null;
    const p = this.pending;
    if (p) return p.sink && p.dataLength - p.filled >= DIRECT_READ_MIN ? p.sink.subarray(p.filled, p.dataLength) : null;
    // Between PDUs, after a large segment that went to a sink: read the next header alone, so that its
    // data segment (the next Data-Out of a large write, usually) lands in the sink by the read after it,
    // instead of most of it arriving in the shared buffer with the header and being copied from there.
    // One more read(2) per large PDU against a copy of up to 256 KiB; small PDUs end the pattern.
    if (!this.largeSinkLast || this.avail > 0) return null;
    const n = BHS_LENGTH + (this.headerDigest ? DIGEST_LENGTH : 0);
    return (headerReadBuffer ??= Buffer.allocUnsafe(BHS_LENGTH + DIGEST_LENGTH)).subarray(0, n);
  }

  /** The last PDU's data segment was at least LARGE_SEGMENT bytes and went to a sink (readInto). */
  private largeSinkLast = false;

  /** Copy or view n bytes from the front of the queue without consuming them. */
  private peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length - this.head >= n) return first.subarray(this.head, this.head + n);
    const out = Buffer.allocUnsafe(n);
    let o = 0;
    let h = this.head;
    for (const c of this.chunks) {
      const take = Math.min(c.length - h, n - o);
      c.copy(out, o, h, h + take);
      o += take;
      h = 0;
      if (o === n) break;
    }
    return out;
  }

  /** Consume up to n bytes from the front of the queue, calling fn (when given) with views of the chunks. */
  private consume(n: number, fn: ((piece: Buffer) => void) | null): void {
    while (n > 0 && this.avail > 0) {
      const c = this.chunks[0]!;
      const take = Math.min(c.length - this.head, n);
      if (fn) fn(c.subarray(this.head, this.head + take));
      this.head += take;
      this.avail -= take;
      n -= take;
      if (this.head === c.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
  }

  private take(n: number): Buffer {
    const b = this.peek(n);
    this.consume(n, null);
    return b;
  }

  private pump(): void {
    while (this.phase !== 'closed') {
      if (!this.pending) {
        if (this.avail < BHS_LENGTH) return;
        const prefix = readBhsPrefix(this.peek(BHS_LENGTH));
        const headerLength = BHS_LENGTH + prefix.totalAhsLength * 4;
        const need = headerLength + (this.headerDigest ? DIGEST_LENGTH : 0);
        if (this.avail < need) return;
        const raw = this.transient ? Buffer.from(this.take(need)) : this.take(need);
        const header = raw.subarray(0, headerLength);
        if (this.headerDigest) {
          const got = readDigest(raw, headerLength);
          if (crc32cUpdate(0, header) !== got) {
            // §7.8 / ERL 0: a header digest error loses framing; the connection is dropped.
            throw new IscsiProtocolError('header digest error', RejectReason.PROTOCOL_ERROR, true);
          }
        }
        let pdu: InitiatorPdu | null = null;
        let error: IscsiProtocolError | null = null;
        try {
          const decoded = decodePdu(header);
          if (!isInitiatorOpcode(decoded.opcode))
            throw new IscsiProtocolError(
              `target opcode 0x${decoded.opcode.toString(16)} sent by the initiator`,
              RejectReason.PROTOCOL_ERROR,
            );
          pdu = decoded as InitiatorPdu;
        } catch (e) {
          if (!(e instanceof IscsiProtocolError) || e.fatal) throw e;
          error = e;
        }
        const dsl = prefix.dataSegmentLength;
        const limit = this.phase === 'login' ? LOGIN_MAX_DATA : this.maxRecvDataSegmentLength;
        if (dsl > limit) {
          throw new IscsiProtocolError(
            `DataSegmentLength ${dsl} exceeds MaxRecvDataSegmentLength ${limit}`,
            RejectReason.PROTOCOL_ERROR,
            true,
          );
        }
        let sink: Buffer | null = null;
        if (pdu && dsl > 0 && this.phase === 'ffp' && this.handler) sink = this.handler.dataSink(pdu);
        if (sink && sink.length !== dsl) sink = null;
        this.pending = {
          pdu,
          error,
          header,
          dataLength: dsl,
          remaining: dsl + pad4(dsl) + (this.dataDigest && dsl > 0 ? DIGEST_LENGTH : 0),
          sink,
          pieces: [],
          filled: 0,
          crc: 0,
          digest: null,
        };
      }
      const p = this.pending;
      if (p.remaining > 0) {
        if (this.avail === 0) return;
        const dataPart = p.dataLength + pad4(p.dataLength);
        this.consume(Math.min(this.avail, p.remaining), (piece) => {
          let off = 0;
          const consumed = dataPart + (this.dataDigest && p.dataLength > 0 ? DIGEST_LENGTH : 0) - p.remaining;
          // Data bytes (and padding, which the digest covers).
          if (consumed < dataPart) {
            const n = Math.min(piece.length, dataPart - consumed);
            const d = piece.subarray(0, n);
            if (this.dataDigest) p.crc = crc32cUpdate(p.crc, d);
            const dataBytes = Math.max(0, Math.min(n, p.dataLength - consumed));
            if (dataBytes > 0) {
              if (p.sink) {
                // Bytes read straight into the sink at this offset (readInto) are already in place.
                if (d.buffer !== p.sink.buffer || d.byteOffset !== p.sink.byteOffset + p.filled) d.copy(p.sink, p.filled, 0, dataBytes);
              } else p.pieces.push(this.transient ? Buffer.from(d.subarray(0, dataBytes)) : d.subarray(0, dataBytes));
              p.filled += dataBytes;
            }
            off = n;
          }
          if (off < piece.length) {
            const rest = piece.subarray(off);
            p.digest = p.digest ? Buffer.concat([p.digest, rest]) : Buffer.from(rest);
          }
          p.remaining -= piece.length;
        });
        if (p.remaining > 0) return;
      }
      this.pending = null;
      this.largeSinkLast = p.sink !== null && p.dataLength >= LARGE_SEGMENT;
      if (this.dataDigest && p.dataLength > 0) {
        if (!p.digest || readDigest(p.digest, 0) !== p.crc) {
          // §11.17.1 reason 0x02; at ERL 0 the task cannot be recovered, so the connection is dropped after.
          this.sendReject(RejectReason.DATA_DIGEST_ERROR, p.header);
          throw new IscsiProtocolError('data digest error', RejectReason.DATA_DIGEST_ERROR, true);
        }
      }
      const data = p.sink ?? (p.pieces.length === 1 ? p.pieces[0]! : Buffer.concat(p.pieces, p.filled));
      if (p.error || !p.pdu) {
        this.peerWarn('malformed-pdu', { err: p.error?.message }, 'malformed PDU rejected');
        if (this.phase === 'login')
          throw new IscsiProtocolError(p.error?.message ?? 'bad PDU during login', RejectReason.PROTOCOL_ERROR, true);
        this.sendReject(p.error?.reason ?? RejectReason.PROTOCOL_ERROR, p.header);
        this.handler?.rejected(p.header);
        continue;
      }
      this.dispatch(p.pdu, data, p.header);
    }
  }

  private dispatch(pdu: InitiatorPdu, data: Buffer, header: Buffer): void {
    if (this.phase === 'login') {
      if (pdu.opcode !== Opcode.LOGIN_REQUEST) {
        // §6.3: only Login Requests before full feature phase; anything else ends the connection.
        throw new IscsiProtocolError(`opcode 0x${pdu.opcode.toString(16)} during login`, RejectReason.PROTOCOL_ERROR, true);
      }
      this.handleLogin(pdu, data);
      return;
    }
    if (pdu.opcode === Opcode.LOGIN_REQUEST) {
      // §6.3 / §11.17.1: a Login Request in full feature phase is a protocol error.
      this.sendReject(RejectReason.PROTOCOL_ERROR, header);
      return;
    }
    this.handler?.handle(pdu, data);
  }

  private handleLogin(req: Extract<InitiatorPdu, { opcode: 0x03 }>, data: Buffer): void {
    const reply = this.login.handle(req, data);
    let tsih = req.tsih;
    let maxCmdSN = req.cmdSN;
    if (reply.outcome === 'complete' && reply.result) {
      const r = reply.result;
      const created = this.hooks.loginComplete(this, r);
      tsih = created.tsih;
      maxCmdSN = created.maxCmdSN;
      this.handler = created.handler;
    }
    const statSN = reply.statusClass === 0 ? this.nextStatSN() : this.statSN;
    this.send(
      encodePdu({
        opcode: 0x23,
        dataSegmentLength: reply.data.length,
        transit: reply.transit,
        continue: false,
        csg: reply.csg,
        nsg: reply.nsg,
        versionMax: 0,
        versionActive: 0,
        isid: req.isid,
        tsih,
        initiatorTaskTag: req.initiatorTaskTag,
        statSN,
        expCmdSN: req.cmdSN,
        maxCmdSN,
        statusClass: reply.statusClass,
        statusDetail: reply.statusDetail,
      }),
      reply.data,
    );
    if (reply.outcome === 'fail') {
      const who = this.login.identity();
      this.peerWarn(
        'login-refused',
        {
          target: who.targetName,
          initiator: who.initiatorName,
          isid: who.isid,
          status: `0x${((reply.statusClass << 8) | reply.statusDetail).toString(16).padStart(4, '0')}`,
          reason: reply.reason,
          durationMs: Date.now() - this.startedAt,
        },
        'iSCSI login refused',
      );
      this.endAfterFlush(`login failed: ${reply.reason ?? ''}`);
    } else if (reply.outcome === 'complete' && reply.result) {
      // Digests and the data segment limit apply from the first PDU after the final login response.
      const p = reply.result.params;
      this.headerDigest = p.headerDigest;
      this.dataDigest = p.dataDigest;
      this.maxRecvDataSegmentLength = p.maxRecvDataSegmentLength;
      this.phase = 'ffp';
      if (this.loginTimer) clearTimeout(this.loginTimer);
      this.loginTimer = null;
    }
  }

  // ------------------------------------------------------------ writing

  nextStatSN(): number {
    const s = this.statSN;
    this.statSN = (this.statSN + 1) >>> 0;
    return s;
  }

  /**
   * Queue one PDU: header (+ digest), data (+ padding + digest). Everything queued within one event-loop
   * turn leaves in one writev when the turn ends (setImmediate runs after the loop's I/O callbacks, so
   * every command completed in this turn shares it); large data buffers are passed as views, never
   * concatenated.
   */
  send(header: Buffer, data?: Buffer | null): boolean {
    if (this.phase === 'closed' || this.socket.destroyed) return false;
    let referenced = false;
    const hd = this.headerDigest ? DIGEST_LENGTH : 0;
    let o = this.reserve(header.length + hd);
    let slab = this.slab!;
    header.copy(slab, o);
    if (hd) slab.writeUInt32LE(crc32cUpdate(0, header), o + header.length);
    if (data && data.length > 0) {
      const pad = pad4(data.length);
      const dd = this.dataDigest ? DIGEST_LENGTH : 0;
      if (data.length <= COPY_LIMIT) {
        o = this.reserve(data.length + pad + dd);
        slab = this.slab!;
        data.copy(slab, o);
      } else {
        this.cutSlab();
        this.out.push(data);
        this.outBytes += data.length;
        referenced = true;
        o = this.reserve(pad + dd) - data.length; // padding and digest follow the data
        slab = this.slab!;
      }
      const end = o + data.length;
      if (pad) slab.fill(0, end, end + pad);
      if (dd) {
        let crc = crc32cUpdate(0, data);
        if (pad) crc = crc32cUpdate(crc, ZERO_PAD.subarray(0, pad));
        slab.writeUInt32LE(crc, end + pad);
      }
    }
    if (this.receiving) this.flushAfterReceive = true;
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushTurn);
    }
    if (this.outBytes + (this.slabEnd - this.slabStart) + this.socket.writableLength > WRITE_HIGH_WATER) this.socket.pause();
    return referenced;
  }

  /**
   * Call fn once the socket is done with everything queued so far (send() returned true for data
   * passed by reference): the moment a pooled buffer may be reused. Called at once when nothing will
   * be written any more.
   */
  afterWrite(fn: () => void): void {
    if (this.phase === 'closed' || this.socket.destroyed) {
      fn();
      return;
    }
    this.written.push(fn);
  }

  /** afterWrite() callbacks waiting for the next flush's write to complete. */
  private written: (() => void)[] = [];

  /** A write completed (or will never happen): its afterWrite() callbacks run and its slabs go back to the pool. */
  private static release(fns: readonly (() => void)[], slabs: readonly Buffer[]): void {
    for (const b of slabs) outputSlabs.give(b);
    for (const f of fns) f();
  }

  /**
   * n bytes at the end of the queue, in the slab; returns their offset. Without a slab, or when it is
   * full, the queued bytes are cut and a slab is taken from the pool (a larger one of its own for n >
   * SLAB_SIZE, which the pool does not keep).
   */
  private reserve(n: number): number {
    if (this.slab === null || this.slabEnd + n > this.slab.length) {
      this.cutSlab();
      const slab = n <= SLAB_SIZE ? outputSlabs.take(SLAB_SIZE) : Buffer.allocUnsafe(n);
      this.slab = slab;
      this.slabsOut.push(slab);
      this.slabStart = 0;
      this.slabEnd = 0;
    }
    const o = this.slabEnd;
    this.slabEnd += n;
    return o;
  }

  /** Move the slab's queued bytes to the output list (the socket owns them from then on). */
  private cutSlab(): void {
    if (this.slab !== null && this.slabEnd > this.slabStart) {
      this.out.push(this.slab.subarray(this.slabStart, this.slabEnd));
      this.outBytes += this.slabEnd - this.slabStart;
      this.slabStart = this.slabEnd;
    }
  }

  private readonly flushTurn = (): void => {
    this.flushScheduled = false;
    this.flush();
  };

  /**
   * Hand everything queued to the socket: one write, or one corked writev for several pieces. The
   * slabs of this turn go with it: the next send() takes a slab from the pool again.
   */
  flush(): void {
    this.cutSlab();
    const out = this.out;
    const written = this.written;
    if (written.length > 0) this.written = [];
    const slabs = this.slabsOut;
    if (slabs.length > 0) this.slabsOut = [];
    this.slab = null;
    this.slabStart = 0;
    this.slabEnd = 0;
    const s = this.socket;
    if (s.destroyed || out.length === 0) {
      out.length = 0;
      this.outBytes = 0;
      IscsiConnection.release(written, slabs);
      return;
    }
    let first = 0;
    const direct = this.hooks.sendNoWait;
    // Straight to the kernel when the stream holds nothing (else the bytes would overtake what it
    // holds): the stream's per-write machinery is then skipped, and what the kernel did not take
    // (a full send buffer) is queued on the stream below, in order. The descriptor is read from the
    // live handle each time: after destroy() there is none, so a reused descriptor number is never
    // written to.
    if (direct !== undefined && s.writableLength === 0 && !s.writableEnded) {
      const fd = socketFd(s);
      let n = fd < 0 ? -1 : direct(fd, out);
      if (n > 0) {
        while (first < out.length && n >= out[first]!.length) n -= out[first++]!.length;
        if (n > 0) out[first] = out[first]!.subarray(n);
      }
    }
    // true: the stream is below its high-water mark (or saw nothing), so no 'drain' will follow.
    let belowHighWater = true;
    if (first === out.length) {
      IscsiConnection.release(written, slabs);
    } else {
      // Writes complete in order: the last one's callback means the socket is done with all of them
      // (also when it failed or the socket was destroyed: Node then calls it with the error).
      // `written` is still this.written when it was empty: the callback must not hold it, else a later
      // turn's afterWrite() would run when this turn's write completes, before its own bytes left.
      const fns = written.length > 0 ? written : NO_CALLBACKS;
      const cb = fns.length > 0 || slabs.length > 0 ? (): void => IscsiConnection.release(fns, slabs) : undefined;
      const last = out.length - 1;
      if (first === last) {
        belowHighWater = s.write(out[last]!, cb);
      } else {
        s.cork();
        for (let i = first; i < last; i++) s.write(out[i]!);
        belowHighWater = s.write(out[last]!, cb);
        s.uncork();
      }
    }
    out.length = 0;
    this.outBytes = 0;
    // send() paused reading at WRITE_HIGH_WATER; with no 'drain' to come, reading resumes here.
    if (belowHighWater && s.isPaused() && this.phase !== 'closed') s.resume();
  }

  /** Queue one PDU; true when its data was queued by reference (see afterWrite). */
  sendPdu(pdu: TargetPdu, data?: Buffer | null): boolean {
    return this.send(encodePdu(pdu), data);
  }

  /** Reject (§11.17) carrying the offending header as data. */
  sendReject(reason: number, badHeader: Buffer): void {
    const seq = this.handlerSeq?.() ?? { expCmdSN: 0, maxCmdSN: 0 };
    const data = Buffer.from(badHeader.subarray(0, BHS_LENGTH));
    this.sendPdu(
      {
        opcode: 0x3f,
        dataSegmentLength: data.length,
        reason,
        statSN: this.nextStatSN(),
        expCmdSN: seq.expCmdSN,
        maxCmdSN: seq.maxCmdSN,
        dataSN: 0,
      },
      data,
    );
  }

  /** Set by the session so that Rejects carry the current command window. */
  handlerSeq: (() => { expCmdSN: number; maxCmdSN: number }) | null = null;

  /** A warn line caused by the peer (rate-limited per remote address through the server's PeerLog). */
  peerWarn(event: PeerEvent, fields: Record<string, unknown>, msg: string, log: Logger = this.hooks.logger): void {
    if (this.hooks.peerLog) this.hooks.peerLog.warn(this.remoteAddress, event, fields, msg, log);
    else log.warn({ remote: this.remoteAddress, event, ...fields }, msg);
  }

  // ------------------------------------------------------------ closing

  private protocolFailure(e: unknown): void {
    const err =
      e instanceof IscsiProtocolError
        ? e
        : new IscsiProtocolError(`internal error: ${e instanceof Error ? e.message : String(e)}`, RejectReason.PROTOCOL_ERROR, true);
    this.peerWarn('protocol-error', { err: err.message }, 'protocol error, closing connection');
    this.endAfterFlush(err.message);
  }

  /** Let queued writes go, then close. */
  endAfterFlush(reason: string): void {
    if (this.phase === 'closed') return;
    this.closeReason = reason;
    this.flush();
    this.socket.pause();
    this.socket.end();
    const t = setTimeout(() => this.socket.destroy(), 2000);
    t.unref();
    this.close(reason);
  }

  /** Close now (idempotent). */
  close(reason: string): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    this.closeReason ||= reason;
    if (this.loginTimer) clearTimeout(this.loginTimer);
    this.chunks.length = 0;
    this.avail = 0;
    if (!this.socket.writableEnded) {
      this.flush();
      this.socket.end();
      const t = setTimeout(() => this.socket.destroy(), 2000);
      t.unref();
    }
    try {
      this.handler?.connectionClosed(this.closeReason);
    } finally {
      this.hooks.closed(this);
    }
  }

  destroy(reason: string): void {
    this.close(reason);
    this.socket.destroy();
  }

  get reason(): string {
    return this.closeReason;
  }
}
