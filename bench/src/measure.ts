/** The measurement loops. Each runs one contender for a fixed time and reports raw counts. */
import { performance } from "node:perf_hooks";
import type { Contender } from "./contenders.js";

export interface Sample {
  /** Completed operations per second. */
  readonly opsPerSec: number;
  /** Process CPU time (user + system, all threads) per operation, in µs: less noisy than wall time. */
  readonly cpuUsPerOp: number;
  /** Per-operation latencies in µs (sequential loops only). */
  readonly latenciesUs?: Float64Array;
}

function cpuUs(since: NodeJS.CpuUsage): number {
  const { user, system } = process.cpuUsage(since);
  return user + system;
}

let keySerial = 0;
/** Distinct keys across the whole run, so no cycle ever meets another's key. */
function keyMaker(tag: string): () => string {
  const base = `bench:${tag}:${(keySerial++).toString(36)}:`;
  let n = 0;
  return () => base + (n++).toString(36);
}

/** One lock+unlock after another on distinct keys, for `durationMs`. */
export async function sequential(contender: Contender, durationMs: number): Promise<Sample> {
  const nextKey = keyMaker("seq");
  const latencies: number[] = [];
  const cpu = process.cpuUsage();
  const start = performance.now();
  const end = start + durationMs;
  let now = start;
  while (now < end) {
    const before = now;
    await contender.cycle(nextKey());
    now = performance.now();
    latencies.push((now - before) * 1000);
  }
  return {
    opsPerSec: latencies.length / ((now - start) / 1000),
    cpuUsPerOp: cpuUs(cpu) / latencies.length,
    latenciesUs: Float64Array.from(latencies),
  };
}

/** `workers` loops of lock+unlock on their own distinct keys, for `durationMs`. */
export async function concurrent(contender: Contender, workers: number, durationMs: number): Promise<Sample> {
  const nextKey = keyMaker("conc");
  let ops = 0;
  const cpu = process.cpuUsage();
  const start = performance.now();
  const end = start + durationMs;
  const worker = async () => {
    while (performance.now() < end) {
      await contender.cycle(nextKey());
      ops++;
    }
  };
  await Promise.all(Array.from({ length: workers }, worker));
  return { opsPerSec: ops / ((performance.now() - start) / 1000), cpuUsPerOp: cpuUs(cpu) / ops };
}

export interface ContentionSample {
  readonly sectionsPerSec: number;
  /** Release resolved → next acquire resolved, in µs. */
  readonly gapsUs: Float64Array;
  /** Critical sections per worker. */
  readonly perWorker: readonly number[];
  /** Times two workers were inside the critical section at once (must be 0). */
  readonly overlaps: number;
}

/**
 * `workers` loops on ONE key: wait for the lock, hold it for a ~1 ms critical section
 * (a 1 ms timer), release. Counts critical sections, the gap between one holder's release
 * and the next holder's acquisition, each worker's share, and any overlap.
 */
export async function contention(contender: Contender, workers: number, durationMs: number): Promise<ContentionSample> {
  const key = keyMaker("contended")();
  const perWorker = new Array<number>(workers).fill(0);
  // in acquisition order; the gap pairs one section's release with the next section's acquisition
  const sections: { releasedAt: number; acquiredAt: number }[] = [];
  let inside = 0;
  let overlaps = 0;
  const start = performance.now();
  const end = start + durationMs;
  const worker = async (index: number) => {
    while (performance.now() < end) {
      const release = await contender.acquireWaiting(key);
      const section = { acquiredAt: performance.now(), releasedAt: Number.NaN };
      sections.push(section);
      if (++inside > 1) overlaps++;
      await new Promise((resolve) => setTimeout(resolve, 1));
      inside--;
      perWorker[index] = (perWorker[index] ?? 0) + 1;
      await release();
      section.releasedAt = performance.now();
    }
  };
  await Promise.all(Array.from({ length: workers }, (_, index) => worker(index)));
  const gaps = new Float64Array(Math.max(0, sections.length - 1));
  for (let i = 1; i < sections.length; i++) {
    const previous = sections[i - 1] as (typeof sections)[number];
    const current = sections[i] as (typeof sections)[number];
    // < 0 when the next holder heard of its acquisition before the previous one heard of its release
    gaps[i - 1] = Math.max(0, current.acquiredAt - previous.releasedAt) * 1000;
  }
  return {
    sectionsPerSec: sections.length / ((performance.now() - start) / 1000),
    gapsUs: gaps,
    perWorker,
    overlaps,
  };
}

/** The q-quantile (0..1) of `values` (sorted copy, nearest rank). */
export function quantile(values: Float64Array | readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = Float64Array.from(values).sort();
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] ?? Number.NaN;
}

/** The middle value, or the mean of the two middle values. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}
