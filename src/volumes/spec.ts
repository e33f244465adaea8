// Volume specs: checking and normalising what a caller asks for (VolumeSpec -> NormalSpec), the one
// decision whether an existing volume of the same name matches a spec (create's idempotency, for the
// CLI and CSI alike), and the parts of a new record made from a spec (generated CHAP credentials).

import { randomBytes } from 'node:crypto';
import type { ChapCredentials } from '../target/types.js';
import { chapValueProblem, hasIdForm, newChapSecret, normaliseAclEntry } from '../util/ids.js';
import { alignUp, formatSize } from '../util/size.js';
import type { VolumeRecord } from './state.js';
import { MAX_VOLUME_BYTES, SIZE_ALIGNMENT, VolumeError, type ChapSetting, type VolumeSource, type VolumeSpec } from './types.js';

/** A spec after validation and normalisation. */
export interface NormalSpec {
  readonly name: string;
  readonly sizeBytes: number;
  /** Sizes an existing volume of the same name may have (VolumeSpec.sizeRange); null = created with sizeBytes. */
  readonly sizeRange: { readonly minBytes: number; readonly maxBytes: number | null } | null;
  readonly thin: boolean;
  readonly chap: ChapSetting;
  readonly allow: readonly string[];
  readonly masked: boolean;
  /** "host:port" keys, deduplicated; null = every portal. Not yet checked against the server's portals. */
  readonly portals: readonly string[] | null;
  readonly source?: VolumeSource;
  readonly parameters: Readonly<Record<string, string>>;
}

// eslint-disable-next-line no-control-regex -- control characters are what the name check refuses
const CONTROL_CHARS = /[\x00-\x1f\x7f]/;

/**
 * A volume or snapshot name: 1 to 255 bytes without control characters, not blank, and not of the form
 * of an id. Every front end (CLI, admin socket, CSI) resolves a reference by id first and by name second,
 * so a volume named like another volume's id would make `delete <that id>` act on the other volume.
 */
export function nameProblem(name: unknown): string | null {
  if (typeof name !== 'string' || name.length === 0) return 'must not be empty';
  if (Buffer.byteLength(name) > 255 || CONTROL_CHARS.test(name)) return 'must be at most 255 bytes without control characters';
  if (name.trim() === '') return 'must not be blank (only whitespace)';
  if (hasIdForm(name)) {
    return `must not have the form of a Lunar id (vol-/snap- and 16 hex digits, like "${name}"): ids are looked up before names; pick another name`;
  }
  return null;
}

/** A size in bytes, rounded up to SIZE_ALIGNMENT. */
export function checkSize(sizeBytes: unknown, what: string): number {
  // Too large first: 2^60 is a whole number, just not a safe integer (nor a volume size).
  if (typeof sizeBytes === 'number' && sizeBytes > MAX_VOLUME_BYTES) {
    throw new VolumeError(
      'out-of-range',
      `${what} ${Number.isFinite(sizeBytes) ? formatSize(sizeBytes) : String(sizeBytes)} is too large: the maximum volume size is ${formatSize(MAX_VOLUME_BYTES)}`,
    );
  }
  if (typeof sizeBytes !== 'number' || !Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) {
    throw new VolumeError('invalid-argument', `${what} must be a positive whole number of bytes, got ${String(sizeBytes)}`);
  }
  // MAX_VOLUME_BYTES is a multiple of SIZE_ALIGNMENT: rounding up never passes it.
  return alignUp(sizeBytes, SIZE_ALIGNMENT);
}

