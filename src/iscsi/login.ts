// Login phase state machine (RFC 7143 §6.3, §11.12, §11.13): security → operational → full feature.
import type { ChapCredentials, TargetEntry, TargetRegistry } from '../target/types.js';
import { isAllowed } from './acl.js';
import { ChapAuthenticator, type RandomSource } from './chap.js';
import { IscsiTextError, LoginFailure } from './errors.js';
import {
  isSecurityKey,
  LOGIN_DECLARATIVE_KEYS,
  Negotiator,
  type IscsiTuning,
  type SessionParameters,
  type SessionType,
} from './negotiation.js';
import type { LoginRequest } from './pdu.js';
import { encodeText, parseText, TextAssembler, type TextPair } from './text.js';

/** §11.12.3 stages. */
export const Stage = { SECURITY: 0, OPERATIONAL: 1, FULL_FEATURE: 3 } as const;

/** §11.13.5 status class / detail. */
export const LoginStatus = {
  SUCCESS: [0x00, 0x00],
  INITIATOR_ERROR: [0x02, 0x00],
  AUTH_FAILURE: [0x02, 0x01],
  AUTHORIZATION_FAILURE: [0x02, 0x02],
  NOT_FOUND: [0x02, 0x03],
  TARGET_REMOVED: [0x02, 0x04],
  UNSUPPORTED_VERSION: [0x02, 0x05],
  TOO_MANY_CONNECTIONS: [0x02, 0x06],
  MISSING_PARAMETER: [0x02, 0x07],
  CANT_INCLUDE_IN_SESSION: [0x02, 0x08],
  SESSION_TYPE_NOT_SUPPORTED: [0x02, 0x09],
  SESSION_DOES_NOT_EXIST: [0x02, 0x0a],
  INVALID_DURING_LOGIN: [0x02, 0x0b],
  TARGET_ERROR: [0x03, 0x00],
  SERVICE_UNAVAILABLE: [0x03, 0x01],
  OUT_OF_RESOURCES: [0x03, 0x02],
} as const satisfies Record<string, readonly [number, number]>;

function fail(s: readonly [number, number], why: string): LoginFailure {
  return new LoginFailure(s[0], s[1], why);
}

/** What the login machine needs from its connection/server. */
export interface LoginContext {
  readonly registry: TargetRegistry;
  readonly tuning: IscsiTuning;
  /** Remote IP address of the connection (for CIDR ACLs). */
  readonly remoteAddress: string;
  /** TPGT of the portal the connection arrived on. */
  readonly portalGroupTag: number;
  /** A live session with this TSIH of this initiator/ISID/target, if any (§6.3.5 / §5.3.5 non-zero TSIH). */
  readonly sessionExists: (tsih: number, initiatorName: string, isid: string, targetName: string | null) => boolean;
  readonly random?: RandomSource;
  /**
   * May this login become a session (the per-initiator session cap, admission.ts)? Asked once, when the
   * login would complete; false is answered "out of resources" (§11.13.5 status 0x0302).
   */
  readonly admitSession?: (who: { initiatorName: string; isid: string; targetName: string | null; sessionType: SessionType }) => boolean;
}

/** The result of a finished login. */
export interface LoginResult {
  readonly sessionType: SessionType;
  readonly initiatorName: string;
  readonly initiatorAlias: string | null;
  /** null for discovery sessions. */
  readonly target: TargetEntry | null;
  readonly isid: string;
  /** TSIH the initiator sent: 0 = new session (or reinstatement), else the session it names. */
  readonly requestedTsih: number;
  readonly cid: number;
  /** CmdSN of the final login request = first ExpCmdSN of the session (§4.2.2.1). */
  readonly cmdSN: number;
  readonly params: SessionParameters;
}

/** One login response, before the connection fills in StatSN/ExpCmdSN/MaxCmdSN/TSIH. */
export interface LoginReply {
  readonly transit: boolean;
  readonly csg: number;
  readonly nsg: number;
  readonly statusClass: number;
  readonly statusDetail: number;
  readonly data: Buffer;
  /** 'fail': close after sending; 'complete': full feature phase begins after sending. */
  readonly outcome: 'continue' | 'fail' | 'complete';
  /** Why it failed (for the log). */
  readonly reason?: string;
  readonly result?: LoginResult;
}

