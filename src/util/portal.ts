// iSCSI network portals: the Portal type, the one formatter of portal addresses, and the portal
// specifications of the command line and LUNAR_PORTALS:
//   HOST[:PORT][=ADVERTISE]    e.g. 127.0.0.1:3260, 0.0.0.0:3260=192.0.2.10, [::1]:3260, [::]:3260=[2001:db8::1]
// PORT defaults to 3260, the iSCSI well-known port. ADVERTISE is the address SendTargets reports instead
// of HOST (NAT, or a 0.0.0.0 / :: wildcard bind). Portal group tags are 1, 2, ... in order.
// Hosts are stored without brackets; every text form of a portal is made by the functions below.

import { isIP } from 'node:net';

/** A network portal a target is offered on (RFC 7143 §13.8 TargetAddress, §13.9 TargetPortalGroupTag). */
export interface Portal {
  /** Address the listener binds to (IPv4 dotted quad, IPv6 literal without brackets, or host name). */
  readonly host: string;
  readonly port: number;
  /** Target portal group tag. */
  readonly tpgt: number;
  /** Address advertised in SendTargets when it differs from host (NAT, 0.0.0.0 binds). */
  readonly advertise?: string;
}

/** "host:port", an IPv6 literal in brackets (RFC 3986 §3.2.2), as initiators, URLs and TargetAddress write it. */
export function hostPort(host: string, port: number): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** "host:port" of the listener (the bind address): the key of a portal in VolumeSpec.portals and in messages. */
export function portalKey(p: Pick<Portal, 'host' | 'port'>): string {
  return hostPort(p.host, p.port);
}

/** "host:port" an initiator dials: the advertised address when there is one, else the bind address. */
export function portalAddress(p: Portal): string {
  return hostPort(p.advertise ?? p.host, p.port);
}

/**
 * TargetAddress value (RFC 7143 §13.8): "host:port,portal-group-tag". host defaults to the address an
 * initiator dials (portalAddress); SendTargets passes the connection's local address for wildcard binds.
 */
export function targetAddress(p: Portal, host: string = p.advertise ?? p.host): string {
  return `${hostPort(host, p.port)},${p.tpgt}`;
}

export const ISCSI_DEFAULT_PORT = 3260;

function parseHost(text: string, what: string, spec: string): string {
  let h = text;
  if (h.startsWith('[') && h.endsWith(']')) {
    h = h.slice(1, -1);
    if (isIP(h) !== 6) throw new Error(`invalid portal "${spec}": ${what} "${text}" is not an IPv6 address`);
    return h;
  }
  if (h.length === 0) throw new Error(`invalid portal "${spec}": empty ${what}`);
  if (h.includes(':')) throw new Error(`invalid portal "${spec}": write IPv6 ${what}s in brackets, e.g. [${h}]:3260`);
  if (!/^[A-Za-z0-9.-]+$/.test(h)) throw new Error(`invalid portal "${spec}": ${what} "${h}" is not an address or host name`);
  return h;
}

/** Parse one portal spec; tpgt is given by the caller (position + 1). */
export function parsePortal(spec: string, tpgt: number): Portal {
  const s = spec.trim();
  const eq = s.indexOf('=');
  const main = eq >= 0 ? s.slice(0, eq) : s;
  const adv = eq >= 0 ? s.slice(eq + 1) : undefined;
  let hostPart: string;
  let portPart: string | undefined;
  if (main.startsWith('[')) {
    const close = main.indexOf(']');
    if (close < 0) throw new Error(`invalid portal "${spec}": missing "]" after the IPv6 address`);
    hostPart = main.slice(0, close + 1);
    const rest = main.slice(close + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) throw new Error(`invalid portal "${spec}": expected ":PORT" after "]"`);
      portPart = rest.slice(1);
    }
  } else {
    const colon = main.lastIndexOf(':');
    if (colon >= 0 && main.indexOf(':') !== colon) {
      throw new Error(`invalid portal "${spec}": write IPv6 addresses in brackets, e.g. [::1]:3260`);
    }
    hostPart = colon >= 0 ? main.slice(0, colon) : main;
    portPart = colon >= 0 ? main.slice(colon + 1) : undefined;
  }
  const host = parseHost(hostPart, 'address', spec);
  let port = ISCSI_DEFAULT_PORT;
  if (portPart !== undefined) {
    if (!/^\d{1,5}$/.test(portPart) || Number(portPart) < 1 || Number(portPart) > 65535) {
      throw new Error(`invalid portal "${spec}": port must be 1-65535`);
    }
    port = Number(portPart);
  }
  if (!Number.isInteger(tpgt) || tpgt < 1 || tpgt > 65535) throw new Error(`portal group tag ${tpgt} out of range 1-65535`);
  const portal: Portal =
    adv !== undefined ? { host, port, tpgt, advertise: parseHost(adv, 'advertised address', spec) } : { host, port, tpgt };
  return portal;
}

/** Parse a list of specs, assigning tpgt = index + 1. */
export function parsePortals(specs: readonly string[]): Portal[] {
  return specs.map((s, i) => parsePortal(s, i + 1));
}
