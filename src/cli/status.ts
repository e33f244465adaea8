// `lunar status` and `lunar sessions`: what a running server is doing, through the admin socket.

import type { SessionInfo } from '../target/types.js';
import type { Portal } from '../util/portal.js';
import { targetAddress } from '../util/portal.js';
import { formatSize } from '../util/size.js';
import type { Orphan, Volume, VolumeCondition } from '../volumes/types.js';
import { noExtra, str } from './args.js';
import type { Command } from './command.js';
import { ExitCode } from './errors.js';
import { jsonText, listText } from './format.js';

interface PingAnswer {
  version: string;
  ready: boolean;
  pid: number;
  dataDir: string;
  portals: Portal[];
}

interface Totals {
  volumes: number;
  /** Volumes whose condition is abnormal (see `lunar volume list`). */
  abnormalVolumes: number;
  sessions: number;
  capacity: { availableBytes: number; totalBytes: number };
  /** Files without a record in <data-dir>/orphans/. */
  orphans: number;
}

export const status: Command = {
  usage: '  lunar status [--json]\n',
  options: {},
  async run(ctx) {
    noExtra(ctx.positionals, 0, 'status');
    const info = (await ctx.call('ping')) as PingAnswer;
    let totals: Totals | null = null;
    if (info.ready) {
      const [vols, sess, cap, orph] = await Promise.all([
        ctx.call('volume.list', { condition: true }),
        ctx.call('sessions'),
        ctx.call('capacity'),
        ctx.call('orphan.list'),
      ]);
      const list = vols as (Volume & { condition: VolumeCondition })[];
      totals = {
        volumes: list.length,
        abnormalVolumes: list.filter((v) => v.condition.abnormal).length,
        sessions: (sess as SessionInfo[]).length,
        capacity: cap as Totals['capacity'],
        orphans: (orph as Orphan[]).length,
      };
    }
    if (ctx.json) {
      ctx.io.out(jsonText({ ...info, ...totals }));
      return ExitCode.OK;
    }
    ctx.io.out(
      `Lunar ${info.version} (pid ${info.pid}) ${info.ready ? 'ready' : 'starting'}\n` +
        `  data:     ${info.dataDir}\n` +
        // The addresses the server listens on (bind addresses), with their portal group tags.
        `  portals:  ${info.portals.map((p) => targetAddress(p, p.host)).join(' ')}\n` +
        (totals
          ? `  volumes:  ${totals.volumes}${totals.abnormalVolumes > 0 ? ` (${totals.abnormalVolumes} ABNORMAL: see \`lunar volume list\`)` : ''}\n  sessions: ${totals.sessions}\n` +
            `  space:    ${formatSize(totals.capacity.availableBytes)} free of ${formatSize(totals.capacity.totalBytes)}\n` +
            `  orphans:  ${totals.orphans}${totals.orphans > 0 ? ' file(s) without a record (see `lunar orphans list`)' : ''}\n`
          : ''),
    );
    return ExitCode.OK;
  },
};

export const sessions: Command = {
  usage: '  lunar sessions [--volume VOLUME] [--json]\n',
  options: { volume: { type: 'string' } },
  async run(ctx) {
    noExtra(ctx.positionals, 0, 'sessions');
    const vol = str(ctx.values.volume);
    const list = (await ctx.call('sessions', vol ? { volume: vol } : {})) as SessionInfo[];
    ctx.io.out(
      listText(ctx.json, list, 'no sessions\n', ['TARGET', 'INITIATOR', 'ISID', 'TSIH', 'REMOTE', 'CONNS'], (s) => [
        s.discovery ? '(discovery)' : s.targetName,
        s.initiatorName,
        s.isid,
        String(s.tsih),
        s.remoteAddress,
        String(s.connections),
      ]),
    );
    return ExitCode.OK;
  },
};
