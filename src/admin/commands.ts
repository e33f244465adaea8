// The `lunar` command line: `lunar serve` runs the server; every other command talks to a running
// server over <data-dir>/admin.sock. Arguments are parsed with node:util parseArgs.

import { relative, resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { SessionInfo } from '../target/types.js';
import { parsePortals, targetAddress } from '../util/portal.js';
import { chapValueProblem, naaWwid } from '../util/ids.js';
import { formatSize, parseSize, SizeError } from '../util/size.js';
import { LUNAR_VERSION } from '../util/version.js';
import type { Snapshot, Volume } from '../volumes/types.js';
import { adminCall, AdminError, AdminUnreachable } from './client.js';
import { ADMIN_SOCKET, type AdminErrorCode } from './protocol.js';

/** Exit codes (also listed in `lunar --help`). */
export const ExitCode = {
  OK: 0,
  FAILED: 1,
  USAGE: 2,
  NO_SERVER: 3,
  NOT_FOUND: 4,
  ALREADY_EXISTS: 5,
  BUSY: 6,
} as const;

export const USAGE = `Lunar ${LUNAR_VERSION} — iSCSI target and Kubernetes CSI driver

Usage:
  lunar serve [--data-dir DIR] [--portal HOST:PORT[=ADVERTISE]]... [--discovery-chap USER:SECRET]
  lunar volume create NAME --size SIZE [--thick] [--chap USER:SECRET|auto] [--mutual-chap USER:SECRET|auto]
                      [--allow IQN|CIDR]... [--masked] [--portal HOST:PORT]... [--from-snapshot SNAP | --from-volume VOL] [--json]
  lunar volume list [--json]
  lunar volume show VOLUME [--json]
  lunar volume delete VOLUME
  lunar volume resize VOLUME --size SIZE [--json]
  lunar volume publish VOLUME --node NODE --initiator IQN [--json]
  lunar volume unpublish VOLUME --node NODE [--json]
  lunar snapshot create VOLUME NAME [--json]
  lunar snapshot list [--json]
  lunar snapshot delete SNAPSHOT
  lunar sessions [--volume VOLUME] [--json]
  lunar status [--json]
  lunar --help | --version

Every command takes --data-dir DIR (default: $LUNAR_DATA_DIR, else ./.lunar); all but serve talk to the
server through DIR/${ADMIN_SOCKET}. VOLUME and SNAPSHOT are a name or an id.

serve:
  --portal HOST:PORT[=ADVERTISE]  listen on HOST:PORT (repeatable; default $LUNAR_PORTALS, a comma list,
                                  else 127.0.0.1:3260). Portal group tags are 1, 2, ... in order.
                                  =ADVERTISE reports that address in SendTargets (NAT, 0.0.0.0 binds).
                                  IPv6: [::1]:3260.
  --discovery-chap USER:SECRET    require CHAP for SendTargets discovery (default $LUNAR_DISCOVERY_CHAP)
  --csi-endpoint ENDPOINT         CSI Identity+Controller endpoint: unix:///path, tcp://host:port or none
                                  (default $LUNAR_CSI_ENDPOINT, $CSI_ENDPOINT, else unix://DIR/csi.sock)
  Stops cleanly on SIGTERM or SIGINT. Logs are JSON lines on stderr (LUNAR_LOG_LEVEL=debug|info|warn).

volume create:
  --size SIZE            bytes or with a unit: 512MiB, 10GiB, 1G (= GiB), 1GB (= 10^9); rounded up to 1 MiB
  --thick                preallocate the file (default: thin, a sparse file)
  --chap USER:SECRET     initiators must log in with CHAP (secret: 12-255 characters); "auto" generates
                         both and prints them. USER:SECRET splits at the last ":".
  --mutual-chap USER:SECRET  the target authenticates itself too (mutual CHAP; needs --chap)
  --allow IQN|CIDR       only these initiators (by name) or addresses may log in (repeatable)
  --masked               nobody may log in until allowed or published (what CSI uses)
  Idempotent: the same NAME with the same options returns the existing volume.

Exit codes: 0 ok, 1 failed, 2 bad usage or value, 3 no server, 4 not found, 5 already exists, 6 busy (retry).
`;

class UsageError extends Error {}

/** Where the command writes; injectable for tests. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
  env: Record<string, string | undefined>;
}

const processIo: Io = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
  env: process.env,
};

/** The data dir as the user would type it (relative when under the cwd) for messages. */
function shownDir(dir: string): string {
  const rel = relative(process.cwd(), dir);
  return rel === '' ? '.' : rel.startsWith('..') ? dir : rel;
}

function splitCreds(value: string, flag: string): { user: string; secret: string } {
  const i = value.lastIndexOf(':');
  if (i <= 0 || i === value.length - 1) throw new UsageError(`${flag} expects USER:SECRET (or "auto"), got "${value}"`);
  return { user: value.slice(0, i), secret: value.slice(i + 1) };
}

function sizeArg(v: string | undefined, flag: string): number {
  if (v === undefined) throw new UsageError(`${flag} SIZE is required (e.g. ${flag} 10GiB)`);
  try {
    return parseSize(v);
  } catch (err) {
    if (err instanceof SizeError) throw new UsageError(err.message);
    throw err;
  }
}

function portalText(v: Volume): string {
  return v.portals.map((p) => targetAddress(p)).join(' ');
}

function describeVolume(v: Volume): string {
  const lines = [
    `volume ${v.name} (${v.id})`,
    `  size:      ${formatSize(v.sizeBytes)} (${v.sizeBytes} bytes), ${v.thin ? 'thin' : 'thick'}`,
    `  target:    ${v.iqn}`,
    `  lun:       ${v.lun}`,
    `  portals:   ${portalText(v)}`,
    `  wwid:      ${naaWwid(v.naa)}`,
    `  serial:    ${v.serial}`,
  ];
  if (v.chap) {
    lines.push(`  chap:      user ${v.chap.user} secret ${v.chap.secret}`);
    if (v.chap.mutualUser) lines.push(`  mutual:    user ${v.chap.mutualUser} secret ${v.chap.mutualSecret ?? ''}`);
  } else lines.push('  chap:      none');
  const allowed = [...v.allow, ...Object.entries(v.publications).map(([n, i]) => `${i} (node ${n})`)];
  lines.push(`  access:    ${allowed.length > 0 ? allowed.join(', ') : v.masked ? 'nobody (masked)' : 'any initiator'}`);
  if (v.source) lines.push(`  source:    ${v.source.kind} ${v.source.id}`);
  return lines.join('\n') + '\n';
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ')).join('\n') + '\n';
}

function exitCodeFor(code: AdminErrorCode): number {
  switch (code) {
    case 'invalid-argument':
    case 'out-of-range':
    case 'bad-request':
    case 'unknown-method':
      return ExitCode.USAGE;
    case 'not-found':
      return ExitCode.NOT_FOUND;
    case 'already-exists':
      return ExitCode.ALREADY_EXISTS;
    case 'busy':
      return ExitCode.BUSY;
    default:
      return ExitCode.FAILED;
  }
}

function parse(
  args: string[],
  options: ParseArgsConfig['options'],
): { values: Record<string, string | boolean | (string | boolean)[] | undefined>; positionals: string[] } {
  try {
    const r = parseArgs({
      args,
      options: { ...options, 'data-dir': { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    });
    return { values: r.values, positionals: r.positionals };
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function strs(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

function positional(pos: string[], index: number, what: string, command: string): string {
  const v = pos[index];
  if (v === undefined) throw new UsageError(`${command}: missing ${what}`);
  return v;
}

function noExtra(pos: string[], count: number, command: string): void {
  if (pos.length > count) throw new UsageError(`${command}: unexpected argument "${pos[count]}"`);
}

/** Run the CLI; returns the exit code. */
export async function main(argv: string[], io: Io = processIo, poolSizeAtStart?: string): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    io.out(USAGE);
    return cmd === undefined ? ExitCode.USAGE : ExitCode.OK;
  }
  if (cmd === '--version' || cmd === '-V' || cmd === 'version') {
    io.out(`lunar ${LUNAR_VERSION}\n`);
    return ExitCode.OK;
  }
  let dataDir = resolve(io.env.LUNAR_DATA_DIR || '.lunar');
  try {
    if (cmd === 'serve') {
      const { values, positionals } = parse(rest, {
        portal: { type: 'string', multiple: true },
        'discovery-chap': { type: 'string' },
        'csi-endpoint': { type: 'string' },
      });
      if (values.help) {
        io.out(USAGE);
        return ExitCode.OK;
      }
      noExtra(positionals, 0, 'serve');
      if (str(values['data-dir'])) dataDir = resolve(str(values['data-dir'])!);
      const portalSpecs = strs(values.portal);
      const specs =
        portalSpecs.length > 0
          ? portalSpecs
          : (io.env.LUNAR_PORTALS ?? '127.0.0.1:3260')
              .split(',')
              .map((s) => s.trim())
              .filter((s) => s.length > 0);
      let portals;
      try {
        portals = parsePortals(specs);
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      const dchap = str(values['discovery-chap']) ?? io.env.LUNAR_DISCOVERY_CHAP;
      const discoveryChap = dchap ? splitCreds(dchap, '--discovery-chap') : null;
      if (discoveryChap) {
        const problem =
          chapValueProblem('discovery CHAP user', discoveryChap.user, 1) ??
          chapValueProblem('discovery CHAP secret', discoveryChap.secret, 12);
        if (problem) throw new UsageError(problem);
      }
      const csiEndpoint = str(values['csi-endpoint']) ?? io.env.LUNAR_CSI_ENDPOINT ?? io.env.CSI_ENDPOINT;
      const { serve } = await import('./serve.js');
      return await serve(
        { dataDir, portals, discoveryChap, ...(csiEndpoint ? { csiEndpoint } : {}) },
        io,
        shownDir(dataDir),
        poolSizeAtStart,
      );
    }

    const call = async (method: string, params: Record<string, unknown> = {}): Promise<unknown> =>
      adminCall(resolve(dataDir, ADMIN_SOCKET), method, params);

    if (cmd === 'volume') {
      const [sub, ...args] = rest;
      const { values, positionals } = parse(args, {
        size: { type: 'string' },
        thick: { type: 'boolean' },
        chap: { type: 'string' },
        'mutual-chap': { type: 'string' },
        allow: { type: 'string', multiple: true },
        masked: { type: 'boolean' },
        portal: { type: 'string', multiple: true },
        'from-snapshot': { type: 'string' },
        'from-volume': { type: 'string' },
        node: { type: 'string' },
        initiator: { type: 'string' },
      });
      if (values.help) {
        io.out(USAGE);
        return ExitCode.OK;
      }
      if (str(values['data-dir'])) dataDir = resolve(str(values['data-dir'])!);
      const json = values.json === true;
      const printVolume = (v: Volume): void => io.out(json ? JSON.stringify(v, null, 2) + '\n' : describeVolume(v));
      switch (sub) {
        case 'create': {
          const name = positional(positionals, 0, 'NAME', 'volume create');
          noExtra(positionals, 1, 'volume create');
          const sizeBytes = sizeArg(str(values.size), '--size');
          const chapArg = str(values.chap);
          const mutualArg = str(values['mutual-chap']);
          if (mutualArg !== undefined && chapArg === undefined) {
            throw new UsageError('--mutual-chap needs --chap too: with mutual CHAP both the initiator and the target authenticate');
          }
          let chap: Record<string, unknown> | undefined;
          if (chapArg !== undefined) {
            const mode = mutualArg !== undefined ? 'mutual' : 'chap';
            const ini = chapArg === 'auto' ? null : splitCreds(chapArg, '--chap');
            const mut = mutualArg === undefined || mutualArg === 'auto' ? null : splitCreds(mutualArg, '--mutual-chap');
            if (ini === null && mut !== null) throw new UsageError('--mutual-chap USER:SECRET needs --chap USER:SECRET (not auto)');
            chap = ini
              ? {
                  mode,
                  credentials: { user: ini.user, secret: ini.secret, ...(mut ? { mutualUser: mut.user, mutualSecret: mut.secret } : {}) },
                }
              : { mode };
          }
          if (values['from-snapshot'] !== undefined && values['from-volume'] !== undefined) {
            throw new UsageError('give at most one of --from-snapshot and --from-volume');
          }
          let source: { kind: string; id: string } | undefined;
          const fromSnap = str(values['from-snapshot']);
          const fromVol = str(values['from-volume']);
          if (fromSnap !== undefined) {
            const snaps = (await call('snapshot.list')) as Snapshot[];
            const s = snaps.find((x) => x.id === fromSnap || x.name === fromSnap);
            if (!s) throw new AdminError('not-found', `no snapshot with id or name "${fromSnap}" (see \`lunar snapshot list\`)`);
            source = { kind: 'snapshot', id: s.id };
          } else if (fromVol !== undefined) {
            const v = (await call('volume.get', { volume: fromVol })) as Volume;
            source = { kind: 'volume', id: v.id };
          }
          const portals = strs(values.portal);
          const v = (await call('volume.create', {
            name,
            sizeBytes,
            thin: values.thick !== true,
            ...(values.masked === true ? { masked: true } : {}),
            ...(chap ? { chap } : {}),
            allow: strs(values.allow),
            ...(portals.length > 0 ? { portals } : {}),
            ...(source ? { source } : {}),
          })) as Volume;
          printVolume(v);
          return ExitCode.OK;
        }
        case 'list': {
          noExtra(positionals, 0, 'volume list');
          const vols = (await call('volume.list')) as Volume[];
          if (json) io.out(JSON.stringify(vols, null, 2) + '\n');
          else if (vols.length === 0) io.out('no volumes (create one with `lunar volume create NAME --size 1GiB`)\n');
          else {
            io.out(
              table([
                ['NAME', 'ID', 'SIZE', 'TYPE', 'AUTH', 'TARGET', 'WWID'],
                ...vols.map((v) => [
                  v.name,
                  v.id,
                  formatSize(v.sizeBytes),
                  v.thin ? 'thin' : 'thick',
                  v.chap ? (v.chap.mutualUser ? 'mutual' : 'chap') : 'none',
                  v.iqn,
                  naaWwid(v.naa),
                ]),
              ]),
            );
          }
          return ExitCode.OK;
        }
        case 'show': {
          const ref = positional(positionals, 0, 'VOLUME', 'volume show');
          noExtra(positionals, 1, 'volume show');
          const v = (await call('volume.get', { volume: ref })) as Volume;
          const cond = (await call('volume.condition', { volume: v.id })) as { abnormal: boolean; message: string };
          if (json) io.out(JSON.stringify({ ...v, condition: cond }, null, 2) + '\n');
          else io.out(describeVolume(v) + `  condition: ${cond.abnormal ? `ABNORMAL — ${cond.message}` : 'healthy'}\n`);
          return ExitCode.OK;
        }
        case 'delete': {
          const ref = positional(positionals, 0, 'VOLUME', 'volume delete');
          noExtra(positionals, 1, 'volume delete');
          const r = (await call('volume.delete', { volume: ref })) as { deleted: boolean; id: string | null };
          if (!r.deleted) throw new AdminError('not-found', `no volume with id or name "${ref}" (see \`lunar volume list\`)`);
          io.out(json ? JSON.stringify(r) + '\n' : `deleted volume ${ref} (${r.id})\n`);
          return ExitCode.OK;
        }
        case 'resize': {
          const ref = positional(positionals, 0, 'VOLUME', 'volume resize');
          noExtra(positionals, 1, 'volume resize');
          const sizeBytes = sizeArg(str(values.size), '--size');
          const v = (await call('volume.resize', { volume: ref, sizeBytes })) as Volume;
          io.out(
            json
              ? JSON.stringify(v, null, 2) + '\n'
              : `volume ${v.name} (${v.id}) is now ${formatSize(v.sizeBytes)} (${v.sizeBytes} bytes)\n`,
          );
          return ExitCode.OK;
        }
        case 'publish': {
          const ref = positional(positionals, 0, 'VOLUME', 'volume publish');
          noExtra(positionals, 1, 'volume publish');
          const node = str(values.node);
          const initiator = str(values.initiator);
          if (!node || !initiator) throw new UsageError('volume publish needs --node NODE and --initiator IQN');
          printVolume((await call('volume.publish', { volume: ref, nodeId: node, initiator })) as Volume);
          return ExitCode.OK;
        }
        case 'unpublish': {
          const ref = positional(positionals, 0, 'VOLUME', 'volume unpublish');
          noExtra(positionals, 1, 'volume unpublish');
          const node = str(values.node);
          if (!node) throw new UsageError('volume unpublish needs --node NODE');
          printVolume((await call('volume.unpublish', { volume: ref, nodeId: node })) as Volume);
          return ExitCode.OK;
        }
        default:
          throw new UsageError(
            sub === undefined
              ? 'volume: missing subcommand (create, list, show, delete, resize, publish, unpublish)'
              : `volume: unknown subcommand "${sub}" (create, list, show, delete, resize, publish, unpublish)`,
          );
      }
    }

    if (cmd === 'snapshot') {
      const [sub, ...args] = rest;
      const { values, positionals } = parse(args, {});
      if (values.help) {
        io.out(USAGE);
        return ExitCode.OK;
      }
      if (str(values['data-dir'])) dataDir = resolve(str(values['data-dir'])!);
      const json = values.json === true;
      switch (sub) {
        case 'create': {
          const vol = positional(positionals, 0, 'VOLUME', 'snapshot create');
          const name = positional(positionals, 1, 'NAME', 'snapshot create');
          noExtra(positionals, 2, 'snapshot create');
          const s = (await call('snapshot.create', { volume: vol, name })) as Snapshot;
          io.out(
            json
              ? JSON.stringify(s, null, 2) + '\n'
              : `snapshot ${s.name} (${s.id}) of volume ${s.sourceVolumeId}, ${formatSize(s.sizeBytes)}\n`,
          );
          return ExitCode.OK;
        }
        case 'list': {
          noExtra(positionals, 0, 'snapshot list');
          const snaps = (await call('snapshot.list')) as Snapshot[];
          if (json) io.out(JSON.stringify(snaps, null, 2) + '\n');
          else if (snaps.length === 0) io.out('no snapshots\n');
          else
            io.out(
              table([
                ['NAME', 'ID', 'VOLUME', 'SIZE', 'CREATED'],
                ...snaps.map((s) => [s.name, s.id, s.sourceVolumeId, formatSize(s.sizeBytes), s.createdAt]),
              ]),
            );
          return ExitCode.OK;
        }
        case 'delete': {
          const ref = positional(positionals, 0, 'SNAPSHOT', 'snapshot delete');
          noExtra(positionals, 1, 'snapshot delete');
          const r = (await call('snapshot.delete', { snapshot: ref })) as { deleted: boolean; id: string | null };
          if (!r.deleted) throw new AdminError('not-found', `no snapshot with id or name "${ref}" (see \`lunar snapshot list\`)`);
          io.out(json ? JSON.stringify(r) + '\n' : `deleted snapshot ${ref} (${r.id})\n`);
          return ExitCode.OK;
        }
        default:
          throw new UsageError(
            sub === undefined
              ? 'snapshot: missing subcommand (create, list, delete)'
              : `snapshot: unknown subcommand "${sub}" (create, list, delete)`,
          );
      }
    }

    if (cmd === 'status') {
      const { values, positionals } = parse(rest, {});
      if (values.help) {
        io.out(USAGE);
        return ExitCode.OK;
      }
      noExtra(positionals, 0, 'status');
      if (str(values['data-dir'])) dataDir = resolve(str(values['data-dir'])!);
      const info = (await call('ping')) as {
        version: string;
        ready: boolean;
        pid: number;
        dataDir: string;
        portals: Array<{ host: string; port: number; tpgt: number }>;
      };
      let extra: { volumes: number; sessions: number; capacity: { availableBytes: number; totalBytes: number } } | null = null;
      if (info.ready) {
        const [vols, sess, cap] = await Promise.all([call('volume.list'), call('sessions'), call('capacity')]);
        extra = {
          volumes: (vols as Volume[]).length,
          sessions: (sess as SessionInfo[]).length,
          capacity: cap as { availableBytes: number; totalBytes: number },
        };
      }
      if (values.json === true) io.out(JSON.stringify({ ...info, ...extra }, null, 2) + '\n');
      else {
        io.out(
          `Lunar ${info.version} (pid ${info.pid}) ${info.ready ? 'ready' : 'starting'}\n` +
            `  data:     ${info.dataDir}\n` +
            `  portals:  ${info.portals.map((p) => targetAddress(p, p.host)).join(' ')}\n` +
            (extra
              ? `  volumes:  ${extra.volumes}\n  sessions: ${extra.sessions}\n` +
                `  space:    ${formatSize(extra.capacity.availableBytes)} free of ${formatSize(extra.capacity.totalBytes)}\n`
              : ''),
        );
      }
      return ExitCode.OK;
    }

    if (cmd === 'sessions') {
      const { values, positionals } = parse(rest, { volume: { type: 'string' } });
      if (values.help) {
        io.out(USAGE);
        return ExitCode.OK;
      }
      noExtra(positionals, 0, 'sessions');
      if (str(values['data-dir'])) dataDir = resolve(str(values['data-dir'])!);
      const vol = str(values.volume);
      const sessions = (await call('sessions', vol ? { volume: vol } : {})) as SessionInfo[];
      if (values.json === true) io.out(JSON.stringify(sessions, null, 2) + '\n');
      else if (sessions.length === 0) io.out('no sessions\n');
      else
        io.out(
          table([
            ['TARGET', 'INITIATOR', 'ISID', 'TSIH', 'REMOTE', 'CONNS'],
            ...sessions.map((s) => [
              s.discovery ? '(discovery)' : s.targetName,
              s.initiatorName,
              s.isid,
              String(s.tsih),
              s.remoteAddress,
              String(s.connections),
            ]),
          ]),
        );
      return ExitCode.OK;
    }

    throw new UsageError(`unknown command "${cmd}" (serve, volume, snapshot, sessions; see \`lunar --help\`)`);
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`lunar: ${err.message}\nRun \`lunar --help\` for usage.\n`);
      return ExitCode.USAGE;
    }
    if (err instanceof AdminUnreachable) {
      const d = shownDir(dataDir);
      io.err(
        `lunar: no Lunar server at ${shownDir(err.path)} (${err.errno.code ?? err.errno.message}) — start one with \`lunar serve --data-dir ${d}\`, or point to a running one with --data-dir or LUNAR_DATA_DIR\n`,
      );
      return ExitCode.NO_SERVER;
    }
    if (err instanceof AdminError) {
      io.err(`lunar: ${err.message}\n`);
      return exitCodeFor(err.code);
    }
    io.err(`lunar: ${err instanceof Error ? err.message : String(err)}\n`);
    return ExitCode.FAILED;
  }
}
