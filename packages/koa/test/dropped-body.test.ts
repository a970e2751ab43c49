import { PassThrough, Readable } from "node:stream";
import type { Lock } from "@redlock-kit/core";
import Koa from "koa";
import { describe, expect, it } from "vitest";
import { gate, gatedProducer, heldUntilProduced } from "#test-helpers/gate.js";
import { open, type RequestInit, send } from "#test-helpers/http-client.js";
import { arrival, releasedOrExpired } from "#test-helpers/lock-events.js";
import { useListeningBed } from "#test-helpers/redlock-bed.js";
import { createRedlockMiddleware } from "../src/index.js";

const bed = useListeningBed();
const listen = (app: Koa) => bed.listen(app.callback());

type Kind = "Node stream" | "web stream";

/**
 * A locked app whose handler answers `status` (200 unless given) with a streamed body of `kind`,
 * asked with `method`: the lock, and Koa's answer, wait for the producer's end (ttl 60 s).
 */
async function droppedWhileProducing(kind: Kind, method: RequestInit["method"], status?: number) {
  const redlock = createRedlockMiddleware(bed.dlm, { ttl: 60_000 });
  const app = new Koa();
  const producer = gatedProducer();
  app.use(redlock("koa-dropped:1"));
  app.use((ctx) => {
    const out = producer.produce();
    if (status !== undefined) ctx.status = status;
    ctx.type = "text/plain";
    ctx.body = kind === "Node stream" ? out : Readable.toWeb(out);
  });
  const url = await listen(app);
  return heldUntilProduced(
    producer,
    send(url, { method }),
    () => open(url),
    () => bed.redis.exists("koa-dropped:1"),
  );
}

describe("HEAD on a locked route", () => {
  for (const kind of ["Node stream", "web stream"] as const) {
    it(`keeps the lock while the dropped ${kind} body's producer runs, and releases it at the stream's end`, async () => {
      expect((await droppedWhileProducing(kind, "HEAD")).status).toBe(200);
    });
  }

  it("releases the lock of a JSON body at once", async () => {
    const redlock = createRedlockMiddleware(bed.dlm, { ttl: 60_000 });
    const app = new Koa();
    app.use(redlock("koa-head-json:1"));
    app.use((ctx) => {
      ctx.body = { id: 1 };
    });
    const url = await listen(app);
    const head = await send(url, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers["content-type"]).toMatch(/json/);
    await expect.poll(() => bed.redis.exists("koa-head-json:1")).toBe(0);
  });
});

describe("a status without content set before a streamed body", () => {
  const cases = [
    [204, "Node stream"],
    [204, "web stream"],
    [304, "Node stream"],
  ] as const;
  for (const [status, kind] of cases) {
    it(`${status} with a ${kind}: keeps the lock while the dropped body's producer runs, and releases it at the stream's end`, async () => {
      expect((await droppedWhileProducing(kind, "GET", status)).status).toBe(status);
    });
  }
});

describe("a HEAD request whose client leaves while its dropped body is read", () => {
  for (const kind of ["Node stream", "web stream"] as const) {
    it(`stops the ${kind}, as Koa stops a GET's body whose client left, and the lock lapses within one ttl`, async () => {
      // one attempt at a 500 ms lock: 300 ms per instance, not the default 50 ms a loaded machine misses (503)
      const redlock = createRedlockMiddleware(bed.dlm, { ttl: 500, instanceTimeout: 300 });
      const app = new Koa();
      const started = gate();
      const stopped = gate();
      let lock: Lock | undefined;
      app.use(redlock("koa-head-left:1"));
      app.use((ctx) => {
        lock = ctx.state.lock;
        // an endless feed (server-sent events): only its reader's leaving stops it
        const feed = new PassThrough();
        feed.write("data: 1\n\n");
        feed.once("close", stopped.open);
        ctx.type = "text/event-stream";
        ctx.body = kind === "Node stream" ? feed : endlessWeb(stopped.open);
        started.open();
      });
      const url = await listen(app);
      const { request } = open(url, { method: "HEAD" });
      request.on("error", () => {});
      await started.opened;
      const outcome = releasedOrExpired("koa-head-left:1", lock as Lock);
      request.destroy();
      await arrival(stopped.opened, "the dropped body stopped");
      expect(await outcome).toBe("expired");
    });
  }
});

/** A web stream that never ends; `onCancel` runs when its reader cancels it. */
function endlessWeb(onCancel: () => void): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new TextEncoder().encode("data: 1\n\n"));
    },
    cancel: onCancel,
  });
}
