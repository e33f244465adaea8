// The TargetRegistry the iSCSI transport reads: one target per Lunar volume (LUN 0), the server's portals
// and the discovery CHAP setting. The volume manager adds, replaces and removes entries; the transport
// looks them up at login time, so a change (new publication, deleted volume) applies to the next login.

import type { AccessControl, ChapCredentials, Portal, TargetEntry, TargetRegistry } from './types.js';

/** The portal key (src/util/portal.ts), also offered here where the volume layer reads the registry. */
export { portalKey } from '../util/portal.js';

/**
 * Who may log in to a volume's target: the static allow list plus the initiators of the volume's
 * publications. Unmasked volumes with no allow entries admit anyone (null); masked ones admit nobody
 * until published ([]).
 */
export function volumeAccess(v: {
  readonly allow: readonly string[];
  readonly masked: boolean;
  readonly publications: Readonly<Record<string, string>>;
}): AccessControl {
  const entries = new Set<string>(v.allow);
  for (const iqn of Object.values(v.publications)) entries.add(iqn);
  if (!v.masked && entries.size === 0) return { allow: null };
  return { allow: [...entries].sort() };
}

export class VolumeTargetRegistry implements TargetRegistry {
  private readonly targets = new Map<string, TargetEntry>();
  private sorted: readonly TargetEntry[] | null = null;

  constructor(
    private readonly serverPortals: readonly Portal[],
    private discovery: ChapCredentials | null = null,
  ) {}

  findTarget(iqn: string): TargetEntry | undefined {
    return this.targets.get(iqn);
  }

  listTargets(): readonly TargetEntry[] {
    this.sorted ??= [...this.targets.values()].sort((a, b) => (a.iqn < b.iqn ? -1 : a.iqn > b.iqn ? 1 : 0));
    return this.sorted;
  }

  portals(): readonly Portal[] {
    return this.serverPortals;
  }

  discoveryChap(): ChapCredentials | null {
    return this.discovery;
  }

  setDiscoveryChap(chap: ChapCredentials | null): void {
    this.discovery = chap;
  }

  /** Add or replace a target (a copy of the entry's fields: the registry never holds the caller's object). */
  set(entry: TargetEntry): void {
    const e: TargetEntry = {
      iqn: entry.iqn,
      ...(entry.alias !== undefined ? { alias: entry.alias } : {}),
      portals: entry.portals,
      access: entry.access,
      chap: entry.chap,
      device: entry.device,
    };
    this.targets.set(e.iqn, e);
    this.sorted = null;
  }

  /** Replace only the access list of an existing target. */
  setAccess(iqn: string, access: AccessControl): void {
    const e = this.targets.get(iqn);
    if (!e) return;
    this.targets.set(iqn, { ...e, access });
    this.sorted = null;
  }

  remove(iqn: string): boolean {
    const had = this.targets.delete(iqn);
    if (had) this.sorted = null;
    return had;
  }
}
