import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { timeout } from "hono/timeout";
import { describe, expect, it } from "vitest";
import { gate } from "#test-helpers/gate.js";
import { send } from "#test-helpers/http-client.js";
import { arrival, nextRelease } from "#test-helpers/lock-events.js";
import { createRedlockMiddleware } from "../src/index.js";
import { useServedRedlock } from "./serve.js";

const bed = useServedRedlock();

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
  app.onError((error, c) => (error instanceof HTTPException ? error.getResponse() : c.json({ error: "failed" }, 500)));
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
