// NodePublishVolume / NodeUnpublishVolume: a bind mount of the staging directory (filesystem volumes) or
// of the multipath device node onto the target file (block volumes), read-only when asked. Idempotent:
// the same publish again is OK, one with other arguments at a published target is ALREADY_EXISTS.

import { hostError } from '../host/errors.js';
import { bindMount, mountAt, parseMountinfo, unmount } from '../host/mount.js';
import type { Publication } from './staging-record.js';
import { hostFor, type NodeEnv } from './types.js';

export interface PublishRequest {
  readonly volumeId: string;
  readonly stagingPath: string;
  readonly targetPath: string;
  readonly accessType: 'mount' | 'block';
  readonly readonly: boolean;
  readonly mountFlags: readonly string[];
}

export async function publishVolume(env: NodeEnv, q: PublishRequest, deadline: number): Promise<void> {
  const h = hostFor(env, deadline);
  const r = await env.records.load(q.volumeId);
  if (r?.phase !== 'staged') throw hostError('precondition', `volume ${q.volumeId} is not staged on this node; NodeStageVolume first`);
  if (r.stagingPath !== q.stagingPath)
    throw hostError('precondition', `volume ${q.volumeId} is staged at ${r.stagingPath}, not ${q.stagingPath}`);
  if (r.accessType !== q.accessType)
    throw hostError('conflict', `volume ${q.volumeId} is staged as a ${r.accessType} volume, not ${q.accessType}`);
  const want: Publication = { readonly: q.readonly, accessType: q.accessType };
  const had = r.publications[q.targetPath];
  const m = mountAt(parseMountinfo(await env.readMountinfo()), q.targetPath);
  if (m) {
    if (had && had.readonly === want.readonly && had.accessType === want.accessType) return;
    throw hostError(
      'conflict',
      had
        ? `${q.targetPath} is already published ${had.readonly ? 'read-only' : 'read-write'} as ${had.accessType}; unpublish it first`
        : `${q.targetPath} is already a mount point (${m.source}) that Lunar did not make`,
    );
  }
  let source: string;
  if (q.accessType === 'mount') {
    await env.localFs.mkdir(q.targetPath);
    source = q.stagingPath;
  } else {
    const kernel = r.map?.kernelName ?? r.singleDevice;
    if (!kernel) throw hostError('failed', `volume ${q.volumeId} has no device recorded`);
    await env.localFs.createFile(q.targetPath);
    source = `/dev/${kernel}`;
  }
  await bindMount(h, source, q.targetPath, q.readonly, q.accessType === 'mount' ? q.mountFlags : []);
  await env.records.save({ ...r, publications: { ...r.publications, [q.targetPath]: want } });
}

export async function unpublishVolume(env: NodeEnv, volumeId: string, targetPath: string, deadline: number): Promise<void> {
  const h = hostFor(env, deadline);
  const m = mountAt(parseMountinfo(await env.readMountinfo()), targetPath);
  if (m) await unmount(h, targetPath);
  await env.localFs.remove(targetPath);
  const r = await env.records.load(volumeId);
  if (r && Object.hasOwn(r.publications, targetPath)) {
    const publications = Object.fromEntries(Object.entries(r.publications).filter(([k]) => k !== targetPath));
    await env.records.save({ ...r, publications });
  }
}
