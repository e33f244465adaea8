// Pure request checks and conversions for the CSI controller: capacities, volume capabilities,
// StorageClass parameters, node ids, pagination tokens, names. Each throws a CsiError whose message
// names the field and says what to fix (CSI spec "Error Scheme").

import { MAX_VOLUME_BYTES as VOLUME_LAYER_MAX, SIZE_ALIGNMENT } from '../volumes/types.js';
import { keyList } from './bounded.js';
import { aborted, invalidArgument, outOfRange } from './errors.js';
import type { AccessModeName, CapacityRange, Int64, StringMap, Timestamp, VolumeCapability } from './types.js';

const GiB = 1024 * 1024 * 1024;

/**
 * Sizes are rounded up to the volume layer's alignment (1 MiB): a multiple of every logical block size
 * the target offers (512, 4096) and what partitioning tools align to.
 */
export const CAPACITY_ALIGNMENT = SIZE_ALIGNMENT;
export const MIN_VOLUME_BYTES = SIZE_ALIGNMENT;
/** Size of a volume whose CreateVolume carries no capacity_range. */
export const DEFAULT_VOLUME_BYTES = GiB;
/** Largest volume the volume layer creates (64 TiB). */
export const MAX_VOLUME_BYTES = VOLUME_LAYER_MAX;

/** Filesystems the node plugin formats (mkfs.<type> must exist in its image). */
export const SUPPORTED_FS_TYPES: readonly string[] = ['ext4', 'xfs', 'ext3', 'btrfs'];
export const DEFAULT_FS_TYPE = 'ext4';

/** StorageClass parameters Lunar understands (docs/csi.md). */
export const PARAMETER_KEYS: readonly string[] = ['fsType', 'chap', 'thin', 'portals'];
/** Keys the Kubernetes sidecars add (external-provisioner --extra-create-metadata, secrets references). */
export const SIDECAR_PARAMETER_PREFIX = 'csi.storage.k8s.io/';

// CSI general size limit for strings (spec "Size Limits").
const MAX_STRING_BYTES = 128;
// NodeGetInfoResponse.node_id overrides the limit to 256 bytes.
const MAX_NODE_ID_BYTES = 256;
// RFC 7143 §4.2.7.1: iSCSI names are at most 223 bytes.
const MAX_ISCSI_NAME_BYTES = 223;

function byteLength(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/** A REQUIRED string field: present and within the CSI size limit. */
export function requireString(value: string | undefined | null, field: string, maxBytes = MAX_STRING_BYTES): string {
  if (value === undefined || value === null || value === '') throw invalidArgument(`${field} is required`);
  if (byteLength(value) > maxBytes) throw invalidArgument(`${field} is longer than ${maxBytes} bytes`);
  return value;
}

// CreateVolumeRequest.name: "U+0000-U+0008, U+000B, U+000C, U+000E-U+001F, U+007F-U+009F" are banned.
// eslint-disable-next-line no-control-regex
const BANNED_NAME_CHARS = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/u;

/** A CO-chosen name (CreateVolume, CreateSnapshot). */
export function requireName(value: string | undefined | null, field: string): string {
  const name = requireString(value, field);
  if (BANNED_NAME_CHARS.test(name)) throw invalidArgument(`${field} contains a control character, which CSI forbids`);
  return name;
}

/** int64 (decoded as a decimal string) -> number; negative or unsafe values are refused. */
export function parseInt64(value: Int64 | number | undefined | null, field: string): number {
  if (value === undefined || value === null || value === '') return 0;
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isFinite(n) || !Number.isInteger(n)) throw invalidArgument(`${field} is not an integer: ${String(value)}`);
  if (n < 0) throw invalidArgument(`${field} must not be negative (got ${String(value)})`);
  if (n > Number.MAX_SAFE_INTEGER) throw outOfRange(`${field} ${String(value)} is larger than Lunar supports (${MAX_VOLUME_BYTES})`);
  return n;
}

