/** What the parent (process-rows.ts) and its worker processes (process-worker.ts) exchange over IPC. */
import type { Poll } from "./contenders.js";

export interface WorkerSetup {
  readonly contender: string;
  readonly ports: readonly number[];
  readonly witnessPort: number;
  readonly key: string;
  readonly poll: Poll;
}

/** Parent → worker. */
export type WorkerCommand =
  | { readonly kind: "contend"; readonly untilMs: number }
  | { readonly kind: "once" }
  | { readonly kind: "close" };

/** One critical section: asked → acquired → release called → release resolved, in `machineMs()`. */
export interface SectionTimes {
  readonly askedAt: number;
  readonly acquiredAt: number;
  readonly releaseCalledAt: number;
  readonly releasedAt: number;
}

/** Worker → parent. */
export type WorkerReport =
  | { readonly kind: "ready" }
  | {
      readonly kind: "sections";
      readonly sections: SectionTimes[];
      readonly overlaps: number;
      readonly failed: number;
      /** This process's CPU time (user + system) during the run, µs. */
      readonly cpuUs: number;
    };

/** The machine's monotonic clock in ms, shared by every process (unlike `performance.now()`). */
export const machineMs = () => Number(process.hrtime.bigint()) / 1e6;
