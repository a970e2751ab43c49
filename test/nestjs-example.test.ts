/**
 * examples/nestjs end to end, as three OS processes of its built server.js sharing three real
 * redis-servers: the locked route and the locked service method answer 200, or 423 with
 * Retry-After while another owner holds the lock, and the every-second @Cron job runs each tick on
 * one process, the others skipping it (counted per tick on a witness Redis). A tick that every
 * process skipped (the previous run, started late, still held the lock) leaves no count: the test
 * asserts that no tick ran twice and no two runs overlapped, and that the ticks kept coming, not
 * that none was missed, which would be a timing assertion on a shared machine.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Redlock } from "@redlock-kit/core";
import request from "supertest";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type RedisServer, sleep, useRedisServers } from "./helpers/redis-servers.js";

const exampleDir = fileURLToPath(new URL("../examples/nestjs/", import.meta.url));
const servers = useRedisServers(4);
const lockUrls = () => (servers.servers.slice(0, 3) as RedisServer[]).map((s) => `redis://127.0.0.1:${s.port}`);

interface Running {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  /** Everything the process printed so far. */
  output(): string;
}

function startExample(witnessPort: number): Running {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: "0",
    REDIS_URL: lockUrls().join(","),
    WITNESS_URL: `redis://127.0.0.1:${witnessPort}`,
  };
  const child = spawn(process.execPath, [`${exampleDir}dist/server.js`], {
    cwd: exampleDir,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    out += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    out += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  return { child, exited, output: () => out };
}

async function untilPrinted(running: Running, pattern: RegExp): Promise<RegExpExecArray> {
  for (let i = 0; i < 600; i++) {
    const match = pattern.exec(running.output());
    if (match) return match;
    if (running.child.exitCode !== null) break;
    await sleep(50);
  }
  throw new Error(`no ${pattern} in:\n${running.output()}`);
}

let processes: Running[] = [];
let dlm: Redlock;

beforeAll(() => {
  expect(existsSync(`${exampleDir}dist/server.js`), "run `pnpm build` first").toBe(true);
  dlm = new Redlock(lockUrls(), { retryCount: 0 });
});

afterAll(async () => {
  for (const running of processes) if (running.child.exitCode === null) running.child.kill("SIGKILL");
  await dlm?.quit();
});

it("serves the locked routes, and runs each cron tick on one of three processes: never twice, never two at once", async () => {
  const witness = (servers.servers[3] as RedisServer).client();
  processes = [0, 1, 2].map(() => startExample((servers.servers[3] as RedisServer).port));
  const urls = await Promise.all(
    processes.map(async (running) => (await untilPrinted(running, /listening on (http:\/\/127\.0\.0\.1:\d+)/))[1]),
  );
  await Promise.all(processes.map((running) => untilPrinted(running, /Ctrl-C stops it\./)));
  const url = urls[0] as string;

  // the locked route (@LockedRoute) and the route whose service method is @Locked
  await request(url).post("/api/resource").expect(200, { status: "success" });
  await request(url).post("/orders/42/pay").expect(200, { status: "paid", order: "42" });
  for (const [key, path] of [
    ["resource_name", "/api/resource"],
    ["order:42", "/orders/42/pay"],
  ] as const) {
    const held = await dlm.acquire(key, 5000);
    try {
      const response = await request(urls[1] as string)
        .post(path)
        .expect(423);
      expect(response.body).toMatchObject({ statusCode: 423, message: "Resource is locked", error: "Locked" });
      expect(Number(response.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    } finally {
      await held.release();
    }
  }

  // the cron job: five more ticks once all three processes are up
  const firstTicks = await witness.hlen("report:ticks");
  for (let i = 0; i < 200 && (await witness.hlen("report:ticks")) < firstTicks + 5; i++) await sleep(100);
  for (const running of processes) running.child.kill("SIGTERM");
  expect(await Promise.all(processes.map((running) => running.exited))).toEqual([0, 0, 0]);

  const ticks = await witness.hgetall("report:ticks");
  expect(Object.keys(ticks).length).toBeGreaterThanOrEqual(firstTicks + 5);
  // every tick that ran, ran once, and never while another run was in progress
  expect(Object.entries(ticks).filter(([, runs]) => runs !== "1")).toEqual([]);
  expect(await witness.get("report:overlaps")).toBeNull();
  // the processes that did not run a tick skipped it, at debug level: contention is never an error.
  // (A run that found no quorum in time, on a loaded machine, is an error, LockUnavailableError: not checked.)
  const output = processes.map((running) => running.output()).join("\n");
  expect(output).toMatch(/ReportJob\.writeReport skipped: another owner holds report/);
  expect(output).not.toMatch(/LockContentionError/);
}, 60_000);
