import {
  type CallHandler,
  Controller,
  type ExecutionContext,
  HttpCode,
  Module,
  type NestInterceptor,
  Param,
  Post,
  ServiceUnavailableException,
} from "@nestjs/common";
import { APP_INTERCEPTOR } from "@nestjs/core";
import type { Lock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { type Observable, retry } from "rxjs";
import { beforeAll, describe, expect, it } from "vitest";
import { send } from "#test-helpers/http-client.js";
import { arrival, nextRelease } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { LockedRoute, RedlockModule, RequestLock } from "../src/index.js";
import { platforms, startNestApp } from "./helpers/nest-app.js";

const cluster = useRedisServers(1);
let redis: Redis;
beforeAll(() => {
  redis = cluster.servers[0]?.client() as Redis;
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
  imports: [
    RedlockModule.forRootAsync({
      useFactory: () => ({
        instances: [{ host: "127.0.0.1", port: cluster.servers[0]?.port ?? 0 }],
        options: { retryCount: 0 },
      }),
    }),
  ],
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
