/**
 * A Redlock subscribes to its hand-over channel when a call of its own first waits, and goes on once
 * a quorum of the SUBSCRIBEs answered (src/waiting/hand-over.ts). On an instance whose SUBSCRIBE has
 * not landed yet, a release finds nobody on the channel and skips the waiters queued there: once that SUBSCRIBE lands, a waiter that may have been skipped tries
 * once, as after a reconnect (docs/waiting.md).
 */
import type { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { type DelayProxy, startDelayProxy } from "#test-helpers/delay-proxy.js";
import { queueOf } from "#test-helpers/queues.js";
import { type RedisServer, sleep, useRedisServers } from "#test-helpers/redis.js";
import { scriptCalls } from "#test-helpers/workers.js";
import { RedisStore, Redlock } from "../src/index.js";
import { subscriberThrough } from "./helpers/subscriber-through.js";

const harness = useRedisServers(3);

/** A poll interval so long that only a hand-over, or a SUBSCRIBE landing, can wake a waiter within the test. */
const NO_POLLING = { retryDelay: 60_000, retryJitter: 0 };

/**
 * Runs `test` with 3 servers and a waiting Redlock whose SUBSCRIBE on instance 2 waits in a proxy
 * (`proxy.releaseCommands()` lets it land), polling once a minute and holding a handed key for a
 * minute before it tries again (a single hand-over does not wake it within the test either).
 */
async function lateOnInstance2(
  library: "ioredis" | "node-redis",
  test: (parts: { admins: Redis[]; proxy: DelayProxy; dlm: Redlock; holder: Redlock }) => Promise<void>,
): Promise<void> {
  const servers = harness.servers as RedisServer[];
  const admins = servers.map((server) => server.client());
  const holder = new Redlock(servers.map((server) => server.client()));
  const proxy = await startDelayProxy((servers[2] as RedisServer).port);
  proxy.holdCommandsWhen = (chunk) => /subscribe/i.test(chunk.toString());
  const last = await subscriberThrough(library, servers[2] as RedisServer, proxy);
  const clients = [servers[0]?.client(), servers[1]?.client(), last.client] as Redis[];
  const dlm = new Redlock(clients, { ...NO_POLLING, instanceTimeout: 30_000 });
  try {
    await test({ admins, proxy, dlm, holder });
  } finally {
    proxy.releaseCommands();
    await Promise.all([dlm.quit(), holder.quit()]);
    last.close();
    await proxy.close();
  }
}

const WAIT = () => ({ wait: 60_000, signal: AbortSignal.timeout(15_000) });

describe("a first SUBSCRIBE that lands after the waiter went on", () => {
  it.each(["ioredis", "node-redis"] as const)(
    "%s: a release there meanwhile skipped the waiter; once it lands, the waiter tries once and takes the key",
    (library) =>
      lateOnInstance2(library, async ({ admins, proxy, dlm, holder }) => {
        const key = `late:${library}`;
        // another owner holds instance 0 for good: the waiter needs instances 1 and 2
        await admins[0]?.set(key, "other", "PX", 60_000);
        const held = await holder.acquire(key, 60_000);
        const waiting = dlm.acquire(key, 60_000, WAIT());
        waiting.catch(() => {});
        // it went on at a quorum of SUBSCRIBEs and queued on every instance, instance 2 included
        await expect.poll(() => Promise.all(admins.map((admin) => admin.zcard(queueOf(key))))).toEqual([1, 1, 1]);
        await expect.poll(() => proxy.heldCommandBytes).toBeGreaterThan(0);
        // instance 1 hands the key over; instance 2 finds nobody on the channel, skips the waiter,
        // and leaves the key free
        expect(await holder.unlock(held)).toBe(true);
        await expect.poll(() => admins[2]?.exists(key, queueOf(key))).toBe(0);
        const before = await scriptCalls(admins[2] as Redis);
        proxy.releaseCommands();
        // the SUBSCRIBE lands: the waiter tries once and takes instance 2, claiming instance 1
        const lock = await waiting;
        expect(lock.valid).toBe(true);
        expect(await Promise.all(admins.map((admin) => admin.get(key)))).toEqual(["other", lock.value, lock.value]);
        expect((await scriptCalls(admins[2] as Redis)) - before).toBe(1);
        expect(await dlm.unlock(lock)).toBe(true);
      }),
  );

  it.each(["ioredis", "node-redis"] as const)(
    "%s: its own give-back there meanwhile left it in line, the key free; a release elsewhere wakes it, and it takes that key",
    (library) =>
      lateOnInstance2(library, async ({ admins, proxy, dlm }) => {
        const key = `gave-back:${library}`;
        // another owner holds instances 0 and 1; instance 2 is free
        await Promise.all([0, 1].map((i) => admins[i]?.set(key, "other", "PX", 60_000)));
        const waiting = dlm.acquire(key, 60_000, WAIT());
        waiting.catch(() => {});
        // queued on 0 and 1, its attempt took instance 2 and gave it back: queued again there, the
        // key left free (before, the give-back handed it the key, found nobody on its channel,
        // skipped it and popped its entry, so that it tried again once the SUBSCRIBE landed)
        await expect.poll(() => Promise.all(admins.map((admin) => admin.zcard(queueOf(key))))).toEqual([1, 1, 1]);
        await expect.poll(() => proxy.heldCommandBytes).toBeGreaterThan(0);
        expect(await admins[2]?.exists(key)).toBe(0);
        const before = await scriptCalls(admins[2] as Redis);
        proxy.releaseCommands();
        // instance 0's owner releases: its hand-over and the key left free make a quorum, the waiter
        // tries at once (a hold is a minute here) and takes instance 2
        expect(await new RedisStore(admins[0] as Redis).release([key], "other")).toBe(1);
        const lock = await waiting;
        expect(lock.valid).toBe(true);
        expect(await Promise.all(admins.map((admin) => admin.get(key)))).toEqual([lock.value, "other", lock.value]);
        // that attempt alone: the late SUBSCRIBE woke nobody
        expect((await scriptCalls(admins[2] as Redis)) - before).toBe(1);
        expect(await dlm.unlock(lock)).toBe(true);
      }),
  );
});

describe("SUBSCRIBEs that land after the round's per-instance timeout, too few listening before", () => {
  it.each(["ioredis", "node-redis"] as const)(
    "%s: the attempt their landing wakes queues the waiter and is no retry: a retryCount call keeps waiting for its polls",
    async (library) => {
      const servers = harness.servers as RedisServer[];
      const admins = servers.map((server) => server.client());
      const holder = new Redlock(servers.map((server) => server.client()));
      const proxies: DelayProxy[] = [];
      const throughs: { close(): void }[] = [];
      const clients: Redis[] = [servers[0]?.client() as Redis];
      for (const i of [1, 2]) {
        const proxy = await startDelayProxy((servers[i] as RedisServer).port);
        proxy.holdCommandsWhen = (chunk) => /subscribe/i.test(chunk.toString());
        proxies.push(proxy);
        const through = await subscriberThrough(library, servers[i] as RedisServer, proxy);
        throughs.push(through);
        clients.push(through.client as Redis);
      }
      const dlm = new Redlock(clients, { instanceTimeout: 200 });
      const key = `nudged:${library}`;
      try {
        const held = await holder.acquire(key, 60_000);
        let outcome = "waiting";
        const waiting = dlm.acquire(key, 10_000, { ...NO_POLLING, retryCount: 1 });
        waiting.then(
          () => (outcome = "acquired"),
          (error: Error) => (outcome = `${error.name}: ${error.message}`),
        );
        // both SUBSCRIBEs wait in the proxies: the round ends at the per-instance timeout with one
        // instance listening, and the call sleeps toward its poll (a minute), in nobody's queue
        await expect.poll(() => proxies.every((proxy) => proxy.heldCommandBytes > 0)).toBe(true);
        // past the round's 200 ms (nothing tells when it ended; a slower machine only lets the
        // SUBSCRIBEs land within the round, and the test then passes without the nudge it is about)
        await sleep(600);
        expect(outcome).toBe("waiting");
        expect(await Promise.all(admins.map((admin) => admin.zcard(queueOf(key))))).toEqual([0, 0, 0]);
        // they land: a quorum listens, and the call attempts at once to queue
        for (const proxy of proxies) proxy.releaseCommands();
        await expect.poll(async () => outcome !== "waiting" || (await admins[0]?.zcard(queueOf(key))) === 1).toBe(true);
        // its one retry is a minute away (before: counted, that attempt spent it, and the call gave
        // up at once with LockContentionError); half a second lets that show
        await sleep(500);
        expect(outcome).toBe("waiting");
        expect(await holder.unlock(held)).toBe(true);
        const lock = await waiting;
        expect(lock.valid).toBe(true);
        await dlm.unlock(lock);
      } finally {
        for (const proxy of proxies) proxy.releaseCommands();
        await Promise.all([dlm.quit(), holder.quit()]);
        for (const through of throughs) through.close();
        await Promise.all(proxies.map((proxy) => proxy.close()));
      }
    },
  );
});
