/** The measurement loops. Each runs one contender for a fixed time and reports raw counts. */
import { performance } from "node:perf_hooks";
import type { Contender, Poll } from "./contenders.js";

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
  /** Share of sections taken by the worker that held the previous one (it released and re-acquired at once). */
  readonly sameHolder: number;
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
  const sections: { worker: number; releasedAt: number; acquiredAt: number }[] = [];
  let inside = 0;
  let overlaps = 0;
  const start = performance.now();
  const end = start + durationMs;
  const worker = async (index: number) => {
    while (performance.now() < end) {
      const release = await contender.acquireWaiting(key);
      const section = { worker: index, acquiredAt: performance.now(), releasedAt: Number.NaN };
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
  let same = 0;
  for (let i = 1; i < sections.length; i++) {
    const previous = sections[i - 1] as (typeof sections)[number];
    const current = sections[i] as (typeof sections)[number];
    // < 0 when the next holder heard of its acquisition before the previous one heard of its release
    gaps[i - 1] = Math.max(0, current.acquiredAt - previous.releasedAt) * 1000;
    if (current.worker === previous.worker) same++;
  }
  return {
    sectionsPerSec: sections.length / ((performance.now() - start) / 1000),
    gapsUs: gaps,
    perWorker,
    overlaps,
    sameHolder: sections.length > 1 ? same / (sections.length - 1) : Number.NaN,
  };
}

export interface QueueSample {
  readonly sectionsPerSec: number;
  /** Within a round: release resolved → the next holder's acquire resolved, in µs (hand-offs only; < 0 counts as 0). */
  readonly gapsUs: Float64Array;
  /** Within a round: release called → the next holder's acquire resolved, in µs (never < 0). */
  readonly gapsFromCallUs: Float64Array;
  /** Critical sections per worker (equal by construction: the burst ends between rounds). */
  readonly perWorker: readonly number[];
  /** Per worker, the sum of its waits (asked → acquired), in µs. */
  readonly waitUsPerWorker: readonly number[];
  /** Hand-offs whose acquire resolved before the previous holder's release did (their gap counts as 0). */
  readonly early: number;
  /** Times the in-flight counter exceeded 1 (must be 0). */
  readonly overlaps: number;
  readonly rounds: number;
}

/**
 * Rounds in which `workers` ask for ONE key at the same moment, each needing it once: wait,
 * hold it for a ~1 ms critical section (a 1 ms timer), release, and sit the rest of the round
 * out. Every acquisition after a round's first is a hand-off to a waiter, so the gap between
 * one holder's release and the next holder's acquisition is the waiters' wake-up latency.
 * Rounds follow each other until `durationMs` has passed; the burst ends between rounds.
 */
export async function queue(
  contender: Contender,
  workers: number,
  poll: Poll,
  durationMs: number,
): Promise<QueueSample> {
  const key = keyMaker("queue")();
  const perWorker = new Array<number>(workers).fill(0);
  const waitUsPerWorker = new Array<number>(workers).fill(0);
  const gaps: number[] = [];
  const gapsFromCall: number[] = [];
  let early = 0;
  let inside = 0;
  let overlaps = 0;
  let rounds = 0;
  let sections = 0;
  const start = performance.now();
  const end = start + durationMs;
  while (performance.now() < end) {
    // in acquisition order; a gap pairs one section's release with the next section's acquisition
    const order: { acquiredAt: number; releaseCalledAt: number; releasedAt: number }[] = [];
    const worker = async (index: number) => {
      const askedAt = performance.now();
      const release = await contender.acquireWaiting(key, poll);
      const section = { acquiredAt: performance.now(), releaseCalledAt: Number.NaN, releasedAt: Number.NaN };
      order.push(section);
      if (++inside > 1) overlaps++;
      waitUsPerWorker[index] = (waitUsPerWorker[index] ?? 0) + (section.acquiredAt - askedAt) * 1000;
      await new Promise((resolve) => setTimeout(resolve, 1));
      inside--;
      perWorker[index] = (perWorker[index] ?? 0) + 1;
      sections++;
      section.releaseCalledAt = performance.now();
      await release();
      section.releasedAt = performance.now();
    };
    // Workers ask in a new random order each round, as independent processes would: a fixed
    // order would hand the first (uncontended) grab, and every tie after it, to the same worker.
    await Promise.all(shuffled(workers).map((index) => worker(index)));
    for (let i = 1; i < order.length; i++) {
      const previous = order[i - 1] as (typeof order)[number];
      const current = order[i] as (typeof order)[number];
      // < 0 when the next holder heard of its acquisition before the previous one heard of its release
      if (current.acquiredAt < previous.releasedAt) early++;
      gaps.push(Math.max(0, current.acquiredAt - previous.releasedAt) * 1000);
      gapsFromCall.push((current.acquiredAt - previous.releaseCalledAt) * 1000);
    }
    rounds++;
  }
  return {
    sectionsPerSec: sections / ((performance.now() - start) / 1000),
    gapsUs: Float64Array.from(gaps),
    gapsFromCallUs: Float64Array.from(gapsFromCall),
    perWorker,
    waitUsPerWorker,
    early,
    overlaps,
    rounds,
  };
}

/** 0..n-1 in a random order (Fisher–Yates). */
function shuffled(n: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  return order;
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
