/**
 * Web bodies on a `@LockedRoute` (a `ReadableStream`, a `Response` with one, returned or sent through
 * `@Res()`), in real Nest apps on platform-express and platform-fastify against a real redis-server:
 * a client that leaves mid-body, before the first chunk, or before the handler returned, does not
 * end the critical section (the stream's producer may still run), so the lock, no longer extended,
 * expires within one ttl. Fastify cancels a web stream whose client left and then ends the response
 * itself: that end is not the handler's.
 */

import { once } from "node:events";
import type { IncomingMessage } from "node:http";
import { Controller, Get, Module, Req, Res } from "@nestjs/common";
import { currentLock, type Lock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gate, gatedProducer } from "#test-helpers/gate.js";
import { nextChunk, open } from "#test-helpers/http-client.js";
import { arrival, releasedOrExpired } from "#test-helpers/lock-events.js";
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

/** What a late handler waits for (its client leaves meanwhile), and the connection of its request. */
let entered = gate();
let answer = gate();
let connection: NodeJS.EventEmitter | undefined;
/** A body returned once the test lets the handler go on, whose producer has no chunk ready yet. */
async function lateBody(request: { raw?: IncomingMessage; socket?: NodeJS.EventEmitter }) {
  lastLock = currentLock();
  connection = request.raw?.socket ?? request.socket;
  entered.open();
  await answer.opened;
  return producer.produceWeb(false);
}

/** One attempt at a 1 s lock: 500 ms per instance, not the default 100 ms a loaded machine's Redis misses (503). */
const ONE_SECOND = { ttl: 1000, instanceTimeout: 500 };

@Controller("web")
class WebController {
  @Get("stream/:id")
  @LockedRoute("web-stream:{params.id}", ONE_SECOND)
  stream() {
    return webBody();
  }

  @Get("response/:id")
  @LockedRoute("web-response:{params.id}", ONE_SECOND)
  response() {
    return new Response(webBody());
  }

  @Get("quiet-stream/:id")
  @LockedRoute("web-quiet-stream:{params.id}", ONE_SECOND)
  quietStream() {
    lastLock = currentLock();
    return producer.produceWeb(false);
  }

  @Get("quiet-response/:id")
  @LockedRoute("web-quiet-response:{params.id}", ONE_SECOND)
  quietResponse() {
    lastLock = currentLock();
    return new Response(producer.produceWeb(false));
  }

  @Get("late-stream/:id")
  @LockedRoute("web-late-stream:{params.id}", ONE_SECOND)
  lateStream(@Req() request: IncomingMessage) {
    return lateBody(request);
  }

  @Get("late-response/:id")
  @LockedRoute("web-late-response:{params.id}", ONE_SECOND)
  async lateResponse(@Req() request: IncomingMessage) {
    return new Response(await lateBody(request));
  }

  /** Fastify's reply.send(), Express's pipe. */
  @Get("sent/:id")
  @LockedRoute("web-sent:{params.id}", ONE_SECOND)
  sent(@Res() response: PlatformResponse) {
    sendItself(response, webBody());
  }
}

@Module({
  imports: [RedlockModule.forRootAsync({ useFactory: () => ({ instances: [redis] }) })],
  controllers: [WebController],
})
class AppModule {}

describe.each(platforms)("a web body whose client leaves, on platform-%s", (platform) => {
  let running: RunningNestApp;
  beforeAll(async () => {
    running = await startNestApp(AppModule, platform);
  });
  afterAll(async () => {
    producer.open();
    await running?.close();
  });

  for (const kind of ["stream", "response", "sent"]) {
    it(`${kind}, left mid-body: keeps the lock while its producer still runs; it expires within one ttl`, async () => {
      producer = gatedProducer();
      const { request, response } = open(`${running.url}/web/${kind}/1`);
      request.on("error", () => {});
      try {
        expect(await nextChunk(await response)).toBe("first\n");
        const lock = lastLock as Lock;
        const ended = releasedOrExpired(`web-${kind}:1`, lock);
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

  // Nest sends a returned web body itself: it waits for its first chunk (a client that leaves
  // meanwhile gets nothing), then hands Fastify or Express a Node stream, which neither ends once
  // its client left; nothing is sent to a client that left while the handler ran. A Nest that hands
  // Fastify the web body as it is goes through the reply's send, which the interceptor follows.
  for (const kind of ["stream", "response"]) {
    it(`${kind} with no chunk ready, whose client leaves once the handler returned it: keeps the lock`, async () => {
      producer = gatedProducer();
      const { request } = open(`${running.url}/web/quiet-${kind}/1`);
      request.on("error", () => {});
      try {
        await expect.poll(() => producer.state.runs).toBe(1);
        const lock = lastLock as Lock;
        const ended = releasedOrExpired(`web-quiet-${kind}:1`, lock);
        request.destroy();
        expect(await arrival(ended, "the lock's end (expiry or release)")).toBe("expired");
        expect(producer.state.inside).toBe(1);
      } finally {
        producer.open();
      }
    });

    it(`${kind} returned after its client left, its producer still running: keeps the lock`, async () => {
      producer = gatedProducer();
      entered = gate();
      answer = gate();
      const { request } = open(`${running.url}/web/late-${kind}/1`);
      request.on("error", () => {});
      try {
        await entered.opened;
        const closed = once(connection as NodeJS.EventEmitter, "close");
        request.destroy();
        await closed;
        const ended = releasedOrExpired(`web-late-${kind}:1`, lastLock as Lock);
        answer.open();
        expect(await arrival(ended, "the lock's end (expiry or release)")).toBe("expired");
        expect(producer.state.inside).toBe(1);
      } finally {
        answer.open();
        producer.open();
      }
    });
  }
});