function value(pairs: readonly TextPair[], key: string): string | undefined {
  return pairs.find((p) => p.key === key)?.value;
}

/** Target side of one connection's login. Feed each Login Request; get the reply to send. */
export class LoginStateMachine {
  private first = true;
  private stage: number = Stage.SECURITY;
  private readonly assembler = new TextAssembler();
  private readonly negotiator: Negotiator;
  private chap: ChapAuthenticator | null = null;
  private authMethod: 'None' | 'CHAP' | null = null;
  private authenticated = false;
  private declaredTpgt = false;
  private isid = '';
  private tsih = 0;
  private cid = 0;
  private initiatorName = '';
  private initiatorAlias: string | null = null;
  private sessionType: SessionType = 'Normal';
  private target: TargetEntry | null = null;
  private required: ChapCredentials | null = null;
  private requestedTarget: string | null = null;

  constructor(private readonly ctx: LoginContext) {
    this.negotiator = new Negotiator(ctx.tuning);
  }

  /** Process one Login Request (header + its data segment). Never throws. */
  handle(req: LoginRequest, data: Buffer): LoginReply {
    try {
      return this.step(req, data);
    } catch (e) {
      const f =
        e instanceof LoginFailure
          ? e
          : e instanceof IscsiTextError
            ? fail(LoginStatus.INITIATOR_ERROR, e.message)
            : fail(LoginStatus.TARGET_ERROR, (e as Error).message);
      return {
        transit: false,
        csg: req.csg,
        nsg: 0,
        statusClass: f.statusClass,
        statusDetail: f.statusDetail,
        data: Buffer.alloc(0),
        outcome: 'fail',
        reason: f.message,
      };
    }
  }

