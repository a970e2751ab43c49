/**
 * The app's shutdown (app.close(), or a signal with enableShutdownHooks()) while a @LockedRoute
 * method is still running, on platform-express and platform-fastify, against real redis-servers.
 * Nest closes the HTTP server (waiting for the responses in progress) before the shutdown hooks;
 * a method an inner TimeoutInterceptor answered for has its response sent but still runs then,
 * under its route's lock, which is renewed and released through the module's clients.
 */
import { Controller, Module, Param, Post, UseInterceptors } from "@nestjs/common";
import { Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { gate } from "#test-helpers/gate.js";
import { send } from "#test-helpers/http-client.js";
import { extensions, nextRelease } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { LockedRoute, RedlockModule } from "../src/index.js";
import { platforms, startNestApp, TimeoutInterceptor } from "./helpers/nest-app.js";

const cluster = useRedisServers(3);
let clients: Redis[] = [];
/** Another owner, waiting for the route's key. */
let other: Redlock;

beforeAll(() => {
  clients = cluster.servers.map((server) => server.client());
  other = new Redlock(clients);
});

afterEach(async () => {
  await Promise.all(clients.map((client) => client.flushall()));
});

afterAll(async () => {
  await other?.quit();
});

/** The method's critical section: it runs until the test opens `release`. */
let finished = () => {};
let release = gate();

@Controller("stock")
@UseInterceptors(new TimeoutInterceptor(100))
class StockController {
  @Post(":sku/count")
  @LockedRoute("stock:{params.sku}", { ttl: 1000 })
  async count(@Param("sku") sku: string) {
    await release.opened;
    finished();
    return { counted: sku };
  }
}

describe.each(platforms)(
  "shutdown while a @LockedRoute method answered for by a timeout still runs (%s)",
  (platform) => {
    it("keeps the route's lock, renewed, until the method settles, releases it, and only then closes the clients", async () => {
      const resource = `stock:${platform}`;
      @Module({
        imports: [RedlockModule.forRoot({ instances: cluster.servers.map((s) => `redis://127.0.0.1:${s.port}`) })],
        controllers: [StockController],
      })
      class AppModule {}
      const running = await startNestApp(AppModule, platform);
      release = gate();
      const order: string[] = [];
      let releasedByMethod: boolean | undefined;
      const methodDone = new Promise<void>((resolve) => {
        finished = () => {
          order.push("method finished");
          resolve();
        };
      });
      // the timeout answered; the method still runs, holding the key
      expect((await send(`${running.url}/stock/${platform}/count`, { method: "POST" })).status).toBe(408);
      const twice = extensions(resource, 2);
      const closed = running.close().then(() => order.push("closed"));
      // another owner waits for the key: it may take it only once the request released it
      const taken = other.acquire(resource, 1000, { wait: 20_000 }).then((lock) => {
        order.push("other owner acquired");
        return lock;
      });
      try {
        // before: the module closed its clients at once, the lock lapsed and the other owner took
        // the key while the method still ran
        await Promise.race([twice.done, taken]);
        order.push("method still holds its lock");
        const released = nextRelease(resource);
        release.open();
        await methodDone;
        releasedByMethod = (await released).released;
        await closed;
        await (await taken).release();
      } finally {
        twice.stop();
        release.open();
      }
      expect(order.slice(0, 2)).toEqual(["method still holds its lock", "method finished"]);
      expect(order).toContain("closed");
      expect(order.indexOf("other owner acquired")).toBeGreaterThan(order.indexOf("method finished"));
      // released at the method's end while the clients were open (the key still ours), not left to expire
      expect(releasedByMethod).toBe(true);
    });
  },
);
