/**
 * M2, the thundering start (docs/reliability.md §3; python-redis-lock's test_no_overlap2): 50 OS
 * processes, each with its own Redlock and connections, wait at a barrier (a BLPOP on the witness)
 * and call lock(r, 10 s) at once. Without retries at most one wins and the others are told
 * "contention", never "unavailable". Exactly one wins when one process reached a majority first;
 * when the instances saw different processes first (a split vote, which a busy machine makes
 * likely), nobody wins: Redlock gives no more for one attempt each, and the test says which it saw.
 * With `wait` all of them get it in turn, each for a bounded number of script calls. The same 50
 * processes run both rounds (forking 50 is the slow part here).
 */
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useInvariants } from "../helpers/invariants.js";
import { type RedisServer, useRedisServers } from "../helpers/redis-servers.js";
import { type ForkedWorker, forkWorker, type LockResult, scriptCalls } from "../helpers/workers.js";

const PROCESSES = 50;
const TTL = 10_000;
/** Only a hand-over can serve these waiters within the test: their poll interval is a minute. */
const HAND_OVER_ONLY = { wait: 60_000, retryDelay: 60_000, retryJitter: 0 };

const cluster = useRedisServers(4);
useInvariants(cluster, { maxTtlMs: TTL, lockServers: (servers) => servers.slice(0, 3) });
let direct: Redis[] = [];
let witness: Redis;
let workers: ForkedWorker[] = [];

beforeAll(async () => {
  direct = cluster.servers.slice(0, 3).map((server) => server.client());
  witness = (cluster.servers[3] as RedisServer).client();
  const config = {
    ports: cluster.servers.slice(0, 3).map((server) => server.port),
    witnessPort: (cluster.servers[3] as RedisServer).port,
    resource: "thundering",
    ttl: TTL,
    rounds: [
      { barrier: "start:once", options: { retryCount: 0 }, hold: "until-told" },
      { barrier: "start:wait", options: HAND_OVER_ONLY, hold: "briefly" },
    ],
  };
  workers = Array.from({ length: PROCESSES }, () => forkWorker("one-lock-worker.mjs", config));
  await Promise.all(workers.map((worker) => worker.next("ready")));
  // a cold start costs each process about half a second of CPU: 50 of them on a shared 2-core machine take a while
}, 300_000);

afterAll(async () => {
  await Promise.all(workers.map((worker) => worker.kill()));
});

/** Lets every process past the barrier `key` at once and collects what each lock() call returned. */
async function release(key: string): Promise<LockResult[]> {
  await witness.rpush(key, ...Array.from({ length: PROCESSES }, () => "go"));
  return Promise.all(workers.map((worker) => worker.next<LockResult>("result")));
}

function tally(results: readonly LockResult[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const { outcome } of results) counts[outcome] = (counts[outcome] ?? 0) + 1;
  return counts;
}

describe(`${PROCESSES} processes released by a barrier`, () => {
  it("lock(r, 10 s) with no retries: at most one wins, the others are told contention (never unavailable), nothing is left after its release", async () => {
    const results = await release("start:once");
    const counts = tally(results);
    const winners = counts.acquired ?? 0;
    expect(winners).toBeLessThanOrEqual(1);
    expect(counts).toEqual(winners === 1 ? { acquired: 1, contention: PROCESSES - 1 } : { contention: PROCESSES });
    console.info(`M2 without retries: ${winners === 1 ? "one process won" : "a split vote, nobody won"}`);
    if (winners === 1) {
      const winner = workers[results.findIndex((result) => result.outcome === "acquired")] as ForkedWorker;
      winner.send({ kind: "release" });
      expect((await winner.next<{ released: boolean }>("released")).released).toBe(true);
    }
    // no retries, so nobody queued: not even a queue key is left
    for (const client of direct) expect(await client.dbsize()).toBe(0);
  });

  it("the same 50 with `wait`: all acquire in turn, never two at once, about 3 script calls per acquisition on each instance", async () => {
    const before = await Promise.all(direct.map(scriptCalls));
    const results = await release("start:wait");
    expect(tally(results)).toEqual({ acquired: PROCESSES });
    const done = await Promise.all(
      workers.map((worker) => worker.next<{ released: boolean; overlap: boolean }>("released")),
    );
    expect(done.filter((section) => section.overlap)).toEqual([]);
    expect(done.every((section) => section.released)).toBe(true);
    // per acquisition: the refused attempt that queues, the claim of the handed key, the release
    // (the winner of the start skips the first two); + 3: an attempt that took a key the first
    // release freed before anyone queued there, but no quorum, releases it again. Polling or a
    // herd after each release would need many more.
    const calls = (await Promise.all(direct.map(scriptCalls))).map((count, i) => count - (before[i] ?? 0));
    for (const count of calls) expect(count).toBeLessThanOrEqual(3 * PROCESSES + 3);
    console.info(`M2 with wait: script calls per instance ${calls.join(", ")} for ${PROCESSES} acquisitions`);
    await Promise.all(workers.map((worker) => worker.exited));
    for (const client of direct) expect(await client.dbsize()).toBe(0);
  });
});
