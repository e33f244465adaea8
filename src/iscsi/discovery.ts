// SendTargets (RFC 7143 §13.3, Appendix C): the targets an initiator may see, with their portals.
import type { Portal, TargetEntry, TargetRegistry } from '../target/types.js';
import { targetAddress } from '../util/portal.js';
import { isAllowed, normalizeAddress } from './acl.js';
import type { TextPair } from './text.js';

/**
 * TargetAddress value (§13.8) of a portal as seen from one connection: a portal bound to a wildcard
 * address and advertising none reports the address the initiator reached (the connection's local one).
 */
export function formatTargetAddress(portal: Portal, localAddress: string): string {
  const host = portal.advertise ?? portal.host;
  const wildcard = !portal.advertise && (host === '0.0.0.0' || host === '::' || host === '');
  return targetAddress(portal, wildcard ? normalizeAddress(localAddress) : host);
}

export interface SendTargetsQuery {
  readonly initiatorName: string;
  readonly remoteAddress: string;
  /** Local address of the connection, for portals bound to a wildcard address. */
  readonly localAddress: string;
  /** The SendTargets value: "All", a target name, or "" (the session's own target, §13.3). */
  readonly value: string;
  /** Target of a Normal session (SendTargets there reports only this target). */
  readonly sessionTarget: string | null;
}

function portalsOf(t: TargetEntry, registry: TargetRegistry): readonly Portal[] {
  return t.portals.length > 0 ? t.portals : registry.portals();
}

/** Answer a SendTargets request: TargetName then TargetAddress pairs, visible targets only. */
export function sendTargets(registry: TargetRegistry, q: SendTargetsQuery): TextPair[] {
  let candidates: readonly TargetEntry[];
  if (q.sessionTarget !== null) {
    // Normal session: only the session's own target may be reported (§13.3).
    const own = registry.findTarget(q.sessionTarget);
    const ok = q.value === '' || q.value === 'All' || q.value === q.sessionTarget;
    candidates = own && ok ? [own] : [];
  } else if (q.value === 'All') {
    candidates = registry.listTargets();
  } else if (q.value === '') {
    candidates = [];
  } else {
    const t = registry.findTarget(q.value);
    candidates = t ? [t] : [];
  }
  const out: TextPair[] = [];
  for (const t of candidates) {
    if (!isAllowed(t.access, q.initiatorName, q.remoteAddress)) continue;
    out.push({ key: 'TargetName', value: t.iqn });
    for (const p of portalsOf(t, registry)) out.push({ key: 'TargetAddress', value: formatTargetAddress(p, q.localAddress) });
  }
  return out;
}
