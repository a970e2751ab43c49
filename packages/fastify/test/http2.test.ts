/**
 * Fastify with `http2: true`: Node's HTTP/2 response emits 'finish' when its stream closes, also
 * when the client cancelled it (RST_STREAM) and nothing ended it. That is the client leaving, not
 * the handler's end.
 */
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { Redlock } from "@redlock-kit/core";
import Fastify from "fastify";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { gate } from "#test-helpers/gate.js";
import { cancel, cancelledExport, connect, status } from "#test-helpers/http2-client.js";
import { countAcquisitions } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import redlockPlugin from "../src/index.js";

const cluster = useRedisServers(1);
let redis: Redis;
let dlm: Redlock;
beforeAll(() => {
  redis = cluster.servers[0]?.client() as Redis;
  dlm = new Redlock([redis]);
});
afterAll(async () => {
  await dlm.quit();
});

async function listen(app: ReturnType<typeof Fastify>) {
  await app.listen({ port: 0, host: "127.0.0.1" });
  return connect(`http://127.0.0.1:${(app.server.address() as AddressInfo).port}`);
}

it("does not release the lock of a streamed body whose client cancelled it while its producer still runs: it expires within one ttl", async () => {
  const app = Fastify({ http2: true });
  // 3 s: the next request comes well within it on a loaded machine
  await app.register(redlockPlugin, { redlock: dlm, ttl: 3000 });
  const exported = cancelledExport("h2-export:1");
  app.get("/exports/:id", { config: { redlock: "h2-export:{params.id}" } }, (request, reply) =>
    reply.send(exported.run(request.lock, reply.raw)),
  );
  const session = await listen(app);
  try {
    await exported.check(session, "/exports/1");
  } finally {
    exported.stop();
    session.close();
    await app.close();
  }
});

it("locks nothing for a request whose client cancelled it during an earlier awaited hook, and does not run the handler", async () => {
  const app = Fastify({ http2: true });
  await app.register(redlockPlugin, { redlock: dlm, ttl: 1000 });
  const authorized = gate();
  const state = { runs: 0, closed: undefined as Promise<unknown> | undefined };
  const checking = gate();
  app.get(
    "/accounts/:id",
    {
      config: { redlock: "h2-account:{params.id}" },
      // an auth check that awaits: the client leaves meanwhile
      preHandler: async (_request, reply) => {
        state.closed = once(reply.raw, "close");
        checking.open();
        await authorized.opened;
      },
    },
    async () => {
      state.runs++;
      return { balance: 1 };
    },
  );
  const session = await listen(app);
  const acquisitions = countAcquisitions("h2-account:1");
  try {
    const request = session.request({ ":path": "/accounts/1" });
    request.on("error", () => {});
    await checking.opened;
    cancel(request);
    await state.closed;
    authorized.open();
    // the route's hook runs within the turn the auth check ends in: by the time another request
    // is answered, it has asked for the lock or not
    expect(await status(session, "/none")).toBe(404);
    // before, the handler ran under a lock that its end never released (Node ends nothing once
    // the stream closed): held and extended until maxHoldMs
    expect({ asked: acquisitions.asked, runs: state.runs }).toEqual({ asked: 0, runs: 0 });
    expect(await redis.exists("h2-account:1")).toBe(0);
  } finally {
    acquisitions.stop();
    authorized.open();
    session.close();
    await app.close();
  }
});

it("answers a HEAD request as a GET, its handler run under the lock (Node finishes a HEAD response's stream from the start)", async () => {
  const app = Fastify({ http2: true });
  await app.register(redlockPlugin, { redlock: dlm });
  const ran: (string | undefined)[] = [];
  app.get("/reports/:id", { config: { redlock: "h2-head:{params.id}" } }, (request) => {
    ran.push(request.lock?.resources[0]);
    return "report";
  });
  const session = await listen(app);
  try {
    expect([await status(session, "/reports/1", "HEAD"), await status(session, "/reports/2")]).toEqual([200, 200]);
    expect(ran).toEqual(["h2-head:1", "h2-head:2"]);
  } finally {
    session.close();
    await app.close();
  }
});
