/**
 * Mutual exclusion across OS processes under faults (docs/reliability.md M3–M5): worker processes
 * lock, do a read-modify-write on a witness Redis outside the quorum and count overlaps through an
 * in-flight counter. The faults are injected mid-run: the driver waits for progress on the witness
 * before and after each one, so they never land before the first or after the last section.
 */
import type { Redis } from "ioredis";
import { beforeAll, describe, expect, it } from "vitest";
import { useInvariants } from "../helpers/invariants.js";
import { type RedisServer, sleep, useRedisServers } from "../helpers/redis-servers.js";
import { counter, runWorkers, sum, untilCounter, type WorkerConfig } from "../helpers/workers.js";

const TTL = 1000;
const cluster = useRedisServers(4);
const invariants = useInvariants(cluster, { maxTtlMs: TTL, lockServers: (servers) => servers.slice(0, 3) });
let witness: Redis;

beforeAll(() => {
  witness = (cluster.servers[3] as RedisServer).client();
});

const node = (i: number) => cluster.servers[i] as RedisServer;
const base = (): WorkerConfig => ({
  ports: cluster.servers.slice(0, 3).map((server) => server.port),
  witnessPort: node(3).port,
  ttl: TTL,
  instanceTimeout: 50,
});

/** Runs `processes` workers on one resource until the driver has injected its fault and seen progress after it. */
async function underFault(processes: number, inject: () => Promise<void>) {
  await witness.flushall();
  const config = { ...base(), resource: "shared", stopKey: "w:stop" };
  const reports = runWorkers(Array.from({ length: processes }, () => config));
  try {
    await untilCounter(witness, "w:counter", 10);
    await inject();
    await untilCounter(witness, "w:counter", (await counter(witness, "w:counter")) + 10);
  } finally {
    await witness.set("w:stop", "1");
  }
  return reports;
}

describe("mutual exclusion across processes, with a witness Redis", () => {
  it("holds with a minority stopped mid-run (SIGSTOP), and progress continues while it is stopped", async () => {
    invariants.faultInjected();
    const reports = await underFault(4, async () => {
      node(2).pause();
      try {
        // liveness: the two other nodes keep granting the lock
        await untilCounter(witness, "w:counter", (await counter(witness, "w:counter")) + 5);
      } finally {
        node(2).resume();
      }
    });
    const done = await reports;
    expect(sum(done, "overlaps")).toBe(0);
    expect(sum(done, "expiredInside")).toBe(0);
    expect(await counter(witness, "w:counter")).toBe(sum(done, "acquired"));
    expect(await counter(witness, "w:inflight")).toBe(0);
  }, 60_000);

  it("holds with a minority crashed (kill -9) and restarted empty only after the largest ttl", async () => {
    invariants.faultInjected();
    const reports = await underFault(4, async () => {
      await node(2).kill();
      const crashedAt = performance.now();
      await untilCounter(witness, "w:counter", (await counter(witness, "w:counter")) + 5);
      // a delayed restart: every key the crashed node held has expired everywhere before it returns
      await sleep(Math.max(0, TTL + 100 - (performance.now() - crashedAt)));
      await node(2).start();
    });
    const done = await reports;
    expect(sum(done, "overlaps")).toBe(0);
    expect(sum(done, "expiredInside")).toBe(0);
    expect(await counter(witness, "w:counter")).toBe(sum(done, "acquired"));
  }, 60_000);

  it("holds for overlapping multi-resource locks [a,b], [b,c], [b,a], without deadlock", async () => {
    await witness.flushall();
    const sets = [
      ["a", "b"],
      ["b", "c"],
      ["b", "a"],
    ];
    const iterations = 15;
    const done = await runWorkers(sets.map((resources) => ({ ...base(), resources, iterations })));
    expect(sum(done, "overlaps")).toBe(0);
    expect(done.map((report) => report.acquired)).toEqual([iterations, iterations, iterations]);
    // each resource's counter saw exactly the sections that held it
    expect(await counter(witness, "w:counter:a")).toBe(2 * iterations);
    expect(await counter(witness, "w:counter:b")).toBe(3 * iterations);
    expect(await counter(witness, "w:counter:c")).toBe(iterations);
  }, 60_000);
});
