import {
  type CallHandler,
  Controller,
  type ExecutionContext,
  HttpCode,
  Injectable,
  Module,
  type NestInterceptor,
  Param,
  type PipeTransform,
  Post,
  ServiceUnavailableException,
} from "@nestjs/common";
import { APP_INTERCEPTOR } from "@nestjs/core";
import type { Lock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { type Observable, retry, timeout } from "rxjs";
import { beforeAll, describe, expect, it } from "vitest";
import { send } from "#test-helpers/http-client.js";
import { arrival, nextRelease } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { LockedRoute, RedlockModule, RequestLock } from "../src/index.js";
import { captureLogs, platforms, startNestApp } from "./helpers/nest-app.js";

const cluster = useRedisServers(1);
let redis: Redis;
beforeAll(() => {
  redis = cluster.servers[0]?.client() as Redis;
});

/** RedlockModule on this file's one server (its port known once it started), without retries. */
const redlockModule = () =>
  RedlockModule.forRootAsync({
    useFactory: () => ({
      instances: [{ host: "127.0.0.1", port: cluster.servers[0]?.port ?? 0 }],
      options: { retryCount: 0 },
    }),
  });

const state = { runs: 0 };
/** The lock each run of the handler held, and what Redis held for the key meanwhile. */
const seen: { value: string; inRedis: string | null }[] = [];

/** A global interceptor (the root module's APP_INTERCEPTOR, outside RedlockModule's) that retries the rest of the request once when it fails (rxjs retry(1)). */
class RetryOnce implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(retry(1));
  }
}

@Controller("retried")
class RetriedController {
  @Post(":id")
  @HttpCode(200)
  @LockedRoute("nest-retry:{params.id}", { ttl: 60_000 })
  async pay(@Param("id") id: string, @RequestLock() lock: Lock) {
    seen.push({ value: lock.value, inRedis: await redis.get("nest-retry:1") });
    // a transient failure the first time, as a dropped database connection
    if (++state.runs === 1) throw new ServiceUnavailableException("try again");
    return { id };
  }
}

@Module({
  imports: [redlockModule()],
  controllers: [RetriedController],
  // as the Nest docs register CacheInterceptor: in the root module, outside RedlockModule's interceptor
  providers: [{ provide: APP_INTERCEPTOR, useClass: RetryOnce }],
})
class AppModule {}

describe("a @LockedRoute under a global interceptor that retries (retry(1))", () => {
  for (const platform of platforms) {
    it(`runs the handler again holding the request's own lock, not answering 423 against itself (${platform})`, async () => {
      state.runs = 0;
      seen.length = 0;
      const app = await startNestApp(AppModule, platform);
      try {
        const released = nextRelease("nest-retry:1");
        const response = await send(`${app.url}/retried/1`, { method: "POST" });
        expect({ status: response.status, runs: state.runs }).toEqual({ status: 200, runs: 2 });
        // both runs held the request's one lock, which Redis held
        expect(seen[1]).toEqual(seen[0]);
        expect(seen[0]?.inRedis).toBe(seen[0]?.value);
        expect((await arrival(released, "the lock's release")).released).toBe(true);
        expect(await redis.exists("nest-retry:1")).toBe(0);
      } finally {
        await app.close();
      }
    });
  }
});

/** What runs of the slow handler below are inside at once. */
const slow = { runs: 0, inside: 0, maxInside: 0 };
let gate: Promise<void> = Promise.resolve();

/**
 * A global interceptor that gives up on a slow handler and retries once: timeout() unsubscribes from
 * the first run, which goes on (a promise cannot be cancelled), and retry(1) runs the rest again.
 */
class TimeoutThenRetry implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(timeout({ first: 200 }), retry(1));
  }
}

@Controller("slow")
class SlowController {
  @Post(":id")
  @HttpCode(200)
  @LockedRoute("nest-retry-slow:{params.id}", { ttl: 60_000 })
  async pay(@Param("id") id: string) {
    slow.runs++;
    slow.maxInside = Math.max(slow.maxInside, ++slow.inside);
    await gate; // the critical section: charge the order
    slow.inside--;
    return { id };
  }
}

const piped = { entered: 0 };
let pipeGate: Promise<void> = Promise.resolve();

/** A pipe that finishes only when the test says so: the method starts after it. */
@Injectable()
class SlowPipe implements PipeTransform {
  async transform(value: unknown) {
    piped.entered++;
    await pipeGate;
    return value;
  }
}

@Controller("piped")
class PipedController {
  @Post(":id")
  @HttpCode(200)
  @LockedRoute("nest-retry-piped:{params.id}", { ttl: 60_000 })
  pay(@Param("id", SlowPipe) id: string) {
    slow.runs++;
    return { id };
  }
}

@Module({
  imports: [redlockModule()],
  controllers: [SlowController, PipedController],
  providers: [{ provide: APP_INTERCEPTOR, useClass: TimeoutThenRetry }],
})
class TimeoutAppModule {}

describe("a @LockedRoute under a global interceptor that times out and retries (timeout() then retry(1))", () => {
  for (const platform of platforms) {
    it(`does not run the handler again beside its first run, still inside: the retry is refused 423, the lock kept until that run ends (${platform})`, async () => {
      let open!: () => void;
      gate = new Promise<void>((resolve) => {
        open = resolve;
      });
      Object.assign(slow, { runs: 0, inside: 0, maxInside: 0 });
      const app = await startNestApp(TimeoutAppModule, platform);
      try {
        const response = await send(`${app.url}/slow/1`, { method: "POST" });
        // the gate is still closed: the first run is inside, and the retry did not enter beside it
        expect({ status: response.status, runs: slow.runs, inside: slow.inside }).toEqual({
          status: 423,
          runs: 1,
          inside: 1,
        });
        expect(await redis.exists("nest-retry-slow:1")).toBe(1);
        const released = nextRelease("nest-retry-slow:1");
        open();
        expect((await arrival(released, "the lock's release")).released).toBe(true);
        expect(slow).toEqual({ runs: 1, inside: 0, maxInside: 1 });
      } finally {
        open();
        await app.close();
      }
    });
  }

  for (const platform of platforms) {
    it(`does not run the retry beside a first run still in its pipe, which would call the method later: 423, and that late method does not run (${platform})`, async () => {
      let openPipe!: () => void;
      pipeGate = new Promise<void>((resolve) => {
        openPipe = resolve;
      });
      Object.assign(slow, { runs: 0, inside: 0, maxInside: 0 });
      piped.entered = 0;
      const logs = captureLogs();
      const app = await startNestApp(TimeoutAppModule, platform, logs.logger);
      try {
        let status: number | undefined;
        const answered = send(`${app.url}/piped/1`, { method: "POST" }).then((response) => {
          status = response.status;
        });
        await expect.poll(() => piped.entered).toBe(1);
        // then the retry (after 200 ms) is answered, or its pipe entered beside the first run's (still waiting)
        await expect.poll(() => status ?? piped.entered).not.toBe(1);
        expect({ status, entered: piped.entered }).toEqual({ status: 423, entered: 1 });
        await answered;
        // the answer released the lock: the first run's pipe then ends, and its method does not run unlocked
        expect(await redis.exists("nest-retry-piped:1")).toBe(0);
        openPipe();
        await expect.poll(() => logs.error.length).toBeGreaterThan(0);
        expect(logs.error).toEqual([
          "PipedController.pay did not run: its response was sent (an interceptor answered while a pipe ran) and its lock released",
        ]);
        expect(slow.runs).toBe(0);
      } finally {
        openPipe();
        await app.close();
      }
    });
  }
});
