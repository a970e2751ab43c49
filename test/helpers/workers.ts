/**
 * Worker processes for the multi-process mutual-exclusion tests (test/fixtures/counter-worker.mjs),
 * and the witness Redis they report to. The workers import the BUILT @redlock-kit/core.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { Redis } from "ioredis";
import { sleep } from "./redis-servers.js";

const run = promisify(execFile);
const worker = fileURLToPath(new URL("../fixtures/counter-worker.mjs", import.meta.url));
const builtCore = new URL("../../packages/core/dist/index.js", import.meta.url);

export interface WorkerConfig {
  ports: number[];
  witnessPort: number;
  resource?: string;
  resources?: string[];
  iterations?: number;
  stopKey?: string;
  ttl?: number;
  instanceTimeout?: number;
}

export interface WorkerReport {
  acquired: number;
  overlaps: number;
  expiredInside: number;
}

/** Starts one worker per config; resolves to their reports once all have exited (rejects if one fails). */
export async function runWorkers(configs: readonly WorkerConfig[]): Promise<WorkerReport[]> {
  if (!existsSync(builtCore))
    throw new Error("packages/core/dist is missing: run `pnpm --filter @redlock-kit/core build`");
  const results = await Promise.all(
    configs.map((config) => run(process.execPath, [worker, JSON.stringify(config)], { timeout: 90_000 })),
  );
  return results.map((result) => JSON.parse(result.stdout) as WorkerReport);
}

/** Reads a numeric witness key (0 when absent). */
export async function counter(witness: Redis, key: string): Promise<number> {
  return Number((await witness.get(key)) ?? 0);
}

/** Waits until the witness counter reaches `target`; throws after `timeoutMs` (the workers are stuck). */
export async function untilCounter(witness: Redis, key: string, target: number, timeoutMs = 30_000): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await counter(witness, key);
    if (value >= target) return value;
    if (performance.now() > deadline) throw new Error(`${key} stayed at ${value}, below ${target}`);
    await sleep(20);
  }
}

export function sum(reports: readonly WorkerReport[], field: keyof WorkerReport): number {
  return reports.reduce((total, report) => total + report[field], 0);
}
