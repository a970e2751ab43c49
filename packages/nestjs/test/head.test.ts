/**
 * HEAD requests to a `@LockedRoute` GET route, in real Nest apps on platform-express and
 * platform-fastify against a real redis-server: the streamed body the response drops is the
 * handler's work going on, as for a GET, and the lock waits for its end.
 */

import { Readable } from "node:stream";
import { Controller, Get, Module, StreamableFile } from "@nestjs/common";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { gatedProducer } from "#test-helpers/gate.js";
import { open, send } from "#test-helpers/http-client.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { LockedRoute, RedlockModule } from "../src/index.js";
import { platforms, type RunningNestApp, startNestApp } from "./helpers/nest-app.js";

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

@Module({
  imports: [RedlockModule.forRootAsync({ useFactory: () => ({ instances: [redis] }) })],
  controllers: [ExportController],
})
class AppModule {}

/** The kinds of streamed body a handler returns, and the Content-Type Nest answers HEAD with for each. */
const contentTypes: Record<string, RegExp> = {
  file: /^text\/plain/,
  stream: /^application\/octet-stream/,
  web: /^application\/octet-stream/,
  response: /^text\/plain/,
};

describe.each(platforms)("HEAD on a @LockedRoute GET route, on platform-%s", (platform) => {
  let running: RunningNestApp;
  beforeAll(async () => {
    running = await startNestApp(AppModule, platform);
  });
  afterAll(async () => {
    producer.open();
    await running?.close();
  });

  for (const kind of Object.keys(contentTypes)) {
    it(`keeps the lock while the dropped ${kind} body's producer runs, and releases it at the stream's end`, async () => {
      producer = gatedProducer();
      const { state } = producer;
      const key = `head-${kind}:1`;
      const head = send(`${running.url}/export/${kind}/1`, { method: "HEAD" });
      let get: ReturnType<typeof open> | undefined;
      try {
        await expect.poll(() => state.runs).toBe(1);
        // the producer still runs: the next request for the key is refused and never enters
        get = open(`${running.url}/export/${kind}/1`);
        expect((await get.response).statusCode).toBe(423);
        expect(state).toEqual({ runs: 1, inside: 1, maxInside: 1 });
        expect(await redis.exists(key)).toBe(1);
        producer.open();
        const answered = await head;
        // answered once the body has ended, with the headers Nest gives that body
        expect(answered.status).toBe(200);
        expect(answered.headers["content-type"]).toMatch(contentTypes[kind] as RegExp);
        await expect.poll(() => redis.exists(key)).toBe(0);
        expect(state).toEqual({ runs: 1, inside: 0, maxInside: 1 });
      } finally {
        producer.open();
        get?.request.destroy();
      }
    });
  }

  it("releases the lock of a JSON body at once", async () => {
    const head = await send(`${running.url}/export/json/1`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers["content-type"]).toMatch(/json/);
    await expect.poll(() => redis.exists("head-json:1")).toBe(0);
  });
});
