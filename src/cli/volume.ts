// `lunar volume create|list|show|delete|resize|publish|unpublish`: volumes through the admin socket.

import { AdminError } from '../admin/client.js';
import { naaWwid } from '../util/ids.js';
import { formatSize } from '../util/size.js';
import type { Snapshot, Volume, VolumeCondition } from '../volumes/types.js';
import { noExtra, positional, runSubcommand, sizeArg, splitCreds, str, strs, type Subcommand } from './args.js';
import type { Command, CommandContext } from './command.js';
import { deleteSubcommand } from './delete.js';
import { ExitCode, UsageError } from './errors.js';
import { describeVolume, jsonText, listText, nameCell } from './format.js';

function printVolume(ctx: CommandContext, v: Volume): void {
  ctx.io.out(ctx.json ? jsonText(v) : describeVolume(v));
}

/** The chap parameter of volume.create from --chap and --mutual-chap. */
function chapParam(chapArg: string | undefined, mutualArg: string | undefined): Record<string, unknown> | undefined {
  if (mutualArg !== undefined && chapArg === undefined) {
    throw new UsageError('--mutual-chap needs --chap too: with mutual CHAP both the initiator and the target authenticate');
  }
  if (chapArg === undefined) return undefined;
  const mode = mutualArg !== undefined ? 'mutual' : 'chap';
  const ini = chapArg === 'auto' ? null : splitCreds(chapArg, '--chap');
  const mut = mutualArg === undefined || mutualArg === 'auto' ? null : splitCreds(mutualArg, '--mutual-chap');
  if (ini === null && mut !== null) throw new UsageError('--mutual-chap USER:SECRET needs --chap USER:SECRET (not auto)');
  return ini
    ? { mode, credentials: { user: ini.user, secret: ini.secret, ...(mut ? { mutualUser: mut.user, mutualSecret: mut.secret } : {}) } }
    : { mode };
}

/** The source parameter of volume.create from --from-snapshot / --from-volume (a name or an id). */
async function sourceParam(ctx: CommandContext): Promise<{ kind: string; id: string } | undefined> {
  const fromSnap = str(ctx.values['from-snapshot']);
  const fromVol = str(ctx.values['from-volume']);
  if (fromSnap !== undefined && fromVol !== undefined) throw new UsageError('give at most one of --from-snapshot and --from-volume');
  if (fromSnap !== undefined) {
    const snaps = (await ctx.call('snapshot.list')) as Snapshot[];
    const s = snaps.find((x) => x.id === fromSnap || x.name === fromSnap);
    if (!s) throw new AdminError('not-found', `no snapshot with id or name "${fromSnap}" (see \`lunar snapshot list\`)`);
    return { kind: 'snapshot', id: s.id };
  }
  if (fromVol !== undefined) {
    const v = (await ctx.call('volume.get', { volume: fromVol })) as Volume;
    return { kind: 'volume', id: v.id };
  }
  return undefined;
}

const create: Subcommand = async (ctx, pos) => {
  const name = positional(pos, 0, 'NAME', 'volume create');
  noExtra(pos, 1, 'volume create');
  const { values } = ctx;
  const sizeBytes = sizeArg(str(values.size), '--size');
  const chap = chapParam(str(values.chap), str(values['mutual-chap']));
  const source = await sourceParam(ctx);
  const portals = strs(values.portal);
  const v = (await ctx.call('volume.create', {
    name,
    sizeBytes,
    thin: values.thick !== true,
    ...(values.masked === true ? { masked: true } : {}),
    ...(chap ? { chap } : {}),
    allow: strs(values.allow),
    ...(portals.length > 0 ? { portals } : {}),
    ...(source ? { source } : {}),
  })) as Volume;
  printVolume(ctx, v);
  return ExitCode.OK;
};

const list: Subcommand = async (ctx, pos) => {
  noExtra(pos, 0, 'volume list');
  const vols = (await ctx.call('volume.list', { condition: true })) as (Volume & { condition: VolumeCondition })[];
  ctx.io.out(
    listText(
      ctx.json,
      vols,
      'no volumes (create one with `lunar volume create NAME --size 1GiB`)\n',
      ['NAME', 'ID', 'SIZE', 'TYPE', 'AUTH', 'TARGET', 'WWID', 'CONDITION'],
      (v) => [
        nameCell(v.name, ctx.values.wide === true),
        v.id,
        formatSize(v.sizeBytes),
        v.thin ? 'thin' : 'thick',
        v.chap ? (v.chap.mutualUser ? 'mutual' : 'chap') : 'none',
        v.iqn,
        naaWwid(v.naa),
        v.condition.abnormal ? 'ABNORMAL' : 'healthy',
      ],
    ) + (ctx.json ? '' : abnormalNotes(vols)),
  );
  return ExitCode.OK;
};

/** Below the table: why each abnormal volume is abnormal. */
function abnormalNotes(vols: readonly (Volume & { condition: VolumeCondition })[]): string {
  return vols
    .filter((v) => v.condition.abnormal)
    .map((v) => `ABNORMAL ${v.name} (${v.id}): ${v.condition.message}\n`)
    .join('');
}

