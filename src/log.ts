// One pino logger for the whole process; modules take a child with their own `component` binding.
import { pino, type Logger } from 'pino';

export type { Logger };

const level = process.env.LUNAR_LOG_LEVEL ?? (process.env.NODE_ENV === 'test' ? 'warn' : 'info');

/** The root logger (JSON lines on stderr, so stdout stays free for CLI output). */
export const rootLogger: Logger = pino({ level, base: { pid: process.pid } }, pino.destination(2));

export function componentLogger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return rootLogger.child({ component, ...bindings });
}
