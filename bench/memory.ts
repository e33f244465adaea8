// Resident memory of a process from /proc/<pid>/status (VmRSS: now, VmHWM: peak), and a sampler
// that records the largest VmRSS seen while a workload runs.

import { readFileSync } from 'node:fs';

export interface MemoryReading {
  /** Current resident set size, KiB. */
  readonly rssKiB: number;
  /** Peak resident set size since the process started, KiB. */
  readonly hwmKiB: number;
}

/** Parses the VmRSS/VmHWM lines of a /proc/<pid>/status text (proc(5)). */
export function parseProcStatus(text: string): MemoryReading {
  const kib = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(text);
    if (!m) throw new Error(`/proc status has no ${key}`);
    return Number(m[1]);
  };
  return { rssKiB: kib('VmRSS'), hwmKiB: kib('VmHWM') };
}

export function readMemory(pid: number): MemoryReading {
  return parseProcStatus(readFileSync(`/proc/${pid}/status`, 'utf8'));
}

/** Samples VmRSS every `intervalMs` until stopped; returns the maximum seen (KiB). */
export function sampleMaxRss(pid: number, intervalMs = 100): { stop(): number } {
  let max = 0;
  const take = (): void => {
    try {
      max = Math.max(max, readMemory(pid).rssKiB);
    } catch {
      // the process is gone: keep what was seen
    }
  };
  take();
  const timer = setInterval(take, intervalMs);
  return {
    stop(): number {
      clearInterval(timer);
      take();
      return max;
    },
  };
}

export function mib(kib: number): string {
  return `${(kib / 1024).toFixed(1)} MiB`;
}
