// What an unauthenticated peer may hold: connections that have not completed login are capped in total
// and per source address (a connection over a cap is closed at accept), and sessions are capped per
// initiator name and per source address (a login beyond either is answered "out of resources", RFC 7143
// §11.13.5 status 0x0302). The per-address session cap is what bounds a peer that completes CHAP-less
// logins (a Discovery session, a volume without CHAP or ACL) under a new initiator name each time. Pure bookkeeping: the server (server.ts) calls it at accept, login complete, session end and
// close, and reads the counters for /metrics.

export interface AdmissionLimits {
  /** Connections that have not completed login, all addresses together. */
  readonly maxPendingConnections: number;
  /** Connections that have not completed login, from one source address. */
  readonly maxPendingPerAddress: number;
  /** Sessions (Normal and Discovery) of one initiator name. */
  readonly maxSessionsPerInitiator: number;
  /** Sessions (Normal and Discovery) from one source address, whatever initiator names they use. */
  readonly maxSessionsPerAddress: number;
}

/** Who holds a session, for the session caps. */
export interface SessionOwner {
  readonly initiatorName: string;
  readonly address: string;
}

export const DEFAULT_ADMISSION: AdmissionLimits = {
  maxPendingConnections: 1024,
  maxPendingPerAddress: 64,
  // Each volume is a target of its own, and a node logs in to each on every path (2 sessions per volume
  // with two portals, more with iface binding), plus SendTargets discoveries: a node with a few hundred
  // volumes holds hundreds of sessions under its one initiator name. The cap is for a runaway initiator.
  maxSessionsPerInitiator: 1024,
  // A node's sessions all come from its addresses (one per NIC with iface binding): the same reasoning.
  maxSessionsPerAddress: 1024,
};

/** Why a connection or login was refused (the `reason` label of lunar_iscsi_connections_refused_total). */
export type RefusalReason = 'pending_global' | 'pending_per_address' | 'sessions_per_initiator' | 'sessions_per_address';

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
  readonly #sessionsByAddress = new Map<string, number>();
  readonly refused: Record<RefusalReason, number> = {
    pending_global: 0,
    pending_per_address: 0,
    sessions_per_initiator: 0,
    sessions_per_address: 0,
  };

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

  sessionsFrom(address: string): number {
    return this.#sessionsByAddress.get(address) ?? 0;
  }

  /**
   * May who open one more session? The sessions in `replacing` end when this login completes (§6.3.5
   * reinstatement of the same initiator port), so they do not count. A refusal is counted.
   */
  sessionAllowed(who: SessionOwner, replacing: readonly SessionOwner[] = []): boolean {
    const byName = this.sessionsOf(who.initiatorName) - replacing.filter((r) => r.initiatorName === who.initiatorName).length;
    if (byName >= this.limits.maxSessionsPerInitiator) {
      this.refused.sessions_per_initiator += 1;
      return false;
    }
    const byAddress = this.sessionsFrom(who.address) - replacing.filter((r) => r.address === who.address).length;
    if (byAddress >= this.limits.maxSessionsPerAddress) {
      this.refused.sessions_per_address += 1;
      return false;
    }
    return true;
  }

  sessionOpened(who: SessionOwner): void {
    bump(this.#sessionsByInitiator, who.initiatorName, 1);
    bump(this.#sessionsByAddress, who.address, 1);
  }

  sessionClosed(who: SessionOwner): void {
    bump(this.#sessionsByInitiator, who.initiatorName, -1);
    bump(this.#sessionsByAddress, who.address, -1);
  }
}

/** Adds d to m's count of key; a count that reaches 0 leaves the map (the maps stay bounded by what is open). */
function bump(m: Map<string, number>, key: string, d: number): void {
  const n = (m.get(key) ?? 0) + d;
  if (n > 0) m.set(key, n);
  else m.delete(key);
}