export function roundUp(n: number, alignment = CAPACITY_ALIGNMENT): number {
  return Math.ceil(n / alignment) * alignment;
}

export function roundDown(n: number, alignment = CAPACITY_ALIGNMENT): number {
  return Math.floor(n / alignment) * alignment;
}

export interface CapacityBounds {
  /** 0 = unset */
  readonly required: number;
  /** 0 = unset */
  readonly limit: number;
}

export function capacityBounds(range: CapacityRange | null | undefined, field = 'capacity_range'): CapacityBounds {
  if (!range) return { required: 0, limit: 0 };
  const required = parseInt64(range.required_bytes, `${field}.required_bytes`);
  const limit = parseInt64(range.limit_bytes, `${field}.limit_bytes`);
  if (limit !== 0 && required > limit) {
    throw outOfRange(`${field}.limit_bytes (${limit}) is smaller than required_bytes (${required})`);
  }
  return { required, limit };
}

/**
 * The size of a new volume: required_bytes (or the source's size, or DEFAULT_VOLUME_BYTES) rounded up to
 * CAPACITY_ALIGNMENT, at least MIN_VOLUME_BYTES and the source's size; OUT_OF_RANGE when that exceeds
 * limit_bytes. With only limit_bytes set and no source, the default size is capped to the limit
 * (rounded down).
 */
export function volumeSize(bounds: CapacityBounds, sourceBytes?: number): number {
  const { required, limit } = bounds;
  let size = Math.max(roundUp(Math.max(required, MIN_VOLUME_BYTES)), sourceBytes ?? 0);
  if (required === 0 && sourceBytes === undefined) {
    size = DEFAULT_VOLUME_BYTES;
    if (limit !== 0 && size > limit) size = roundDown(limit);
    if (size < MIN_VOLUME_BYTES) {
      throw outOfRange(
        `capacity_range.limit_bytes (${limit}) is below the smallest volume Lunar creates (${MIN_VOLUME_BYTES} bytes, sizes are multiples of ${CAPACITY_ALIGNMENT})`,
      );
    }
  }
  if (limit !== 0 && size > limit) {
    if (sourceBytes !== undefined && size === sourceBytes) {
      throw outOfRange(`capacity_range.limit_bytes (${limit}) is smaller than the source (${sourceBytes} bytes)`);
    }
    throw outOfRange(
      `capacity_range.required_bytes (${required}) rounded up to Lunar's ${CAPACITY_ALIGNMENT}-byte alignment is ${size}, more than limit_bytes (${limit}); raise limit_bytes or use a multiple of ${CAPACITY_ALIGNMENT}`,
    );
  }
  if (size > MAX_VOLUME_BYTES) throw outOfRange(`requested size ${size} is larger than Lunar supports (${MAX_VOLUME_BYTES})`);
  return size;
}

// ---- volume capabilities -------------------------------------------------------------------------

export interface CheckedCapability {
  readonly accessType: 'block' | 'mount';
  readonly mode: AccessModeName;
  /** mount only: fs_type as given ('' = unspecified). */
  readonly fsType: string;
}

const KNOWN_MODES: ReadonlySet<string> = new Set<AccessModeName>([
  'SINGLE_NODE_WRITER',
  'SINGLE_NODE_READER_ONLY',
  'MULTI_NODE_READER_ONLY',
  'MULTI_NODE_SINGLE_WRITER',
  'MULTI_NODE_MULTI_WRITER',
  'SINGLE_NODE_SINGLE_WRITER',
  'SINGLE_NODE_MULTI_WRITER',
]);

export function isSingleNodeMode(mode: AccessModeName): boolean {
  return mode.startsWith('SINGLE_NODE_');
}

