/**
 * A Hono handler that returns a `ReadableStream` body, served by @hono/node-server on a real port:
 * the lock is held while the stream is sent and released once when it ends. Twice: following the
 * Node response (`c.env.outgoing`), and following the `Response` alone, as on a runtime without
 * Node's objects. A client that leaves in the middle of it: the lock is no longer extended and
 * expires within one ttl, on both (the stream's producer, e.g. a `stream()` callback, may still run).
 */
import { text } from "node:stream/consumers";
import { type Lock, Redlock } from "@redlock-kit/core";
import { type Context, Hono } from "hono";
import { stream } from "hono/streaming";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { nextChunk, open, send } from "#test-helpers/http-client.js";
import { arrival, countReleases, nextExtensions, nextRelease, releasedOrExpired } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import { createRedlockMiddleware, type RedlockEnv } from "../src/index.js";
import { serveHono } from "./serve.js";

const cluster = useRedisServers(1);
let redis: Redis;
let dlm: Redlock;
const servers: Record<string, Awaited<ReturnType<typeof serveHono>>> = {};

/** The body the handler returned, driven by the test, and what its consumer did to it. */
let body: { controller: ReadableStreamDefaultController<Uint8Array>; cancelled: Promise<unknown> };
let bodyReady: Promise<void>;
/** The lock of the last request that took one. */
let lastLock: Lock;
/** The last `stream()` callback: told when its stream aborts, kept running until `finish`. */
let helper: { aborted: Promise<void>; finish: () => void; finished: Promise<void> };
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
  // the routes' one attempt at a 1 s lock waits 100 ms for a new client to say who it is
  await warmUp(dlm);
  const redlock = createRedlockMiddleware(dlm, { ttl: 1000 });
  // for a lock kept by its renewals: renewed at half of 2 s, a renewal up to ~1 s late comes in time
  const renewed = createRedlockMiddleware(dlm, { ttl: 2000 });
  const app = new Hono();
  const streamed = (c: Context<RedlockEnv>) => {
    lastLock = c.var.lock;
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
  };
  app.get("/stream/:id", redlock("stream:{params.id}"), streamed);
  app.get("/renewed-stream/:id", renewed("stream:{params.id}"), streamed);
  app.get("/helper/:id", redlock("helper:{params.id}"), (c) => {
    lastLock = c.var.lock;
    return stream(c, async (s) => {
      let aborted!: () => void;
      let finish!: () => void;
      let finished!: () => void;
      helper = {
        aborted: new Promise((resolve) => (aborted = resolve)),
        finish: () => finish(),
        finished: new Promise((resolve) => (finished = resolve)),
      };
      s.onAbort(() => aborted());
      await s.write("first\n");
      // a callback that goes on after its client left (its writes now fail silently)
      await new Promise<void>((resolve) => (finish = resolve));
      await s.write("last\n");
      finished();
    });
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
    const renewal = nextExtensions("stream:1", 1);
    try {
      const response = await open(`${server.url}/renewed-stream/1`).response;
      expect(await nextChunk(response)).toBe("first\n");
      // auto-extension renews it while the body is sent (a lock left to expire fails as never
      // renewed), and nothing has released it
      const [renewed] = await arrival(renewal, "the lock's renewal");
      expect(renewed?.extended).toBe(true);
      expect(await redis.get("stream:1")).not.toBeNull();
      expect(releases.count).toBe(0);
      const released = nextRelease("stream:1");
      body.controller.enqueue(encode("second\n"));
      body.controller.close();
      expect(await text(response)).toBe("second\n");
      expect((await arrival(released, "the lock's release")).released).toBe(true);
      expect(await redis.get("stream:1")).toBeNull();
    } finally {
      releases.stop();
    }
  });

  it("cancels the stream when the client disconnects in the middle of it, and stops extending the lock", async () => {
    const { request, response } = open(`${server.url}/stream/2`);
    request.on("error", () => {});
    expect(await nextChunk(await response)).toBe("first\n");
    expect(await redis.get("stream:2")).not.toBeNull();
    const ended = releasedOrExpired("stream:2", lastLock);
    request.destroy();
    await arrival(body.cancelled, "the cancel of the handler's stream");
    // the stream's producer may still run: the lock is no longer extended and expires (ttl 1000 ms,
    // auto-extended until now)
    expect(await arrival(ended, "the lock's end (expiry or release)")).toBe("expired");
    await expect.poll(() => redis.get("stream:2")).toBeNull();
  });

  it("keeps the lock of a HEAD request, whose body Hono drops, until that body (drained) has ended, and answers then", async () => {
    const answer = send(`${server.url}/stream/3`, { method: "HEAD" });
    await bodyReady;
    // its producer goes on as for a GET (before: released with the HEAD response)
    expect(await redis.exists("stream:3")).toBe(1);
    const released = nextRelease("stream:3");
    body.controller.close();
    expect((await answer).status).toBe(200);
    expect((await arrival(released, "the lock's release")).released).toBe(true);
  });

  it("releases the lock when the handler throws something Hono passes through (not an Error)", async () => {
    const released = nextRelease("throws:1");
    const answer = await send(`${server.url}/throws/1`);
    expect(answer.status).toBe(500);
    expect((await arrival(released, "the lock's release")).released).toBe(true);
    expect(await redis.get("throws:1")).toBeNull();
  });
});

describe.each(["the Node response", "the Response alone"])("Hono's stream() helper, following %s", (followed) => {
  it("keeps the lock of a callback still running after its client left: not released, it expires within one ttl", async () => {
    const { request, response } = open(`${servers[followed]?.url}/helper/1`);
    request.on("error", () => {});
    expect(await nextChunk(await response)).toBe("first\n");
    const running = helper;
    const ended = releasedOrExpired("helper:1", lastLock);
    request.destroy();
    await running.aborted;
    // Hono settles the server's cancel at once while the callback runs on: a release now would let
    // another request in under it (before: "released")
    expect(await arrival(ended, "the lock's end (expiry or release)")).toBe("expired");
    running.finish();
    await running.finished;
    await expect.poll(() => redis.get("helper:1")).toBeNull();
  });
});
