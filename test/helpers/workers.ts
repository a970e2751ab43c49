/**
 * Worker processes for the multi-process tests, and the witness Redis they report to. The workers
 * import the BUILT @redlock-kit/core. `runWorkers` runs test/fixtures/counter-worker.mjs to the end;
 * `forkWorker` starts any fixture and talks to it over IPC.
 */
import { type ChildProcess, execFile, fork } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { Redis } from "ioredis";
import { sleep } from "./redis-servers.js";

const run = promisify(execFile);
const worker = fileURLToPath(new URL("../fixtures/counter-worker.mjs", import.meta.url));
const builtCore = new URL("../../packages/core/dist/index.js", import.meta.url);

/** Workers import the built core: say how to get it rather than fail with a module error in a child. */
export function requireBuiltCore(): void {
  if (!existsSync(builtCore))
    throw new Error("packages/core/dist is missing: run `pnpm --filter @redlock-kit/core build`");
}

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
  requireBuiltCore();
  const results = await Promise.all(
    configs.map((config) => run(process.execPath, [worker, JSON.stringify(config)], { timeout: 90_000 })),
  );
  return results.map((result) => JSON.parse(result.stdout) as WorkerReport);
}

/** CLOCK_MONOTONIC in ms: the clock test/fixtures/one-lock-worker.mjs reports in, the same in every process. */
export const machineNow = (): number => Number(process.hrtime.bigint()) / 1e6;

/** What test/fixtures/one-lock-worker.mjs reports for one round's lock() (times on `machineNow`). */
export interface LockResult {
  outcome: "acquired" | "contention" | "unavailable" | string;
  startedAt: number;
  at: number;
  attempts: number;
  /** When the lock's validity ends (acquired only). */
  validUntil: number;
}

/** A fixture process driven over IPC: it sends `{ kind, ... }` messages and may be sent some. */
export interface ForkedWorker {
  readonly child: ChildProcess;
  /** The first message of `kind` not taken yet, received or still to come; rejects if the worker exits first. */
  next<T = Record<string, unknown>>(kind: string): Promise<T>;
  send(message: { kind: string } & Record<string, unknown>): void;
  /** Resolves once the process has exited. */
  readonly exited: Promise<void>;
  /** SIGKILL unless it already exited; resolves once it has. */
  kill(): Promise<void>;
}

/** Forks `fixture` (a file in test/fixtures) with `config` as JSON in argv[2]. */
export function forkWorker(fixture: string, config: object, execArgv: string[] = []): ForkedWorker {
  requireBuiltCore();
  const script = fileURLToPath(new URL(`../fixtures/${fixture}`, import.meta.url));
  const child = fork(script, [JSON.stringify(config)], { execArgv, stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const received: { kind: string }[] = [];
  const waiting = new Set<() => void>();
  let exit: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once("exit", (code, signal) => {
      exit = `worker exited (${code ?? signal})`;
      for (const wake of waiting) wake();
      resolve();
    });
  });
  child.on("message", (message: { kind: string }) => {
    received.push(message);
    for (const wake of waiting) wake();
  });
  return {
    child,
    next<T>(kind: string) {
      return new Promise<T>((resolve, reject) => {
        const check = () => {
          const at = received.findIndex((message) => message.kind === kind);
          if (at < 0 && exit === undefined) return;
          waiting.delete(check);
          if (at >= 0) resolve(received.splice(at, 1)[0] as T);
          else reject(new Error(`${exit} before "${kind}"`));
        };
        waiting.add(check);
        check();
      });
    },
    send(message) {
      child.send(message);
    },
    exited,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
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

/** Script runs on an instance so far (acquire, extend and release alike): EVALSHA and EVAL calls in INFO commandstats. */
export async function scriptCalls(client: Redis): Promise<number> {
  const stats = await client.info("commandstats");
  let calls = 0;
  for (const match of stats.matchAll(/cmdstat_(?:evalsha|eval):calls=(\d+)/g)) calls += Number(match[1]);
  return calls;
}