/** Structural check of one VolumeCapability: access_type and access_mode set. Throws INVALID_ARGUMENT. */
export function checkCapability(cap: VolumeCapability | null | undefined, field: string): CheckedCapability {
  if (!cap) throw invalidArgument(`${field} is required`);
  const mode = cap.access_mode?.mode;
  if (!mode || mode === 'UNKNOWN') throw invalidArgument(`${field}.access_mode.mode is required (e.g. SINGLE_NODE_WRITER)`);
  if (!KNOWN_MODES.has(mode)) throw invalidArgument(`${field}.access_mode.mode ${mode} is not a CSI access mode`);
  if (cap.block) return { accessType: 'block', mode, fsType: '' };
  if (cap.mount) return { accessType: 'mount', mode, fsType: cap.mount.fs_type };
  throw invalidArgument(`${field}.access_type is required: set block or mount`);
}

/** Why Lunar cannot serve this (well-formed) capability, or null when it can. */
export function unsupportedReason(cap: CheckedCapability, field: string): string | null {
  if (cap.accessType === 'mount') {
    if (cap.mode === 'MULTI_NODE_MULTI_WRITER' || cap.mode === 'MULTI_NODE_SINGLE_WRITER') {
      return (
        `${field}: ${cap.mode} is only supported with access_type block (volumeMode: Block): ` +
        `a local filesystem such as ext4 or xfs mounted on several nodes while one of them writes is corrupted ` +
        `or read stale, because no node sees the others' caches. Use volumeMode: Block (e.g. KubeVirt live migration) ` +
        `or a single-node access mode`
      );
    }
    if (cap.fsType !== '' && !SUPPORTED_FS_TYPES.includes(cap.fsType)) {
      return `${field}.mount.fs_type ${JSON.stringify(cap.fsType)} is not supported; use one of ${SUPPORTED_FS_TYPES.join(', ')}`;
    }
  }
  return null;
}

/** Checks every capability of a list that is REQUIRED to be non-empty. */
export function checkCapabilities(caps: VolumeCapability[] | undefined | null, field: string): CheckedCapability[] {
  if (!caps || caps.length === 0) throw invalidArgument(`${field} is required: give at least one volume capability`);
  return caps.map((c, i) => checkCapability(c, `${field}[${i}]`));
}

// ---- StorageClass parameters ---------------------------------------------------------------------

export type ChapMode = 'none' | 'chap' | 'mutual';

export interface VolumeParameters {
  readonly fsType?: string;
  readonly chap: ChapMode;
  readonly thin: boolean;
  readonly portals?: readonly string[];
  /** The Lunar keys as given (sidecar keys dropped): kept with the volume and compared for idempotency. */
  readonly stored: Readonly<Record<string, string>>;
}

const PORTAL_RE = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

export function parsePortalList(value: string, field: string): string[] {
  const list = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (list.length === 0) throw invalidArgument(`${field} is empty; give "host:port[,host:port...]" or leave it out for every portal`);
  for (const p of list) {
    const m = PORTAL_RE.exec(p);
    const port = m ? Number(m[1]) : 0;
    if (!m || port < 1 || port > 65535) {
      throw invalidArgument(`${field}: ${JSON.stringify(p)} is not "host:port" (IPv6 as "[addr]:port")`);
    }
  }
  return list;
}

