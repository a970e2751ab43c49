/**
 * F3, the quorum matrix (redsync's TestMutexQuorum, extended with "down"), for N instances: every
 * assignment of each node to free / held by another value / down (SIGSTOP), one attempt each,
 * 3^N rows. A stopped node costs one per-instance timeout. The rows that stop the same nodes run at
 * once, under one pause; the sets of stopped nodes run LANES at a time, each on its own N servers
 * with its own Redlock (a pause on one lane's servers is never seen by another's rows), one test
 * per LANES sets. The Redlocks' instances are ioredis clients, or node-redis clients (the `redis`
 * package); the test itself reads and writes through ioredis either way.
 */
import { LockUnavailableError, Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useInvariants } from "./invariants.js";
import { closeNodeRedis, connectedNodeRedis, type NodeRedisClient } from "./node-redis.js";
import { type RedisServer, useRedisServers } from "./redis-servers.js";

export type NodeState = "free" | "held" | "down";
export type Outcome = "acquired" | "contention" | "unavailable";

const STATES: readonly NodeState[] = ["free", "held", "down"];

/** Every assignment of the three states to `n` nodes. */
export function matrixRows(n: number): NodeState[][] {
  let rows: NodeState[][] = [[]];
  for (let i = 0; i < n; i++) rows = rows.flatMap((row) => STATES.map((state) => [...row, state]));
  return rows;
}

/** §3 F3: acquired iff #free ≥ Q; contention iff #held ≥ 1 and #free + #held ≥ Q; else unavailable. */
export function expectedOutcome(row: readonly NodeState[]): Outcome {
  const quorum = Math.floor(row.length / 2) + 1;
  const free = row.filter((state) => state === "free").length;
  const held = row.filter((state) => state === "held").length;
  if (free >= quorum) return "acquired";
  if (held >= 1 && free + held >= quorum) return "contention";
  return "unavailable";
}

const keyOf = (row: readonly NodeState[]) => `matrix:${row.join("-")}`;
/** The value a row's "held" nodes hold, another client's. */
const foreignOf = (row: readonly NodeState[]) => `other-${row.join("-")}`;

/** The rows grouped by the nodes they stop (the same states in the same places): `matrixRows` order within a group. */
export function rowsByStopped(rows: readonly NodeState[][]): NodeState[][][] {
  const groups = new Map<string, NodeState[][]>();
  for (const row of rows) {
    const stopped = row.map((state) => (state === "down" ? "down" : "up")).join(" ");
    groups.set(stopped, [...(groups.get(stopped) ?? []), row]);
  }
  return [...groups.values()];
}

/**
 * How many sets of stopped nodes run at once, each on its own servers: a set costs two per-instance
 * timeouts of waiting (the attempts, then the give-backs), not CPU, so lanes overlap those waits.
 */
const LANES = 4;

/** `items` in consecutive batches of `size`. */
function batchesOf<T>(items: readonly T[], size: number): T[][] {
  return Array.from({ length: Math.ceil(items.length / size) }, (_, i) => items.slice(i * size, (i + 1) * size));
}

/** A set of stopped nodes as the test names show it: `· down ·`. */
const stoppedLabel = (group: readonly NodeState[][]) =>
  (group[0] as NodeState[]).map((state) => (state === "down" ? "down" : "·")).join(" ");

/** One lane: its own `n` servers, the test's ioredis clients of them, and a Redlock locking on them. */
interface Lane {
  servers: RedisServer[];
  clients: Redis[];
  nodeRedis: NodeRedisClient[];
  dlm: Redlock;
}

