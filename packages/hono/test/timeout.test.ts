import type { AcquireMessage } from "@redlock-kit/core";
import { type ErrorHandler, Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { timeout } from "hono/timeout";
import { describe, expect, it } from "vitest";
import { gate } from "#test-helpers/gate.js";
import { send } from "#test-helpers/http-client.js";
import { arrival, countReleases, nextAcquireStart, nextMessage, nextRelease } from "#test-helpers/lock-events.js";
import { createRedlockMiddleware } from "../src/index.js";
import { useServedRedlock } from "./serve.js";

const bed = useServedRedlock();

/** The app's onError: a timeout's HTTPException as its 504, anything else a plain 500. */
const answerErrors: ErrorHandler = (error, c) =>
  error instanceof HTTPException ? error.getResponse() : c.json({ error: "failed" }, 500);

/** A route behind Hono's timeout(1000) whose handler waits for `release()`; `fail` makes it throw then. */
function timedOutRoute({ fail = false } = {}) {
  const redlock = createRedlockMiddleware(bed.dlm, { ttl: 60_000 });
  const app = new Hono();
  const { open: release, opened } = gate();
  const state = { runs: 0, inside: 0, maxInside: 0 };
  // 1 s: the lock is taken well before it on a loaded machine (a timeout before the lock is H9: the handler never runs)
  app.use("/x/*", timeout(1000));
  app.post("/x/:id", redlock("hono-timeout:{params.id}"), async (c) => {
    state.runs++;
    state.maxInside = Math.max(state.maxInside, ++state.inside);
    await opened;
    state.inside--;
    if (fail) throw new Error("failed after its timeout");
    return c.json({ ran: true });
  });
  app.onError(answerErrors);
  return { app, state, release };
}

describe("a handler that Hono's timeout() answered for", () => {
  for (const nodeResponse of [true, false]) {
    it(`keeps the lock until it settles, then releases it (${nodeResponse ? "Node response" : "Fetch path"})`, async () => {
      const { app, state, release } = timedOutRoute();
      const server = await bed.serve(app, { nodeResponse });
      try {
        expect((await send(`${server.url}/x/1`, { method: "POST" })).status).toBe(504);
        // the timed-out handler still runs: the key is held and the next request does not enter
        expect(state.inside).toBe(1);
        expect((await send(`${server.url}/x/1`, { method: "POST" })).status).toBe(423);
        expect(await bed.redis.exists("hono-timeout:1")).toBe(1);
        const released = nextRelease("hono-timeout:1");
        release();
        // released by the handler's end, not expired: the release found the key still ours (the
        // ttl, 60 s, outlasts the test) and deleted it
        expect((await arrival(released, "the lock's release")).released).toBe(true);
        expect(await bed.redis.exists("hono-timeout:1")).toBe(0);
        expect(state).toEqual({ runs: 1, inside: 0, maxInside: 1 });
      } finally {
        release();
      }
    });
  }

  it("on the Fetch path (app.fetch), follows the timeout's response, not the handler's unsent one, and releases once the handler fails", async () => {
    const { app, state, release } = timedOutRoute({ fail: true });
    try {
      const first = await app.fetch(new Request("http://x/x/1", { method: "POST" }));
      expect(first.status).toBe(504);
      await first.text();
      const second = await app.fetch(new Request("http://x/x/1", { method: "POST" }));
      expect(second.status).toBe(423);
      const released = nextRelease("hono-timeout:1");
      release();
      // released by the handler's failure, not expired
      expect((await arrival(released, "the lock's release")).released).toBe(true);
      expect(await bed.redis.exists("hono-timeout:1")).toBe(0);
      expect(state).toEqual({ runs: 1, inside: 0, maxInside: 1 });
    } finally {
      release();
    }
  });
});

describe("a timeout() that answered while the route waited for its lock", () => {
  for (const nodeResponse of [true, false]) {
    it(`gives the lock back once it arrives, and the handler does not run (${nodeResponse ? "Node response" : "Fetch path"})`, async () => {
      const redlock = createRedlockMiddleware(bed.dlm, { ttl: 10_000, wait: 60_000 });
      const app = new Hono();
      let handlerRan = false;
      app.use("/w/*", timeout(200));
      app.post("/w/:id", redlock("hono-waited:{params.id}"), (c) => {
        handlerRan = true;
        return c.json({ ran: true });
      });
      app.onError(answerErrors);
      const server = await bed.serve(app, { nodeResponse });
      const holder = await bed.dlm.acquire("hono-waited:1", 10_000);
      const waiting = nextAcquireStart("hono-waited:1");
      const answer = send(`${server.url}/w/1`, { method: "POST" });
      await waiting;
      // the holder keeps the key until the timeout's answer is out: the route is still waiting then
      expect((await answer).status).toBe(504);
      const acquired = nextMessage<AcquireMessage>(
        "redlock-kit:acquire",
        (m) => m.resources.includes("hono-waited:1") && m.outcome === "acquired",
      );
      // counted from before the holder's release: the route gives its lock back as soon as it has it,
      // before a subscription made once that lock was seen might hear it
      const releases = countReleases("hono-waited:1");
      try {
        await holder.release();
        await arrival(acquired, "the route's lock");
        // the holder's release, then the route's: given back, or released after its handler ran
        await expect.poll(() => releases.count).toBe(2);
      } finally {
        releases.stop();
      }
      // before, on the Fetch path: the handler ran, under the lock, for a request already answered 504
      expect(handlerRan).toBe(false);
      expect(await bed.redis.exists("hono-waited:1")).toBe(0);
    });
  }
});
