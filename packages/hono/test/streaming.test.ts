/**
 * A Hono handler that returns a `ReadableStream` body (its own, or Hono's `stream()`/`streamSSE()`
 * helpers), served by @hono/node-server on a real port: the lock is held while the stream is sent
 * and released once when it ends. A client that leaves in the middle of it cancels the stream and
 * stops the auto-extension, but does not release the lock: the handler may still be running, so
 * the lock lapses within its ttl instead.
 */
import { text } from "node:stream/consumers";
import { Redlock } from "@redlock-kit/core";
import { Hono } from "hono";
import { stream, streamSSE } from "hono/streaming";
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
let server: Awaited<ReturnType<typeof serveHono>>;

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

/** One run of a `stream()`/`streamSSE()` callback that waits for the test before it goes on. */
interface HelperRun {
  /** The stream's `onAbort` ran: the client left. */
  aborted: Promise<void>;
  /** Lets the callback go on past its wait. */
  proceed: () => void;
  /** The callback returned. */
  finished: Promise<void>;
  state: "running" | "finished";
}
let helperRuns: HelperRun[] = [];
beforeEach(() => {
  helperRuns = [];
});

/** The callback of a held run: its first chunk, a wait the test ends, then more writes (unread once the client left). */
function helperRun(onAbort: (listener: () => void) => void) {
  let aborted!: () => void;
  let proceed!: () => void;
  let finished!: () => void;
  const run: HelperRun = {
    aborted: new Promise((resolve) => (aborted = resolve)),
    proceed: () => proceed(),
    finished: new Promise((resolve) => (finished = resolve)),
    state: "running",
  };
  const wait = new Promise<void>((resolve) => (proceed = resolve));
  onAbort(aborted);
  helperRuns.push(run);
  return {
    wait,
    done: () => {
      run.state = "finished";
      finished();
    },
  };
}

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
  // ?quick answers at once; otherwise the callback waits for the test after its first chunk
  app.get("/helper/stream/:id", redlock("helper:{params.id}"), (c) =>
    stream(c, async (s) => {
      if (c.req.query("quick") !== undefined) return void (await s.write("quick\n"));
      const run = helperRun((listener) => s.onAbort(listener));
      await s.write("first\n");
      await run.wait;
      await s.write("second\n");
      run.done();
    }),
  );
  app.get("/helper/sse/:id", redlock("helper:{params.id}"), (c) =>
    streamSSE(c, async (s) => {
      if (c.req.query("quick") !== undefined) return void (await s.writeSSE({ data: "quick" }));
      const run = helperRun((listener) => s.onAbort(listener));
      await s.writeSSE({ data: "first" });
      await run.wait;
      await s.writeSSE({ data: "second" });
      run.done();
    }),
  );
  app.get("/throws/:id", redlock("throws:{params.id}"), () => {
    // not an Error: Hono's compose rethrows it rather than calling onError
    throw "not an Error";
  });
  server = await serveHono(app);
});

afterEach(async () => {
  // a failed test may leave a callback waiting
  for (const run of helperRuns) run.proceed();
  await redis.flushall();
});

afterAll(async () => {
  await server?.close();
  await dlm?.quit();
});

describe("a streamed Hono response", () => {
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

  it("cancels the stream when the client disconnects in the middle of it, stops extending and lets the lock lapse within its ttl without releasing it", async () => {
    const releases = countReleases("stream:2");
    try {
      const { request, response } = open(`${server.url}/stream/2`);
      request.on("error", () => {});
      expect(await nextChunk(await response)).toBe("first\n");
      expect(await redis.get("stream:2")).not.toBeNull();
      request.destroy();
      await body.cancelled;
      // the handler's code may still run: the lock stays until its ttl (1000 ms) ends
      await sleep(50);
      expect(await redis.get("stream:2")).not.toBeNull();
      expect((await send(`${server.url}/stream/2`)).status).toBe(423);
      // no longer extended: gone within one ttl of the disconnect, not at maxHoldMs
      await expect.poll(() => redis.get("stream:2"), { timeout: 1500, interval: 50 }).toBeNull();
      expect(releases.count).toBe(0);
    } finally {
      releases.stop();
    }
  });

  it.each([
    ["stream", "first\n"],
    ["streamSSE", "data: first\n\n"],
  ])(
    "keeps the lock while a %s() callback still runs after the client left, and lets the next request in once it has finished",
    async (helper, first) => {
      const path = `${server.url}/helper/${helper === "stream" ? "stream" : "sse"}/1`;
      const releases = countReleases("helper:1");
      try {
        const { request, response } = open(path);
        request.on("error", () => {});
        expect(await nextChunk(await response)).toBe(first);
        const [run] = helperRuns;
        if (run === undefined) throw new Error("the callback did not run");
        request.destroy();
        await run.aborted;
        // Hono's cancel returns at once while the callback goes on: it is still in its critical section
        await sleep(50);
        expect(run.state).toBe("running");
        expect((await send(`${path}?quick`)).status).toBe(423);
        expect(await redis.get("helper:1")).not.toBeNull();
        expect(releases.count).toBe(0);
        run.proceed();
        await run.finished;
        // not extended since the client left: the key lapses within one ttl (1000 ms)
        await expect.poll(() => redis.get("helper:1"), { timeout: 1500, interval: 50 }).toBeNull();
        const next = await send(`${path}?quick`);
        expect(next.status).toBe(200);
        expect(helperRuns).toHaveLength(1);
      } finally {
        releases.stop();
      }
    },
  );

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
