// ConnectionHooks for an IscsiConnection built directly over a fake socket in unit tests: a silent
// logger, no login timer, and hooks that a connection past login never calls. `extra` adds or replaces
// hooks (sendNoWait, for instance).
import { pino } from 'pino';
import type { ConnectionHooks } from '../../src/iscsi/connection.js';
import { DEFAULT_TUNING } from '../../src/iscsi/negotiation.js';
import type { TargetRegistry } from '../../src/target/types.js';

export function testConnectionHooks(extra: Partial<ConnectionHooks> = {}): ConnectionHooks {
  return {
    login: {
      registry: {} as TargetRegistry,
      tuning: { ...DEFAULT_TUNING, loginTimeoutMs: 0 },
      portalGroupTag: 1,
      sessionExists: () => false,
    },
    logger: pino({ level: 'silent' }),
    loginComplete: () => {
      throw new Error('not used');
    },
    closed: () => undefined,
    ...extra,
  };
}
