/**
 * A route lock nested in a router-level guard of the same request (Express `app.use`, Koa
 * `router.use`, Hono `app.use`) on resources the guard holds: the route runs under the guard's lock
 * instead of waiting for it (DESIGN.md: `@Locked` is re-entrant within one async call chain, and a
 * user expects the same of routes). Fastify has no router-level lock (`config.redlock` is per
 * route), nor NestJS (`@LockedRoute` is per method). Three real redis-server processes.
 */
import { type Lock, Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { buildApp, type Framework, type GuardSpec, type RouteSpec, type RunningApp } from "./helpers/http-apps.js";
import { send } from "./helpers/http-client.js";
import { countLockEvents, nextExtensions, untilInvalid } from "./helpers/lock-events.js";
import { useRedisServers } from "./helpers/redis-servers.js";

const cluster = useRedisServers(3);
let clients: Redis[] = [];
let dlm: Redlock;
/** Another Redlock on the same servers: a guard through it holds the key as any other owner would. */
let other: Redlock;

beforeAll(() => {
  clients = cluster.servers.map((server) => server.client());
  dlm = new Redlock(clients);
  other = new Redlock(cluster.servers.map((server) => server.client()));
});

afterAll(async () => {
  await other?.quit();
});

afterEach(async () => {
  await Promise.all(clients.map((client) => client.flushall()));
});

/** What the guards and the handlers saw in the running test. */
let seen = { calls: 0, guards: [] as (Lock | undefined)[], left: [] as (Lock | undefined)[] };
beforeEach(() => {
  seen = { calls: 0, guards: [], left: [] };
});

const guard = (path: string, key: string, extra: Partial<GuardSpec> = {}): GuardSpec => ({
  path,
  key,
  entered: async (lock) => {
    seen.guards.push(lock);
  },
  left: (lock) => {
    seen.left.push(lock);
  },
  ...extra,
});

/** Answers what the route's handler holds: its lock's resources, fence and validity, and which guard's lock it is. */
async function describeLock(lock: Lock | undefined) {
  seen.calls++;
  return {
    json: {
      resources: lock?.resources ?? null,
      valid: lock?.valid ?? false,
      fence: lock?.fence ?? null,
      guard: lock === undefined ? null : seen.guards.indexOf(lock),
    },
  };
}

const routes: RouteSpec[] = [
  {
    method: "post",
    path: "/same/:id/pay",
    key: "order:{params.id}",
    guards: [guard("/same/:id", "order:{params.id}")],
    handler: describeLock,
  },
  {
    // the route also names a resource the guard does not hold
    method: "post",
    path: "/partial/:id/pay",
    key: (source) => {
      const { id } = source.params as { id: string };
      return [`partial:${id}`, `item:${id}`];
    },
    guards: [guard("/partial/:id", "partial:{params.id}")],
    handler: describeLock,
  },
  {
    // a guard on another key between them: req.lock is that one's when the route asks
    method: "post",
    path: "/deep/:id/pay",
    key: "deep:{params.id}",
    guards: [guard("/deep/:id", "deep:{params.id}"), guard("/deep/:id", "audit:{params.id}")],
    handler: describeLock,
  },
  {
    // the guard's lock, not renewed, ends before the route asks; its one attempt waits 300 ms per
    // instance, not the default 50 ms a loaded machine's Redis can miss (503)
    method: "post",
    path: "/lost/:id/pay",
    key: "lost:{params.id}",
    guards: [
      guard("/lost/:id", "lost:{params.id}", {
        options: { ttl: 500, instanceTimeout: 300, autoExtend: false },
        entered: async (lock) => untilInvalid(lock as Lock),
      }),
    ],
    handler: describeLock,
  },
  {
    method: "post",
    path: "/fenced/:id/pay",
    key: "fenced:{params.id}",
    options: { fencing: true },
    guards: [guard("/fenced/:id", "fenced:{params.id}", { options: { fencing: true } })],
    handler: describeLock,
  },
  {
    // the route wants a fence the guard's lock does not carry
    method: "post",
    path: "/unfenced/:id/pay",
    key: "unfenced:{params.id}",
    options: { fencing: true },
    guards: [guard("/unfenced/:id", "unfenced:{params.id}")],
    handler: describeLock,
  },
  {
    // the handler runs past the guard's ttl; the route's own options would not renew
    method: "post",
    path: "/renewed/:id/pay",
    key: "renewed:{params.id}",
    options: { ttl: 1000, autoExtend: false },
    // the guard's one attempt at its 1 s lock waits 500 ms per instance, not the default 100 ms a
    // loaded machine's Redis can miss (503)
    guards: [guard("/renewed/:id", "renewed:{params.id}", { options: { ttl: 1000, instanceTimeout: 500 } })],
    handler: async (lock) => {
      await nextExtensions("renewed:1", 2, { succeeded: true });
      return describeLock(lock);
    },
  },
];

const values = (key: string) => Promise.all(clients.map((client) => client.get(key)));
const tally = (counts: ReturnType<typeof countLockEvents>) => ({
  acquired: counts.acquired,
  releaseCalls: counts.releaseCalls,
  released: counts.released,
  notHeld: counts.notHeld,
});
const ONCE = { acquired: 1, releaseCalls: 1, released: 1, notHeld: 0 };

const frameworks: Framework[] = ["express", "koa", "hono", "hono-fetch"];

describe.each(frameworks)("a route nested in a guard of its request on %s", (framework) => {
  let app: RunningApp;

  beforeAll(async () => {
    app = await buildApp[framework](dlm, [
      ...routes,
      {
        method: "post",
        path: "/other/:id/pay",
        key: "other:{params.id}",
        guards: [guard("/other/:id", "other:{params.id}", { redlock: other })],
        handler: describeLock,
      },
    ]);
  });

  afterAll(async () => {
    await app?.close();
  });

  it("runs under the guard's lock on the same key: one acquisition, one release, no wait for itself", async () => {
    const counts = countLockEvents((resource) => resource === "order:1");
    try {
      const answer = await send(`${app.url}/same/1/pay`, { method: "POST" });
      expect(answer.status).toBe(200);
      expect(JSON.parse(answer.text)).toEqual({ resources: ["order:1"], valid: true, fence: null, guard: 0 });
      await expect.poll(() => values("order:1")).toEqual([null, null, null]);
      expect(tally(counts)).toEqual(ONCE);
      // after next(), the code of the guard's chain sees the guard's lock
      if (framework !== "express") expect(seen.left).toEqual([seen.guards[0]]);
      // and the next request for the key again
      expect((await send(`${app.url}/same/1/pay`, { method: "POST" })).status).toBe(200);
      await expect.poll(() => tally(counts)).toEqual({ acquired: 2, releaseCalls: 2, released: 2, notHeld: 0 });
    } finally {
      counts.stop();
    }
  });

  it("locks only the resources the guard does not hold, and releases each lock once", async () => {
    const guarded = countLockEvents((resource) => resource === "partial:1");
    const own = countLockEvents((resource) => resource === "item:1");
    try {
      const answer = await send(`${app.url}/partial/1/pay`, { method: "POST" });
      expect(answer.status).toBe(200);
      // req.lock: the route's own lock, on the resource it took
      expect(JSON.parse(answer.text)).toEqual({ resources: ["item:1"], valid: true, fence: null, guard: -1 });
      await expect
        .poll(() => Promise.all([values("partial:1"), values("item:1")]))
        .toEqual([
          [null, null, null],
          [null, null, null],
        ]);
      expect([tally(guarded), tally(own)]).toEqual([ONCE, ONCE]);
      // the route's own lock was the request's while it ran; after next(), the guard's is again
      if (framework !== "express") {
        expect(seen.left.map((lock) => lock?.resources)).toEqual([["partial:1"]]);
        expect(seen.left[0]).toBe(seen.guards[0]);
      }
    } finally {
      guarded.stop();
      own.stop();
    }
  });

  it("finds the guard's lock behind a guard on another key in between, and runs under it", async () => {
    const counts = countLockEvents((resource) => resource === "deep:1");
    try {
      const answer = await send(`${app.url}/deep/1/pay`, { method: "POST" });
      expect(answer.status).toBe(200);
      expect(JSON.parse(answer.text)).toEqual({ resources: ["deep:1"], valid: true, fence: null, guard: 0 });
      await expect.poll(() => values("deep:1")).toEqual([null, null, null]);
      expect(tally(counts)).toEqual(ONCE);
    } finally {
      counts.stop();
    }
  });

  it("answers 409 without running the handler when the guard's lock is no longer valid", async () => {
    const answer = await send(`${app.url}/lost/1/pay`, { method: "POST" });
    expect(answer.status).toBe(409);
    expect(JSON.parse(answer.text)).toEqual({ error: "Lock was lost" });
    expect(answer.headers["cache-control"]).toBe("no-store");
    expect(seen.calls).toBe(0);
  });

  it("gives the handler the guard's fence; under a guard without fencing, a route with fencing: true answers 500 and does not run", async () => {
    const fenced = await send(`${app.url}/fenced/1/pay`, { method: "POST" });
    expect(fenced.status).toBe(200);
    expect(JSON.parse(fenced.text)).toEqual({ resources: ["fenced:1"], valid: true, fence: "1", guard: 0 });
    const unfenced = await send(`${app.url}/unfenced/1/pay`, { method: "POST" });
    expect(unfenced.status).toBe(500);
    expect(JSON.parse(unfenced.text)).toEqual({ error: "Lock service misconfigured" });
    expect(seen.calls).toBe(1);
    await expect.poll(() => values("unfenced:1")).toEqual([null, null, null]);
  });

  it("under a guard with fencing: false, a route that fences by its Redlock's default (no option of its own) answers 500 and does not run", async () => {
    const fencedByDefault = new Redlock(clients, { fencing: true });
    const inheriting = await buildApp[framework](fencedByDefault, [
      {
        method: "post",
        path: "/inherit/:id/pay",
        key: "inherit:{params.id}",
        guards: [guard("/inherit/:id", "inherit:{params.id}", { options: { fencing: false } })],
        handler: describeLock,
      },
    ]);
    try {
      const answer = await send(`${inheriting.url}/inherit/1/pay`, { method: "POST" });
      expect(answer.status).toBe(500);
      expect(JSON.parse(answer.text)).toEqual({ error: "Lock service misconfigured" });
      expect(seen.calls).toBe(0);
      await expect.poll(() => values("inherit:1")).toEqual([null, null, null]);
    } finally {
      await inheriting.close();
    }
  });

  it("keeps the guard's lock renewed while the nested handler runs past its ttl", async () => {
    const answer = await send(`${app.url}/renewed/1/pay`, { method: "POST" });
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.text)).toEqual({ resources: ["renewed:1"], valid: true, fence: null, guard: 0 });
  });

  it("does not re-enter a guard's lock taken through another Redlock: 423, the handler not run", async () => {
    const answer = await send(`${app.url}/other/1/pay`, { method: "POST" });
    expect(answer.status).toBe(423);
    expect(seen.calls).toBe(0);
    await expect.poll(() => values("other:1")).toEqual([null, null, null]);
  });
});
