// `lunar volume delete VOLUME` and `lunar snapshot delete SNAPSHOT`: by name or id; deleting what does not
// exist exits 4 (not found), so scripts can tell "already gone" from success.

import { AdminError } from '../admin/client.js';
import { noExtra, positional, type Subcommand } from './args.js';
import { ExitCode } from './errors.js';

export function deleteSubcommand(kind: 'volume' | 'snapshot'): Subcommand {
  return async (ctx, pos) => {
    const command = `${kind} delete`;
    const ref = positional(pos, 0, kind.toUpperCase(), command);
    noExtra(pos, 1, command);
    const r = (await ctx.call(`${kind}.delete`, { [kind]: ref })) as { deleted: boolean; id: string | null; name?: string | null };
    if (!r.deleted) throw new AdminError('not-found', `no ${kind} with id or name "${ref}" (see \`lunar ${kind} list\`)`);
    // By name and id, whichever the command named: what was destroyed must be unmistakable. (A server
    // older than this CLI answers without the name.)
    ctx.io.out(ctx.json ? JSON.stringify(r) + '\n' : `deleted ${kind} ${r.name ?? ref} (${r.id ?? ''})\n`);
    return ExitCode.OK;
  };
}
