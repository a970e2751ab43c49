/** The shape of bench/results/*.json, shared by the runner, the table and the chart. */
import type { Ratio } from "./rounds.js";

export interface Entry {
  readonly name: string;
  /** Which clients (or which route) it ran on. */
  readonly clients: string;
  /** Median over rounds of the row's score (unit in the section). */
  readonly score: number;
  /** Score relative to the section's baseline in the same round; the baseline itself has 1. */
  readonly ratio: Ratio;
  /** Row-specific extras: p50Us, p99Us, gapP50Us, gapP99Us, fairness, overlaps, errors… */
  readonly metrics: Readonly<Record<string, number>>;
}

export interface Section {
  readonly id: string;
  readonly title: string;
  /** What `score` counts. */
  readonly unit: string;
  /** Name of the entry all ratios are taken against. */
  readonly baseline: string;
  /** The target for redlock-kit in this row (issues 7 and 17), as a ratio to the baseline. */
  readonly target?: number;
  readonly entries: readonly Entry[];
  /** A sentence printed under the section's table. */
  readonly note?: string;
}

export interface CommandCount {
  readonly name: string;
  readonly clients: string;
  readonly instances: number;
  /** Sequential lock+unlock cycles counted. */
  readonly cycles: number;
  /** Commands the client sent per lock+unlock per instance: round trips, when sequential. */
  readonly sentPerInstance: number;
  /** Commands Redis executed per lock+unlock per instance (INFO commandstats: script-internal ones included). */
  readonly executedPerInstance: number;
  /** redis-server CPU time (INFO cpu, user + system) per lock+unlock per instance, in µs. */
  readonly serverCpuUsPerInstance: number;
  /** Executed commands by name, per lock+unlock per instance. */
  readonly byCommand: Readonly<Record<string, number>>;
}

export interface Soak {
  readonly name: string;
  readonly clients: string;
  readonly cycles: number;
  readonly heapBeforeKb: number;
  readonly heapAfterKb: number;
  readonly handlesBefore: Readonly<Record<string, number>>;
  readonly handlesAfter: Readonly<Record<string, number>>;
  /** Keys left on the instances (every lock was released, so 0). */
  readonly keysLeft: number;
}

export interface Machine {
  readonly date: string;
  readonly cpus: number;
  readonly cpuModel: string;
  readonly node: string;
  readonly redisServer: string;
  readonly platform: string;
  readonly commit: string;
  readonly versions: Readonly<Record<string, string>>;
}

export interface Results {
  readonly mode: "full" | "quick";
  readonly machine: Machine;
  readonly plan: Readonly<Record<string, number>>;
  readonly sections: readonly Section[];
  readonly commands: readonly CommandCount[];
  readonly soak: readonly Soak[];
  readonly notes: readonly string[];
}
