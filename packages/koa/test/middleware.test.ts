import http from "node:http";
import type { AddressInfo } from "node:net";
import { Redlock } from "@redlock-kit/core";
import Koa from "koa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { send } from "#test-helpers/http-client.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import { createRedlockMiddleware } from "../src/index.js";

const cluster = useRedisServers(1);
let dlm: Redlock;

beforeAll(async () => {
  dlm = new Redlock(cluster.servers.map((server) => server.client()));
  // a route makes one attempt, which waits for a new client to say who it is at most its
  // per-instance timeout: 50 ms for a 500 ms lock
  await warmUp(dlm);
});

afterAll(async () => {
  await dlm.quit();
});

async function listen(app: Koa) {
  const server = http.createServer(app.callback()).listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

describe("the Koa middleware", () => {
  it("works as plain app.use() middleware, where a {params.…} part is missing (no router) and answers 400", async () => {
    const redlock = createRedlockMiddleware(dlm);
    const app = new Koa();
    app.use(redlock("order:{params.id}"));
    app.use((ctx) => {
      ctx.body = { ran: true };
    });
    const { server, url } = await listen(app);
    try {
      const answer = await send(`${url}/orders/1`);
      expect(answer.status).toBe(400);
      expect(JSON.parse(answer.text)).toEqual({ error: 'Lock key part "params.id" is missing' });
      expect(await cluster.servers[0]?.client().dbsize()).toBe(0);
    } finally {
      server.close();
    }
  });

  it("closes the connection of a handler that throws after the headers were sent, so that its lock lapses within one ttl", async () => {
    // one attempt at a 500 ms lock: 300 ms per instance, not the default 50 ms a loaded machine misses (503)
    const redlock = createRedlockMiddleware(dlm, { ttl: 500, instanceTimeout: 300, maxHoldMs: 60_000 });
    const app = new Koa();
    app.silent = true;
    app.use(redlock("koa:streamed"));
    app.use((ctx) => {
      ctx.res.writeHead(200, { "content-type": "text/event-stream" });
      ctx.res.write("data: 1\n\n");
      throw new Error("failed mid-stream");
    });
    const { server, url } = await listen(app);
    try {
      // Koa itself ends nothing once the headers are out: without the close, the client would
      // wait forever and the lock would be extended until maxHoldMs
      const ended = (error: unknown) => ((error as Error).name === "TimeoutError" ? "never ended" : "cut off");
      const closed = await fetch(`${url}/`, { signal: AbortSignal.timeout(5000) }).then(
        (response) => response.text().then(() => "ended", ended),
        ended,
      );
      expect(closed).toBe("cut off");
      const client = cluster.servers[0]?.client();
      await expect.poll(() => client?.exists("koa:streamed")).toBe(0);
    } finally {
      server.close();
    }
  });

  it("refuses a bad option when the route is declared, naming it", () => {
    const redlock = createRedlockMiddleware(dlm, { wait: 100 });
    expect(() => redlock("x", { autoExtend: "yes" as unknown as boolean })).toThrow(
      new TypeError("options.autoExtend must be a boolean, got string"),
    );
    expect(() => createRedlockMiddleware(dlm, { ttl: -1 })).toThrow(RangeError);
  });
});
