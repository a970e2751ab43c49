/**
 * Web bodies on a `@LockedRoute` (a `ReadableStream`, a `Response` with one, returned or sent through
 * `@Res()`), in real Nest apps on platform-express and platform-fastify against a real redis-server:
 * a client that leaves mid-body does not end the critical section (the stream's producer may still
 * run), so the lock, no longer extended, expires within one ttl. Fastify cancels a web stream whose
 * client left and then ends the response itself: that end is not the handler's.
 */

import { Controller, Get, Module, Res } from "@nestjs/common";
import { currentLock, type Lock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { aborted } from "#test-helpers/aborted.js";
import { gatedProducer } from "#test-helpers/gate.js";
import { nextChunk, open } from "#test-helpers/http-client.js";
import { arrival, nextRelease } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { LockedRoute, RedlockModule } from "../src/index.js";
import { type PlatformResponse, platforms, type RunningNestApp, sendItself, startNestApp } from "./helpers/nest-app.js";

const cluster = useRedisServers(1);
let redis: Redis;
beforeAll(() => {
  redis = cluster.servers[0]?.client() as Redis;
});

/** The producer of the bodies, and the lock of the last request. */
let producer = gatedProducer();
let lastLock: Lock | undefined;
const webBody = () => {
  lastLock = currentLock();
  return producer.produceWeb();
};

@Controller("web")
class WebController {
  @Get("stream/:id")
  @LockedRoute("web-stream:{params.id}", { ttl: 1000 })
  stream() {
    return webBody();
  }

  @Get("response/:id")
  @LockedRoute("web-response:{params.id}", { ttl: 1000 })
  response() {
    return new Response(webBody());
  }

  /** Fastify's reply.send(), Express's pipe. */
  @Get("sent/:id")
  @LockedRoute("web-sent:{params.id}", { ttl: 1000 })
  sent(@Res() response: PlatformResponse) {
    sendItself(response, webBody());
  }
}

@Module({
  imports: [RedlockModule.forRootAsync({ useFactory: () => ({ instances: [redis] }) })],
  controllers: [WebController],
})
class AppModule {}

describe.each(platforms)("a web body whose client leaves mid-body, on platform-%s", (platform) => {
  let running: RunningNestApp;
  beforeAll(async () => {
    running = await startNestApp(AppModule, platform);
  });
  afterAll(async () => {
    producer.open();
    await running?.close();
  });

  for (const kind of ["stream", "response", "sent"]) {
    it(`${kind}: keeps the lock while its producer still runs; it expires within one ttl`, async () => {
      producer = gatedProducer();
      const { request, response } = open(`${running.url}/web/${kind}/1`);
      request.on("error", () => {});
      try {
        expect(await nextChunk(await response)).toBe("first\n");
        const lock = lastLock as Lock;
        const ended = Promise.race([
          nextRelease(`web-${kind}:1`).then(() => "released"),
          aborted(lock.signal).then(() => "expired"),
        ]);
        request.destroy();
        // a release would let the next request in beside the producer, which still runs
        expect(await arrival(ended, "the lock's end (expiry or release)")).toBe("expired");
        expect(producer.state.inside).toBe(1);
        await expect.poll(() => redis.exists(`web-${kind}:1`)).toBe(0);
      } finally {
        producer.open();
      }
    });
  }
});
