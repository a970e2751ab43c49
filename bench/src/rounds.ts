/**
 * Alternation: every contender of a row runs once per round, in an order rotated each round,
 * and each is scored against the baseline's score in the SAME round. On a shared, noisy
 * machine absolute numbers drift by tens of percent between minutes; ratios within a round
 * drift far less.
 */
import type { Contender, ContenderFactory } from "./contenders.js";
import { median } from "./measure.js";

export interface RoundPlan {
  readonly rounds: number;
  readonly burstMs: number;
  readonly warmupMs: number;
}

export interface Ratio {
  /** Median over rounds of (this contender's score / the baseline's score in that round). */
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

/** A contender of a row: a library with its clients, or an HTTP route. */
export interface Runnable<S> {
  readonly name: string;
  readonly clients: string;
  run(burstMs: number): Promise<S>;
}

/**
 * Runs `runnables` (the first is the baseline) for `plan.rounds` rounds after one warm-up
 * burst each (none when `warmupMs` is 0). Returns the samples as [runnable][round].
 */
export async function alternate<S>(runnables: readonly Runnable<S>[], plan: RoundPlan): Promise<S[][]> {
  if (plan.warmupMs > 0) for (const runnable of runnables) await runnable.run(plan.warmupMs);
  const samples: S[][] = runnables.map(() => []);
  for (let round = 0; round < plan.rounds; round++) {
    for (let i = 0; i < runnables.length; i++) {
      const index = (i + round) % runnables.length;
      const runnable = runnables[index] as Runnable<S>;
      // No forced GC between bursts: it would also age out the code of the contenders that are not
      // running (V8 flushes bytecode unused across several GCs), so that each burst would start
      // by recompiling. Each contender pays for its own garbage as it goes.
      (samples[index] as S[]).push(await runnable.run(plan.burstMs));
    }
  }
  return samples;
}

export function ratios(scores: readonly number[], baseline: readonly number[]): Ratio {
  const values = scores.map((score, round) => score / (baseline[round] ?? Number.NaN));
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

/** Creates every contender of a row on `ports`, hands them to `body`, and closes them all after. */
export async function withContenders<T>(
  factories: readonly ContenderFactory[],
  ports: readonly number[],
  body: (contenders: Contender[]) => Promise<T>,
): Promise<T> {
  const contenders = factories.map((factory) => factory.create(ports));
  try {
    return await body(contenders);
  } finally {
    await Promise.all(contenders.map((contender) => contender.close()));
  }
}
