/**
 * Request values that would bend a route's lock key: values that forge another request's key, lone
 * surrogates, oversized values, odd query strings and `__proto__`, and a key function whose names a
 * Cluster cannot lock together. Each is a 400 JSON answer from every adapter, with nothing written,
 * or (for the forged key) a key of its own.
 */
import type { HttpKeySource, Lock, RouteLockOptions } from "@redlock-kit/core";
import { Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp, type Framework, type RouteSpec, type RunningApp } from "../helpers/http-apps.js";
import { send } from "../helpers/http-client.js";
import { useInvariants } from "../helpers/invariants.js";
import { useRedisServers } from "../helpers/redis-servers.js";
import { startCluster, type TestCluster } from "../helpers/topologies.js";
import { warmUp } from "../helpers/warm-up.js";

const cluster = useRedisServers(3);
const invariants = useInvariants(cluster, { maxTtlMs: 5000 });
let direct: Redis[] = [];
let slots: TestCluster;

beforeAll(async () => {
  direct = cluster.servers.map((server) => server.client());
  // a route's one attempt at a 1 s lock waits 100 ms for the new clients to say who they are
  await warmUp(new Redlock(direct), { quit: true });
  slots = await startCluster(3);
}, 60_000);

afterAll(async () => {
  await slots?.stop();
});

const dbsizes = () => Promise.all(direct.map((client) => client.dbsize()));

function gate() {
  let open = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, opened };
}

const frameworks: Framework[] = ["express", "koa", "fastify"];

describe.each(frameworks)("hostile key values through %s", (framework) => {
  let app: RunningApp;
  let held = gate();
  /** Resolves when `count` requests of the gated route are in their handler, holding their locks. */
  let inside = { count: 0, wanted: 1, ...gate() };
  const waitInside = (wanted: number) => {
    inside = { count: 0, wanted, ...gate() };
    return inside.opened;
  };

  const echo = async (lock: Lock | undefined) => ({ json: { resources: lock?.resources } });
  const options: Omit<RouteLockOptions, "onLocked" | "onUnavailable"> = { ttl: 5000 };
  const routes: RouteSpec[] = [
    {
      method: "post",
      path: "/tenants/orders/:id",
      key: "t:{headers.x-tenant}:o:{params.id}",
      options,
      handler: async (lock) => {
        if (++inside.count === inside.wanted) inside.open();
        await held.opened;
        return echo(lock);
      },
    },
    { method: "post", path: "/body", key: "sku:{body.sku}", options, handler: echo },
    { method: "get", path: "/header", key: "tenant:{headers.x-tenant}", options, handler: echo },
    { method: "get", path: "/params/:id", key: "p:{params.id}", options, handler: echo },
    { method: "get", path: "/query", key: "q:{query.id}", options, handler: echo },
    { method: "get", path: "/proto", key: "q:{query.__proto__}", options, handler: echo },
  ];

  beforeAll(async () => {
    app = await buildApp[framework](new Redlock(direct, { retryCount: 0 }), routes);
  });

  afterAll(async () => {
    await app?.close();
  });

  it("a value carrying the template's separators gets a key of its own, not another request's", async () => {
    held = gate();
    const both = waitInside(2);
    // tenant "a:o:1" with order 2, and tenant "a" with order "1:o:2", both spell t:a:o:1:o:2 unescaped
    const first = send(`${app.url}/tenants/orders/2`, { method: "POST", headers: { "x-tenant": "a:o:1" } });
    const second = send(`${app.url}/tenants/orders/${encodeURIComponent("1:o:2")}`, {
      method: "POST",
      headers: { "x-tenant": "a" },
    });
    // both hold a lock at once, or one was refused (423) and answered without waiting
    const refused = await Promise.race([both.then(() => undefined), first, second]);
    held.open();
    expect(refused).toBeUndefined();
    const [one, two] = await Promise.all([first, second]);
    expect(JSON.parse(one.text)).toEqual({ resources: ["t:a%3Ao%3A1:o:2"] });
    expect(JSON.parse(two.text)).toEqual({ resources: ["t:a:o:1%3Ao%3A2"] });
  });

  it.each([
    ["a lone high surrogate", "\ud800"],
    ["a lone low surrogate", "\udfff"],
    ["a lone surrogate inside text", "x\ud83dy"],
  ])("%s in a body value is a 400, nothing written", async (_, sku) => {
    const answer = await send(`${app.url}/body`, { method: "POST", body: { sku } });
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.text)).toEqual({ error: 'Lock key part "body.sku" is not well-formed Unicode' });
    expect(await dbsizes()).toEqual([0, 0, 0]);
  });

  it("a 10 KB header and a 1,100-character path parameter are a 400 naming the 1024-character cap", async () => {
    const header = await send(`${app.url}/header`, { headers: { "x-tenant": "h".repeat(10_000) } });
    const param = await send(`${app.url}/params/${"p".repeat(1100)}`);
    for (const answer of [header, param]) {
      expect(answer.status).toBe(400);
      expect(JSON.parse(answer.text).error).toMatch(/is longer than 1024 characters$/);
    }
    expect(await dbsizes()).toEqual([0, 0, 0]);
  });

  it("?id[a]=1, an empty ?id= and {query.__proto__} are a 400, nothing written", async () => {
    for (const path of ["/query?id[a]=1", "/query?id=", "/query?id[]=1", "/proto?__proto__=x"]) {
      const answer = await send(`${app.url}${path}`);
      expect(answer.status, path).toBe(400);
      expect(answer.headers["content-type"]).toMatch(/^application\/json/);
    }
    expect(await dbsizes()).toEqual([0, 0, 0]);
  });
});