/** Declares the matrix's tests for LANES × `n` redis-servers started for the calling test file, locked through `library`'s clients. */
export function describeQuorumMatrix(n: number, library: "ioredis" | "node-redis" = "ioredis"): void {
  // long enough that a row's lock is still valid when read after a slow quorum (nothing waits for it to expire)
  const TTL = 5000;
  const cluster = useRedisServers(n * LANES);
  // checked after every test (LANES sets of stopped nodes): no immortal keys, no leaked locks, handles or rejections
  useInvariants(cluster, { maxTtlMs: TTL });
  let lanes: Lane[] = [];
  /** Resolves once every command `lane`'s Redlock sent has been answered. */
  const settled = (lane: Lane) =>
    Promise.all([...lane.clients.map((client) => client.ping()), ...lane.nodeRedis.map((client) => client.ping())]);
  const rows = matrixRows(n);
  const quorum = Math.floor(n / 2) + 1;
  const batches = batchesOf(rowsByStopped(rows), LANES);

  beforeAll(async () => {
    lanes = await Promise.all(
      Array.from({ length: LANES }, async (_, i) => {
        const servers = cluster.servers.slice(i * n, (i + 1) * n);
        const clients = servers.map((server) => server.client());
        const nodeRedis =
          library === "node-redis" ? await connectedNodeRedis(servers.map((server) => server.port)) : [];
        // A live node's answer must come within the per-instance timeout, or it counts as down and the
        // row's outcome changes: at 100 ms, a "held" or "free" node's answer missed it beside a test
        // file and two CPU hogs on 2 vCPUs ('expected unavailable to be contention'). 1 s is ten times
        // that margin; what it costs is paid once per set of stopped nodes (the attempts, then the
        // give-backs, wait it out), as their rows run at once, not once per row.
        const dlm = new Redlock(library === "node-redis" ? nodeRedis : clients, {
          retryCount: 0,
          instanceTimeout: 1000,
        });
        const lane = { servers, clients, nodeRedis, dlm };
        // connected first: a cold connect on a busy machine can take longer than the timeout
        await settled(lane);
        // load the scripts on every connection, so a late landing is a single command behind which the release queues
        await (await dlm.acquire("warm-up", TTL)).release();
        return lane;
      }),
    );
  });

  afterAll(() => closeNodeRedis(lanes.flatMap((lane) => lane.nodeRedis)));

  /** The row's one attempt on `lane`, its lock released, checked while its stopped nodes are still stopped. */
  const lockWhileStopped = async ({ clients, nodeRedis, dlm }: Lane, row: readonly NodeState[]) => {
    const key = keyOf(row);
    const foreign = foreignOf(row);
    const result = await dlm.lock(key, TTL).then(
      (lock) => ({ outcome: lock ? "acquired" : "contention", lock }) as const,
      (error: unknown) => {
        if (error instanceof LockUnavailableError) return { outcome: "unavailable", lock: null } as const;
        throw error;
      },
    );
    expect(result.outcome, row.join(" ")).toBe(expectedOutcome(row));
    // The lock and its release resolve at a quorum; on node-redis clients the last free node's
    // command is on another connection than the reads below: answered first, it has landed.
    const reachable = async () => {
      await Promise.all(row.map((state, i) => (state === "down" ? undefined : nodeRedis[i]?.ping())));
      return Promise.all(row.map((state, i) => (state === "down" ? "(down)" : clients[i]?.get(key))));
    };
    const foreignOnly = row.map((state) => (state === "held" ? foreign : state === "down" ? "(down)" : null));
    if (result.lock) {
      expect(result.lock.valid, row.join(" ")).toBe(true);
      const value = result.lock.value;
      expect(await reachable(), row.join(" ")).toEqual(
        row.map((state, i) => (state === "free" ? value : foreignOnly[i])),
      );
      expect(await result.lock.release(), row.join(" ")).toBe(true);
    }
    expect(await reachable(), `${row.join(" ")} while the down nodes are still stopped`).toEqual(foreignOnly);
  };

  /** One set of stopped nodes on `lane`: every row's attempt under one pause, then the reads after SIGCONT. */
  const runStopped = async (lane: Lane, group: readonly NodeState[][]) => {
    const { servers, clients } = lane;
    const stopped = (group[0] as NodeState[]).map((state) => state === "down");
    await Promise.all(
      group.flatMap((row) =>
        row.map((state, i) =>
          state === "held" ? clients[i]?.set(keyOf(row), foreignOf(row), "PX", TTL * 5) : undefined,
        ),
      ),
    );
    stopped.forEach((down, i) => {
      if (down) servers[i]?.pause();
    });

    await Promise.all(group.map((row) => lockWhileStopped(lane, row)));

    stopped.forEach((down, i) => {
      if (down) servers[i]?.resume();
    });
    // the late SET of a stopped node lands now; the release was queued behind it on the same connection
    await settled(lane);
    for (const row of group) {
      const key = keyOf(row);
      expect(await Promise.all(clients.map((client) => client.get(key))), `${row.join(" ")} after SIGCONT`).toEqual(
        row.map((state) => (state === "held" ? foreignOf(row) : null)),
      );
      // the foreign holder releases too, so that I2 can require an empty keyspace
      await Promise.all(row.map((state, i) => (state === "held" ? clients[i]?.del(key) : undefined)));
    }
  };

  describe(`quorum matrix, N = ${n}, Q = ${quorum}, retryCount 0, ${library} clients`, () => {
    it(`has ${3 ** n} rows, each set of stopped nodes in one test`, () => {
      expect(rows).toHaveLength(3 ** n);
      expect(new Set(rows.map((row) => row.join())).size).toBe(3 ** n);
      expect(rowsByStopped(rows).flat()).toHaveLength(3 ** n);
      expect(batches.flat()).toEqual(rowsByStopped(rows));
      expect(batches.every((batch) => batch.length <= LANES)).toBe(true);
    });

    it.each(batches.map((batch) => [batch.map(stoppedLabel).join(" | "), batch] as const))(
      "stopped: %s → each row's outcome, and none of our values is left behind, even after SIGCONT",
      async (_, batch) => {
        // every lane done before the test ends, even when one failed: heal() then finds nothing still running
        const done = await Promise.allSettled(batch.map((group, i) => runStopped(lanes[i] as Lane, group)));
        for (const lane of done) if (lane.status === "rejected") throw lane.reason;
      },
    );
  });
}
