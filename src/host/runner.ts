// The one runner of host commands (iscsiadm, multipath, blkid, mkfs, mount, ...). Every command has a
// timeout and is also bounded by the request's deadline: whichever comes first kills it (SIGKILL: a
// command that ignores its deadline must not hold a CSI call past it). The runner runs a command either
// directly (the plugin runs on the host, or in a container that has the host's tools and namespaces) or
// through nsenter into the mount, network, IPC and UTS namespaces of the host's PID 1 (the plugin runs in
// a pod with hostPID: iscsiadm must reach iscsid's abstract socket, which lives in the host's network
// namespace, and mount must act in the host's mount namespace, where kubelet sees it).
// Secrets never go into argv (any user on the node reads argv with ps): a command gets them on stdin, in
// its environment or in a file the caller writes; RunSpec has no way to mark an argument secret because
// none may be.

import { spawn, type ChildProcess } from 'node:child_process';
import { hostError } from './errors.js';

export type HostExecMode = 'direct' | 'nsenter';

export interface RunSpec {
  readonly cmd: string;
  readonly args: readonly string[];
  /** Longest the command may run (ms). */
  readonly timeoutMs: number;
  /** Epoch ms after which the command is killed whatever timeoutMs says (the request's deadline). */
  readonly deadline?: number;
  /** Written to the command's stdin, then stdin is closed (default: stdin is /dev/null). */
  readonly stdin?: string;
  /** Extra environment variables. */
  readonly env?: Readonly<Record<string, string>>;
}

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs one host command; resolves with its exit code (non-zero too), rejects when it cannot run or times out. */
export interface HostRunner {
  run(spec: RunSpec): Promise<RunResult>;
}

/** The argv actually executed for spec in mode (pure; tests check it). */
export function commandLine(mode: HostExecMode, spec: Pick<RunSpec, 'cmd' | 'args'>): { file: string; argv: string[] } {
  if (mode === 'direct') return { file: spec.cmd, argv: [...spec.args] };
  // No --pid: nsenter then execs the command itself instead of forking, so killing it kills the command.
  return { file: 'nsenter', argv: ['--target', '1', '--mount', '--net', '--ipc', '--uts', '--', spec.cmd, ...spec.args] };
}

/** Output kept per stream; the tools Lunar runs print far less, a runaway one is cut. */
const MAX_OUTPUT = 1024 * 1024;

/** Time left for a command: its own timeout, cut to the deadline. */
export function timeLeft(spec: Pick<RunSpec, 'timeoutMs' | 'deadline'>, now: number = Date.now()): number {
  const d = spec.deadline ?? Infinity;
  return Math.max(0, Math.min(spec.timeoutMs, d - now));
}

export function createRunner(mode: HostExecMode): HostRunner {
  return {
    run(spec: RunSpec): Promise<RunResult> {
      const { file, argv } = commandLine(mode, spec);
      const shown = [spec.cmd, ...spec.args].join(' ');
      const budget = timeLeft(spec);
      if (budget <= 0) return Promise.reject(hostError('timeout', `${shown}: no time left before the request's deadline`));
      return new Promise<RunResult>((resolve, reject) => {
        // Its own process group (detached), so that a timeout kills what the command started too.
        const child = spawn(file, argv, {
          stdio: [spec.stdin !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'],
          env: { ...process.env, LC_ALL: 'C', ...(spec.env ?? {}) },
          detached: true,
        });
        let stdout = '';
        let stderr = '';
        let settled = false;
        const settle = (fn: () => void): void => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          fn();
        };
        // On timeout the call answers at once, without waiting for the process to end: a process in an
        // uninterruptible kernel wait (a sysfs write or an I/O on a dead path, state D) takes SIGKILL only
        // when the kernel call returns, and a child it left behind keeps the output pipes open; waiting for
        // "close" would hold the CSI call as long as they live.
        const timer = setTimeout(() => {
          settle(() => reject(hostError('timeout', `${shown}: killed after ${budget} ms (timeout or the request's deadline)`)));
          killGroup(child);
        }, budget);
        child.stdout?.setEncoding('utf8').on('data', (d: string) => {
          if (stdout.length < MAX_OUTPUT) stdout += d;
        });
        child.stderr?.setEncoding('utf8').on('data', (d: string) => {
          if (stderr.length < MAX_OUTPUT) stderr += d;
        });
        if (spec.stdin !== undefined && child.stdin) {
          child.stdin.on('error', () => undefined); // the command may exit without reading it
          child.stdin.end(spec.stdin);
        }
        child.once('error', (err: NodeJS.ErrnoException) => {
          settle(() =>
            reject(
              hostError(
                'failed',
                err.code === 'ENOENT' ? `${file}: command not found on the host (install it or check PATH)` : `${shown}: ${err.message}`,
              ),
            ),
          );
        });
        child.once('close', (code, signal) => {
          settle(() => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
        });
      });
    },
  };
}

/** SIGKILL to the child's process group (it leads one: detached), or to the child alone if that fails. */
function killGroup(child: ChildProcess): void {
  try {
    if (child.pid !== undefined) {
      process.kill(-child.pid, 'SIGKILL');
      return;
    }
  } catch {
    // the group is gone already, or the child never became its leader
  }
  child.kill('SIGKILL');
}

/** "cmd args: exit N: stderr" for a failed command's message. */
export function describeFailure(spec: Pick<RunSpec, 'cmd' | 'args'>, r: RunResult): string {
  const err = (r.stderr.trim() || r.stdout.trim()).split('\n').slice(-3).join(' / ');
  return `${[spec.cmd, ...spec.args].join(' ')}: exit ${r.code}${err ? `: ${err}` : ''}`;
}

/** Runs spec and requires exit 0 (or one of okCodes); otherwise a HostError of kind 'failed'. */
export async function runOk(runner: HostRunner, spec: RunSpec, okCodes: readonly number[] = [0]): Promise<RunResult> {
  const r = await runner.run(spec);
  if (!okCodes.includes(r.code)) throw hostError('failed', describeFailure(spec, r));
  return r;
}
