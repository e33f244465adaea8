// CHAP authentication, target side (RFC 7143 §12.1.3; RFC 1994 for the MD5 response), MD5 only (CHAP_A=5).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ChapCredentials } from '../target/types.js';
import { LoginFailure } from './errors.js';
import type { TextPair } from './text.js';

/** Length of our challenge; RFC 7143 §12.1.3 asks for unpredictable challenges (we use 16 random bytes+). */
export const CHAP_CHALLENGE_LENGTH = 16;
/** Longest binary value we accept for CHAP_C / CHAP_R (§12.1.3: at most 1024 bytes). */
export const CHAP_MAX_BINARY = 1024;
export const CHAP_MD5 = 5;

/** Decode a binary value (§5.1): "0x"/"0X" hex or "0b"/"0B" base64. null when malformed. */
export function decodeBinary(value: string): Buffer | null {
  if (value.length < 3) return null;
  const prefix = value.slice(0, 2).toLowerCase();
  const body = value.slice(2);
  if (prefix === '0x') {
    if (!/^[0-9a-fA-F]+$/.test(body)) return null;
    const hex = body.length % 2 === 1 ? `0${body}` : body;
    return Buffer.from(hex, 'hex');
  }
  if (prefix === '0b') {
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(body) || body.length % 4 !== 0) return null;
    return Buffer.from(body, 'base64');
  }
  return null;
}

export function encodeHex(b: Buffer): string {
  return `0x${b.toString('hex')}`;
}

/** RFC 1994 §4.1: Response = MD5(Identifier || secret || Challenge). */
export function chapMd5(id: number, secret: string, challenge: Buffer): Buffer {
  return createHash('md5')
    .update(Buffer.from([id & 0xff]))
    .update(secret, 'utf8')
    .update(challenge)
    .digest();
}

function get(pairs: readonly TextPair[], key: string): string | undefined {
  return pairs.find((p) => p.key === key)?.value;
}

const authFailure = (why: string): LoginFailure => new LoginFailure(0x02, 0x01, why);

/** Random source, injectable for tests. */
export type RandomSource = (n: number) => Buffer;

/**
 * Target-side CHAP exchange (§12.1.3):
 *   I→T CHAP_A=<list>          T→I CHAP_A=5 CHAP_I=<id> CHAP_C=<challenge>
 *   I→T CHAP_N CHAP_R [CHAP_I CHAP_C]   T→I [CHAP_N CHAP_R] (mutual)
 */
export class ChapAuthenticator {
  private state: 'algorithm' | 'response' | 'done' = 'algorithm';
  private id = 0;
  private challenge: Buffer = Buffer.alloc(0);

  constructor(
    private readonly creds: ChapCredentials,
    private readonly random: RandomSource = randomBytes,
  ) {}

  get finished(): boolean {
    return this.state === 'done';
  }

  /** Feed the CHAP_* keys of one login PDU; returns keys to answer. Throws LoginFailure(0x0201) on failure. */
  step(pairs: readonly TextPair[]): TextPair[] {
    if (this.state === 'algorithm') {
      const a = get(pairs, 'CHAP_A');
      if (a === undefined) {
        if (pairs.some((p) => p.key.startsWith('CHAP_'))) throw authFailure('CHAP keys before CHAP_A');
        return [];
      }
      if (!a.split(',').includes(String(CHAP_MD5))) throw authFailure(`no supported CHAP algorithm in ${a} (only MD5=5)`);
      this.id = this.random(1)[0]!;
      this.challenge = this.random(CHAP_CHALLENGE_LENGTH);
      this.state = 'response';
      return [
        { key: 'CHAP_A', value: String(CHAP_MD5) },
        { key: 'CHAP_I', value: String(this.id) },
        { key: 'CHAP_C', value: encodeHex(this.challenge) },
      ];
    }
    if (this.state === 'response') {
      const n = get(pairs, 'CHAP_N');
      const r = get(pairs, 'CHAP_R');
      if (n === undefined || r === undefined) throw authFailure('CHAP_N and CHAP_R expected');
      const resp = decodeBinary(r);
      if (!resp || resp.length > CHAP_MAX_BINARY) throw authFailure('CHAP_R malformed');
      if (n !== this.creds.user) throw authFailure('CHAP user unknown');
      const expected = chapMd5(this.id, this.creds.secret, this.challenge);
      if (resp.length !== expected.length || !timingSafeEqual(resp, expected)) throw authFailure('CHAP response mismatch');
      const mi = get(pairs, 'CHAP_I');
      const mc = get(pairs, 'CHAP_C');
      this.state = 'done';
      if (mi === undefined && mc === undefined) return [];
      // Mutual CHAP: the initiator authenticates us.
      if (mi === undefined || mc === undefined) throw authFailure('mutual CHAP needs both CHAP_I and CHAP_C');
      if (this.creds.mutualUser === undefined || this.creds.mutualSecret === undefined)
        throw authFailure('mutual CHAP requested but not configured for this target');
      const id = /^[0-9]{1,3}$/.test(mi) ? Number(mi) : NaN;
      if (!(id >= 0 && id <= 255)) throw authFailure('CHAP_I malformed');
      const challenge = decodeBinary(mc);
      if (!challenge || challenge.length === 0 || challenge.length > CHAP_MAX_BINARY) throw authFailure('CHAP_C malformed');
      // §12.1.3: a challenge equal to the one we sent is a reflection attack.
      if (challenge.equals(this.challenge)) throw authFailure('reflected CHAP challenge');
      return [
        { key: 'CHAP_N', value: this.creds.mutualUser },
        { key: 'CHAP_R', value: encodeHex(chapMd5(id, this.creds.mutualSecret, challenge)) },
      ];
    }
    if (pairs.some((p) => p.key.startsWith('CHAP_'))) throw authFailure('CHAP keys after authentication');
    return [];
  }
}