describe.each(frameworks)("a key function on a Redis Cluster through %s", (framework) => {
  it("naming resources in different hash slots is a 400, not a 500; in one slot it locks", async () => {
    const client = invariants.track(slots.client());
    // connected, its slots read and its nodes' ids known before the one attempt (retryCount 0): a
    // cold client's first call waits for them, and on a loaded machine its deadline passes first (503)
    await warmUp(new Redlock([client]), { quit: true });
    const dlm = new Redlock([client], { retryCount: 0 });
    const key = (source: HttpKeySource) => {
      const { from, to } = source.params as { from: string; to: string };
      return [`account:${from}`, `account:${to}`];
    };
    const app = invariants.track(
      await buildApp[framework](dlm, [
        { method: "post", path: "/move/:from/:to", key, handler: async () => ({ json: { ok: true } }) },
      ]),
    );
    const crossing = await send(`${app.url}/move/1/2`, { method: "POST" });
    expect(crossing.status).toBe(400);
    expect(JSON.parse(crossing.text)).toEqual({
      error: "Lock key function named resources that cannot be locked together",
    });
    const together = await send(`${app.url}/move/${encodeURIComponent("{a}1")}/${encodeURIComponent("{a}2")}`, {
      method: "POST",
    });
    expect(together.status).toBe(200);
  });

  it("with fencing, naming a resource whose fence counter cannot share its hash slot is a 400, not a 500; a fenceable one locks", async () => {
    const client = invariants.track(slots.client());
    await warmUp(new Redlock([client]), { quit: true });
    // fencing from the Redlock, and from the route's own options
    const dlms = [new Redlock([client], { retryCount: 0, fencing: true }), new Redlock([client], { retryCount: 0 })];
    const key = (source: HttpKeySource) => `account:${(source.params as { id: string }).id}`;
    for (const [i, dlm] of dlms.entries()) {
      const options = i === 0 ? { ttl: 5000 } : { ttl: 5000, fencing: true };
      const app = invariants.track(
        await buildApp[framework](dlm, [
          {
            method: "post",
            path: "/pay/:id",
            key,
            options,
            handler: async (lock) => ({ json: { fence: lock?.fence } }),
          },
        ]),
      );
      // "account:{}1" has an empty tag: it hashes whole, and neither "…:redlock-kit:fence" nor "{account:{}1}:…" would
      const homeless = await send(`${app.url}/pay/${encodeURIComponent("{}1")}`, { method: "POST" });
      expect(homeless.status).toBe(400);
      expect(JSON.parse(homeless.text)).toEqual({
        error: "Lock key names a resource whose fence counter cannot share its hash slot on a Redis Cluster",
      });
      const fenced = await send(`${app.url}/pay/1`, { method: "POST" });
      expect([fenced.status, typeof JSON.parse(fenced.text).fence]).toEqual([200, "string"]);
    }
  });

  it("with fencing, a constant key whose fence counter cannot share its hash slot fails when the route is declared, not as a 400 per request", async () => {
    const client = invariants.track(slots.client());
    const dlms = [new Redlock([client], { retryCount: 0, fencing: true }), new Redlock([client], { retryCount: 0 })];
    const declare = (dlm: Redlock, options: RouteLockOptions<never>) =>
      buildApp[framework](dlm, [
        // "{{}}" is a literal "{}": the key "account:{}1", whose empty tag no counter name can share
        { method: "post", path: "/pay", key: "account:{{}}1", options, handler: async () => ({ json: {} }) },
      ]).then(
        async (app) => {
          await app.close();
          return "declared";
        },
        (error: unknown) => error,
      );
    for (const [dlm, options] of [
      [dlms[0], { ttl: 5000 }],
      [dlms[1], { ttl: 5000, fencing: true }],
    ] as const) {
      const error = await declare(dlm as Redlock, options);
      expect(error).toBeInstanceOf(RangeError);
      expect((error as Error).message).toMatch(
        /key template "account:\{\{\}\}1" cannot be used with this Redlock: a fence counter cannot share the hash slot of "account:\{\}1" on a Redis Cluster/,
      );
    }
    // without fencing it is a key like any other
    expect(await declare(dlms[1] as Redlock, { ttl: 5000 })).toBe("declared");
    expect(await declare(dlms[0] as Redlock, { ttl: 5000, fencing: false })).toBe("declared");
  });
});
