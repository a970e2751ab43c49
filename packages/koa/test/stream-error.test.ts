/**
 * A streamed body that fails, on plain Koa and behind the lock: the middleware follows the stream
 * (its 'error' included) to know when to let the lock go, and must not take that error from the
 * app. Failing while Koa sends it (before its headers, midway, or after its client left), the app's
 * 'error' listener gets the same error on both and the connection is closed on both; the lock then
 * lapses within one ttl. Failing before Koa sends it (an earlier middleware still at work after
 * `await next()`), plain Koa 3 has no listener on the stream yet and the process would crash on
 * the unhandled 'error' (not run here): behind the lock the connection is closed and the lock released.
 */
import { once } from "node:events";
import http from "node:http";
import { PassThrough, Readable } from "node:stream";
import { Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import Koa from "koa";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { nextChunk, open } from "#test-helpers/http-client.js";
import { countReleases } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { listenOnLoopback } from "#test-helpers/refused-routes.js";
import { warmUp } from "#test-helpers/warm-up.js";
import { createRedlockMiddleware } from "../src/index.js";

const cluster = useRedisServers(1);
let redis: Redis;
let dlm: Redlock;
const servers: { close(): Promise<void> }[] = [];

beforeAll(async () => {
  redis = cluster.servers[0]?.client() as Redis;
  dlm = new Redlock([redis]);
  await warmUp(dlm);
});
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
  await redis.flushall();
});
afterAll(async () => {
  await dlm.quit();
});

type When = "before its headers" | "after some data" | "after its client left" | "before Koa sends it";

/**
 * An app whose handler streams a body that `fail()` makes fail (the handler's stream, which
 * yields nothing until then before its headers, and "first\n" otherwise); behind the lock on `key`
 * unless `key` is undefined. The messages of the errors its 'error' listener gets are in `errors`.
 */
async function failingApp(when: When, key: string | undefined) {
  const app = new Koa();
  const errors: string[] = [];
  app.on("error", (error: Error) => errors.push(error.message));
  let stream: PassThrough | Readable | undefined;
  let responseClosed: Promise<unknown> = Promise.resolve();
  const fail = () => stream?.destroy(new Error("export failed"));
  // an earlier middleware with more to do (a log entry written) once the chain has settled
  app.use(async (_ctx, next) => {
    await next();
    if (when !== "before Koa sends it") return;
    fail();
    await redis.ping();
  });
  // one attempt at a 500 ms lock: 300 ms per instance, not the default 50 ms a loaded machine misses (503)
  if (key !== undefined) app.use(createRedlockMiddleware(dlm, { ttl: 500, instanceTimeout: 300 })(key));
  app.use((ctx) => {
    responseClosed = once(ctx.res, "close");
    ctx.type = "text/plain";
    if (when === "before its headers") {
      stream = new Readable({ read() {} });
      // once Koa reads it: nothing written yet
      stream.once("resume", () => setImmediate(fail));
    } else {
      const body = new PassThrough();
      body.write("first\n");
      stream = body;
    }
    ctx.body = stream;
  });
  const server = await listenOnLoopback(http.createServer(app.callback()));
  servers.push(server);
  const { url } = server;
  return { url, errors, fail, responseClosed: () => responseClosed };
}

/** How the client's response ended: "ended" whole, or "cut off" (reset, aborted). */
async function requestFailing(when: When, key: string | undefined) {
  const { url, errors, fail, responseClosed } = await failingApp(when, key);
  const { request, response } = open(url);
  const cutOff = () => "cut off";
  if (when === "before its headers" || when === "before Koa sends it") {
    const ending = await response.then(
      (answer) =>
        new Promise<string>((resolve) => answer.on("error", () => resolve(cutOff())).on("end", () => resolve("ended"))),
      cutOff,
    );
    return { ending, errors };
  }
  const answer = await response;
  expect(await nextChunk(answer)).toBe("first\n");
  if (when === "after its client left") {
    request.destroy();
    // its response closed on the server before the stream fails
    await responseClosed();
    fail();
    return { ending: "left", errors };
  }
  const ending = Promise.race([once(answer, "error").then(cutOff), once(answer, "end").then(() => "ended")]);
  fail();
  return { ending: await ending, errors };
}

const sentFailures: { when: When; error: string }[] = [
  { when: "before its headers", error: "export failed" },
  { when: "after some data", error: "export failed" },
  // Koa's pipeline stops at the client's leaving: the stream, destroyed by it, fails no more
  { when: "after its client left", error: "Premature close" },
];

describe("a streamed body that fails while Koa sends it", () => {
  for (const { when, error } of sentFailures) {
    it(`${when}: the app's 'error' listener gets what plain Koa's does, the connection is closed as there, the lock lapses within one ttl`, async () => {
      const plain = await requestFailing(when, undefined);
      await expect.poll(() => plain.errors.length).toBeGreaterThan(0);
      const key = `koa-stream-error:${when}`;
      const releases = countReleases(key);
      try {
        const locked = await requestFailing(when, key);
        await expect.poll(() => locked.errors.length).toBeGreaterThan(0);
        expect({ ending: locked.ending, errors: [...new Set(locked.errors)] }).toEqual({
          ending: plain.ending,
          errors: [...new Set(plain.errors)],
        });
        expect(locked.errors).toContain(error);
        // closed unended, as after any failure once Koa sends the body: never extended past it
        await expect.poll(() => redis.exists(key), { timeout: 5000 }).toBe(0);
        expect(releases.calls).toBe(0);
      } finally {
        releases.stop();
      }
    });
  }
});

describe("a streamed body that fails before Koa sends it (an earlier middleware still at work)", () => {
  it("is followed by the lock's listener: no unhandled 'error' (plain Koa 3 would crash), the connection is closed, the lock released once, and the app's 'error' listener is not told", async () => {
    const key = "koa-stream-error:before-sent";
    const releases = countReleases(key);
    try {
      const { ending, errors } = await requestFailing("before Koa sends it", key);
      expect(ending).toBe("cut off");
      await expect.poll(() => releases.count).toBe(1);
      expect({ calls: releases.calls, held: await redis.exists(key), errors }).toEqual({
        calls: 1,
        held: 0,
        errors: [],
      });
    } finally {
      releases.stop();
    }
  });
});
