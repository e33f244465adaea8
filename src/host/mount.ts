// Mounts: the mount table (/proc/<pid>/mountinfo, proc(5)), mount, bind mount, unmount. A busy unmount
// is an error ("target is busy": a process still uses the filesystem), never reported as done.

import { hostError } from './errors.js';
import { describeFailure, runOk, type RunSpec } from './runner.js';
import type { Host } from './types.js';

export interface MountEntry {
  /** "major:minor" of the mounted filesystem's device. */
  readonly device: string;
  /** Path inside the filesystem that is mounted ("/" for a whole filesystem; the file for a bind of a node). */
  readonly root: string;
  readonly mountPoint: string;
  readonly options: readonly string[];
  readonly fsType: string;
  readonly source: string;
}

/** proc(5) escapes blanks and backslashes as \ooo. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (sep < 6 || f.length < sep + 3) continue;
    out.push({
      device: f[2]!,
      root: unescape(f[3]!),
      mountPoint: unescape(f[4]!),
      options: f[5]!.split(','),
      fsType: f[sep + 1]!,
      source: unescape(f[sep + 2]!),
    });
  }
  return out;
}

/** The mount on top at path, or null. */
export function mountAt(table: readonly MountEntry[], path: string): MountEntry | null {
  for (let i = table.length - 1; i >= 0; i--) if (table[i]!.mountPoint === path) return table[i]!;
  return null;
}

const spec = (h: Host, args: string[], cmd = 'mount'): RunSpec => ({ cmd, args, timeoutMs: h.timeouts.mount, deadline: h.deadline });

export async function mount(h: Host, source: string, target: string, fsType: string, options: readonly string[]): Promise<void> {
  await runOk(h.runner, spec(h, ['-t', fsType, ...(options.length > 0 ? ['-o', options.join(',')] : []), source, target]));
}

/** Bind mount of source (a directory or a device node) onto target, read-only when asked. */
export async function bindMount(
  h: Host,
  source: string,
  target: string,
  readonly: boolean,
  options: readonly string[] = [],
): Promise<void> {
  const opts = [...(readonly ? ['ro'] : []), ...options];
  // util-linux applies -o ro to a bind mount with a second (remount) call.
  await runOk(h.runner, spec(h, ['--bind', ...(opts.length > 0 ? ['-o', opts.join(',')] : []), source, target]));
}

/** Unmounts path; "not mounted" is fine, busy is a HostError of kind busy. */
export async function unmount(h: Host, path: string): Promise<void> {
  const s = spec(h, [path], 'umount');
  const r = await h.runner.run(s);
  if (r.code === 0) return;
  const text = r.stderr + r.stdout;
  if (/not mounted|no mount point specified/i.test(text)) return;
  if (/busy/i.test(text)) throw hostError('busy', `${describeFailure(s, r)} — a process still uses ${path}`);
  throw hostError('failed', describeFailure(s, r));
}