/** Parses CreateVolume/GetCapacity/ValidateVolumeCapabilities parameters; unknown keys -> INVALID_ARGUMENT. */
export function parseParameters(params: StringMap | undefined | null, field = 'parameters'): VolumeParameters {
  const p = params ?? {};
  const unknown = Object.keys(p).filter((k) => !PARAMETER_KEYS.includes(k) && !k.startsWith(SIDECAR_PARAMETER_PREFIX));
  if (unknown.length > 0) {
    throw invalidArgument(
      `${field}: unknown key${unknown.length > 1 ? 's' : ''} ${keyList(unknown)}; ` +
        `Lunar understands ${PARAMETER_KEYS.join(', ')} (see docs/csi.md)`,
    );
  }
  const stored: Record<string, string> = {};
  let fsType: string | undefined;
  if (p.fsType !== undefined) {
    if (!SUPPORTED_FS_TYPES.includes(p.fsType)) {
      throw invalidArgument(`${field}.fsType ${JSON.stringify(p.fsType)} is not supported; use one of ${SUPPORTED_FS_TYPES.join(', ')}`);
    }
    fsType = p.fsType;
    stored.fsType = fsType;
  }
  let chap: ChapMode = 'none';
  if (p.chap !== undefined) {
    if (p.chap !== 'none' && p.chap !== 'chap' && p.chap !== 'mutual') {
      throw invalidArgument(`${field}.chap ${JSON.stringify(p.chap)} must be none, chap or mutual`);
    }
    chap = p.chap;
    stored.chap = chap;
  }
  let thin = true;
  if (p.thin !== undefined) {
    if (p.thin !== 'true' && p.thin !== 'false') throw invalidArgument(`${field}.thin ${JSON.stringify(p.thin)} must be "true" or "false"`);
    thin = p.thin === 'true';
    stored.thin = p.thin;
  }
  let portals: string[] | undefined;
  if (p.portals !== undefined) {
    portals = parsePortalList(p.portals, `${field}.portals`);
    stored.portals = portals.join(',');
  }
  return { ...(fsType !== undefined ? { fsType } : {}), chap, thin, ...(portals ? { portals } : {}), stored };
}

/** Same Lunar parameters (sidecar keys ignored). */
export function sameParameters(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const ka = Object.keys(a).filter((k) => !k.startsWith(SIDECAR_PARAMETER_PREFIX));
  const kb = Object.keys(b).filter((k) => !k.startsWith(SIDECAR_PARAMETER_PREFIX));
  return ka.length === kb.length && ka.every((k) => a[k] === b[k]);
}

// ---- node ids ------------------------------------------------------------------------------------

/**
 * The node plugin reports node_id as "<node name>#<initiator name>" or just "<initiator name>".
 * '#' cannot occur in an iSCSI name (RFC 3722 allows a-z 0-9 - . : only), so the split is unambiguous.
 */
export interface NodeIdentity {
  readonly nodeName?: string;
  readonly initiatorName: string;
}

// RFC 7143 §4.2.7.2: iqn.yyyy-mm.<reversed domain>[:<unique>], eui.<16 hex>, naa.<16|32 hex>; lower case
// after stringprep (RFC 3722).
const IQN_RE = /^iqn\.\d{4}-(0[1-9]|1[0-2])\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[a-z0-9.:-]+)?$/;
const EUI_RE = /^eui\.[0-9a-f]{16}$/;
const NAA_RE = /^naa\.(?:[0-9a-f]{16}|[0-9a-f]{32})$/;

export function isIscsiName(name: string): boolean {
  return byteLength(name) <= MAX_ISCSI_NAME_BYTES && (IQN_RE.test(name) || EUI_RE.test(name) || NAA_RE.test(name));
}

const NODE_NAME_RE = /^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$/;

export function parseNodeId(nodeId: string | undefined | null, field = 'node_id'): NodeIdentity {
  const id = requireString(nodeId, field, MAX_NODE_ID_BYTES);
  const hash = id.indexOf('#');
  const nodeName = hash >= 0 ? id.slice(0, hash) : undefined;
  const initiatorName = hash >= 0 ? id.slice(hash + 1) : id;
  const format = `"<node name>#<initiator IQN>" or "<initiator IQN>", e.g. "worker-1#iqn.2004-10.com.ubuntu:01:1234abcd"`;
  if (nodeName !== undefined && (nodeName === '' || !NODE_NAME_RE.test(nodeName) || byteLength(nodeName) > 253)) {
    throw invalidArgument(`${field} ${JSON.stringify(id)}: the node name before '#' is not a valid node name; expected ${format}`);
  }
  if (!isIscsiName(initiatorName)) {
    throw invalidArgument(
      `${field} ${JSON.stringify(id)} does not carry a valid iSCSI initiator name (lower-case iqn./eui./naa.); expected ${format}`,
    );
  }
  return { ...(nodeName !== undefined ? { nodeName } : {}), initiatorName };
}

