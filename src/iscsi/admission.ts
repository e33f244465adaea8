// What an unauthenticated peer may hold: connections that have not completed login are capped in total
// and per source address (a connection over a cap is closed at accept), and full-feature sessions are
// capped per initiator name (a login beyond it is answered "out of resources", RFC 7143 §11.13.5 status
// 0x0302). Pure bookkeeping: the server (server.ts) calls it at accept, login complete, session end and
// close, and reads the counters for /metrics.

export interface AdmissionLimits {
  /** Connections that have not completed login, all addresses together. */
  readonly maxPendingConnections: number;
  /** Connections that have not completed login, from one source address. */
  readonly maxPendingPerAddress: number;
  /** Sessions (Normal and Discovery) of one initiator name. */
  readonly maxSessionsPerInitiator: number;
}

export const DEFAULT_ADMISSION: AdmissionLimits = {
  maxPendingConnections: 1024,
  maxPendingPerAddress: 64,
  // Each volume is a target of its own, and a node logs in to each on every path (2 sessions per volume
  // with two portals, more with iface binding), plus SendTargets discoveries: a node with a few hundred
  // volumes holds hundreds of sessions under its one initiator name. The cap is for a runaway initiator.
  maxSessionsPerInitiator: 1024,
};

/** Why a connection or login was refused (the `reason` label of lunar_iscsi_connections_refused_total). */
export type RefusalReason = 'pending_global' | 'pending_per_address' | 'sessions_per_initiator';
export const REFUSAL_REASONS: readonly RefusalReason[] = ['pending_global', 'pending_per_address', 'sessions_per_initiator'];

/** The limits checked: each a positive whole number. */
export function admissionProblem(limits: AdmissionLimits): string | null {
  for (const [k, v] of Object.entries(limits)) {
    if (!Number.isSafeInteger(v) || (v as number) < 1) return `${k} must be a positive whole number (got ${String(v)})`;
  }
  return null;
}

/**
 * A connection counted as pending. leave() is idempotent: the server calls it on login complete and again
 * on close, whichever comes first takes the connection out of the count.
 */
export interface PendingTicket {
  readonly address: string;
  leave(): void;
}

export class Admission {
  readonly limits: AdmissionLimits;
  readonly #pendingByAddress = new Map<string, number>();
  #pending = 0;
  readonly #sessionsByInitiator = new Map<string, number>();
  readonly refused: Record<RefusalReason, number> = { pending_global: 0, pending_per_address: 0, sessions_per_initiator: 0 };

  constructor(limits: Partial<AdmissionLimits> = {}) {
    this.limits = { ...DEFAULT_ADMISSION, ...limits };
    const problem = admissionProblem(this.limits);
    if (problem) throw new RangeError(problem);
  }

  /** Connections that have not completed login. */
  get pending(): number {
    return this.#pending;
  }

  pendingFrom(address: string): number {
    return this.#pendingByAddress.get(address) ?? 0;
  }

  /** Addresses with pending connections (bounded by maxPendingConnections). */
  get pendingAddresses(): number {
    return this.#pendingByAddress.size;
  }

  sessionsOf(initiatorName: string): number {
    return this.#sessionsByInitiator.get(initiatorName) ?? 0;
  }

  /** A new connection from address: its ticket, or the cap it is over (counted). */
  enter(address: string): PendingTicket | RefusalReason {
    const from = this.#pendingByAddress.get(address) ?? 0;
    const reason: RefusalReason | null =
      this.#pending >= this.limits.maxPendingConnections
        ? 'pending_global'
        : from >= this.limits.maxPendingPerAddress
          ? 'pending_per_address'
          : null;
    if (reason) {
      this.refused[reason] += 1;
      return reason;
    }
    this.#pending += 1;
    this.#pendingByAddress.set(address, from + 1);
    let inside = true;
    return {
      address,
      leave: () => {
        if (!inside) return;
        inside = false;
        this.#pending -= 1;
        const n = (this.#pendingByAddress.get(address) ?? 1) - 1;
        if (n > 0) this.#pendingByAddress.set(address, n);
        else this.#pendingByAddress.delete(address);
      },
    };
  }

  /**
   * May initiatorName open one more session? `replacing` of its sessions end when this login completes
   * (§6.3.5 reinstatement of the same initiator port), so they do not count. A refusal is counted.
   */
  sessionAllowed(initiatorName: string, replacing = 0): boolean {
    const now = Math.max(0, this.sessionsOf(initiatorName) - replacing);
    if (now < this.limits.maxSessionsPerInitiator) return true;
    this.refused.sessions_per_initiator += 1;
    return false;
  }

  sessionOpened(initiatorName: string): void {
    this.#sessionsByInitiator.set(initiatorName, this.sessionsOf(initiatorName) + 1);
  }

  sessionClosed(initiatorName: string): void {
    const n = this.sessionsOf(initiatorName) - 1;
    if (n > 0) this.#sessionsByInitiator.set(initiatorName, n);
    else this.#sessionsByInitiator.delete(initiatorName);
  }
}
