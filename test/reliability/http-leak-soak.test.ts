/**
 * Leak soak (docs/reliability.md, L4): on each adapter, 1,000 sequential
 * requests on distinct keys, then 1,000 at concurrency 100 on 100 keys (three requests in a row on
 * one key, so that many meet a holder), of which every tenth (by
 * index: reproducible) has a handler that throws and every twentieth a client that leaves while its
 * handler runs. The ttl outlasts the test, so a lock not released cannot pass for one that expired.
 */
import { once } from "node:events";
import { setImmediate as tick } from "node:timers/promises";
import { Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { describe, expect, it, vi } from "vitest";
import { buildApp, type Framework, type RouteSpec } from "../helpers/http-apps.js";
import { open } from "../helpers/http-client.js";
import { keysLeft } from "../helpers/http-load.js";
import { useInvariants } from "../helpers/invariants.js";
import { countLockEvents } from "../helpers/lock-events.js";
import { useRedisServers } from "../helpers/redis-servers.js";

const TTL = 60_000;
const cluster = useRedisServers(3);
const invariants = useInvariants(cluster, { maxTtlMs: TTL });

type Kind = "ok" | "throw" | "abort";
/** 10 % throw, 5 % leave (the two sets are disjoint), the rest answer 200. */
const kindOf = (i: number): Kind => (i % 10 === 3 ? "throw" : i % 20 === 7 ? "abort" : "ok");

/** Resolvers of the "abort" handlers' entry, by request index (the `i` query parameter). */
const entered = new Map<number, () => void>();

const routes: RouteSpec[] = [
  {
    method: "get",
    path: "/ok/:id",
    key: "soak:{params.id}",
    options: { ttl: TTL },
    handler: async () => {
      await tick();
      return { json: { ok: true } };
    },
  },
  {
    method: "get",
    path: "/throw/:id",
    key: "soak:{params.id}",
    options: { ttl: TTL },
    handler: async () => {
      await tick();
      throw new Error("soak handler failure");
    },
  },
  {
    // runs until the server has seen its client leave, then answers into the closed response
    method: "get",
    path: "/abort/:id",
    key: "soak:{params.id}",
    options: { ttl: TTL },
    handler: async (_lock, { req, res }) => {
      const left = once(res, "close");
      entered.get(Number(new URL(req.url ?? "", "http://x").searchParams.get("i")))?.();
      await left;
      return { json: { late: true } };
    },
  },
];

/** Request `i` on `key`: its status, or "left" when its client disconnected inside the handler. */
async function request(url: string, i: number, key: string): Promise<number | "left"> {
  const kind = kindOf(i);
  const inHandler = new Promise<"entered">((resolve) => entered.set(i, () => resolve("entered")));
  const { request: outgoing, response } = open(`${url}/${kind}/${key}?i=${i}`);
  outgoing.on("error", () => {});
  try {
    const first = await Promise.race([inHandler, response]);
    if (first === "entered") {
      outgoing.destroy();
      return "left";
    }
    first.resume();
    await once(first, "end");
    return first.statusCode ?? 0;
  } finally {
    entered.delete(i);
  }
}

type Outcomes = Record<Kind, Map<number | "left", number>>;
const record = (outcomes: Outcomes, i: number, outcome: number | "left") => {
  const seen = outcomes[kindOf(i)];
  seen.set(outcome, (seen.get(outcome) ?? 0) + 1);
};
const newOutcomes = (): Outcomes => ({ ok: new Map(), throw: new Map(), abort: new Map() });
const asObject = (outcomes: Outcomes) =>
  Object.fromEntries(Object.entries(outcomes).map(([kind, seen]) => [kind, Object.fromEntries(seen)]));

const frameworks: Framework[] = ["express", "koa", "fastify", "hono"];

describe.each(frameworks)("%s leak soak", (framework) => {
  it("1,000 sequential and 1,000 concurrent requests on 100 keys, 10 % throwing and 5 % left by their client: 200/423/500 only, every lock released once, nothing left", async () => {
    const clients: Redis[] = cluster.servers.map((server) => invariants.client(server));
    // The claim is about leaks, under load: an instance slower to answer than the default bound (a
    // tenth of the ttl, at most 1 s) is a 503, which a starved machine (both vCPUs taken by other
    // processes, load 12) produced once. A bound far above any stall keeps every answer 200/423/500.
    const dlm = new Redlock(clients, { instanceTimeout: 10_000 });
    // Express's final handler logs each 500's stack: the throws are planned, anything else fails below
    const logged = vi.spyOn(console, "error").mockImplementation(() => {});
    const events = countLockEvents((resource) => resource.startsWith("soak:"));
    const app = await buildApp[framework](dlm, routes);
    try {
      const sequential = newOutcomes();
      for (let i = 0; i < 1000; i++) record(sequential, i, await request(app.url, i, `s${i}`));
      // nothing contends here: every outcome is the one its index asked for
      expect(asObject(sequential)).toEqual({ ok: { 200: 850 }, throw: { 500: 100 }, abort: { left: 50 } });

      const concurrent = newOutcomes();
      let next = 1000;
      await Promise.all(
        Array.from({ length: 100 }, async () => {
          while (next < 2000) {
            const i = next++;
            record(concurrent, i, await request(app.url, i, `c${Math.floor(i / 3) % 100}`));
          }
        }),
      );
      const seen = JSON.stringify(asObject(concurrent));
      // a request either got its key (and answered as its kind) or was told 423
      expect(
        [...concurrent.ok.keys()].filter((s) => s !== 200 && s !== 423),
        seen,
      ).toEqual([]);
      expect(
        [...concurrent.throw.keys()].filter((s) => s !== 500 && s !== 423),
        seen,
      ).toEqual([]);
      expect(
        [...concurrent.abort.keys()].filter((s) => s !== "left" && s !== 423),
        seen,
      ).toEqual([]);
      // the faults were injected under contention too
      expect(concurrent.ok.get(423) ?? 0, seen).toBeGreaterThan(0);
      expect(concurrent.throw.get(500) ?? 0, seen).toBeGreaterThan(0);
      expect(concurrent.abort.get("left") ?? 0, seen).toBeGreaterThan(0);

      // drained: every lock taken has been released (the left ones once their handler ended), each
      // by one release call, while it was still held
      await expect.poll(() => events.released, { timeout: 20_000 }).toBe(events.acquired);
      expect(events.acquired).toBeGreaterThanOrEqual(850 + 100 + 50);
      expect(events.releaseCalls).toBe(events.acquired);
      expect(events.notHeld).toBe(0);
      // a release resolves at a quorum with the third instance's DEL already sent on these
      // connections: read behind it, nothing is left (the ttl is a minute, so none expired)
      expect(await keysLeft(clients)).toEqual([]);
      expect(logged.mock.calls.map(String).filter((call) => !call.includes("soak handler failure"))).toEqual([]);
    } finally {
      logged.mockRestore();
      events.stop();
      await app.close();
      await dlm.quit();
    }
    // I3 (no handle left once the server closed and the Redlock and clients quit) and I4 (no
    // unhandled rejection, no write-after-end) are checked after the test by useInvariants
  }, 180_000);
});
