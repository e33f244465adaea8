// NodeStageVolume's publish_context, as `lunar serve`'s ControllerPublishVolume returns it (docs/csi.md):
// the target IQN, its portals, the LUN, the WWID the LU must report, and CHAP credentials — the session's
// and the discovery's (in publish_context, or in the node-stage `secrets` when an operator puts them there).

import { CTX } from '../csi/controller.js';
import { invalidArgument } from '../csi/errors.js';
import { isIscsiName, parsePortalList } from '../csi/validate.js';
import type { StringMap } from '../csi/types.js';
import type { ChapSettings } from '../host/node-record.js';

export interface VolumeTarget {
  readonly iqn: string;
  readonly portals: readonly string[];
  readonly lun: number;
  /** "3" + NAA hex, as scsi_id and multipath write it. */
  readonly wwid: string;
  readonly chap: ChapSettings | null;
  /** CHAP of the SendTargets discovery sessions (`lunar serve --discovery-chap`), or null. */
  readonly discoveryChap: ChapSettings | null;
}

const WWID_RE = /^[0-9a-f]{2,64}$/;

export function parsePublishContext(pc: StringMap, secrets: StringMap): VolumeTarget {
  const field = (k: string): string => `publish_context.${k}`;
  const iqn = pc[CTX.targetIqn] ?? '';
  if (!isIscsiName(iqn))
    throw invalidArgument(
      `${field(CTX.targetIqn)} ${JSON.stringify(iqn)} is not an iSCSI name; give the publish_context ControllerPublishVolume returned`,
    );
  const portals = parsePortalList(pc[CTX.portals] ?? '', field(CTX.portals));
  const lunText = pc[CTX.lun] ?? '';
  const lun = /^\d{1,5}$/.test(lunText) ? Number(lunText) : -1;
  if (lun < 0 || lun > 16383) throw invalidArgument(`${field(CTX.lun)} ${JSON.stringify(lunText)} is not a LUN (0..16383)`);
  const wwid = (pc[CTX.wwid] ?? '').toLowerCase();
  if (!WWID_RE.test(wwid)) {
    throw invalidArgument(
      `${field(CTX.wwid)} ${JSON.stringify(pc[CTX.wwid] ?? '')} is required: the WWID (3 + NAA hex) the node checks the device against`,
    );
  }
  const pick = (k: string): string | undefined => pc[k] ?? secrets[k];
  const mode = pc[CTX.chap] ?? 'none';
  let chap: ChapSettings | null = null;
  const user = pick(CTX.chapUser);
  const secret = pick(CTX.chapSecret);
  if (mode === 'chap' || mode === 'mutual' || user !== undefined) {
    if (!user || !secret)
      throw invalidArgument(`CHAP volume: ${CTX.chapUser} and ${CTX.chapSecret} are required in publish_context or secrets`);
    const mutualUser = pick(CTX.mutualUser);
    const mutualSecret = pick(CTX.mutualSecret);
    if (mode === 'mutual' && (!mutualUser || !mutualSecret)) {
      throw invalidArgument(`mutual CHAP volume: ${CTX.mutualUser} and ${CTX.mutualSecret} are required in publish_context or secrets`);
    }
    chap = { user, secret, ...(mutualUser && mutualSecret ? { mutualUser, mutualSecret } : {}) };
  } else if (mode !== 'none') {
    throw invalidArgument(`${field(CTX.chap)} ${JSON.stringify(mode)} must be none, chap or mutual`);
  }
  const dUser = pick(CTX.discoveryChapUser);
  const dSecret = pick(CTX.discoveryChapSecret);
  let discoveryChap: ChapSettings | null = null;
  if (dUser !== undefined || dSecret !== undefined) {
    if (!dUser || !dSecret) {
      throw invalidArgument(
        `discovery CHAP: ${CTX.discoveryChapUser} and ${CTX.discoveryChapSecret} are both required (in publish_context or secrets) when one is given`,
      );
    }
    discoveryChap = { user: dUser, secret: dSecret };
  }
  return { iqn, portals, lun, wwid, chap, discoveryChap };
}