  private step(req: LoginRequest, data: Buffer): LoginReply {
    // §11.12: version negotiation, we speak version 0x00 only.
    if (req.versionMin > 0x00) throw fail(LoginStatus.UNSUPPORTED_VERSION, `version-min ${req.versionMin} unsupported`);
    if (this.first) {
      this.isid = req.isid;
      this.tsih = req.tsih;
      this.cid = req.cid;
    } else if (req.isid !== this.isid || req.tsih !== this.tsih || req.cid !== this.cid) {
      throw fail(LoginStatus.INITIATOR_ERROR, 'ISID/TSIH/CID changed during login');
    }
    if (req.csg === 2 || req.csg === Stage.FULL_FEATURE) throw fail(LoginStatus.INITIATOR_ERROR, `invalid CSG ${req.csg}`);
    if (req.transit && req.continue) throw fail(LoginStatus.INITIATOR_ERROR, 'T and C bits both set');
    if (req.transit && (req.nsg === 2 || req.nsg <= req.csg))
      throw fail(LoginStatus.INITIATOR_ERROR, `invalid NSG ${req.nsg} from CSG ${req.csg}`);
    if (!this.first && req.csg !== this.stage) {
      // The initiator may only move forward to the stage we agreed on.
      throw fail(LoginStatus.INITIATOR_ERROR, `CSG ${req.csg} does not follow the negotiated stage ${this.stage}`);
    }
    // §6.2 / §11.12.2: text split over PDUs with C; answer each partial PDU with an empty response.
    const text = this.assembler.push(data, req.continue);
    if (text === null)
      return { transit: false, csg: req.csg, nsg: 0, statusClass: 0, statusDetail: 0, data: Buffer.alloc(0), outcome: 'continue' };
    const pairs = parseText(text);
    const seen = new Set<string>();
    for (const p of pairs) {
      if (seen.has(p.key)) throw fail(LoginStatus.INITIATOR_ERROR, `key ${p.key} sent twice in one request`);
      seen.add(p.key);
    }
    const response: TextPair[] = [];

    if (this.first) {
      this.first = false;
      this.stage = req.csg;
      this.identify(pairs, response);
    } else {
      for (const k of ['InitiatorName', 'SessionType', 'TargetName']) {
        const v = value(pairs, k);
        const expected = k === 'InitiatorName' ? this.initiatorName : k === 'SessionType' ? this.sessionType : this.target?.iqn;
        if (v !== undefined && v !== expected) throw fail(LoginStatus.INITIATOR_ERROR, `${k} changed during login`);
      }
    }

    // Security stage (§6.3.1, §12).
    if (req.csg === Stage.SECURITY) {
      this.security(pairs, response);
    } else {
      if (pairs.some((p) => isSecurityKey(p.key))) throw fail(LoginStatus.INITIATOR_ERROR, 'security keys in the operational stage');
      if (!this.authenticated) {
        // Operational stage without (finished) security stage: only when no authentication is required.
        if (this.required) throw fail(LoginStatus.AUTH_FAILURE, 'authentication required');
        this.authenticated = true;
      }
    }

    // Operational keys may be offered in either stage.
    const operational = pairs.filter((p) => !isSecurityKey(p.key) && !LOGIN_DECLARATIVE_KEYS.has(p.key));
    const neg = this.negotiator.negotiate(operational);
    if (neg.error) throw fail(LoginStatus.INITIATOR_ERROR, neg.error);
    response.push(...neg.response);
    const sendTargets = value(pairs, 'SendTargets');
    if (sendTargets !== undefined) response.push({ key: 'SendTargets', value: 'Irrelevant' });

    // Transit decision (§6.3): we agree when the initiator asks and our side is ready.
    let transit = false;
    let nsg = 0;
    if (req.transit) {
      const ready = req.csg !== Stage.SECURITY || this.authenticated;
      if (ready) {
        transit = true;
        nsg = req.nsg;
        this.stage = req.nsg;
      }
    }
    if (transit && nsg === Stage.FULL_FEATURE) {
      const p = this.negotiator.params;
      // §13.14: FirstBurstLength <= MaxBurstLength.
      if (p.firstBurstLength > p.maxBurstLength) p.firstBurstLength = p.maxBurstLength;
    }
    // §13.12: declare our MaxRecvDataSegmentLength once we are in (or jump to) the operational keys.
    if (req.csg === Stage.OPERATIONAL || (transit && nsg === Stage.FULL_FEATURE)) response.push(...this.negotiator.declarations());
    const outcome = transit && nsg === Stage.FULL_FEATURE ? 'complete' : 'continue';
    if (
      outcome === 'complete' &&
      this.ctx.admitSession &&
      !this.ctx.admitSession({
        initiatorName: this.initiatorName,
        isid: this.isid,
        targetName: this.target?.iqn ?? null,
        sessionType: this.sessionType,
      })
    ) {
      throw fail(LoginStatus.OUT_OF_RESOURCES, `initiator ${this.initiatorName} has too many sessions`);
    }
    const reply: LoginReply = {
      transit,
      csg: req.csg,
      nsg,
      statusClass: 0,
      statusDetail: 0,
      data: encodeText(response),
      outcome,
      ...(outcome === 'complete'
        ? {
            result: {
              sessionType: this.sessionType,
              initiatorName: this.initiatorName,
              initiatorAlias: this.initiatorAlias,
              target: this.target,
              isid: this.isid,
              requestedTsih: this.tsih,
              cid: this.cid,
              cmdSN: req.cmdSN,
              params: { ...this.negotiator.params },
            },
          }
        : {}),
    };
    return reply;
  }

