// Test support: run `lunar serve` as a real child process (node dist/src/cli.js serve ...), wait until its
// admin socket says ready, and drive it through the real CLI. Every process started here is killed when
// the test process exits, even on failure.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { adminCall } from '../../src/admin/client.js';
import { POOL_PRELOAD } from '../../src/util/threadpool.js';

/** dist/src/cli.js, next to this compiled file (dist/test/support/lunar.js). */
export const LUNAR_CLI = resolve(dirname(fileURLToPath(import.meta.url)), '../../src/cli.js');

export interface StartLunarOptions {
  /** Data directory; default a fresh temporary directory (removed by remove()). */
  dataDir?: string;
  /** Portals, e.g. ["127.0.0.1:13320"] (any `lunar serve --portal` form). */
  portals: string[];
  /** Extra environment for the server (e.g. LUNAR_LOG_LEVEL). */
  env?: Record<string, string>;
  /** Run the server inside this network namespace (ip netns exec). */
  netns?: string;
  /** Extra `lunar serve` arguments (e.g. ["--discovery-chap", "u:secret"]). */
  args?: string[];
  /** How much of the server's output output() keeps (bytes); default 256 KiB. */
  keepOutputBytes?: number;
  /** How long to wait for readiness (ms); default 30 000. */
  readyTimeoutMs?: number;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface LunarProcess {
  readonly dataDir: string;
  /** pid of the current server process (changes on restart). */
  readonly pid: number;
  /** Path of the admin socket. */
  readonly socketPath: string;
  /** Run `lunar ARGS` against this server (LUNAR_DATA_DIR set); never rejects on a non-zero exit. */
  cli(args: string[], env?: Record<string, string>): Promise<CliResult>;
  /** One admin-socket request (see src/admin/protocol.ts); rejects on error answers. */
  call(method: string, params?: Record<string, unknown>): Promise<unknown>;
  /** SIGTERM and wait for exit (SIGKILL after 15 s). */
  stop(): Promise<void>;
  /** SIGKILL and wait for exit. */
  kill9(): Promise<void>;
  /** Start again on the same data directory and portals (stopping first if running); waits until ready. */
  restart(): Promise<void>;
  /** How the last server process ended (null while the first one runs). */
  readonly lastExit: { code: number | null; signal: NodeJS.Signals | null } | null;
  /** Server stderr+stdout collected so far (the last keepOutputBytes, 256 KiB by default). */
  output(): string;
  /** Bytes of server stderr+stdout since the first start (all of them, not only what output() keeps). */
  outputBytes(): number;
  /** stop() and delete the data directory if this helper created it. */
  remove(): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of live) {
      try {
        c.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

function waitExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((res) => {
    const t = setTimeout(() => res(false), timeoutMs);
    child.once('exit', () => {
      clearTimeout(t);
      res(true);
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function startLunarProcess(opts: StartLunarOptions): Promise<LunarProcess> {
  installExitHook();
  const ownDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'lunar-t-'));
  const socketPath = join(dataDir, 'admin.sock');
  let child: ChildProcess | null = null;
  let lastExit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  let log = '';
  let logBytes = 0;
  const append = (b: Buffer): void => {
    logBytes += b.length;
    log += b.toString('utf8');
    const keep = opts.keepOutputBytes ?? 256 * 1024;
    if (log.length > keep) log = log.slice(-keep);
  };

  const spawnServer = async (): Promise<void> => {
    // Same preload as the `lunar` shebang, so the server gets the thread pool it gets in production.
    const args = [
      `--import=${POOL_PRELOAD}`,
      LUNAR_CLI,
      'serve',
      '--data-dir',
      dataDir,
      ...opts.portals.flatMap((p) => ['--portal', p]),
      ...(opts.args ?? []),
    ];
    const [cmd, argv] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, process.execPath, ...args]] : [process.execPath, args];
    const c = spawn(cmd, argv, {
      env: { ...process.env, LUNAR_LOG_LEVEL: process.env.LUNAR_LOG_LEVEL ?? 'info', ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = c;
    live.add(c);
    c.on('exit', (code, signal) => {
      live.delete(c);
      lastExit = { code, signal };
    });
    c.stdout?.on('data', append);
    c.stderr?.on('data', append);
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
    for (;;) {
      if (c.exitCode !== null || c.signalCode !== null) {
        throw new Error(`lunar serve exited (code ${c.exitCode}, signal ${c.signalCode}) before becoming ready:\n${log.slice(-4000)}`);
      }
      try {
        const info = (await adminCall(socketPath, 'ping', {}, 2000)) as { ready?: boolean; pid?: number };
        if (info.ready === true && info.pid === c.pid) return;
      } catch {
        // not up yet
      }
      if (Date.now() > deadline) {
        c.kill('SIGKILL');
        await waitExit(c, 5000);
        throw new Error(`lunar serve did not become ready within ${opts.readyTimeoutMs ?? 30_000} ms:\n${log.slice(-4000)}`);
      }
      await sleep(50);
    }
  };

  const stop = async (): Promise<void> => {
    const c = child;
    if (!c) return;
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGTERM');
      if (!(await waitExit(c, 15_000))) {
        c.kill('SIGKILL');
        await waitExit(c, 5000);
      }
    }
    child = null;
  };

  const kill9 = async (): Promise<void> => {
    const c = child;
    if (!c) return;
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGKILL');
      await waitExit(c, 10_000);
    }
    child = null;
  };

  await spawnServer();

  return {
    dataDir,
    socketPath,
    get pid(): number {
      return child?.pid ?? -1;
    },
    get lastExit() {
      return lastExit;
    },
    cli: (args, env) =>
      new Promise<CliResult>((res, rej) => {
        const c = spawn(process.execPath, [LUNAR_CLI, ...args], {
          env: { ...process.env, LUNAR_DATA_DIR: dataDir, ...env },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        live.add(c);
        let stdout = '';
        let stderr = '';
        c.stdout.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
        c.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
        c.on('error', rej);
        c.on('close', (code, signal) => {
          live.delete(c);
          res({ code: code ?? (signal ? 128 : -1), stdout, stderr });
        });
      }),
    call: (method, params = {}) => adminCall(socketPath, method, params),
    stop,
    kill9,
    restart: async () => {
      await stop();
      await spawnServer();
    },
    output: () => log,
    outputBytes: () => logBytes,
    remove: async () => {
      await stop();
      if (ownDir) await fsp.rm(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * The /metrics URL of the server's ready line (`--metrics-address` given); the ready line follows the
 * admin socket's readiness by a moment, so it is waited for (5 s). Throws naming the output when absent.
 */
export async function readyMetricsUrl(lunar: Pick<LunarProcess, 'output'>): Promise<string> {
  for (let i = 0; i < 100 && !/; metrics http:/.test(lunar.output()); i++) await sleep(50);
  const m = /; metrics (http:\/\/\S+\/metrics)/.exec(lunar.output());
  if (!m) throw new Error(`no metrics address in the ready line:\n${lunar.output()}`);
  return m[1]!;
}
