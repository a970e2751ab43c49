/**
 * F3, the quorum matrix (redsync's TestMutexQuorum, extended with "down"): every assignment of
 * the 3 nodes to free / held by another value / down (SIGSTOP), one attempt each.
 */
import { LockUnavailableError, Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { beforeAll, describe, expect, it } from "vitest";
import { useInvariants } from "../helpers/invariants.js";
import { useRedisServers } from "../helpers/redis-servers.js";

type NodeState = "free" | "held" | "down";
type Outcome = "acquired" | "contention" | "unavailable";

const TTL = 1000;
const cluster = useRedisServers(3);
// checked after every row: no immortal keys, no leaked locks, handles or rejections
useInvariants(cluster, { maxTtlMs: TTL });
let clients: Redis[] = [];
let dlm: Redlock;

beforeAll(async () => {
  clients = cluster.servers.map((server) => server.client());
  dlm = new Redlock(clients, { retryCount: 0, instanceTimeout: 50 });
  // connected first: on a busy machine a cold connection can take longer than the 50 ms timeout
  await Promise.all(clients.map((client) => client.ping()));
  // load the scripts on every connection, so a late landing is a single EVALSHA behind which the release queues
  await (await dlm.acquire("warm-up", TTL)).release();
});

const STATES: readonly NodeState[] = ["free", "held", "down"];
const rows: NodeState[][] = STATES.flatMap((a) => STATES.flatMap((b) => STATES.map((c) => [a, b, c])));

/** §3 F3 for N = 3, Q = 2: acquired iff #free ≥ Q; contention iff #held ≥ 1 and #free + #held ≥ Q; else unavailable. */
function expected(row: readonly NodeState[]): Outcome {
  const free = row.filter((state) => state === "free").length;
  const held = row.filter((state) => state === "held").length;
  if (free >= 2) return "acquired";
  if (held >= 1 && free + held >= 2) return "contention";
  return "unavailable";
}

describe("quorum matrix, N = 3, retryCount 0", () => {
  it("has 27 rows", () => {
    expect(rows).toHaveLength(27);
    expect(new Set(rows.map((row) => row.join())).size).toBe(27);
  });

  it.each(rows.map((row) => [row.join(" "), expected(row), row] as const))(
    "%s → %s, and none of our values is left behind, even after SIGCONT",
    async (_, outcome, row) => {
      const key = `matrix:${row.join("-")}`;
      const foreign = `other-${row.join("-")}`;
      await Promise.all(
        row.map((state, i) => (state === "held" ? clients[i]?.set(key, foreign, "PX", TTL * 5) : undefined)),
      );
      row.forEach((state, i) => {
        if (state === "down") cluster.servers[i]?.pause();
      });

      const result = await dlm.lock(key, TTL).then(
        (lock) => ({ outcome: lock ? "acquired" : "contention", lock }) as const,
        (error: unknown) => {
          if (error instanceof LockUnavailableError) return { outcome: "unavailable", lock: null } as const;
          throw error;
        },
      );
      expect(result.outcome).toBe(outcome);

      const reachable = async () =>
        Promise.all(row.map((state, i) => (state === "down" ? "(down)" : clients[i]?.get(key))));
      const foreignOnly = row.map((state) => (state === "held" ? foreign : state === "down" ? "(down)" : null));
      if (result.lock) {
        expect(result.lock.valid).toBe(true);
        const value = result.lock.value;
        expect(await reachable()).toEqual(row.map((state, i) => (state === "free" ? value : foreignOnly[i])));
        expect(await result.lock.release()).toBe(true);
      }
      expect(await reachable(), "while the down nodes are still stopped").toEqual(foreignOnly);

      row.forEach((state, i) => {
        if (state === "down") cluster.servers[i]?.resume();
      });
      // the late SET of a stopped node lands now; the release was queued behind it on the same connection
      await Promise.all(clients.map((client) => client.ping()));
      expect(await Promise.all(clients.map((client) => client.get(key))), "after SIGCONT").toEqual(
        row.map((state) => (state === "held" ? foreign : null)),
      );
      // the foreign holder releases too, so that I2 can require an empty keyspace
      await Promise.all(row.map((state, i) => (state === "held" ? clients[i]?.del(key) : undefined)));
    },
  );
});
