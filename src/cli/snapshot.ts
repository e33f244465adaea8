// `lunar snapshot create|list|delete`: snapshots through the admin socket.

import { formatSize } from '../util/size.js';
import type { Snapshot } from '../volumes/types.js';
import { noExtra, positional, runSubcommand, type Subcommand } from './args.js';
import type { Command } from './command.js';
import { deleteSubcommand } from './delete.js';
import { ExitCode } from './errors.js';
import { jsonText, listText, nameCell } from './format.js';

const create: Subcommand = async (ctx, pos) => {
  const vol = positional(pos, 0, 'VOLUME', 'snapshot create');
  const name = positional(pos, 1, 'NAME', 'snapshot create');
  noExtra(pos, 2, 'snapshot create');
  const s = (await ctx.call('snapshot.create', { volume: vol, name })) as Snapshot;
  ctx.io.out(ctx.json ? jsonText(s) : `snapshot ${s.name} (${s.id}) of volume ${s.sourceVolumeId}, ${formatSize(s.sizeBytes)}\n`);
  return ExitCode.OK;
};

const list: Subcommand = async (ctx, pos) => {
  noExtra(pos, 0, 'snapshot list');
  const snaps = (await ctx.call('snapshot.list')) as Snapshot[];
  ctx.io.out(
    listText(ctx.json, snaps, 'no snapshots\n', ['NAME', 'ID', 'VOLUME', 'SIZE', 'CREATED'], (s) => [
      nameCell(s.name, ctx.values.wide === true),
      s.id,
      s.sourceVolumeId,
      formatSize(s.sizeBytes),
      s.createdAt,
    ]),
  );
  return ExitCode.OK;
};

const SUBCOMMANDS: Readonly<Record<string, Subcommand>> = { create, list, delete: deleteSubcommand('snapshot') };

export const snapshot: Command = {
  usage: `  lunar snapshot create VOLUME NAME [--json]
  lunar snapshot list [--wide] [--json]
  lunar snapshot delete SNAPSHOT
`,
  options: { wide: { type: 'boolean' } },
  run: (ctx) => runSubcommand('snapshot', SUBCOMMANDS, ctx),
};
