// Cross-check of bench/iscsi-load.c with two initiators nobody here wrote: libiscsi's iscsi-perf
// (4 KiB random read, QD32) and QEMU's iscsi block driver through `qemu-img bench` (1 MiB sequential
// write, QD8). One run each per target: enough to see that the ratio is not an artefact of our tool.

import { exec } from './util.js';

export interface CrossCheck {
  readonly tool: string;
  readonly workload: string;
  readonly unit: 'IOPS' | 'MB/s';
  readonly value: number;
}

/** Last "iops average N" that iscsi-perf prints (it rewrites one status line with \r). */
export function parseIscsiPerf(out: string): number {
  const all = [...out.matchAll(/iops average (\d+)/g)];
  const last = all[all.length - 1];
  if (!last) throw new Error(`iscsi-perf: no "iops average" in output: ${out.slice(-300)}`);
  return Number(last[1]);
}

/** "Run completed in 1.120 seconds." from qemu-img bench. */
export function parseQemuImgBench(out: string): number {
  const m = /Run completed in ([\d.]+) seconds/.exec(out);
  if (!m) throw new Error(`qemu-img bench: no completion line in output: ${out.slice(-300)}`);
  return Number(m[1]);
}

export async function crossCheck(url: string, seconds: number, sizeBytes: number): Promise<CrossCheck[]> {
  const out: CrossCheck[] = [];
  const perf = await exec('iscsi-perf', ['-m', '32', '-b', '8', '-r', '-t', String(Math.max(1, Math.round(seconds))), url], {
    timeoutMs: (seconds + 30) * 1000,
  });
  if (perf.code !== 0) throw new Error(`iscsi-perf failed (${perf.code}): ${perf.stderr.trim().slice(-500)}`);
  out.push({ tool: 'iscsi-perf', workload: '4 KiB random read, QD32', unit: 'IOPS', value: parseIscsiPerf(perf.stdout + perf.stderr) });

  const count = Math.max(1, Math.floor(sizeBytes / 2 ** 20));
  const q = await exec('qemu-img', ['bench', '-f', 'raw', '-t', 'none', '-w', '-c', String(count), '-d', '8', '-s', '1M', url], {
    timeoutMs: 120_000,
  });
  if (q.code !== 0) throw new Error(`qemu-img bench failed (${q.code}): ${q.stderr.trim().slice(-500)}`);
  const secs = parseQemuImgBench(q.stdout);
  out.push({ tool: 'qemu-img bench', workload: '1 MiB sequential write, QD8', unit: 'MB/s', value: (count * 2 ** 20) / secs / 1e6 });
  return out;
}
