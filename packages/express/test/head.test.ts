import { PassThrough } from "node:stream";
import type { Lock } from "@redlock-kit/core";
import express from "express";
import { describe, expect, it } from "vitest";
import { gate, gatedProducer } from "#test-helpers/gate.js";
import { open, send } from "#test-helpers/http-client.js";
import { arrival, releasedOrExpired } from "#test-helpers/lock-events.js";
import { useListeningBed } from "#test-helpers/redlock-bed.js";
import { createRedlockMiddleware } from "../src/index.js";

const bed = useListeningBed();
const listen = (app: express.Express) => bed.listen(app);

describe("HEAD on a locked GET route", () => {
  // Express pipes the stream into a HEAD response as into a GET's (Node drops the writes): the
  // response, and with it the lock, ends at the stream's end. Nothing in the adapter for it.
  it("keeps the lock while the piped stream's producer runs, and releases it at the stream's end", async () => {
    const redlock = createRedlockMiddleware(bed.dlm, { ttl: 60_000 });
    const app = express();
    const producer = gatedProducer();
    const { state } = producer;
    app.get("/export/:id", redlock("express-head:{params.id}"), (_req, res) => {
      res.type("text/plain");
      producer.produce().pipe(res);
    });
    const url = `${await listen(app)}/export/1`;
    try {
      const head = send(url, { method: "HEAD" });
      await expect.poll(() => state.inside).toBe(1);
      // the producer still runs: the next request for the key is refused and never enters
      const get = open(url);
      get.request.on("error", () => {});
      const status = (await get.response).statusCode;
      get.request.destroy();
      expect(status).toBe(423);
      expect(state).toEqual({ runs: 1, inside: 1, maxInside: 1 });
      expect(await bed.redis.exists("express-head:1")).toBe(1);
      producer.open();
      expect((await head).status).toBe(200);
      // released by the stream's end, not expired: the ttl (60 s) is far beyond the poll's 10 s
      await expect.poll(() => bed.redis.exists("express-head:1")).toBe(0);
      expect(state).toEqual({ runs: 1, inside: 0, maxInside: 1 });
    } finally {
      producer.open();
    }
  });

  it("releases the lock of a JSON body at once", async () => {
    const redlock = createRedlockMiddleware(bed.dlm, { ttl: 60_000 });
    const app = express();
    app.get("/order/:id", redlock("express-head-json:{params.id}"), (_req, res) => {
      res.json({ id: 1 });
    });
    const head = await send(`${await listen(app)}/order/1`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers["content-type"]).toMatch(/json/);
    await expect.poll(() => bed.redis.exists("express-head-json:1")).toBe(0);
  });
});

describe("a HEAD request whose client leaves while the piped stream is produced", () => {
  // Express unpipes the stream from a response whose client left, as a GET's, and ends nothing
  it("lets the lock lapse within one ttl, not released while the producer may still run", async () => {
    // one attempt at a 500 ms lock: 300 ms per instance, not the default 50 ms a loaded machine misses (503)
    const redlock = createRedlockMiddleware(bed.dlm, { ttl: 500, instanceTimeout: 300 });
    const app = express();
    const started = gate();
    let lock: Lock | undefined;
    app.get("/feed/:id", redlock("express-head-left:{params.id}"), (req, res) => {
      lock = req.lock;
      // an endless feed (server-sent events)
      const feed = new PassThrough();
      feed.write("data: 1\n\n");
      res.type("text/event-stream");
      feed.pipe(res);
      started.open();
    });
    const { request } = open(`${await listen(app)}/feed/1`, { method: "HEAD" });
    request.on("error", () => {});
    await started.opened;
    const outcome = releasedOrExpired("express-head-left:1", lock as Lock);
    request.destroy();
    expect(await arrival(outcome, "the lock's end (expiry or release)")).toBe("expired");
  });
});
