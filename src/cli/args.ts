// Command-line argument helpers over node:util parseArgs: the options every command takes, typed reads of
// option values and positionals, subcommand dispatch, and the USER:SECRET and SIZE value forms. Every
// problem is a UsageError naming the command and what to type instead.

import { parseArgs } from 'node:util';
import { parseSize, SizeError } from '../util/size.js';
import type { CommandContext, OptionSpec, OptionValues } from './command.js';
import { UsageError } from './errors.js';
import { DEFAULT_WAIT_SECONDS, MAX_WAIT_SECONDS } from './readiness.js';

/** Options every command takes. */
export const COMMON_OPTIONS: OptionSpec = {
  'data-dir': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
};

/** Options of every command that talks to a server (all but serve and node). */
export const CLIENT_OPTIONS: OptionSpec = {
  wait: { type: 'string' },
};

/**
 * `--opt VALUE` with a VALUE that starts with "-" (`--size -1`) as `--opt=VALUE`, so that the option's own
 * check explains what is wrong with the value instead of parseArgs calling it ambiguous. A VALUE that is
 * itself one of the options (`--chap --masked`: the value was forgotten) is left alone.
 */
function joinDashValues(args: readonly string[], options: OptionSpec): string[] {
  const flags = new Set(Object.entries(options).flatMap(([name, o]) => [`--${name}`, ...(o.short ? [`-${o.short}`] : [])]));
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const next = args[i + 1];
    const name = a.startsWith('--') ? a.slice(2) : null;
    if (a === '--') {
      out.push(...args.slice(i));
      break;
    }
    if (
      name !== null &&
      options[name]?.type === 'string' &&
      next !== undefined &&
      next.startsWith('-') &&
      !flags.has(next.split('=')[0]!)
    ) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

/** Parses args strictly with the command's options and the common ones. */
export function parseOptions(args: readonly string[], options: OptionSpec): { values: OptionValues; positionals: string[] } {
  const all = { ...options, ...COMMON_OPTIONS };
  try {
    const r = parseArgs({ args: joinDashValues(args, all), options: all, allowPositionals: true, strict: true });
    return { values: r.values, positionals: r.positionals };
  } catch (err) {
    // parseArgs appends advice about "--" that does not apply to Lunar's commands.
    throw new UsageError((err as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
}

/** A string option's value. */
export function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** A repeatable string option's values. */
export function strs(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

/** The positional at index, required. */
export function positional(pos: readonly string[], index: number, what: string, command: string): string {
  const v = pos[index];
  if (v === undefined) throw new UsageError(`${command}: missing ${what}`);
  return v;
}

/** Refuses positionals beyond the first count. */
export function noExtra(pos: readonly string[], count: number, command: string): void {
  if (pos.length > count) throw new UsageError(`${command}: unexpected argument "${pos[count] ?? ''}"`);
}

/** A subcommand: runs with the positionals after its name. */
export type Subcommand = (ctx: CommandContext, positionals: readonly string[]) => Promise<number>;

/** Runs the subcommand named by the first positional; the table's order is the order the messages list. */
export function runSubcommand(group: string, table: Readonly<Record<string, Subcommand>>, ctx: CommandContext): Promise<number> {
  const [sub, ...rest] = ctx.positionals;
  const names = Object.keys(table).join(', ');
  if (sub === undefined) throw new UsageError(`${group}: missing subcommand (${names})`);
  const run = Object.hasOwn(table, sub) ? table[sub] : undefined;
  if (run === undefined) throw new UsageError(`${group}: unknown subcommand "${sub}" (${names})`);
  return run(ctx, rest);
}

/** USER:SECRET, split at the last ":" (user names such as IQNs contain colons; secrets never do). */
export function splitCreds(value: string, flag: string): { user: string; secret: string } {
  const i = value.lastIndexOf(':');
  if (i <= 0 || i === value.length - 1) throw new UsageError(`${flag} expects USER:SECRET (or "auto"), got "${value}"`);
  return { user: value.slice(0, i), secret: value.slice(i + 1) };
}

/** A required SIZE option in bytes (util/size.ts forms). */
export function sizeArg(v: string | undefined, flag: string): number {
  if (v === undefined) throw new UsageError(`${flag} SIZE is required (e.g. ${flag} 10GiB)`);
  if (/^\s*-/.test(v)) throw new UsageError(`${flag} ${v}: a size must be positive (e.g. ${flag} 10GiB)`);
  try {
    return parseSize(v);
  } catch (err) {
    if (err instanceof SizeError) throw new UsageError(err.message);
    throw err;
  }
}

/** --FLAG N, else $ENV_NAME, else dflt: a whole number from min to max (UsageError otherwise). */
export function intOpt(ctx: CommandContext, flag: string, envName: string | null, dflt: number, min: number, max: number): number {
  const text = str(ctx.values[flag]) ?? (envName ? ctx.io.env[envName] : undefined);
  if (text === undefined || text === '') return dflt;
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new UsageError(`--${flag} ${JSON.stringify(text)}: expected a whole number from ${min} to ${max}`);
  }
  return Number(text);
}

/** --wait SECONDS in milliseconds (a whole or decimal number of seconds; 0 = ask once, no wait). */
export function waitArg(value: string | undefined): number {
  if (value === undefined) return DEFAULT_WAIT_SECONDS * 1000;
  const s = value.trim() === '' ? NaN : Number(value);
  if (!Number.isFinite(s) || s < 0 || s > MAX_WAIT_SECONDS) {
    throw new UsageError(`--wait expects a number of seconds from 0 to ${MAX_WAIT_SECONDS}, got "${value}"`);
  }
  return Math.round(s * 1000);
}
