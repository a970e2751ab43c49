/**
 * Fencing under instance loss (docs/fencing.md, "What it survives" and "What breaks it"): a
 * minority of instances killed (SIGKILL) and restarted empty between acquisitions leaves fences
 * increasing; a majority restarted empty is the documented failure, reproduced; the same majority
 * restart with appendonly + appendfsync always is survived.
 */
import { fencedGet, fencedSet, type Lock, Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { useInvariants } from "../helpers/invariants.js";
import { type RedisServer, sleep, useRedisServers } from "../helpers/redis-servers.js";
import { warmUp } from "../helpers/warm-up.js";

const cluster = useRedisServers(5);
const persistent = useRedisServers(3, { args: ["--appendonly", "yes", "--appendfsync", "always"] });
const invariants = useInvariants(cluster, { maxTtlMs: 2000 });

afterEach(async () => {
  for (const server of persistent.servers) if (!server.running) await server.start();
  await Promise.all(persistent.servers.map((server) => invariants.client(server).flushall()));
});

const counter = (resource: string) => `${resource}:redlock-kit:fence`;

/**
 * A fenced Redlock over `servers`, closed after the test, with its clients connected and warmed
 * (a first 1 s lock waits 100 ms for them to say who they are). No offline queue: a command for a
 * dead instance fails at once instead of landing on it after its restart, so a restarted instance
 * really comes back without its counters.
 * The tests count fences exactly, and every attempt moves the counters where it took the key: an
 * answer later than the default bound (10% of the ttl) on a loaded machine would silently retry and
 * shift them. So no retry (a call with `wait` still tries again: those wait for a holder) and a
 * bound below the shortest ttl here (500 ms).
 */
async function fencedOn(servers: readonly RedisServer[]): Promise<{ dlm: Redlock; clients: Redis[] }> {
  const clients = servers.map((server) => invariants.client(server, { enableOfflineQueue: false }));
  await Promise.all(clients.map(untilConnected));
  const dlm = invariants.track(
    new Redlock(clients, { fencing: true, retryCount: 0, instanceTimeout: 400, retryDelay: 20, retryJitter: 20 }),
  );
  await warmUp(dlm);
  return { dlm, clients };
}

/** Resolves once `client` (re)connected: without an offline queue, a command before that fails. */
async function untilConnected(client: Redis): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      await client.ping();
      return;
    } catch (error) {
      if (i >= 250) throw error;
      await sleep(20);
    }
  }
}

/**
 * Resolves once `client` saw its connection close. The server's exit comes first: a command written
 * before the client noticed would be in flight on a dead socket, and ioredis sends it again on the
 * next connection, landing on the server after its restart (an acquisition there raises its empty
 * counter to 1).
 */
async function untilDisconnected(client: Redis): Promise<void> {
  while (client.status === "ready") await sleep(5);
}

/** Kills `victims` with SIGKILL and starts them again with nothing: no persistence, every key gone. */
async function restartEmpty(victims: readonly RedisServer[], clients: readonly Redis[]): Promise<void> {
  invariants.faultInjected();
  await Promise.all(victims.map((victim) => victim.restart()));
  await Promise.all(clients.map(untilConnected));
}

