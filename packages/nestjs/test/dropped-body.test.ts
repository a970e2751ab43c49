/**
 * Streamed bodies a `@LockedRoute`'s response drops, in real Nest apps on platform-express and
 * platform-fastify against a real redis-server: a HEAD request's to a GET route, and a 204's (Fastify
 * ends it at once). The body's producer is the handler's work going on, as for a 200, and the lock
 * waits for its end.
 */

import { PassThrough, Readable } from "node:stream";
import { Controller, Get, HttpCode, Module, Post, Res, StreamableFile } from "@nestjs/common";
import { currentLock, type Lock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { gate, gatedProducer, heldUntilProduced } from "#test-helpers/gate.js";
import { type Answer, open, type RequestInit, send } from "#test-helpers/http-client.js";
import { arrival, releasedOrExpired } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { LockedRoute, RedlockModule } from "../src/index.js";
import { type PlatformResponse, platforms, type RunningNestApp, sendItself, startNestApp } from "./helpers/nest-app.js";

const cluster = useRedisServers(1);
let redis: Redis;
beforeAll(() => {
  redis = cluster.servers[0]?.client() as Redis;
});
afterEach(async () => {
  await redis.flushall();
});

/** The producer of the streams the handlers return, a new one per test. */
let producer = gatedProducer();
const produce = () => producer.produce();

// ttl 60 s: a lock released by the stream's end, not expired, within the polls' 10 s
@Controller("export")
class ExportController {
  @Get("file/:id")
  @LockedRoute("head-file:{params.id}", { ttl: 60_000 })
  file() {
    return new StreamableFile(produce(), { type: "text/plain" });
  }

  @Get("stream/:id")
  @LockedRoute("head-stream:{params.id}", { ttl: 60_000 })
  stream() {
    return produce();
  }

  @Get("web/:id")
  @LockedRoute("head-web:{params.id}", { ttl: 60_000 })
  web() {
    return Readable.toWeb(produce());
  }

  @Get("response/:id")
  @LockedRoute("head-response:{params.id}", { ttl: 60_000 })
  response() {
    return new Response(Readable.toWeb(produce()) as ReadableStream, { headers: { "content-type": "text/plain" } });
  }

  @Get("json/:id")
  @LockedRoute("head-json:{params.id}", { ttl: 60_000 })
  json() {
    return { id: 1 };
  }
}

@Controller("sent")
class SentController {
  @Get("stream/:id")
  @LockedRoute("sent-stream:{params.id}", { ttl: 60_000 })
  stream(@Res() response: PlatformResponse) {
    sendItself(response, produce());
  }

  @Get("web/:id")
  @LockedRoute("sent-web:{params.id}", { ttl: 60_000 })
  web(@Res() response: PlatformResponse) {
    sendItself(response, Readable.toWeb(produce()) as ReadableStream);
  }

  @Get("passthrough/:id")
  @LockedRoute("sent-passthrough:{params.id}", { ttl: 60_000 })
  passthrough(@Res({ passthrough: true }) response: PlatformResponse) {
    sendItself(response, produce());
  }
}

// the same bodies, answered 204
@Controller("import")
class ImportController {
  @Post("file/:id")
  @HttpCode(204)
  @LockedRoute("no-content-file:{params.id}", { ttl: 60_000 })
  file() {
    return new StreamableFile(produce());
  }

  @Post("web/:id")
  @HttpCode(204)
  @LockedRoute("no-content-web:{params.id}", { ttl: 60_000 })
  web() {
    return Readable.toWeb(produce());
  }

  @Post("sent/:id")
  @LockedRoute("no-content-sent:{params.id}", { ttl: 60_000 })
  sent(@Res() response: PlatformResponse) {
    response.status(204);
    sendItself(response, produce());
  }
}

/** What the last request of `LeftController` entered with: its lock, and a gate its body opens once stopped. */
let entered = gate();
let stopped = gate();
let leftLock: Lock | undefined;

/** An endless feed (server-sent events) of `kind`: only its reader's leaving stops it. */
function endlessFeed(kind: "node" | "web"): PassThrough | ReadableStream<Uint8Array> {
  leftLock = currentLock();
  entered.open();
  if (kind === "web") {
    return new ReadableStream<Uint8Array>({
      start: (controller) => controller.enqueue(new TextEncoder().encode("data: 1\n\n")),
      cancel: () => stopped.open(),
    });
  }
  const feed = new PassThrough();
  feed.write("data: 1\n\n");
  feed.once("close", stopped.open);
  return feed;
}

// ttl 1 s: the lock of a client that left lapses within it; taken in one attempt that waits 500 ms
// per instance, not the default 100 ms a loaded machine's Redis misses (503)
const ONE_SECOND = { ttl: 1000, instanceTimeout: 500 };

@Controller("left")
class LeftController {
  @Get("file/:id")
  @LockedRoute("left-file:{params.id}", ONE_SECOND)
  file() {
    return new StreamableFile(endlessFeed("node") as PassThrough, { type: "text/event-stream" });
  }

  @Get("stream/:id")
  @LockedRoute("left-stream:{params.id}", ONE_SECOND)
  stream() {
    return endlessFeed("node");
  }

  @Get("web/:id")
  @LockedRoute("left-web:{params.id}", ONE_SECOND)
  web() {
    return endlessFeed("web");
  }

  @Get("response/:id")
  @LockedRoute("left-response:{params.id}", ONE_SECOND)
  response() {
    return new Response(endlessFeed("web") as ReadableStream, { headers: { "content-type": "text/event-stream" } });
  }

  @Get("sent/:id")
  @LockedRoute("left-sent:{params.id}", ONE_SECOND)
  sent(@Res() response: PlatformResponse) {
    sendItself(response, endlessFeed("node"));
  }
}

@Module({
  imports: [RedlockModule.forRootAsync({ useFactory: () => ({ instances: [redis] }) })],
  controllers: [ExportController, SentController, ImportController, LeftController],
})
class AppModule {}

/** The kinds of streamed body a handler returns, and the Content-Type Nest answers HEAD with for each. */
const contentTypes: Record<string, RegExp> = {
  file: /^text\/plain/,
  stream: /^application\/octet-stream/,
  web: /^application\/octet-stream/,
  response: /^text\/plain/,
};

/**
 * A request to `url` (`method`), whose route locks `key`, checked while the producer of its body
 * runs: the next request for the key is refused and never enters; once the producer ends, the lock
 * is released. Returns the answer.
 */
function whileProducing(url: string, key: string, method: RequestInit["method"]): Promise<Answer> {
  producer = gatedProducer();
  return heldUntilProduced(
    producer,
    send(url, { method }),
    () => open(url, { method }),
    () => redis.exists(key),
  );
}

describe.each(platforms)("a dropped streamed body on a @LockedRoute, on platform-%s", (platform) => {
  let running: RunningNestApp;
  beforeAll(async () => {
    running = await startNestApp(AppModule, platform);
  });
  afterAll(async () => {
    producer.open();
    await running?.close();
  });

  for (const kind of Object.keys(contentTypes)) {
    it(`HEAD: keeps the lock while the dropped ${kind} body's producer runs, and releases it at the stream's end`, async () => {
      const answered = await whileProducing(`${running.url}/export/${kind}/1`, `head-${kind}:1`, "HEAD");
      // answered with the headers Nest gives that body
      expect(answered.status).toBe(200);
      expect(answered.headers["content-type"]).toMatch(contentTypes[kind] as RegExp);
    });
  }

  // Express's response discards a HEAD body piped into it and ends with it. A web stream is Fastify's
  // to send, and so is a stream from a passthrough handler: Nest ends Express's response under its pipe.
  const sentKinds = platform === "fastify" ? ["stream", "web", "passthrough"] : ["stream"];
  for (const kind of sentKinds) {
    it(`HEAD: keeps the lock while the producer of a ${kind} body the handler sent itself through @Res() runs`, async () => {
      const answered = await whileProducing(`${running.url}/sent/${kind}/1`, `sent-${kind}:1`, "HEAD");
      expect(answered.status).toBe(200);
    });
  }

  it("HEAD: releases the lock of a JSON body at once", async () => {
    const head = await send(`${running.url}/export/json/1`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers["content-type"]).toMatch(/json/);
    await expect.poll(() => redis.exists("head-json:1")).toBe(0);
  });

  // Express pipes each into the response, which discards a 204 body and ends with it; Fastify ends
  // a 204 at once and drops the payload, and Nest destroys a StreamableFile's stream then
  for (const kind of ["file", "web", "sent"]) {
    it(`204: keeps the lock while the dropped ${kind} body's producer runs, and releases it at the stream's end`, async () => {
      const answered = await whileProducing(`${running.url}/import/${kind}/1`, `no-content-${kind}:1`, "POST");
      expect(answered.status).toBe(204);
    });
  }
});

describe.each(platforms)(
  "a HEAD request whose client leaves while its dropped body is produced, on platform-%s",
  (platform) => {
    let running: RunningNestApp;
    beforeAll(async () => {
      running = await startNestApp(AppModule, platform);
    });
    afterAll(async () => {
      await running?.close();
    });

    // Nest answers a returned body once it has ended, and so does the interceptor one the handler
    // sent through @Res() on Fastify. Express pipes that one into the response, and stops piping it
    // (without destroying it) when its client leaves, as a GET's.
    for (const kind of ["file", "stream", "web", "response", "sent"]) {
      it(`${kind}: stops the body, as a GET's whose client left, and the lock lapses within one ttl`, async () => {
        entered = gate();
        stopped = gate();
        const { request } = open(`${running.url}/left/${kind}/1`, { method: "HEAD" });
        request.on("error", () => {});
        await entered.opened;
        const outcome = releasedOrExpired(`left-${kind}:1`, leftLock as Lock);
        request.destroy();
        // a release would let the next request in beside the producer, which may still run
        expect(await arrival(outcome, "the lock's end (expiry or release)")).toBe("expired");
        if (kind !== "sent" || platform === "fastify") await arrival(stopped.opened, "the dropped body stopped");
      });
    }
  },
);