// ---- pagination ----------------------------------------------------------------------------------

/**
 * Opaque continuation token: "<kind>1.<base64url(last id returned)>". Listing resumes after that id in id
 * order, so deleting the last entry of a page does not invalidate the token.
 */
export function encodeToken(kind: 'v' | 's', lastId: string): string {
  return `${kind}1.${Buffer.from(lastId, 'utf8').toString('base64url')}`;
}

export function decodeToken(kind: 'v' | 's', token: string): string {
  const prefix = `${kind}1.`;
  const body = token.startsWith(prefix) ? token.slice(prefix.length) : '';
  if (body === '' || !/^[A-Za-z0-9_-]+$/.test(body)) {
    throw aborted(`starting_token ${JSON.stringify(token)} is not a token Lunar issued; restart the listing with an empty starting_token`);
  }
  return Buffer.from(body, 'base64url').toString('utf8');
}

export function checkMaxEntries(maxEntries: number | undefined | null): number {
  const n = maxEntries ?? 0;
  if (!Number.isInteger(n) || n < 0) throw invalidArgument(`max_entries must not be negative (got ${String(maxEntries)})`);
  return n;
}

/** One page of id-sorted items after the token's id. */
export function paginate<T>(
  items: readonly T[],
  idOf: (t: T) => string,
  kind: 'v' | 's',
  maxEntries: number | undefined | null,
  startingToken: string | undefined | null,
): { page: T[]; nextToken: string } {
  const max = checkMaxEntries(maxEntries);
  // The services list by id already (VolumeService.list): a page then costs a check and a binary
  // search, not a copy and sort of every entry (10,000 volumes in pages of 100: docs/benchmarks.md).
  let isSorted = true;
  for (let i = 1; i < items.length && isSorted; i++) isSorted = idOf(items[i - 1] as T) < idOf(items[i] as T);
  const sorted = isSorted ? items : [...items].sort((a, b) => (idOf(a) < idOf(b) ? -1 : idOf(a) > idOf(b) ? 1 : 0));
  let start = 0;
  if (startingToken) {
    const after = decodeToken(kind, startingToken);
    // First entry whose id is greater than the token's.
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (idOf(sorted[mid] as T) > after) hi = mid;
      else lo = mid + 1;
    }
    start = lo;
  }
  const end = max === 0 ? sorted.length : Math.min(sorted.length, start + max);
  const page = sorted.slice(start, end);
  const last = page[page.length - 1];
  const nextToken = end < sorted.length && last !== undefined ? encodeToken(kind, idOf(last)) : '';
  return { page, nextToken };
}

// ---- misc ----------------------------------------------------------------------------------------

/** ISO 8601 -> google.protobuf.Timestamp. */
export function toTimestamp(iso: string): Timestamp {
  const ms = Date.parse(iso);
  const t = Number.isNaN(ms) ? 0 : ms;
  const seconds = Math.floor(t / 1000);
  return { seconds: String(seconds), nanos: (t - seconds * 1000) * 1_000_000 };
}

const REDACTED = '[redacted]';
/** Fields the CSI spec marks sensitive: every `secrets` map ([(csi_secret) = true]) and mount_flags. */
const SENSITIVE_FIELDS: ReadonlySet<string> = new Set(['secrets', 'mount_flags']);
const SECRET_KEY_RE = /secret|password|passwd|token/i;

/** A copy of a request/response safe to log: sensitive fields and secret-looking map values replaced. */
export function redact(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redact);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (SENSITIVE_FIELDS.has(k)) {
      out[k] = Array.isArray(v)
        ? v.map(() => REDACTED)
        : v && typeof v === 'object'
          ? Object.fromEntries(Object.keys(v).map((key) => [key, REDACTED]))
          : REDACTED;
    } else if (SECRET_KEY_RE.test(k) && typeof v === 'string') {
      out[k] = REDACTED;
    } else {
      out[k] = redact(v);
    }
  }
  return out;
}
