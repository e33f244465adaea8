// Operational text key negotiation (RFC 7143 §6.2 rules, §13 keys). Pure: no I/O.
import type { TextPair } from './text.js';

/** Target tuning. Defaults favour throughput (see DEFAULT_TUNING). */
export interface IscsiTuning {
  /** Our MaxRecvDataSegmentLength declaration (§13.12): largest data segment we accept. */
  maxRecvDataSegmentLength: number;
  /** Our MaxBurstLength offer (§13.13). */
  maxBurstLength: number;
  /** Our FirstBurstLength offer (§13.14). */
  firstBurstLength: number;
  /** Our InitialR2T value (§13.10); false = we accept unsolicited data. */
  initialR2T: boolean;
  /** Our ImmediateData value (§13.11). */
  immediateData: boolean;
  /** Our MaxOutstandingR2T offer (§13.17). */
  maxOutstandingR2T: number;
  /** DefaultTime2Wait (§13.15) and DefaultTime2Retain (§13.16), seconds. */
  defaultTime2Wait: number;
  defaultTime2Retain: number;
  /** Digests we accept, in our order of preference (§13.1). */
  headerDigest: readonly DigestName[];
  dataDigest: readonly DigestName[];
  /** Commands per session we queue: MaxCmdSN = ExpCmdSN + queueDepth - 1 - outstanding (§4.2.2.1). */
  queueDepth: number;
  /** Idle time after which the target sends a NOP-In ping (§11.19), ms; 0 disables. */
  nopInIntervalMs: number;
  /** Time to wait for the NOP-Out answering our ping before dropping the connection, ms. */
  nopInTimeoutMs: number;
  /** A login that does not reach full feature phase within this time is dropped, ms. */
  loginTimeoutMs: number;
  /** Largest ExpectedDataTransferLength accepted for a write; larger ones get ILLEGAL REQUEST. */
  maxWriteLength: number;
  /** Write buffers a session may hold at once; beyond it new writes get TASK SET FULL. */
  maxSessionWriteBuffer: number;
}

export type DigestName = 'CRC32C' | 'None';

export const DEFAULT_TUNING: Readonly<IscsiTuning> = Object.freeze({
  maxRecvDataSegmentLength: 262144,
  maxBurstLength: 1048576,
  firstBurstLength: 262144,
  initialR2T: false,
  immediateData: true,
  maxOutstandingR2T: 16,
  defaultTime2Wait: 2,
  // ERL 0 without session continuation: no task state is kept after a connection fails (§13.16).
  defaultTime2Retain: 0,
  headerDigest: ['CRC32C', 'None'] as const,
  dataDigest: ['CRC32C', 'None'] as const,
  queueDepth: 128,
  nopInIntervalMs: 15000,
  nopInTimeoutMs: 15000,
  loginTimeoutMs: 15000,
  maxWriteLength: 64 * 1024 * 1024,
  maxSessionWriteBuffer: 512 * 1024 * 1024,
});

/** The operational parameters in force for a session/connection (§13 defaults when not negotiated). */
export interface SessionParameters {
  headerDigest: boolean;
  dataDigest: boolean;
  maxConnections: number;
  initialR2T: boolean;
  immediateData: boolean;
  /** Largest data segment the initiator accepts from us (its MaxRecvDataSegmentLength declaration). */
  maxXmitDataSegmentLength: number;
  /** Largest data segment we accept (our declaration). */
  maxRecvDataSegmentLength: number;
  maxBurstLength: number;
  firstBurstLength: number;
  defaultTime2Wait: number;
  defaultTime2Retain: number;
  maxOutstandingR2T: number;
  dataPDUInOrder: boolean;
  dataSequenceInOrder: boolean;
  errorRecoveryLevel: number;
}

/** RFC 7143 §13 defaults. */
export function defaultParameters(): SessionParameters {
  return {
    headerDigest: false,
    dataDigest: false,
    maxConnections: 1,
    initialR2T: true,
    immediateData: true,
    maxXmitDataSegmentLength: 8192,
    maxRecvDataSegmentLength: 8192,
    maxBurstLength: 262144,
    firstBurstLength: 65536,
    defaultTime2Wait: 2,
    defaultTime2Retain: 20,
    maxOutstandingR2T: 1,
    dataPDUInOrder: true,
    dataSequenceInOrder: true,
    errorRecoveryLevel: 0,
  };
}

export type SessionType = 'Discovery' | 'Normal';

type Rule =
  | { kind: 'list'; choose: (offered: string[]) => string | null }
  | { kind: 'min' | 'max'; lo: number; hi: number; ours: number }
  | { kind: 'and' | 'or'; ours: boolean }
  | { kind: 'declarative' };

interface KeyDef {
  rule: Rule;
  /** Only meaningful in Normal sessions (§13: "Irrelevant" in a Discovery session). */
  normalOnly?: boolean;
  /** May also be sent in full feature phase (§13.12 MaxRecvDataSegmentLength). */
  ffp?: boolean;
  apply?: (p: SessionParameters, value: string) => void;
}

