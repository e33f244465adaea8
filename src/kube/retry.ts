// Retries with exponential backoff and full jitter for calls to the API server: transport errors, 429
// (honouring Retry-After), 500, 502, 503, 504. Other answers (4xx) are final. The delays are bounded and
// the attempts counted, so no call retries forever.

export interface RetryPolicy {
  readonly attempts: number;
  readonly baseMs: number;
  readonly maxMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseMs: 200, maxMs: 5000 };

/** An API answer with its HTTP status (what client.ts throws for non-2xx). */
export class KubeApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** Seconds from a Retry-After header, when the server sent one. */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = 'KubeApiError';
  }
}

const RETRIED_STATUS = new Set([429, 500, 502, 503, 504]);
const RETRIED_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'ENOTFOUND', 'UND_ERR_SOCKET']);

export function isRetryable(err: unknown): boolean {
  if (err instanceof KubeApiError) return RETRIED_STATUS.has(err.status);
  if (typeof err === 'object' && err !== null) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && RETRIED_CODES.has(code)) return true;
    const cause = (err as { cause?: unknown }).cause;
    if (cause !== undefined && cause !== err) return isRetryable(cause);
    if ((err as { type?: unknown }).type === 'system') return true; // node-fetch FetchError (transport)
  }
  return false;
}

/** Delay before attempt n+1 (n from 0): full jitter over base * 2^n, capped; Retry-After wins when given. */
export function backoffMs(policy: RetryPolicy, n: number, err: unknown, random: () => number = Math.random): number {
  if (err instanceof KubeApiError && err.retryAfterSeconds !== undefined) return Math.min(policy.maxMs, err.retryAfterSeconds * 1000);
  return Math.floor(random() * Math.min(policy.maxMs, policy.baseMs * 2 ** n));
}

export async function withRetry<T>(fn: () => Promise<T>, policy: RetryPolicy = DEFAULT_RETRY): Promise<T> {
  for (let n = 0; ; n++) {
    try {
      return await fn();
    } catch (err) {
      if (n + 1 >= policy.attempts || !isRetryable(err)) throw err;
      await new Promise((r) => setTimeout(r, backoffMs(policy, n, err)));
    }
  }
}