function normaliseChap(setting: ChapSetting | undefined): ChapSetting {
  if (!setting || setting.mode === 'none') return { mode: 'none' };
  // The type allows only these modes; the spec may come from JSON (admin socket), so check anyway.
  const mode: string = setting.mode;
  if (mode !== 'chap' && mode !== 'mutual') {
    throw new VolumeError('invalid-argument', `chap mode must be "none", "chap" or "mutual"`);
  }
  const c = setting.credentials;
  if (!c) return { mode: setting.mode };
  const problems = [chapValueProblem('CHAP user', c.user, 1), chapValueProblem('CHAP secret', c.secret, 12)];
  const mutualGiven = c.mutualUser !== undefined || c.mutualSecret !== undefined;
  if (setting.mode === 'chap' && mutualGiven) {
    problems.push('mutual CHAP credentials given with mode "chap" (use mode "mutual")');
  }
  if (setting.mode === 'mutual' && mutualGiven) {
    if (c.mutualUser === undefined || c.mutualSecret === undefined) {
      problems.push('mutual CHAP needs both a user and a secret for the target');
    } else {
      problems.push(chapValueProblem('mutual CHAP user', c.mutualUser, 1));
      problems.push(chapValueProblem('mutual CHAP secret', c.mutualSecret, 12));
      if (c.mutualSecret === c.secret) {
        problems.push('the mutual CHAP secret must differ from the initiator secret (RFC 7143 §12.1.3)');
      }
    }
  }
  const p = problems.filter((x): x is string => x !== null);
  if (p.length > 0) throw new VolumeError('invalid-argument', p.join('; '));
  return { mode: setting.mode, credentials: { ...c } };
}

type SizeRange = NonNullable<NormalSpec['sizeRange']>;

function normaliseSizeRange(spec: VolumeSpec): SizeRange | null {
  const r = spec.sizeRange;
  if (r === undefined) return null;
  const min = r.minBytes;
  const max = r.maxBytes ?? null;
  if (!Number.isSafeInteger(min) || min < 0 || (max !== null && (!Number.isSafeInteger(max) || max < min))) {
    throw new VolumeError(
      'invalid-argument',
      `size range ${describeRange({ minBytes: min, maxBytes: max })} is not a range of byte counts`,
    );
  }
  return { minBytes: min, maxBytes: max };
}

function describeRange(r: SizeRange): string {
  return `[${r.minBytes}, ${r.maxBytes ?? 'unlimited'}]`;
}

export function inSizeRange(sizeBytes: number, r: SizeRange): boolean {
  return sizeBytes >= r.minBytes && (r.maxBytes === null || sizeBytes <= r.maxBytes);
}

/** The size of a new volume must lie in the spec's size range. */
export function checkNewSize(s: NormalSpec): void {
  if (s.sizeRange && !inSizeRange(s.sizeBytes, s.sizeRange)) {
    throw new VolumeError('out-of-range', `volume size ${s.sizeBytes} lies outside the size range ${describeRange(s.sizeRange)}`);
  }
}

/** An allow list (initiator names, addresses, CIDRs) checked and in normal form, each entry once. */
export function normaliseAllow(entries: readonly string[] | undefined): string[] {
  const allow: string[] = [];
  for (const e of entries ?? []) {
    // The list may come from JSON (admin socket): check what the type promises.
    if (typeof (e as unknown) !== 'string') throw new VolumeError('invalid-argument', 'allow list entries must be strings');
    const r = normaliseAclEntry(e);
    if (!r.ok) throw new VolumeError('invalid-argument', r.error);
    if (!allow.includes(r.value)) allow.push(r.value);
  }
  return allow;
}

/** Check a spec and put it in normal form; throws VolumeError (invalid-argument, out-of-range). */
export function normaliseSpec(spec: VolumeSpec): NormalSpec {
  // The spec may come from JSON (admin socket): check what the types promise.
  if (typeof spec !== 'object') throw new VolumeError('invalid-argument', 'volume spec missing');
  const problem = nameProblem(spec.name);
  if (problem !== null) throw new VolumeError('invalid-argument', `volume name ${problem}`);
  const sizeBytes = checkSize(spec.sizeBytes, 'volume size');
  const allow = normaliseAllow(spec.allow);
  let portals: string[] | null = null;
  if (spec.portals && spec.portals.length > 0) portals = [...new Set(spec.portals)];
  const parameters: Record<string, string> = {};
  for (const [k, v] of Object.entries(spec.parameters ?? {})) {
    if (typeof v !== 'string') throw new VolumeError('invalid-argument', `parameter "${k}" must be a string`);
    parameters[k] = v;
  }
  const source = spec.source;
  if (source) {
    const kind: string = source.kind;
    if (kind !== 'snapshot' && kind !== 'volume') throw new VolumeError('invalid-argument', 'source kind must be "snapshot" or "volume"');
    if (typeof (source.id as unknown) !== 'string') throw new VolumeError('invalid-argument', 'source id must be a string');
  }
  return {
    name: spec.name,
    sizeBytes,
    sizeRange: normaliseSizeRange(spec),
    thin: spec.thin ?? true,
    chap: normaliseChap(spec.chap),
    allow,
    masked: spec.masked ?? false,
    portals,
    ...(source ? { source: { kind: source.kind, id: source.id } } : {}),
    parameters,
  };
}