const NUM_RE = /^(?:0x[0-9a-fA-F]+|[0-9]+)$/;
/** §5.1 numerical values: decimal or 0x hex. */
export function parseNumber(v: string): number | null {
  if (!NUM_RE.test(v) || v.length > 20) return null;
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : null;
}

function listRule(supported: readonly string[]): Rule {
  // §6.2.1: the responder picks the first value of the originator's list that it supports.
  return { kind: 'list', choose: (offered) => offered.find((o) => supported.includes(o)) ?? null };
}

/** SessionParameters fields of one type: the target of a numerical or a boolean key. */
type ParamOf<V> = { [K in keyof SessionParameters]: SessionParameters[K] extends V ? K : never }[keyof SessionParameters];

/** A numerical key (§6.2.2, §13): the result is the lower (min) or higher (max) of the two values. */
function numeric(kind: 'min' | 'max', lo: number, hi: number, ours: number, param: ParamOf<number>): KeyDef {
  return {
    rule: { kind, lo, hi, ours },
    apply: (p, v) => {
      p[param] = Number(v);
    },
  };
}

/** A boolean key (§6.2.2, §13): the result is the AND or the OR of the two values. */
function boolean(kind: 'and' | 'or', ours: boolean, param: ParamOf<boolean>): KeyDef {
  return {
    rule: { kind, ours },
    apply: (p, v) => {
      p[param] = v === 'Yes';
    },
  };
}

/** A list key (§6.2.1): HeaderDigest / DataDigest, true when CRC32C is chosen (§13.1). */
function digest(supported: readonly DigestName[], param: 'headerDigest' | 'dataDigest'): KeyDef {
  return {
    rule: listRule(supported),
    apply: (p, v) => {
      p[param] = v === 'CRC32C';
    },
  };
}

/** A key that §13 marks "Irrelevant" in a Discovery session. */
function normalOnly(def: KeyDef): KeyDef {
  return { ...def, normalOnly: true };
}

function keyTable(t: IscsiTuning): Map<string, KeyDef> {
  return new Map<string, KeyDef>([
    ['HeaderDigest', digest(t.headerDigest, 'headerDigest')],
    ['DataDigest', digest(t.dataDigest, 'dataDigest')],
    // MaxConnections: we do not implement MC/S (§13.2, min rule, our value 1).
    ['MaxConnections', normalOnly(numeric('min', 1, 65535, 1, 'maxConnections'))],
    ['InitialR2T', normalOnly(boolean('or', t.initialR2T, 'initialR2T'))],
    ['ImmediateData', normalOnly(boolean('and', t.immediateData, 'immediateData'))],
    ['MaxRecvDataSegmentLength', { rule: { kind: 'declarative' }, ffp: true }],
    ['MaxBurstLength', normalOnly(numeric('min', 512, 0xffffff, t.maxBurstLength, 'maxBurstLength'))],
    ['FirstBurstLength', normalOnly(numeric('min', 512, 0xffffff, t.firstBurstLength, 'firstBurstLength'))],
    ['DefaultTime2Wait', numeric('max', 0, 3600, t.defaultTime2Wait, 'defaultTime2Wait')],
    ['DefaultTime2Retain', numeric('min', 0, 3600, t.defaultTime2Retain, 'defaultTime2Retain')],
    ['MaxOutstandingR2T', normalOnly(numeric('min', 1, 65535, t.maxOutstandingR2T, 'maxOutstandingR2T'))],
    // We deliver data in order only (§13.18, §13.19: OR with our Yes → Yes).
    ['DataPDUInOrder', normalOnly(boolean('or', true, 'dataPDUInOrder'))],
    ['DataSequenceInOrder', normalOnly(boolean('or', true, 'dataSequenceInOrder'))],
    // Error recovery level 0 only (§13.20, min rule).
    ['ErrorRecoveryLevel', numeric('min', 0, 2, 0, 'errorRecoveryLevel')],
    // Markers (RFC 3720 §A.3.1, obsoleted by RFC 7143 §13.25): answered No/Irrelevant for old initiators.
    ['OFMarker', { rule: { kind: 'and', ours: false } }],
    ['IFMarker', { rule: { kind: 'and', ours: false } }],
    // RFC 7143 §13.24 iSCSIProtocolLevel: we implement RFC 7143 (level 1); min rule.
    ['iSCSIProtocolLevel', { rule: { kind: 'min', lo: 0, hi: 31, ours: 1 } }],
    // RFC 7143 §13.23 TaskReporting: plain RFC 3720 semantics.
    ['TaskReporting', normalOnly({ rule: listRule(['RFC3720']) })],
  ]);
}

