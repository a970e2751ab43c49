/**
 * `@Locked` on scheduled and event handlers in a Nest application context: `@Cron`, `@Interval` and
 * `@OnEvent` still register the locked method, and `onContention: "skip"` makes a run that finds the
 * lock held elsewhere a logged no-op instead of an error. (That exactly one of three processes runs
 * each tick is test/nestjs-example.test.ts.)
 */
import { type INestApplicationContext, Injectable, Module } from "@nestjs/common";
import { NestFactory } from "@nestjs/core";
import { EventEmitter2, EventEmitterModule, OnEvent } from "@nestjs/event-emitter";
import { Cron, Interval, ScheduleModule, SchedulerRegistry } from "@nestjs/schedule";
import { LockContentionError, Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { useRedisServers } from "#test-helpers/redis.js";
import { Locked, RedlockModule } from "../src/index.js";
import { captureLogs } from "./helpers/nest-app.js";

const cluster = useRedisServers(3);
let clients: Redis[] = [];
let other: Redlock;
let context: INestApplicationContext;
const logs = captureLogs();

/** Runs of each job, and whether a quorum of the instances held the job's key during each. */
const runs: Record<string, boolean[]> = { report: [], cleanup: [], paid: [], strict: [] };
async function record(job: string, key: string) {
  const held = await Promise.all(clients.map((client) => client.exists(key)));
  runs[job]?.push(held.reduce((sum, count) => sum + count, 0) >= 2);
}

// Far-off schedules: these tests check what is registered and call the methods themselves.
const YEARLY = "0 0 0 1 1 *";
const HOUR = 3_600_000;

@Injectable()
class Jobs {
  @Cron(YEARLY, { name: "report" })
  @Locked("report", { onContention: "skip" })
  async report() {
    await record("report", "report");
    return "reported";
  }

  @Locked("cleanup", { onContention: "skip" })
  @Interval("cleanup", HOUR)
  async cleanup() {
    await record("cleanup", "cleanup");
  }

  @OnEvent("order.paid")
  @Locked("paid:{0.id}", { onContention: "skip" })
  async paid(event: { id: string }) {
    await record("paid", `paid:${event.id}`);
  }

  @Cron(YEARLY, { name: "strict" })
  @Locked("strict")
  async strict() {
    await record("strict", "strict");
  }
}

beforeAll(async () => {
  clients = cluster.servers.map((server) => server.client());
  other = new Redlock(clients, { retryCount: 0 });
  @Module({
    imports: [
      ScheduleModule.forRoot(),
      EventEmitterModule.forRoot(),
      RedlockModule.forRoot({ instances: clients, options: { retryCount: 0 } }),
    ],
    providers: [Jobs],
  })
  class JobsModule {}
  context = await NestFactory.createApplicationContext(JobsModule, { logger: logs.logger, abortOnError: false });
  await context.init();
});

afterAll(async () => {
  await context?.close();
  await other?.quit();
});

afterEach(async () => {
  for (const list of Object.values(runs)) list.length = 0;
  logs.debug.length = 0;
  await Promise.all(clients.map((client) => client.flushall()));
});

describe("@Locked on scheduled and event handlers", () => {
  it("leaves @Cron and @Interval registered, in either decorator order, and runs the locked method when the lock is free", async () => {
    const registry = context.get(SchedulerRegistry);
    expect(registry.getCronJob("report")).toBeDefined();
    expect(registry.getCronJob("strict")).toBeDefined();
    expect(registry.getIntervals()).toContain("cleanup");
    const jobs = context.get(Jobs);
    await expect(jobs.report()).resolves.toBe("reported");
    await jobs.cleanup();
    expect(runs.report).toEqual([true]);
    expect(runs.cleanup).toEqual([true]);
  });

  it("leaves @OnEvent subscribed: an emitted event runs the handler under its lock", async () => {
    const emitter = context.get(EventEmitter2);
    expect(emitter.listeners("order.paid")).toHaveLength(1);
    await emitter.emitAsync("order.paid", { id: "9" });
    expect(runs.paid).toEqual([true]);
  });

  it('onContention: "skip" does not run the method while another owner holds the lock, resolves to undefined and logs it at debug', async () => {
    const jobs = context.get(Jobs);
    const held = await other.acquire("report", 5000);
    try {
      await expect(jobs.report()).resolves.toBeUndefined();
    } finally {
      await held.release();
    }
    expect(runs.report).toEqual([]);
    expect(logs.debug).toEqual(["Jobs.report skipped: another owner holds report"]);
    await expect(jobs.report()).resolves.toBe("reported");
    expect(runs.report).toEqual([true]);
  });

  it("without onContention, a run that finds the lock held rejects with LockContentionError", async () => {
    const held = await other.acquire("strict", 5000);
    try {
      await expect(context.get(Jobs).strict()).rejects.toBeInstanceOf(LockContentionError);
    } finally {
      await held.release();
    }
    expect(runs.strict).toEqual([]);
    expect(logs.debug).toEqual([]);
  });
});
