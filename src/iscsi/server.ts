// IscsiServer: listens on every portal, runs login and sessions, reports and ends sessions.
//
// Data path note: file I/O concurrency is bounded by libuv's thread pool (4 threads by default). The
// process entry point (src/cli.ts / src/server.ts) must set process.env.UV_THREADPOOL_SIZE (e.g. to the
// queue depth, capped at 128) before any I/O happens; this module sets nothing global.
import net from 'node:net';
import type { Logger } from 'pino';
import { componentLogger } from '../log.js';
import type { Portal, SessionInfo, TargetRegistry } from '../target/types.js';
import { Admission, type AdmissionLimits, type PendingTicket, type RefusalReason, type SessionOwner } from './admission.js';
import { IscsiConnection } from './connection.js';
import { EventSummary, PEER_LOG_INTERVAL_MS, PeerLog } from './peer-log.js';
import { ownSocket } from './own-socket.js';
import type { LoginResult } from './login.js';
import { DEFAULT_TUNING, type IscsiTuning } from './negotiation.js';
import { Session, type SessionHost } from './session.js';

export type { IscsiTuning } from './negotiation.js';
export { DEFAULT_TUNING } from './negotiation.js';

export interface IscsiServerOptions {
  registry: TargetRegistry;
  logger?: Logger;
  tuning?: Partial<IscsiTuning>;
  /**
   * dup(2) (the native addon's duplicateFd). Given, each accepted connection moves to a socket of the
   * transport's own that reads into one reused buffer per thread (own-socket.ts); absent, the accepted
   * socket's 'data' chunks are parsed.
   */
  duplicateFd?: (fd: number) => number;
  /**
   * sendmsg(MSG_DONTWAIT) of buffers on a socket's descriptor (the native addon's sendNoWait): the bytes
   * taken or -errno. Given, a connection whose socket holds nothing queued writes its turn's PDUs with it
   * and queues only what the kernel did not take on the socket (connection.ts flush).
   */
  sendNoWait?: (fd: number, buffers: readonly Buffer[]) => number;
  /** Caps on what peers that have not logged in may hold (admission.ts); defaults DEFAULT_ADMISSION. */
  admission?: Partial<AdmissionLimits>;
  /** Interval of the peer log's windows and summaries (peer-log.ts); default one minute (tests shorten it). */
  peerLogIntervalMs?: number;
  /** Warn lines one peer may cause per interval before they are only counted (peer-log.ts); default 5. */
  peerLogLinesPerPeer?: number;
}

/** What unauthenticated peers cost, for /metrics (counters since start, and the pending count now). */
export interface PeerStats {
  readonly refused: Readonly<Record<RefusalReason, number>>;
  readonly loginTimeouts: number;
  readonly suppressedLogLines: number;
  readonly pendingConnections: number;
}

export class IscsiServer {
  private readonly registry: TargetRegistry;
  private readonly logger: Logger;
  readonly tuning: IscsiTuning;
  private readonly listeners: net.Server[] = [];
  private readonly connections = new Set<IscsiConnection>();
  private readonly byTsih = new Map<number, Session>();
  /** Who holds each session (initiator name, source address), for the session caps of admission.ts. */
  private readonly owners = new Map<Session, SessionOwner>();
  private nextTsih = 1;
  private closing = false;
  private readonly host: SessionHost;
  private readonly duplicateFd: ((fd: number) => number) | undefined;
  private readonly sendNoWait: ((fd: number, buffers: readonly Buffer[]) => number) | undefined;
  readonly admission: Admission;
  private readonly peerLog: PeerLog;
  /** Connections closed at accept for a pre-login cap: counted and summarised, never logged one by one. */
  private readonly refusals: EventSummary;
  /** Connections closed because login did not complete within loginTimeoutMs. */
  private readonly loginTimeouts: EventSummary;
  private summaryTimer: NodeJS.Timeout | null = null;
  private readonly summaryIntervalMs: number;

