import { Controller, Injectable, Module, Param, type PipeTransform, Post, UseInterceptors } from "@nestjs/common";
import type { Redis } from "ioredis";
import { beforeAll, describe, expect, it } from "vitest";
import { send } from "#test-helpers/http-client.js";
import { arrival, nextRelease } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { LockedRoute, RedlockModule } from "../src/index.js";
import { captureLogs, platforms, startNestApp, TimeoutInterceptor } from "./helpers/nest-app.js";

const cluster = useRedisServers(1);
let redis: Redis;
beforeAll(() => {
  redis = cluster.servers[0]?.client() as Redis;
});

const state = { runs: 0, inside: 0, maxInside: 0 };
let gate: Promise<void> = Promise.resolve();

@Controller("x")
@UseInterceptors(new TimeoutInterceptor(1000))
class TimedOutController {
  @Post(":id")
  @LockedRoute("nest-timeout:{params.id}", { ttl: 60_000 })
  async pay(@Param("id") id: string) {
    state.runs++;
    state.maxInside = Math.max(state.maxInside, ++state.inside);
    await gate;
    state.inside--;
    return { id };
  }
}

const piped = { done: 0 };
let pipeGate: Promise<void> = Promise.resolve();

/** A pipe that finishes only when the test says so: the method starts after it. */
@Injectable()
class SlowPipe implements PipeTransform {
  async transform(value: unknown) {
    await pipeGate;
    piped.done++;
    return value;
  }
}

@Controller("piped")
@UseInterceptors(new TimeoutInterceptor(1000))
class PipedController {
  @Post(":id")
  @LockedRoute("nest-timeout-pipe:{params.id}", { ttl: 60_000 })
  pay(@Param("id", SlowPipe) id: string) {
    state.runs++;
    return { id };
  }
}

@Module({
  imports: [
    RedlockModule.forRootAsync({
      useFactory: () => ({
        instances: [{ host: "127.0.0.1", port: cluster.servers[0]?.port ?? 0 }],
        options: { retryCount: 0 },
      }),
    }),
  ],
  controllers: [TimedOutController, PipedController],
})
class AppModule {}

describe("a @LockedRoute handler that an inner TimeoutInterceptor answered for", () => {
  for (const platform of platforms) {
    it(`keeps the lock until the method settles, then releases it (${platform})`, async () => {
      let release!: () => void;
      gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      Object.assign(state, { runs: 0, inside: 0, maxInside: 0 });
      const app = await startNestApp(AppModule, platform);
      try {
        expect((await send(`${app.url}/x/1`, { method: "POST" })).status).toBe(408);
        // the timed-out method still runs: the key is held and the next request does not enter
        expect(state.inside).toBe(1);
        expect((await send(`${app.url}/x/1`, { method: "POST" })).status).toBe(423);
        expect(await redis.exists("nest-timeout:1")).toBe(1);
        const released = nextRelease("nest-timeout:1");
        release();
        // released by the method's end, not expired: the release found the key still ours (the
        // ttl, 60 s, outlasts the test) and deleted it
        expect((await arrival(released, "the lock's release")).released).toBe(true);
        expect(await redis.exists("nest-timeout:1")).toBe(0);
        expect(state).toEqual({ runs: 1, inside: 0, maxInside: 1 });
      } finally {
        release();
        await app.close();
      }
    });
  }

  for (const platform of platforms) {
    it(`does not run a method whose pipe was still running when the interceptor answered: its lock is released by then (${platform})`, async () => {
      let release!: () => void;
      pipeGate = new Promise<void>((resolve) => {
        release = resolve;
      });
      Object.assign(state, { runs: 0, inside: 0, maxInside: 0 });
      piped.done = 0;
      const logs = captureLogs();
      const app = await startNestApp(AppModule, platform, logs.logger);
      try {
        const released = nextRelease("nest-timeout-pipe:1");
        expect((await send(`${app.url}/piped/1`, { method: "POST" })).status).toBe(408);
        // the response is done and no method runs yet: the lock is released (not expired: its ttl,
        // 60 s, outlasts the test)
        expect((await arrival(released, "the lock's release")).released).toBe(true);
        expect(await redis.exists("nest-timeout-pipe:1")).toBe(0);
        release();
        await expect.poll(() => logs.error.length).toBeGreaterThan(0);
        expect(logs.error).toEqual([
          "PipedController.pay did not run: its response was sent (an interceptor answered while a pipe ran) and its lock released",
        ]);
        expect(piped.done).toBe(1);
        expect(state.runs).toBe(0);
      } finally {
        release();
        await app.close();
      }
    });
  }
});
