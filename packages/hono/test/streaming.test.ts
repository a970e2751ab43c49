/**
 * A Hono handler that returns a `ReadableStream` body, served by @hono/node-server on a real port:
 * the lock is held while the stream is sent, released once when it ends, and released at once when
 * the client leaves in the middle of it. Twice: following the Node response (`c.env.outgoing`), and
 * following the `Response` alone, as on a runtime without Node's objects.
 */
import { text } from "node:stream/consumers";
import { Redlock } from "@redlock-kit/core";
import { Hono } from "hono";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { nextChunk, open, send } from "#test-helpers/http-client.js";
import { countReleases, nextRelease } from "#test-helpers/lock-events.js";
import { sleep, useRedisServers } from "#test-helpers/redis.js";
import { createRedlockMiddleware } from "../src/index.js";
import { serveHono } from "./serve.js";

const cluster = useRedisServers(1);
let redis: Redis;
let dlm: Redlock;
const servers: Record<string, Awaited<ReturnType<typeof serveHono>>> = {};

/** The body the handler returned, driven by the test, and what its consumer did to it. */
let body: { controller: ReadableStreamDefaultController<Uint8Array>; cancelled: Promise<unknown> };
let bodyReady: Promise<void>;
let resolveBody: () => void;
beforeEach(() => {
  bodyReady = new Promise((resolve) => {
    resolveBody = resolve;
  });
});

const encode = (chunk: string) => new TextEncoder().encode(chunk);

beforeAll(async () => {
  redis = cluster.servers[0]?.client() as Redis;
  dlm = new Redlock([redis]);
  const redlock = createRedlockMiddleware(dlm, { ttl: 1000 });
  const app = new Hono();
  app.get("/stream/:id", redlock("stream:{params.id}"), () => {
    let cancelled!: (reason: unknown) => void;
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        body = { controller, cancelled: new Promise((resolve) => (cancelled = resolve)) };
        controller.enqueue(encode("first\n"));
        resolveBody();
      },
      cancel(reason) {
        cancelled(reason);
      },
    });
    return new Response(stream, { headers: { "content-type": "text/plain" } });
  });
  app.get("/throws/:id", redlock("throws:{params.id}"), () => {
    // not an Error: Hono's compose rethrows it rather than calling onError
    throw "not an Error";
  });
  servers["the Node response"] = await serveHono(app);
  servers["the Response alone"] = await serveHono(app, { nodeResponse: false });
});

afterEach(async () => {
  await redis.flushall();
});

afterAll(async () => {
  await Promise.all(Object.values(servers).map((server) => server.close()));
  await dlm?.quit();
});

describe.each(["the Node response", "the Response alone"])("a streamed Hono response, following %s", (followed) => {
  const server = {
    get url() {
      return (servers[followed] as Awaited<ReturnType<typeof serveHono>>).url;
    },
  };

  it("holds the lock, extended past its ttl, while a ReadableStream body is sent, and releases it after the stream ended", async () => {
    const releases = countReleases("stream:1");
    try {
      const response = await open(`${server.url}/stream/1`).response;
      expect(await nextChunk(response)).toBe("first\n");
      // past the 1000 ms ttl: only auto-extension keeps it, and nothing has released it
      await sleep(1500);
      expect(await redis.get("stream:1")).not.toBeNull();
      expect(releases.count).toBe(0);
      const released = nextRelease("stream:1");
      body.controller.enqueue(encode("second\n"));
      body.controller.close();
      expect(await text(response)).toBe("second\n");
      expect((await released).released).toBe(true);
      expect(await redis.get("stream:1")).toBeNull();
    } finally {
      releases.stop();
    }
  });

  it("cancels the stream and releases the lock at once when the client disconnects in the middle of it", async () => {
    const { request, response } = open(`${server.url}/stream/2`);
    request.on("error", () => {});
    expect(await nextChunk(await response)).toBe("first\n");
    expect(await redis.get("stream:2")).not.toBeNull();
    const released = nextRelease("stream:2");
    request.destroy();
    await body.cancelled;
    // the lock was still valid (auto-extended): this release deleted it
    expect((await released).released).toBe(true);
    expect(await redis.get("stream:2")).toBeNull();
  });

  it("releases at once on a HEAD request, whose body Hono drops unread", async () => {
    const released = nextRelease("stream:3");
    const answer = await send(`${server.url}/stream/3`, { method: "HEAD" });
    expect(answer.status).toBe(200);
    expect((await released).released).toBe(true);
    await bodyReady;
    expect(await redis.get("stream:3")).toBeNull();
  });

  it("releases the lock when the handler throws something Hono passes through (not an Error)", async () => {
    const released = nextRelease("throws:1");
    const answer = await send(`${server.url}/throws/1`);
    expect(answer.status).toBe(500);
    expect((await released).released).toBe(true);
    expect(await redis.get("throws:1")).toBeNull();
  });
});