const rescan: Subcommand = async (ctx, pos) => {
  noExtra(pos, 1, 'volume rescan');
  const ref = pos[0];
  const results = (await ctx.call('volume.rescan', ref === undefined ? {} : { volume: ref })) as {
    id: string;
    name: string;
    abnormal: boolean;
    message: string;
    reopened: boolean;
  }[];
  if (ctx.json) ctx.io.out(jsonText(ref === undefined ? results : results[0]));
  else {
    for (const r of results) {
      const state = r.reopened ? 'back: served again' : r.abnormal ? `ABNORMAL — ${r.message}` : 'healthy';
      ctx.io.out(`volume ${r.name} (${r.id}): ${state}\n`);
    }
    if (results.length === 0) ctx.io.out('no volumes\n');
  }
  return results.some((r) => r.abnormal) ? ExitCode.FAILED : ExitCode.OK;
};

const show: Subcommand = async (ctx, pos) => {
  const ref = positional(pos, 0, 'VOLUME', 'volume show');
  noExtra(pos, 1, 'volume show');
  const v = (await ctx.call('volume.get', { volume: ref })) as Volume;
  const cond = (await ctx.call('volume.condition', { volume: v.id })) as { abnormal: boolean; message: string };
  if (ctx.json) ctx.io.out(jsonText({ ...v, condition: cond }));
  else ctx.io.out(describeVolume(v) + `  condition: ${cond.abnormal ? `ABNORMAL — ${cond.message}` : 'healthy'}\n`);
  return ExitCode.OK;
};

const resize: Subcommand = async (ctx, pos) => {
  const ref = positional(pos, 0, 'VOLUME', 'volume resize');
  noExtra(pos, 1, 'volume resize');
  const sizeBytes = sizeArg(str(ctx.values.size), '--size');
  const v = (await ctx.call('volume.resize', { volume: ref, sizeBytes })) as Volume;
  ctx.io.out(ctx.json ? jsonText(v) : `volume ${v.name} (${v.id}) is now ${formatSize(v.sizeBytes)} (${v.sizeBytes} bytes)\n`);
  return ExitCode.OK;
};

const publish: Subcommand = async (ctx, pos) => {
  const ref = positional(pos, 0, 'VOLUME', 'volume publish');
  noExtra(pos, 1, 'volume publish');
  const node = str(ctx.values.node);
  const initiator = str(ctx.values.initiator);
  if (!node || !initiator) throw new UsageError('volume publish needs --node NODE and --initiator IQN');
  printVolume(ctx, (await ctx.call('volume.publish', { volume: ref, nodeId: node, initiator })) as Volume);
  return ExitCode.OK;
};

const unpublish: Subcommand = async (ctx, pos) => {
  const ref = positional(pos, 0, 'VOLUME', 'volume unpublish');
  noExtra(pos, 1, 'volume unpublish');
  const node = str(ctx.values.node);
  if (!node) throw new UsageError('volume unpublish needs --node NODE');
  printVolume(ctx, (await ctx.call('volume.unpublish', { volume: ref, nodeId: node })) as Volume);
  return ExitCode.OK;
};

const SUBCOMMANDS: Readonly<Record<string, Subcommand>> = {
  create,
  list,
  show,
  delete: deleteSubcommand('volume'),
  resize,
  publish,
  unpublish,
  rescan,
};

export const volume: Command = {
  usage: `  lunar volume create NAME --size SIZE [--thick] [--chap USER:SECRET|auto] [--mutual-chap USER:SECRET|auto]
                      [--allow IQN|CIDR]... [--masked] [--portal HOST:PORT]... [--from-snapshot SNAP | --from-volume VOL] [--json]
  lunar volume list [--wide] [--json]
  lunar volume show VOLUME [--json]
  lunar volume delete VOLUME
  lunar volume resize VOLUME --size SIZE [--json]
  lunar volume publish VOLUME --node NODE --initiator IQN [--json]
  lunar volume unpublish VOLUME --node NODE [--json]
  lunar volume rescan [VOLUME] [--json]
`,
  help: `volume create:
  --size SIZE            bytes or with a unit: 512MiB, 10GiB, 1G (= GiB), 1GB (= 10^9); rounded up to 1 MiB
  --thick                preallocate the file (default: thin, a sparse file)
  --chap USER:SECRET     initiators must log in with CHAP (secret: 12-255 characters); "auto" generates
                         both and prints them. USER:SECRET splits at the last ":".
  --mutual-chap USER:SECRET  the target authenticates itself too (mutual CHAP; needs --chap)
  --allow IQN|CIDR       only these initiators (by name) or addresses may log in (repeatable)
  --masked               nobody may log in until allowed or published (what CSI uses)
  Idempotent: the same NAME with the same options returns the existing volume.
volume rescan: checks the backing file of an abnormal volume (of every volume without VOLUME) again and
  serves the volume once its file is back, without a restart; exit 1 while a volume stays abnormal.
volume list, snapshot list:
  --wide                 names in full (the table cuts names longer than 40 characters; --json never does)
`,
  options: {
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
    wide: { type: 'boolean' },
  },
  run: (ctx) => runSubcommand('volume', SUBCOMMANDS, ctx),
};
