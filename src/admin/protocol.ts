// The admin socket protocol (<data-dir>/admin.sock, a Unix stream socket, mode 0600): newline-delimited
// JSON. Each request is one line {"id": n, "method": "...", "params": {...}}; each response is one line
// {"id": n, "ok": true, "result": ...} or {"id": n, "ok": false, "error": {"code": "...", "message": "..."}}.
// Responses may come out of order; match them by id. Error codes are VolumeErrorCode values plus
// "bad-request" (malformed line) and "unknown-method".

import { join } from 'node:path';
import type { VolumeErrorCode } from '../volumes/types.js';

export const ADMIN_SOCKET = 'admin.sock';

/** Path of the admin socket of a data directory. */
export function adminSocketPath(dataDir: string): string {
  return join(dataDir, ADMIN_SOCKET);
}
/** Longest request line accepted (bytes). */
export const MAX_LINE = 1024 * 1024;

export type AdminErrorCode = VolumeErrorCode | 'bad-request' | 'unknown-method';

export interface AdminRequest {
  readonly id: number;
  readonly method: string;
  readonly params?: Record<string, unknown>;
}

export type AdminResponse =
  | { readonly id: number | null; readonly ok: true; readonly result: unknown }
  | { readonly id: number | null; readonly ok: false; readonly error: { readonly code: AdminErrorCode; readonly message: string } };

/** Methods the server answers (params in brackets):
 *  ping                                           -> { version, serverId, dataDir, pid, portals }
 *  volume.create   {VolumeSpec}                   -> Volume
 *  volume.list     {condition?: true}             -> Volume[] (each with condition: { abnormal, message } when asked)
 *  volume.get      {volume: id|name}              -> Volume
 *  volume.delete   {volume: id|name}              -> { deleted: boolean, id, name }
 *  volume.resize   {volume, sizeBytes}            -> Volume
 *  volume.publish  {volume, nodeId, initiator}    -> Volume
 *  volume.unpublish {volume, nodeId}              -> Volume
 *  volume.condition {volume}                      -> { abnormal, message }
 *  volume.rescan   {volume?}                      -> [{ id, name, abnormal, message, reopened }] (every volume when none given)
 *  snapshot.create {volume, name}                 -> Snapshot
 *  snapshot.list                                  -> Snapshot[]
 *  snapshot.delete {snapshot: id|name}            -> { deleted: boolean, id, name }
 *  sessions        {volume?}                      -> SessionInfo[]
 *  capacity                                       -> { availableBytes, totalBytes }
 *  orphan.list                                    -> Orphan[] (files without a record, in <data-dir>/orphans/)
 *  orphan.adopt    {file, name, allow?, masked?}  -> Volume
 */
export const ADMIN_METHODS = [
  'ping',
  'volume.create',
  'volume.list',
  'volume.get',
  'volume.delete',
  'volume.resize',
  'volume.publish',
  'volume.unpublish',
  'volume.condition',
  'volume.rescan',
  'snapshot.create',
  'snapshot.list',
  'snapshot.delete',
  'sessions',
  'capacity',
  'orphan.list',
  'orphan.adopt',
] as const;