  /** First PDU: who is logging in to what (§13.4-§13.9, §13.21), ACL, session lookup. */
  private identify(pairs: readonly TextPair[], response: TextPair[]): void {
    const initiatorName = value(pairs, 'InitiatorName');
    if (!initiatorName) throw fail(LoginStatus.MISSING_PARAMETER, 'InitiatorName missing');
    this.initiatorName = initiatorName;
    this.initiatorAlias = value(pairs, 'InitiatorAlias') ?? null;
    const st = value(pairs, 'SessionType') ?? 'Normal';
    if (st !== 'Normal' && st !== 'Discovery') throw fail(LoginStatus.SESSION_TYPE_NOT_SUPPORTED, `SessionType ${st}`);
    this.sessionType = st;
    this.negotiator.setSessionType(st);
    if (st === 'Normal') {
      const targetName = value(pairs, 'TargetName');
      if (!targetName) throw fail(LoginStatus.MISSING_PARAMETER, 'TargetName missing');
      this.requestedTarget = targetName;
      const target = this.ctx.registry.findTarget(targetName);
      if (!target) throw fail(LoginStatus.NOT_FOUND, `target ${targetName} not found`);
      const onPortal = target.portals.length === 0 || target.portals.some((p) => p.tpgt === this.ctx.portalGroupTag);
      if (!onPortal) throw fail(LoginStatus.NOT_FOUND, `target ${targetName} not offered on portal group ${this.ctx.portalGroupTag}`);
      if (!isAllowed(target.access, initiatorName, this.ctx.remoteAddress)) {
        throw fail(
          LoginStatus.AUTHORIZATION_FAILURE,
          `initiator ${initiatorName} from ${this.ctx.remoteAddress} not allowed on ${targetName}`,
        );
      }
      this.target = target;
      this.required = target.chap;
      // §13.9: the first Login Response of a Normal session carries TargetPortalGroupTag.
      response.push({ key: 'TargetPortalGroupTag', value: String(this.ctx.portalGroupTag) });
      this.declaredTpgt = true;
      if (target.alias) response.push({ key: 'TargetAlias', value: target.alias });
    } else {
      this.required = this.ctx.registry.discoveryChap();
    }
    if (this.tsih !== 0 && !this.ctx.sessionExists(this.tsih, this.initiatorName, this.isid, this.target?.iqn ?? null)) {
      throw fail(LoginStatus.SESSION_DOES_NOT_EXIST, `no session with TSIH ${this.tsih}`);
    }
  }

  /** Security stage keys: AuthMethod then the CHAP exchange (§12.1). */
  private security(pairs: readonly TextPair[], response: TextPair[]): void {
    const am = value(pairs, 'AuthMethod');
    if (this.authMethod === null) {
      if (am === undefined) {
        // §12: AuthMethod must be offered in the security stage; without it only None is possible.
        if (this.required) throw fail(LoginStatus.AUTH_FAILURE, 'authentication required but AuthMethod not offered');
        this.authMethod = 'None';
        this.authenticated = true;
        return;
      }
      const offered = am.split(',');
      if (this.required) {
        if (!offered.includes('CHAP')) throw fail(LoginStatus.AUTH_FAILURE, `CHAP required, initiator offered ${am}`);
        this.authMethod = 'CHAP';
        this.chap = new ChapAuthenticator(this.required, this.ctx.random);
        response.push({ key: 'AuthMethod', value: 'CHAP' });
      } else {
        if (!offered.includes('None')) throw fail(LoginStatus.AUTH_FAILURE, `no common AuthMethod in ${am} (target has no CHAP secret)`);
        this.authMethod = 'None';
        this.authenticated = true;
        response.push({ key: 'AuthMethod', value: 'None' });
      }
    } else if (am !== undefined && am !== this.authMethod && !am.split(',').includes(this.authMethod)) {
      throw fail(LoginStatus.INITIATOR_ERROR, 'AuthMethod renegotiated');
    }
    const chapKeys = pairs.filter((p) => p.key.startsWith('CHAP_'));
    if (this.chap) {
      response.push(...this.chap.step(chapKeys));
      if (this.chap.finished) this.authenticated = true;
    } else if (chapKeys.length > 0) {
      throw fail(LoginStatus.INITIATOR_ERROR, 'CHAP keys without AuthMethod=CHAP');
    }
  }

  get tpgtDeclared(): boolean {
    return this.declaredTpgt;
  }

  /** Who is logging in to what, as far as known (for logs). */
  identity(): { initiatorName: string | null; targetName: string | null; isid: string; sessionType: SessionType } {
    return {
      initiatorName: this.initiatorName || null,
      targetName: this.target?.iqn ?? this.requestedTarget,
      isid: this.isid,
      sessionType: this.sessionType,
    };
  }
}