describe.each([3, 5])("a minority of %i instances killed and restarted empty between acquisitions", (count) => {
  it("leaves fences increasing: the instances that kept their counters are in every quorum, and the write-back re-seeds the others", async () => {
    const servers = cluster.servers.slice(0, count);
    const { dlm, clients } = await fencedOn(servers);
    const minority = Math.floor((count - 1) / 2);
    const fences: bigint[] = [];
    const next = async () => {
      const lock = await dlm.acquire("rotating", 1000, { wait: 5000 });
      fences.push(BigInt(lock.fence as string));
      await lock.release();
    };
    await next();
    // each instance in turn is among the victims
    for (let round = 0; round < count; round++) {
      const victims = Array.from({ length: minority }, (_, k) => servers[(round + k) % count] as RedisServer);
      const emptied = victims.map((victim) => clients[servers.indexOf(victim)] as Redis);
      // the last acquisition's write-back and release resolved at a quorum: a victim behind it still
      // has them in flight, and ioredis sends them again once it restarted empty (its counter raised)
      await Promise.all(emptied.map((client) => client.ping()));
      invariants.faultInjected();
      await Promise.all(victims.map((victim) => victim.kill()));
      await Promise.all(emptied.map(untilDisconnected));
      await next(); // while they are down
      await Promise.all(victims.map((victim) => victim.start()));
      await Promise.all(emptied.map(untilConnected));
      expect(await Promise.all(emptied.map((client) => client.get(counter("rotating"))))).toEqual(
        victims.map(() => null),
      );
      // their new connections vote once they said who they are: the acquisition below waits 100 ms
      // for that, and one that does not vote gets no write-back
      await warmUp(dlm);
      await next(); // with them back, empty
      // the write-back reached the restarted instances too: no instance is left behind
      const last = String(fences[fences.length - 1]);
      await expect
        .poll(() => Promise.all(clients.map((client) => client.get(counter("rotating")))))
        .toEqual(clients.map(() => last));
    }
    expect(fences).toHaveLength(1 + 2 * count);
    expect(
      fences.every((fence, i) => i === 0 || fence > (fences[i - 1] as bigint)),
      fences.join(" "),
    ).toBe(true);
  }, 30_000);
});

/** The newer holder writes, then the stale one: a storage outside the quorum keeps the newer write. */
async function expectStaleWriteRefused(key: string, newer: Lock, stale: Lock): Promise<void> {
  const resource = invariants.client(cluster.servers[3] as RedisServer);
  expect(await fencedSet(resource, key, "written by B", newer.fence)).toBe(true);
  expect(await fencedSet(resource, key, "written by stale A", stale.fence)).toBe(false);
  await resource.del(key);
}

describe("a minority of 3 restarted empty after a write-back one instance refused", () => {
  it("leaves fences increasing: the write-back raised the counter of the instance that held the key for another owner too", async () => {
    const servers = cluster.servers.slice(0, 3);
    const { dlm: dlmA, clients } = await fencedOn(servers);
    // a holder that took the key on instance 2 alone and crashed: its key outlives A's acquisitions there
    await (clients[2] as Redis).set("ledger", "crashed holder", "PX", 60_000);
    for (let i = 0; i < 2; i++) await (await dlmA.acquire("ledger", 1000)).release();
    // every instance up and answering A's write-back: 0 and 1 confirm, 2 refuses (the crashed holder's key)
    const a: Lock = await dlmA.acquire("ledger", 10_000);
    let b: Lock | undefined;
    try {
      expect(a.fence).toBe("3");
      // A stalls with its lock; one instance of three (a minority) restarts without persistence,
      // and the crashed holder's key on instance 2 runs out
      await restartEmpty([servers[1] as RedisServer], clients);
      await (clients[2] as Redis).del("ledger");
      // B, another process: instance 0 still holds A's key, 1 and 2 give B its quorum
      const { dlm: dlmB } = await fencedOn(servers);
      b = await dlmB.acquire("ledger", 2000, { wait: 5000 });
      expect(BigInt(b.fence as string)).toBeGreaterThan(BigInt(a.fence as string));
      await expectStaleWriteRefused("ledger:data", b, a);
    } finally {
      await Promise.all([a.release(), b?.release()]);
    }
  });
});