function sameStringSet(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  const s = new Set(a);
  return b.every((x) => s.has(x));
}

function sameRecord(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => b[k] === a[k]);
}

function describeSource(s: VolumeSource | undefined): string {
  return s ? `${s.kind} ${s.id}` : 'no source';
}

export function chapModeOf(chap: ChapCredentials | null): ChapSetting['mode'] {
  return chap === null ? 'none' : chap.mutualUser !== undefined ? 'mutual' : 'chap';
}

/**
 * How an existing volume differs from a create request with the same name, one phrase per difference
 * ("existing vs requested"); empty when the request matches and create returns the volume.
 */
export function specDifferences(rec: VolumeRecord, s: NormalSpec): string[] {
  const d: string[] = [];
  const range = s.sizeRange;
  if (range === null) {
    if (rec.createdSizeBytes !== s.sizeBytes) d.push(`size ${formatSize(rec.createdSizeBytes)} vs ${formatSize(s.sizeBytes)}`);
  } else if (!inSizeRange(rec.sizeBytes, range)) {
    d.push(`size ${rec.sizeBytes} bytes, outside the requested range ${describeRange(range)}`);
  }
  if (rec.thin !== s.thin) d.push(`thin ${rec.thin} vs ${s.thin}`);
  const recMode = chapModeOf(rec.chap);
  if (recMode !== s.chap.mode) d.push(`CHAP ${recMode} vs ${s.chap.mode}`);
  else if (s.chap.mode !== 'none' && s.chap.credentials && rec.chap) {
    const c = s.chap.credentials;
    if (
      c.user !== rec.chap.user ||
      c.secret !== rec.chap.secret ||
      (c.mutualUser !== undefined && c.mutualUser !== rec.chap.mutualUser) ||
      (c.mutualSecret !== undefined && c.mutualSecret !== rec.chap.mutualSecret)
    ) {
      d.push('CHAP credentials');
    }
  }
  if (!sameStringSet(rec.allow, s.allow)) d.push('allow list');
  if (rec.masked !== s.masked) d.push(`masked ${rec.masked} vs ${s.masked}`);
  if (!sameStringSet(rec.portals ?? [], s.portals ?? [])) d.push('portals');
  if (rec.source?.kind !== s.source?.kind || rec.source?.id !== s.source?.id) {
    d.push(`content source ${describeSource(rec.source)} vs ${describeSource(s.source)}`);
  }
  if (!sameRecord(rec.parameters, s.parameters)) d.push(`parameters ${JSON.stringify(rec.parameters)} vs ${JSON.stringify(s.parameters)}`);
  return d;
}

/** The credentials a new volume gets: the caller's, with what is missing generated. null = no CHAP. */
export function makeChap(setting: ChapSetting): ChapCredentials | null {
  if (setting.mode === 'none') return null;
  const c = setting.credentials;
  const user = c?.user ?? `lunar-${randomBytes(4).toString('hex')}`;
  const secret = c?.secret ?? newChapSecret();
  if (setting.mode === 'chap') return { user, secret };
  let mutualSecret = c?.mutualSecret ?? newChapSecret();
  while (mutualSecret === secret) mutualSecret = newChapSecret();
  return { user, secret, mutualUser: c?.mutualUser ?? `lunar-target-${randomBytes(4).toString('hex')}`, mutualSecret };
}