/** Declarative keys owned by login (§13.4-§13.9, §13.21); handled by the login state machine. */
export const LOGIN_DECLARATIVE_KEYS: ReadonlySet<string> = new Set([
  'InitiatorName',
  'InitiatorAlias',
  'TargetName',
  'TargetAlias',
  'TargetAddress',
  'TargetPortalGroupTag',
  'SessionType',
  'SendTargets',
]);
/** Security keys (§12): handled by the login security stage. */
export function isSecurityKey(key: string): boolean {
  return key === 'AuthMethod' || key.startsWith('CHAP_') || key.startsWith('SRP_') || key.startsWith('KRB_') || key.startsWith('SPKM_');
}

/** Outcome of one negotiation round. */
export interface NegotiationResult {
  /** Pairs to send back, in order. */
  readonly response: TextPair[];
  /** Fatal problem (login fails with initiator error 0x0200). */
  readonly error: string | null;
}

/**
 * Stateful negotiator for one connection's login (§6.2, §13). Keys may come over several PDUs; each key
 * may be negotiated once (a repeat with the same value is answered again, a different value is an error).
 */
export class Negotiator {
  readonly params: SessionParameters = defaultParameters();
  private readonly table: Map<string, KeyDef>;
  private readonly done = new Map<string, string>();
  private declaredOurMrdsl = false;

  constructor(
    private readonly tuning: IscsiTuning,
    private sessionType: SessionType = 'Normal',
  ) {
    this.table = keyTable(tuning);
    this.params.maxRecvDataSegmentLength = tuning.maxRecvDataSegmentLength;
  }

  /** Is this an operational key of §13 that we negotiate? */
  knows(key: string): boolean {
    return this.table.has(key) || key === 'OFMarkInt' || key === 'IFMarkInt';
  }

  setSessionType(t: SessionType): void {
    this.sessionType = t;
  }

  /** Negotiate operational keys (security and login-declarative keys must be filtered out first). */
  negotiate(pairs: readonly TextPair[], phase: 'login' | 'ffp' = 'login'): NegotiationResult {
    const response: TextPair[] = [];
    const markers = new Map<string, string>();
    for (const { key, value } of pairs) {
      const prev = this.done.get(key);
      if (prev !== undefined && prev !== value && phase === 'login')
        return { response, error: `key ${key} negotiated twice with different values` };
      this.done.set(key, value);
      if (key === 'OFMarkInt' || key === 'IFMarkInt') {
        markers.set(key, value);
        continue;
      }
      const def = this.table.get(key);
      if (!def) {
        // §6.2: unknown keys, X- and X# extension keys → NotUnderstood.
        response.push({ key, value: 'NotUnderstood' });
        continue;
      }
      if (phase === 'ffp' && !def.ffp) {
        response.push({ key, value: 'Reject' });
        continue;
      }
      if (def.normalOnly && this.sessionType === 'Discovery') {
        response.push({ key, value: 'Irrelevant' });
        continue;
      }
      const answer = this.answer(key, def, value);
      if (answer === 'Reject') {
        response.push({ key, value: 'Reject' });
        continue;
      }
      if (def.rule.kind === 'declarative') {
        continue;
      }
      def.apply?.(this.params, answer);
      response.push({ key, value: answer });
    }
    // Marker intervals (obsolete): irrelevant because markers are always No here.
    for (const [key] of markers) response.push({ key, value: 'Irrelevant' });
    // §13.14: FirstBurstLength is irrelevant when InitialR2T=Yes and ImmediateData=No.
    if (this.params.firstBurstLength > this.params.maxBurstLength) this.params.firstBurstLength = this.params.maxBurstLength;
    return { response, error: null };
  }

  private answer(key: string, def: KeyDef, value: string): string {
    const r = def.rule;
    switch (r.kind) {
      case 'list': {
        const offered = value.split(',');
        if (offered.some((o) => o.length === 0)) return 'Reject';
        return r.choose(offered) ?? 'Reject';
      }
      case 'min':
      case 'max': {
        const n = parseNumber(value);
        if (n === null || n < r.lo || n > r.hi) return 'Reject';
        return String(r.kind === 'min' ? Math.min(n, r.ours) : Math.max(n, r.ours));
      }
      case 'and':
      case 'or': {
        if (value !== 'Yes' && value !== 'No') return 'Reject';
        const v = value === 'Yes';
        return (r.kind === 'and' ? v && r.ours : v || r.ours) ? 'Yes' : 'No';
      }
      case 'declarative': {
        if (key === 'MaxRecvDataSegmentLength') {
          const n = parseNumber(value);
          if (n === null || n < 512 || n > 0xffffff) return 'Reject';
          this.params.maxXmitDataSegmentLength = n;
        }
        return value;
      }
    }
  }

  /**
   * Keys the target declares on its own in its last operational response (§13.12: our
   * MaxRecvDataSegmentLength; the initiator otherwise assumes 8192). Returned once.
   */
  declarations(): TextPair[] {
    if (this.declaredOurMrdsl) return [];
    this.declaredOurMrdsl = true;
    return [{ key: 'MaxRecvDataSegmentLength', value: String(this.tuning.maxRecvDataSegmentLength) }];
  }
}