  constructor(opts: IscsiServerOptions) {
    this.duplicateFd = opts.duplicateFd;
    this.sendNoWait = opts.sendNoWait;
    this.registry = opts.registry;
    this.logger = opts.logger ?? componentLogger('iscsi');
    this.tuning = { ...DEFAULT_TUNING, ...opts.tuning };
    this.admission = new Admission(opts.admission);
    const intervalMs = (this.summaryIntervalMs = opts.peerLogIntervalMs ?? PEER_LOG_INTERVAL_MS);
    this.peerLog = new PeerLog({
      logger: this.logger,
      intervalMs,
      ...(opts.peerLogLinesPerPeer !== undefined ? { linesPerPeer: opts.peerLogLinesPerPeer } : {}),
    });
    const limits = this.admission.limits;
    this.refusals = new EventSummary({
      logger: this.logger,
      intervalMs,
      line: ({ count, byReason, addresses, span }) => {
        const global = byReason.get('pending_global') ?? 0;
        const perAddress = byReason.get('pending_per_address') ?? 0;
        return {
          fields: { event: 'connections-refused', pendingGlobal: global, pendingPerAddress: perAddress },
          msg:
            `${count} connection${count === 1 ? '' : 's'} refused at accept in the last ${span} ` +
            `(${global} over the cap of ${limits.maxPendingConnections} connections not logged in, ` +
            `${perAddress} over the cap of ${limits.maxPendingPerAddress} per address), from ${addresses}`,
        };
      },
    });
    this.loginTimeouts = new EventSummary({
      logger: this.logger,
      intervalMs,
      line: ({ count, addresses, span }) => ({
        fields: { event: 'login-timeouts', loginTimeoutMs: this.tuning.loginTimeoutMs },
        msg: `${count} connection${count === 1 ? '' : 's'} closed at the login timeout (${this.tuning.loginTimeoutMs / 1000} s) in the last ${span}, from ${addresses}`,
      }),
    });
    this.host = {
      registry: this.registry,
      tuning: this.tuning,
      logger: this.logger,
      sessionsOfTarget: (iqn) => [...this.byTsih.values()].filter((s) => s.targetName === iqn),
      sessionEnded: (s) => {
        if (this.byTsih.get(s.tsih) !== s) return;
        this.byTsih.delete(s.tsih);
        const owner = this.owners.get(s);
        this.owners.delete(s);
        if (owner) this.admission.sessionClosed(owner);
      },
    };
  }

  /** Counters of what peers cost (lunar_iscsi_* metrics). */
  peerStats(): PeerStats {
    return {
      refused: { ...this.admission.refused },
      loginTimeouts: this.loginTimeouts.total,
      suppressedLogLines: this.peerLog.suppressed,
      pendingConnections: this.admission.pending,
    };
  }

  private tickSummaries(): void {
    this.peerLog.tick();
    this.refusals.tick();
    this.loginTimeouts.tick();
  }

  /** Bind every registry.portals() entry. */
  /** true while every portal's listener accepts connections (what the controller's CSI Probe reports). */
  allListening(): boolean {
    return this.listeners.length > 0 && this.listeners.every((l) => l.listening);
  }

  async listen(): Promise<void> {
    if (!this.summaryTimer) {
      // Windows close on the next event too; the timer writes the last summary of a peer gone quiet.
      this.summaryTimer = setInterval(() => this.tickSummaries(), Math.max(50, Math.min(5000, this.summaryIntervalMs / 4)));
      this.summaryTimer.unref();
    }
    for (const portal of this.registry.portals()) {
      // Paused until accept() has chosen the socket that will read (own-socket.ts).
      const srv = net.createServer({ noDelay: true, pauseOnConnect: true }, (socket) => this.accept(socket, portal));
      srv.on('error', (e) => this.logger.error({ err: e.message, host: portal.host, port: portal.port }, 'iSCSI listener error'));
      await new Promise<void>((resolve, reject) => {
        const onErr = (e: Error): void => reject(e);
        srv.once('error', onErr);
        srv.listen({ host: portal.host, port: portal.port }, () => {
          srv.off('error', onErr);
          resolve();
        });
      });
      this.listeners.push(srv);
      this.logger.info({ host: portal.host, port: portal.port, tpgt: portal.tpgt }, 'iSCSI portal listening');
    }
  }

  /** Addresses actually bound (port 0 portals get a real port), in portal order. */
  addresses(): net.AddressInfo[] {
    return this.listeners.map((l) => l.address()).filter((a): a is net.AddressInfo => typeof a === 'object' && a !== null);
  }

  private accept(accepted: net.Socket, portal: Portal): void {
    if (this.closing) {
      accepted.destroy();
      return;
    }
    const remote = accepted.remoteAddress ?? '';
    const ticket: PendingTicket | RefusalReason = this.admission.enter(remote);
    if (typeof ticket === 'string') {
      // Over a pre-login cap: closed before anything is read or allocated for it.
      accepted.destroy();
      this.refusals.record(remote, ticket);
      return;
    }
    let receiver: IscsiConnection | null = null;
    const own = this.duplicateFd
      ? ownSocket(
          accepted,
          this.duplicateFd,
          (chunk) => receiver?.receive(chunk),
          () => receiver?.readInto() ?? null,
        )
      : null;
    const socket = own ?? accepted;
    socket.on('error', () => undefined); // errors are handled by the connection; never unhandled
    const conn: IscsiConnection = new IscsiConnection(socket, {
      login: {
        registry: this.registry,
        tuning: this.tuning,
        portalGroupTag: portal.tpgt,
        sessionExists: (tsih, initiatorName, isid, targetName) => {
          const s = this.byTsih.get(tsih);
          return !!s && s.opts.initiatorName === initiatorName && s.opts.isid === isid && s.targetName === targetName;
        },
        admitSession: (who) =>
          this.admission.sessionAllowed(
            { initiatorName: who.initiatorName, address: remote },
            this.reinstated(who.initiatorName, who.isid, who.targetName, who.sessionType, portal.tpgt).flatMap(
              (s) => this.owners.get(s) ?? [],
            ),
          ),
      },
      logger: this.logger,
      peerLog: this.peerLog,
      ...(this.sendNoWait ? { sendNoWait: this.sendNoWait } : {}),
      loginComplete: (c, r) => {
        ticket.leave();
        return this.loginComplete(c, r, portal, remote);
      },
      closed: (c) => {
        // Every way a connection ends (login timeout, error, malformed PDU, refused login, peer gone,
        // shutdown) comes here: it leaves the pending count if login did not complete.
        ticket.leave();
        this.connections.delete(c);
        if (c.reason === 'login timeout') this.loginTimeouts.record(c.remoteAddress);
      },
    });
    this.connections.add(conn);
    if (own) receiver = conn;
    else accepted.resume();
  }

