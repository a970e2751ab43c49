import { Controller, Module, Param, Post } from "@nestjs/common";
import type { Redis } from "ioredis";
import { beforeAll, describe, expect, it } from "vitest";
import { send } from "#test-helpers/http-client.js";
import { lazyQuery } from "#test-helpers/lazy-query.js";
import { arrival, nextRelease } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { LockedRoute, RedlockModule } from "../src/index.js";
import { platforms, startNestApp } from "./helpers/nest-app.js";

const cluster = useRedisServers(1);
let redis: Redis;
beforeAll(() => {
  redis = cluster.servers[0]?.client() as Redis;
});

const queries: ReturnType<typeof lazyQuery<number>>[] = [];

@Controller("accounts")
class AccountsController {
  // not async: the builder itself is returned, as `return this.db.update(accounts)...` does
  @Post(":id/pay")
  @LockedRoute("account:{params.id}")
  pay(@Param("id") id: string) {
    const query = lazyQuery(() => redis.incr(`paid:${id}`));
    queries.push(query);
    return query;
  }
}

@Module({
  imports: [
    RedlockModule.forRootAsync({
      useFactory: () => ({ instances: [{ host: "127.0.0.1", port: cluster.servers[0]?.port ?? 0 }] }),
    }),
  ],
  controllers: [AccountsController],
})
class AppModule {}

describe.each(platforms)("a @LockedRoute method that returns a lazy query unawaited (%s)", (platform) => {
  it("runs the query once, and releases the lock once it has", async () => {
    const running = await startNestApp(AppModule, platform);
    try {
      const released = nextRelease(`account:${platform}`);
      const answer = await send(`${running.url}/accounts/${platform}/pay`, { method: "POST" });
      expect(answer.status).toBe(201);
      expect(answer.text).toBe("1");
      expect(queries.at(-1)?.runs).toBe(1);
      expect(await redis.get(`paid:${platform}`)).toBe("1");
      expect((await arrival(released, "the lock's release")).released).toBe(true);
    } finally {
      await running.close();
    }
  });
});
