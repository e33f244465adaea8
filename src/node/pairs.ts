// Which (portal, iface) pairs a volume logs in on: one login per portal × iface, except that a portal
// inside the subnet of some bound NIC is reached only through the NICs of that subnet (an iface bound to
// a NIC of another subnet cannot reach it, or reaches it over a router the cut of one NIC would not cut).
// A portal in no NIC's subnet is routed: every iface gets it. Pure.

import { BlockList, isIP } from 'node:net';
import { splitPortal } from '../host/node-record.js';
import type { PathPair } from '../host/types.js';

export interface IfaceInfo {
  readonly iface: string;
  /** "10.0.2.15/24", "fd00::15/64" */
  readonly cidrs: readonly string[];
}

function inSubnet(ip: string, cidr: string): boolean {
  const [net, bits] = cidr.split('/');
  const family = isIP(ip);
  if (!net || bits === undefined || family === 0 || isIP(net) !== family) return false;
  const list = new BlockList();
  list.addSubnet(net, Number(bits), family === 6 ? 'ipv6' : 'ipv4');
  return list.check(ip, family === 6 ? 'ipv6' : 'ipv4');
}

export function choosePairs(portals: readonly string[], ifaces: readonly IfaceInfo[]): PathPair[] {
  const out: PathPair[] = [];
  for (const portal of portals) {
    const [host] = splitPortal(portal);
    const local = ifaces.filter((i) => i.cidrs.some((c) => inSubnet(host, c)));
    for (const i of local.length > 0 ? local : ifaces) out.push({ portal, iface: i.iface });
  }
  return out;
}

/** `ip -o addr show dev NIC` lines -> CIDRs ("inet 10.0.2.15/24 brd ..."). */
export function parseIpAddr(out: string): string[] {
  const cidrs: string[] = [];
  for (const m of out.matchAll(/\binet6?\s+([0-9a-fA-F:.]+\/\d+)/g)) cidrs.push(m[1]!);
  return cidrs;
}
