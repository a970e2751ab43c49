/**
 * Each example app, built by its exported builder against three real redis-servers, answers the
 * curl lines its README documents: 200 when the lock is free, 423 while someone else holds it.
 */
import { createServer, type RequestListener, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Redlock } from "@redlock-kit/core";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { arrival } from "./helpers/lock-events.js";
import { useRedisServers } from "./helpers/redis-servers.js";

/**
 * How long the examples' handlers work while holding their lock (`await sleep(workMs)`, from
 * node:timers/promises), and the overlapping-requests test's hold on one such sleep: armed, the next
 * sleep of WORK_MS says the handler is inside its lock and lasts until the test opens the gate, so the
 * second request meets the first one's lock however slowly the host sends it (a 300 ms sleep was
 * outlasted by the second request's way under load, and both got 200). The apps are unchanged.
 */
const { WORK_MS, work } = vi.hoisted(() => ({
  WORK_MS: 300,
  work: { armed: undefined as { inside: () => void; gate: Promise<void> } | undefined },
}));
vi.mock("node:timers/promises", async (importOriginal) => {
  const timers = await importOriginal<typeof import("node:timers/promises")>();
  const setTimeout = (async (...[ms, value, options]: Parameters<typeof timers.setTimeout>) => {
    const held = ms === WORK_MS ? work.armed : undefined;
    if (held === undefined) return timers.setTimeout(ms, value, options);
    work.armed = undefined;
    held.inside();
    await held.gate;
    return value;
  }) as typeof timers.setTimeout;
  return { ...timers, setTimeout, default: { ...timers, setTimeout } };
});

/** Holds the next WORK_MS sleep of a handler: `inside` resolves once it began, `open()` ends it. */
function holdNextWork() {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  const inside = new Promise<void>((resolve) => {
    work.armed = { inside: resolve, gate };
  });
  return { inside, open };
}

const cluster = useRedisServers(3);
let dlm: Redlock;

beforeAll(() => {
  // The examples lock /api/resource for 1 s, which gives each instance 100 ms to answer by
  // default: on a loaded machine a healthy loopback server misses that now and then, and the
  // 423 these tests expect turns into a 503. Their subject is the answers, not the bound.
  dlm = new Redlock(
    cluster.servers.map((server) => `redis://127.0.0.1:${server.port}`),
    { instanceTimeout: 500 },
  );
});

afterAll(async () => {
  await dlm?.quit();
});

interface Running {
  readonly url: string;
  close(): Promise<void>;
}

function serveNode(listener: RequestListener): Promise<Running> {
  return serveServer(createServer(listener));
}

async function serveServer(server: Server): Promise<Running> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

const examples: readonly { name: string; start(dlm: Redlock): Promise<Running> }[] = [
  {
    name: "express",
    start: async (dlm) =>
      serveNode((await import("../examples/express/src/app.js")).buildApp(dlm, { workMs: WORK_MS })),
  },
  {
    name: "koa",
    start: async (dlm) =>
      serveNode((await import("../examples/koa/src/app.js")).buildApp(dlm, { workMs: WORK_MS }).callback()),
  },
  {
    name: "fastify",
    start: async (dlm) => {
      const app = await (await import("../examples/fastify/src/app.js")).buildApp(dlm, { workMs: WORK_MS });
      const url = await app.listen({ port: 0, host: "127.0.0.1" });
      return { url, close: () => app.close() };
    },
  },
  {
    name: "hono",
    start: async (dlm) => {
      const app = (await import("../examples/hono/src/app.js")).buildApp(dlm, { workMs: WORK_MS });
      const { createAdaptorServer } = await import("@hono/node-server");
      return serveServer(createAdaptorServer({ fetch: app.fetch }) as Server);
    },
  },
  {
    name: "decorators",
    start: async (dlm) =>
      serveNode((await import("../examples/decorators/src/app.js")).buildApp(dlm, { workMs: WORK_MS })),
  },
];

describe.each(examples)("the $name example", ({ start }) => {
  let app: Running;

  beforeAll(async () => {
    app = await start(dlm);
  });

  afterAll(async () => {
    await app?.close();
  });

  it('answers POST /api/resource with 200 {"status":"success"}, and again once the first request is done', async () => {
    for (let i = 0; i < 2; i++) {
      const response = await request(app.url).post("/api/resource").expect(200);
      expect(response.body).toEqual({ status: "success" });
    }
  });

  it('answers POST /api/resource with 423 {"error":"Resource is locked"} and Retry-After while another owner holds resource_name', async () => {
    const held = await dlm.acquire("resource_name", 5000);
    try {
      const response = await request(app.url).post("/api/resource").expect(423);
      expect(response.body).toEqual({ error: "Resource is locked" });
      expect(Number(response.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    } finally {
      await held.release();
    }
    await request(app.url).post("/api/resource").expect(200);
  });

  it("answers two overlapping POST /api/resource (the README's curl pair) with one 200 and one 423", async () => {
    // the first request works until the test has the second one's answer: its lock is held
    // throughout, whatever the host's speed
    const held = holdNextWork();
    try {
      // sent now (a supertest request goes out when its then() is called)
      const first = request(app.url)
        .post("/api/resource")
        .then((response) => response);
      await arrival(held.inside, "the first request's work");
      const second = await request(app.url).post("/api/resource");
      held.open();
      expect([(await first).status, second.status]).toEqual([200, 423]);
      expect((await first).body).toEqual({ status: "success" });
      expect(second.body).toEqual({ error: "Resource is locked" });
    } finally {
      held.open();
    }
  });

  it("locks POST /orders/:id/pay per order: 423 for the held order, 200 for another one meanwhile", async () => {
    const held = await dlm.acquire("order:42", 5000);
    try {
      const blocked = await request(app.url).post("/orders/42/pay").expect(423);
      expect(blocked.body).toEqual({ error: "Resource is locked" });
      const other = await request(app.url).post("/orders/43/pay").expect(200);
      expect(other.body).toEqual({ status: "paid", order: "43" });
    } finally {
      await held.release();
    }
    const paid = await request(app.url).post("/orders/42/pay").expect(200);
    expect(paid.body).toEqual({ status: "paid", order: "42" });
  });
});