  private allocTsih(): number {
    for (let i = 0; i < 0xffff; i++) {
      const t = this.nextTsih;
      this.nextTsih = this.nextTsih >= 0xffff ? 1 : this.nextTsih + 1;
      if (!this.byTsih.has(t)) return t;
    }
    throw new Error('no free TSIH');
  }

  /**
   * §6.3.5 session reinstatement: a login from the same initiator port (name+ISID) to the same target
   * portal group (§2.2: the session ID is ISID + TPGT) ends the old session. Another portal group is another I_T
   * nexus: open-iscsi sends every SendTargets discovery with one fixed ISID, so discoveries on two portals
   * at once must not close each other.
   */
  private reinstated(initiatorName: string, isid: string, targetName: string | null, type: string, tpgt: number): Session[] {
    return [...this.byTsih.values()].filter(
      (old) =>
        old.opts.initiatorName === initiatorName &&
        old.opts.isid === isid &&
        old.targetName === targetName &&
        old.opts.type === type &&
        old.opts.portalGroupTag === tpgt,
    );
  }

  private loginComplete(
    conn: IscsiConnection,
    r: LoginResult,
    portal: Portal,
    remote: string,
  ): { handler: Session; tsih: number; maxCmdSN: number } {
    const targetName = r.target?.iqn ?? null;
    for (const old of this.reinstated(r.initiatorName, r.isid, targetName, r.sessionType, portal.tpgt)) {
      this.logger.info({ target: targetName, initiator: r.initiatorName, isid: r.isid, tsih: old.tsih }, 'session reinstatement');
      old.end('reinstated by a new login');
    }
    const tsih = r.requestedTsih !== 0 && !this.byTsih.has(r.requestedTsih) ? r.requestedTsih : this.allocTsih();
    const session = new Session(this.host, conn, {
      tsih,
      type: r.sessionType,
      initiatorName: r.initiatorName,
      initiatorAlias: r.initiatorAlias,
      isid: r.isid,
      target: r.target,
      portalGroupTag: portal.tpgt,
      params: r.params,
      firstCmdSN: r.cmdSN,
      cid: r.cid,
    });
    this.byTsih.set(tsih, session);
    const owner = { initiatorName: r.initiatorName, address: remote };
    this.owners.set(session, owner);
    this.admission.sessionOpened(owner);
    this.logger.info(
      {
        event: 'login',
        target: targetName,
        initiator: r.initiatorName,
        isid: r.isid,
        tsih,
        remote: conn.remoteAddress,
        discovery: r.sessionType === 'Discovery',
        durationMs: Date.now() - conn.startedAt,
        headerDigest: r.params.headerDigest,
        dataDigest: r.params.dataDigest,
        maxBurstLength: r.params.maxBurstLength,
        firstBurstLength: r.params.firstBurstLength,
        initialR2T: r.params.initialR2T,
        immediateData: r.params.immediateData,
      },
      'iSCSI login',
    );
    return { handler: session, tsih, maxCmdSN: session.maxCmdSN() };
  }

  sessions(): SessionInfo[] {
    return [...this.byTsih.values()].map((s) => s.info());
  }

  /** End the sessions matching every given field; returns how many. */
  closeSessions(filter: { targetName?: string; initiatorName?: string }): number {
    let n = 0;
    for (const s of [...this.byTsih.values()]) {
      if (filter.targetName !== undefined && s.targetName !== filter.targetName) continue;
      if (filter.initiatorName !== undefined && s.opts.initiatorName !== filter.initiatorName) continue;
      s.end('closed by administrator');
      n++;
    }
    return n;
  }

  /**
   * Stop listening and end every connection and session. With logoutGraceMs > 0, normal sessions are
   * first asked to log out (Async Message, RFC 7143 §11.9.1) and given that long to do so.
   */
  async close(opts: { logoutGraceMs?: number } = {}): Promise<void> {
    this.closing = true;
    const closes = this.listeners.map((l) => new Promise<void>((resolve) => l.close(() => resolve())));
    const grace = opts.logoutGraceMs ?? 0;
    if (grace > 0) {
      await Promise.all([...this.byTsih.values()].filter((s) => s.opts.type === 'Normal').map((s) => s.requestLogout(grace)));
    }
    for (const s of [...this.byTsih.values()]) s.end('server shutdown');
    for (const c of [...this.connections]) c.destroy('server shutdown');
    this.listeners.length = 0;
    if (this.summaryTimer) clearInterval(this.summaryTimer);
    this.summaryTimer = null;
    this.peerLog.flush();
    this.refusals.flush();
    this.loginTimeouts.flush();
    await Promise.all(closes);
  }
}
