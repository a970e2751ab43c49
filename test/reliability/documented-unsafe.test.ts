/**
 * The cases no Redlock client can prevent (docs/reliability.md §1, "What no client
 * can prevent"; F6, T5, T11), reproduced as such. Each test asserts the reproduction (two
 * holders) AND the signal the library gives the holder that lost its lock. They back the
 * "What Redlock does not promise" section of packages/core/README.md; never make them pass by
 * loosening what they reproduce.
 */
import { fileURLToPath } from "node:url";
import { LockLostError, Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { beforeAll, describe, expect, it } from "vitest";
import { aborted } from "../helpers/aborted.js";
import { useInvariants } from "../helpers/invariants.js";
import { arrival } from "../helpers/lock-events.js";
import { type RedisServer, sleep, useRedisServers } from "../helpers/redis-servers.js";
import { startUntilStopped } from "../helpers/stopped-child.js";
import { warmUp } from "../helpers/warm-up.js";

const cluster = useRedisServers(4);
const invariants = useInvariants(cluster, { maxTtlMs: 3000, lockServers: (servers) => servers.slice(0, 3) });
let direct: Redis[] = [];
let witness: Redis;

beforeAll(async () => {
  direct = cluster.servers.slice(0, 3).map((server) => server.client());
  witness = (cluster.servers[3] as RedisServer).client();
  await warmUp(new Redlock(direct), { quit: true });
});

const node = (i: number) => cluster.servers[i] as RedisServer;
const valuesOf = (key: string) => Promise.all(direct.map((client) => client.get(key)));

/** A holds exactly nodes 0 and 1: node 2 is held by someone else during A's acquire, then freed. */
async function holdOnZeroAndOne(dlm: Redlock, key: string, ttl: number) {
  await direct[2]?.set(key, "clog", "PX", 5000);
  const lock = await dlm.acquire(key, ttl);
  expect(await valuesOf(key)).toEqual([lock.value, lock.value, "clog"]);
  await direct[2]?.del(key);
  return lock;
}

describe("what no Redlock client can prevent, reproduced", () => {
  it("documented-unsafe: a node restarted without persistence forgets A's key, B takes a quorum too; A learns at its next extension", async () => {
    const a = new Redlock(direct, { retryCount: 0 });
    const b = new Redlock(direct, { retryCount: 0 });
    const lockA = await holdOnZeroAndOne(a, "unsafe:restart", 3000);
    invariants.faultInjected();
    await node(1).restart(); // immediately, empty: no AOF
    await direct[1]?.ping();
    // node 1's new connection votes once it said who it is: B's one attempt waits 300 ms for that
    await warmUp(b);
    const lockB = await b.acquire("unsafe:restart", 3000);

    // the reproduction: two holders, each with a quorum and validity left
    await expect.poll(() => valuesOf("unsafe:restart")).toEqual([lockA.value, lockB.value, lockB.value]);
    expect(lockA.valid).toBe(true);
    expect(lockB.valid).toBe(true);

    // the detection: A's next extension finds only one node and reports the loss
    const signal = lockA.signal;
    await expect(lockA.extend(3000)).rejects.toBeInstanceOf(LockLostError);
    expect(lockA.valid).toBe(false);
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBeInstanceOf(LockLostError);
    await lockB.extend(3000);
    expect(await lockA.release()).toBe(false);
    expect(await valuesOf("unsafe:restart")).toEqual([null, lockB.value, lockB.value]);
    expect(await lockB.release()).toBe(true);
  });

  it("documented-unsafe: a server clock jump on one node (emulated with PEXPIRE 1) lets B in; A's auto-extension reports the loss", async () => {
    const a = new Redlock(direct, { retryCount: 0 });
    const b = new Redlock(direct, { retryCount: 0 });
    await direct[2]?.set("unsafe:clock", "clog", "PX", 5000);
    let lockBValue = "";
    let bothValid = false;
    // 10 s: B must get in before A's first auto-extension (half the ttl), which would see the loss
    // first; a loaded machine does not outlast that
    const reason = await a.using("unsafe:clock", 10_000, async (signal, lockA) => {
      expect(await valuesOf("unsafe:clock")).toEqual([lockA.value, lockA.value, "clog"]);
      await direct[2]?.del("unsafe:clock");
      // node 1's clock "steps forward" past A's expiry: its key is gone early
      await direct[1]?.pexpire("unsafe:clock", 1);
      await expect.poll(() => direct[1]?.pttl("unsafe:clock"), { message: "node 1's key never expired" }).toBe(-2);
      const lockB = await b.acquire("unsafe:clock", 10_000);
      lockBValue = lockB.value;
      bothValid = lockA.valid && lockB.valid;
      await arrival(aborted(signal), "A's loss");
      expect(lockA.valid).toBe(false);
      await lockB.release();
      return signal.reason;
    });
    expect(bothValid).toBe(true);
    expect(lockBValue).not.toBe("");
    expect(reason).toBeInstanceOf(LockLostError);
    // A's renewal found only node 0 its own and reported it, at half the ttl: not the validity
    // timer at its end (with no renewal at all, that abort came inside the wait above too)
    expect((reason as Error).message).toMatch(/could not be extended on a quorum \(1 of 3/);
    await expect.poll(() => valuesOf("unsafe:clock")).toEqual([null, null, null]);
  });

  it("documented-unsafe: a client paused (SIGSTOP) past its ttl still 'holds' it when B does; on resume it can tell it lost it", async () => {
    await witness.flushall();
    const holder = fileURLToPath(new URL("../fixtures/paused-holder.mjs", import.meta.url));
    const config = {
      ports: cluster.servers.slice(0, 3).map((server) => server.port),
      witnessPort: node(3).port,
      resource: "unsafe:paused",
      ttl: 500,
    };
    // resolves once the holder sits stopped inside its critical section
    const child = await startUntilStopped(holder, config);
    try {
      expect(await witness.get("w:inflight")).toBe("1");

      const b = invariants.track(new Redlock(direct));
      // waits for the paused holder's 500 ms key to expire: the bound only says it never did
      const lockB = await b.acquire("unsafe:paused", 10_000, { wait: 10_000, retryDelay: 20 });
      // the reproduction: B is in the critical section while the paused holder never left it
      expect(await witness.incr("w:inflight")).toBe(2);

      const { code, stdout, stderr } = await child.resume();
      expect(code, stderr).toBe(0);
      // the detection: on resume the holder sees an invalid lock and an aborted signal; its release touches nothing
      expect(JSON.parse(stdout)).toEqual({
        validOnResume: false,
        remainingOnResume: 0,
        aborted: true,
        reason: "LockLostError",
        released: false,
      });
      await expect.poll(() => valuesOf("unsafe:paused")).toEqual([lockB.value, lockB.value, lockB.value]);
      await witness.decr("w:inflight");
      expect(await lockB.release()).toBe(true);
    } finally {
      await child.kill();
    }
  });
});

describe("the mitigation the README recommends", () => {
  it("a crashed node kept down for longer than the ttl means B gets nothing while A is valid", async () => {
    const a = new Redlock(direct, { retryCount: 0 });
    // Nothing waits for B's per-instance bound (node 1's command is refused, below), so it can be
    // long: at 50 ms, node 0's refusal missed it on a loaded machine, and B's attempt was
    // unavailable instead of refused ('no quorum could be asked')
    const b = new Redlock(direct, { retryCount: 0, instanceTimeout: 2000 });
    // the file's longest ttl: the kill and B's attempt come well within it
    const lockA = await holdOnZeroAndOne(a, "unsafe:delayed", 3000);
    invariants.faultInjected();
    await node(1).kill();
    // once its client saw the close, B's command for node 1 waits in ioredis's offline queue, failed
    // at the second reconnection attempt (maxRetriesPerRequest 1); written to the dead socket
    // before, it would be held for the next connection, and B's call would wait out its bound
    while (direct[1]?.status === "ready") await sleep(5);
    // while A is valid: node 0 refuses, node 1 is down, node 2 alone is no quorum
    expect(await b.lock("unsafe:delayed", 3000)).toBeNull();
    expect(lockA.valid).toBe(true);
    // node 1 stays down for longer than the ttl: until A's key has expired (its validity ends before)
    await expect.poll(() => direct[0]?.pttl("unsafe:delayed"), { message: "A's key never expired" }).toBe(-2);
    expect(lockA.valid).toBe(false);
    await node(1).start();
    const lockB = await b.acquire("unsafe:delayed", 3000);
    expect(await lockB.release()).toBe(true);
  });
});