describe("maxmemory-policy volatile-lru at the memory limit", () => {
  it("evicts a held lock's key (a second holder gets in) but never a counter: B's fence is above A's", async () => {
    const servers = cluster.servers.slice(0, 3);
    const { dlm, clients } = await fencedOn(servers);
    for (let i = 0; i < 2; i++) await (await dlm.acquire("evicted", 1000)).release();
    const a: Lock = await dlm.acquire("evicted", 10_000);
    let b: Lock | undefined;
    try {
      await expect
        .poll(() => Promise.all(clients.map((client) => client.get("evicted"))))
        .toEqual(clients.map(() => a.value));
      // two of three instances reach their memory limit: Redis evicts keys with an expiry (A's) to make room
      invariants.faultInjected();
      for (const client of clients.slice(0, 2)) {
        await client.config("SET", "maxmemory-policy", "volatile-lru");
        await client.config("SET", "maxmemory", "1");
        await expect(client.set("filler", "x")).rejects.toThrow(/OOM/);
        await client.config("SET", "maxmemory", "0");
        await client.config("SET", "maxmemory-policy", "noeviction");
      }
      expect(await Promise.all(clients.map((client) => client.get("evicted")))).toEqual([null, null, a.value]);
      const { dlm: other } = await fencedOn(servers);
      b = await other.acquire("evicted", 2000);
      // the two-holder failure of an eviction; the counters had no expiry and stayed: the fences still order them
      expect(a.valid && b.valid).toBe(true);
      expect({ a: a.fence, b: b.fence }).toEqual({ a: "3", b: "4" });
      await expectStaleWriteRefused("evicted:data", b, a);
    } finally {
      await Promise.all([a.release(), b?.release()]);
    }
  });
});

/**
 * A takes the lock on three instances and stalls with it; two of the three restart (empty, or from
 * their AOF); B then takes the lock. Returns both locks and the fence A's predecessors reached.
 */
async function majorityRestartUnderHolder(servers: readonly RedisServer[], ttlA: number) {
  const { dlm, clients } = await fencedOn(servers);
  for (let i = 0; i < 3; i++) await (await dlm.acquire("account", 1000)).release();
  const a: Lock = await dlm.acquire("account", ttlA);
  // acquire() resolved with a quorum: the third SET may still be on its way, and a victim that
  // died before applying it would come back without A's key whatever its persistence
  await expect
    .poll(() => Promise.all(clients.map((client) => client.get("account"))))
    .toEqual(clients.map(() => a.value));
  await restartEmpty(servers.slice(0, 2), clients);
  // B's attempts count a restarted instance's vote only once its new connection said who it is:
  // one that came in later than the other would have raised its counter in an attempt that failed
  await warmUp(dlm);
  const b: Lock = await dlm.acquire("account", 2000, { wait: 5000 });
  return { a, b, clients };
}

describe("a majority restarted", () => {
  it("documented-unsafe: empty (no persistence), B's fence goes back below A's, and the storage takes A's stale write over B's", async () => {
    const { a, b, clients } = await majorityRestartUnderHolder(cluster.servers.slice(0, 3), 2000);
    expect(a.fence).toBe("4");
    // instances 0 and 1 forgot A's key and every counter: B's quorum is those two, at 1
    expect(b.fence).toBe("1");
    // the two-holder failure of an unpersisted restart, and now the fences cannot tell them apart either
    expect(a.valid && b.valid).toBe(true);
    const resource = clients[2] as Redis;
    expect(await fencedSet(resource, "account:data", "written by B", b.fence)).toBe(true);
    expect(await fencedSet(resource, "account:data", "written by stale A", a.fence)).toBe(true);
    expect((await fencedGet(resource, "account:data"))?.value).toBe("written by stale A");
    await resource.del("account:data");
    await b.release();
  });

  it("with appendonly yes and appendfsync always: A's key and the counters come back, B waits for A and gets a greater fence", async () => {
    const { a, b, clients } = await majorityRestartUnderHolder(persistent.servers, 500);
    expect(a.fence).toBe("4");
    // 5, or more if an attempt of B reached the instances just as A's key expired and took it on one
    // of them only: that raised the counter there too
    expect(BigInt(b.fence as string)).toBeGreaterThan(4n);
    expect(a.valid).toBe(false);
    const resource = clients[2] as Redis;
    expect(await fencedSet(resource, "account:data", "written by B", b.fence)).toBe(true);
    expect(await fencedSet(resource, "account:data", "written by stale A", a.fence)).toBe(false);
    expect((await fencedGet(resource, "account:data"))?.value).toBe("written by B");
    await b.release();
  });
});
