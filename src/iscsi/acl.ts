// Initiator access control for a target: IQN/EUI exact match or CIDR of the remote address.
import { BlockList, isIP } from 'node:net';
import type { AccessControl } from '../target/types.js';

/** Strip the IPv4-mapped IPv6 prefix so "::ffff:127.0.0.1" matches "127.0.0.1/32". */
export function normalizeAddress(addr: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr);
  return m ? m[1]! : addr;
}

function cidrMatches(entry: string, address: string): boolean {
  const slash = entry.indexOf('/');
  const net = slash === -1 ? entry : entry.slice(0, slash);
  const fam = isIP(net);
  const addrFam = isIP(address);
  if (fam === 0 || addrFam === 0) return false;
  const type = fam === 4 ? 'ipv4' : 'ipv6';
  const prefix = slash === -1 ? (fam === 4 ? 32 : 128) : Number(entry.slice(slash + 1));
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > (fam === 4 ? 32 : 128)) return false;
  if (fam !== addrFam) return false;
  const bl = new BlockList();
  bl.addSubnet(net, prefix, type);
  return bl.check(address, addrFam === 4 ? 'ipv4' : 'ipv6');
}

/** May this initiator (name + remote address) use the target? allow=null: anyone; []: nobody. */
export function isAllowed(access: AccessControl, initiatorName: string, remoteAddress: string): boolean {
  if (access.allow === null) return true;
  const addr = normalizeAddress(remoteAddress);
  for (const entry of access.allow) {
    if (entry === initiatorName) return true;
    // iSCSI names are case-insensitive after stringprep (RFC 3722 normalises to lower case).
    if (entry.toLowerCase() === initiatorName.toLowerCase() && !entry.includes('/')) return true;
    if (isIP(entry.split('/')[0] ?? '') !== 0 && cidrMatches(entry, addr)) return true;
  }
  return false;
}
