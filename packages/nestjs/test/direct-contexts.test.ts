/**
 * A @LockedRoute on a method Nest calls itself, through no interceptor (an @OnEvent listener, a
 * @Cron, @Interval or @Timeout job), would never take its lock: the app's start fails instead, naming
 * the method, rather than let it run unlocked.
 */
import { Controller, Injectable, Module, Post } from "@nestjs/common";
import { NestFactory } from "@nestjs/core";
import { EventEmitterModule, OnEvent } from "@nestjs/event-emitter";
import { Cron, ScheduleModule } from "@nestjs/schedule";
import type { Redis } from "ioredis";
import { beforeAll, describe, expect, it } from "vitest";
import { useRedisServers } from "#test-helpers/redis.js";
import { LockedRoute, RedlockModule } from "../src/index.js";
import { captureLogs } from "./helpers/nest-app.js";

const cluster = useRedisServers(3);
let clients: Redis[] = [];
beforeAll(() => {
  clients = cluster.servers.map((server) => server.client());
});

/** Runs of the methods below: none may run. */
let ran = 0;

@Injectable()
class StockEvents {
  @OnEvent("stock.count")
  @LockedRoute("stock")
  async count() {
    ran++;
  }
}

@Controller("stock")
class StockJobs {
  @LockedRoute("stock")
  @Cron("0 0 0 1 1 *")
  @Post("count")
  async count() {
    ran++;
  }
}

describe("@LockedRoute on a method Nest calls through no interceptor", () => {
  it.each([
    ["an @OnEvent listener of a provider", StockEvents, "StockEvents.count"],
    ["a @Cron job of a controller, @LockedRoute above", StockJobs, "StockJobs.count"],
  ])("%s fails the app's start, naming it, instead of running unlocked", async (_what, provider, where) => {
    const isController = provider === StockJobs;
    @Module({
      imports: [
        EventEmitterModule.forRoot(),
        ScheduleModule.forRoot(),
        RedlockModule.forRoot({ instances: clients, options: { retryCount: 0 } }),
      ],
      providers: isController ? [] : [provider],
      controllers: isController ? [provider] : [],
    })
    class AppModule {}
    const outcome = await NestFactory.createApplicationContext(AppModule, {
      logger: captureLogs().logger,
      abortOnError: false,
    }).then(
      async (context) => {
        await context.close();
        return "started";
      },
      (error: Error) => error.message,
    );
    // before: "started", and an emitted event (a tick) then ran the method without its lock
    expect(outcome).toBe(
      `@LockedRoute of ${where}: Nest calls this @OnEvent/@Cron/@Interval/@Timeout method through no interceptor, so the route lock would never be taken and it would run unlocked; lock it with @Locked`,
    );
    expect(ran).toBe(0);
  });
});
