// `lunar orphans list|adopt`: files without a record that startup moved to <data-dir>/orphans/
// (src/volumes/orphans.ts), through the admin socket.

import { basename } from 'node:path';
import { formatSize } from '../util/size.js';
import type { Orphan, Volume } from '../volumes/types.js';
import { noExtra, positional, runSubcommand, str, strs, type Subcommand } from './args.js';
import type { Command } from './command.js';
import { ExitCode, UsageError } from './errors.js';
import { describeVolume, jsonText, listText } from './format.js';

const list: Subcommand = async (ctx, pos) => {
  noExtra(pos, 0, 'orphans list');
  const orphans = (await ctx.call('orphan.list')) as Orphan[];
  ctx.io.out(
    listText(ctx.json, orphans, 'no orphans\n', ['FILE', 'SIZE', 'MODIFIED', 'ID', 'ID IN USE'], (o) => [
      o.file,
      formatSize(o.sizeBytes),
      o.modifiedAt,
      o.id ?? '-',
      o.id === null ? '-' : o.idInUse ? 'yes (adopt gives a new id)' : 'no',
    ]),
  );
  return ExitCode.OK;
};

const adopt: Subcommand = async (ctx, pos) => {
  const given = positional(pos, 0, 'FILE', 'orphans adopt');
  noExtra(pos, 1, 'orphans adopt');
  const name = str(ctx.values.name);
  if (name === undefined) throw new UsageError('orphans adopt needs --name NAME: the name of the new volume');
  const allow = strs(ctx.values.allow);
  // FILE as `orphans list` shows it, or a path to it (the server takes the name in its orphans/ only).
  const v = (await ctx.call('orphan.adopt', {
    file: basename(given),
    name,
    ...(allow.length > 0 ? { allow } : {}),
    ...(ctx.values.masked === true ? { masked: true } : {}),
  })) as Volume;
  ctx.io.out(ctx.json ? jsonText(v) : `adopted ${basename(given)} as ` + describeVolume(v));
  return ExitCode.OK;
};

const SUBCOMMANDS: Readonly<Record<string, Subcommand>> = { list, adopt };

export const orphans: Command = {
  usage: `  lunar orphans list [--json]
  lunar orphans adopt FILE --name NAME [--allow IQN|CIDR]... [--masked] [--json]
`,
  help: `orphans:
  Volume and snapshot files without a record (a restored older state.json, an interrupted create) are
  never deleted: startup moves them to DIR/orphans/ and logs each. \`list\` shows them (size, time, the id
  in the file name, whether a record uses that id); \`adopt\` makes one a volume called NAME, with the id
  in its file name when no record uses it, else a new id (access: --allow, --masked as volume create).
`,
  options: {
    name: { type: 'string' },
    allow: { type: 'string', multiple: true },
    masked: { type: 'boolean' },
  },
  run: (ctx) => runSubcommand('orphans', SUBCOMMANDS, ctx),
};
