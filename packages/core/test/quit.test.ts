import { Redis } from "ioredis";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { startDelayProxy } from "#test-helpers/delay-proxy.js";
import { queueOf } from "#test-helpers/queues.js";
import { until, useRedisServers } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import { type Lock, LockUnavailableError, Redlock, type RedlockInstance } from "../src/index.js";

const cluster = useRedisServers(3);
/** Clients a Redlock may be handed. */
let clients: Redis[] = [];
/** The test's own connections: one that a paused command holds back must not be the one that unpauses. */
let admins: Redis[] = [];
/** Ends a call that outlives its test (a call quit() failed to end): it must not run into the next test. */
let stop = new AbortController();

beforeAll(() => {
  clients = cluster.servers.map((server) => server.client());
  admins = cluster.servers.map((server) => server.client());
});

afterEach(async () => {
  stop.abort();
  stop = new AbortController();
  await Promise.all(admins.map((admin) => admin.call("CLIENT", "UNPAUSE")));
  await Promise.all(admins.map((admin) => admin.flushall()));
});

const QUIT = /quit\(\)/;

/** Instances Redlock creates itself (and closes in quit()), or the test's own clients (never closed). */
const instances = (kind: "owned" | "handed"): RedlockInstance[] =>
  kind === "handed" ? clients : cluster.servers.map((server) => ({ host: "127.0.0.1", port: server.port }));

/** Whether `promise` has settled, read after `await`ing something that should have settled it. */
function settled(promise: Promise<unknown>): () => boolean {
  let done = false;
  promise.then(
    () => (done = true),
    () => (done = true),
  );
  return () => done;
}

/** Another Redlock holds `key` for 30 s, on every server. */
async function heldElsewhere(key: string): Promise<{ holder: Redlock; held: Lock }> {
  const holder = new Redlock(clients);
  const held = await holder.acquire(key, 30_000);
  // acquire resolves at a quorum: a call must find the holder's key on every server, or its
  // attempt may reach the last one first, take it, give it back and stay unqueued there
  await expect.poll(() => Promise.all(admins.map((admin) => admin.get(key)))).toEqual(admins.map(() => held.value));
  return { holder, held };
}

const queuedEverywhere = (key: string) =>
  until("the call is queued everywhere", async () =>
    (await Promise.all(admins.map((admin) => admin.zcard(queueOf(key))))).every((size) => size === 1),
  );

/** One turn of the event loop: every reaction to what already settled has run. */
const turn = () => new Promise((resolve) => setImmediate(resolve));

/** What each server holds: its keys (lock keys and queues), and the hand-over channels anyone listens on. */
const leftovers = () =>
  Promise.all(
    admins.map(async (admin) => ({
      keys: (await admin.keys("*")).sort(),
      channels: (await admin.pubsub("CHANNELS", "redlock-kit:hand-over:*")) as string[],
    })),
  );

describe("quit() and the acquisitions still running", () => {
  it.each([
    ["owned", { retryCount: 0 }],
    ["owned", { wait: 60_000 }],
    ["handed", { retryCount: 0 }],
  ] as const)(
    "an attempt in flight at quit() (%s clients, %o) rejects, and its keys are given back before the connections close",
    async (kind, options) => {
      // the attempt waits for its paused replies rather than time out
      const dlm = new Redlock(instances(kind), { instanceTimeout: 10_000 });
      // connected and identified: the attempt below is the only command left to send
      await (await dlm.acquire("warm-up", 30_000)).release();
      await Promise.all(admins.map((admin) => admin.call("CLIENT", "PAUSE", 60_000, "WRITE")));
      const call = dlm.acquire(["in-flight", "in-flight:2"], 30_000, { ...options, signal: stop.signal });
      const ended = settled(call);
      // the attempt reached every server, which holds it back
      await until("the attempt is blocked everywhere", async () =>
        (await Promise.all(admins.map((admin) => admin.info("clients")))).every((info) =>
          /blocked_clients:1\b/.test(info),
        ),
      );
      const quitting = dlm.quit();
      // the attempt runs now and takes the keys: its reply arrives after quit() was called
      await Promise.all(admins.map((admin) => admin.call("CLIENT", "UNPAUSE")));
      await quitting;
      await turn();
      expect(ended()).toBe(true);
      const error = await call.then(
        () => undefined,
        (reason: unknown) => reason,
      );
      expect(error).toBeInstanceOf(LockUnavailableError);
      expect((error as Error).message).toMatch(QUIT);
      expect(await leftovers()).toEqual(admins.map(() => ({ keys: [], channels: [] })));
    },
  );

  it.each(["owned", "handed"] as const)(
    "a call waiting behind a held key at quit() (%s clients) ends at once: no key, queue entry or subscription left",
    async (kind) => {
      const { holder, held } = await heldElsewhere("held");
      const dlm = new Redlock(instances(kind), { retryDelay: 60_000, retryJitter: 0 });
      // a first attempt at a 1 s lock waits 100 ms for new clients to say who they are, then its
      // retry is a minute away
      await warmUp(dlm);
      // 500 ms per instance, not the default 100 ms a loaded machine's Redis misses: the first attempt
      // then fails unavailable instead of queueing, and its retry is a minute away
      const call = dlm.acquire("held", 1000, { wait: 60_000, signal: stop.signal, instanceTimeout: 500 });
      const ended = settled(call);
      await queuedEverywhere("held");
      await dlm.quit();
      await turn();
      expect(ended()).toBe(true);
      await expect(call).rejects.toThrow(QUIT);
      await expect(call).rejects.toBeInstanceOf(LockUnavailableError);
      // the holder's key alone; the subscriber connections close a moment after quit()
      await until("no hand-over channel is listened to", async () =>
        (await leftovers()).every((left) => left.channels.length === 0),
      );
      expect(await leftovers()).toEqual(admins.map(() => ({ keys: ["held"], channels: [] })));
      expect(await Promise.all(admins.map((admin) => admin.get("held")))).toEqual(admins.map(() => held.value));
      await held.release();
      await holder.quit();
    },
  );

  it.each(["owned", "handed"] as const)(
    "a call made after quit() (%s clients) rejects at once with the same error, sending nothing",
    async (kind) => {
      const dlm = new Redlock(instances(kind), { retryDelay: 60_000, retryJitter: 0 });
      await warmUp(dlm);
      // 500 ms per instance, not the default 100 ms of a 1 s lock, which a loaded machine's Redis misses
      await (await dlm.acquire("before", 1000, { instanceTimeout: 500 })).release();
      // the release resolves at a quorum and handed clients stay open at quit(): the last server's
      // delete must land before the check below that nothing was sent after quit()
      await expect.poll(leftovers).toEqual(admins.map(() => ({ keys: [], channels: [] })));
      await dlm.quit();
      const calls = [
        dlm.acquire("after", 1000, { wait: 60_000, signal: stop.signal }),
        dlm.lock("after", 1000, { signal: stop.signal }),
        dlm.using("after", 1000, () => "ran", { signal: stop.signal }),
      ];
      const ended = calls.map(settled);
      await turn();
      expect(ended.map((done) => done())).toEqual([true, true, true]);
      for (const call of calls) {
        await expect(call).rejects.toBeInstanceOf(LockUnavailableError);
        await expect(call).rejects.toThrow(QUIT);
      }
      expect(await leftovers()).toEqual(admins.map(() => ({ keys: [], channels: [] })));
    },
  );

  /**
   * Another Redlock holds `key` on the first server; a Redlock reaching that server through a proxy
   * that can hold its replies back waits for it (one key, no fencing: a hand-over holds the key for
   * the waiter's whole ttl, speed/message-grant.ts), queued and subscribed. Then the proxy holds the
   * replies back and the holder releases: the key is handed to the waiter, whose subscriber does not
   * hear it yet.
   */
  async function handedUnheard(key: string, signal: AbortSignal) {
    const admin = admins[0] as Redis;
    const holder = new Redlock([clients[0] as Redis]);
    const held: Lock = await holder.acquire(key, 30_000);
    const proxy = await startDelayProxy(cluster.servers[0]?.port as number);
    const client = new Redis({ host: "127.0.0.1", port: proxy.port });
    client.on("error", () => {});
    const dlm = new Redlock([client], { retryDelay: 60_000, retryJitter: 0 });
    await warmUp(dlm);
    const call = dlm.acquire(key, 60_000, { wait: 60_000, signal });
    const ended = settled(call);
    await until("the call is queued and subscribed", async () => {
      const [queued, channels] = await Promise.all([
        admin.zcard(queueOf(key)),
        admin.pubsub("CHANNELS", "redlock-kit:hand-over:*") as Promise<string[]>,
      ]);
      return queued === 1 && channels.length === 1;
    });
    proxy.holdReplies();
    await held.release();
    const handedTo = await admin.get(key);
    expect(handedTo).not.toBeNull();
    expect(handedTo).not.toBe(held.value);
    const close = async () => {
      await holder.quit();
      client.disconnect();
      await proxy.close();
    };
    return { admin, dlm, call, ended, proxy, close };
  }

  it("a key handed to a waiting call whose message it has not heard at quit() is passed on, not held for its ttl", async () => {
    const { admin, dlm, call, ended, proxy, close } = await handedUnheard("handed", stop.signal);
    try {
      const quitting = dlm.quit();
      proxy.releaseReplies();
      await quitting;
      await turn();
      expect(ended()).toBe(true);
      await expect(call).rejects.toThrow(QUIT);
      // the key is free again (nobody else waits), not held for the 60 s the waiter asked for
      await expect.poll(() => admin.get("handed")).toBeNull();
      expect(await admin.keys("*")).toEqual([]);
    } finally {
      await close();
    }
  });

  it("a call that gave up just before quit(), handed the key by a release whose message it has not heard, passes it on too", async () => {
    const aborting = new AbortController();
    const { admin, dlm, call, proxy, close } = await handedUnheard("gave-up", aborting.signal);
    try {
      // it gives up (a request aborted) before the hand-over's message is read, and is over before
      // quit(): not a call quit() ends; its process closes the subscription before it reads that message
      aborting.abort();
      await expect(call).rejects.toThrow(/aborted/i);
      const quitting = dlm.quit();
      proxy.releaseReplies();
      await quitting;
      // the key is free again (nobody else waits), not held for the 60 s the departed call asked for
      await expect.poll(() => admin.get("gave-up")).toBeNull();
      expect(await admin.keys("*")).toEqual([]);
    } finally {
      await close();
    }
  });
});

describe("stopAcquiring(): quit()'s first step, the clients left open", () => {
  it.each(["owned", "handed"] as const)(
    "ends a call waiting behind a held key and refuses new ones (%s clients), while a lock already held still extends and releases",
    async (kind) => {
      const { holder, held } = await heldElsewhere("held");
      const dlm = new Redlock(instances(kind), { retryDelay: 60_000, retryJitter: 0 });
      const mine = await dlm.acquire("mine", 30_000);
      // 500 ms per instance, not the default 100 ms a loaded machine's Redis misses: the first attempt
      // then fails unavailable instead of queueing, and its retry is a minute away
      const call = dlm.acquire("held", 1000, { wait: 60_000, signal: stop.signal, instanceTimeout: 500 });
      const ended = settled(call);
      await queuedEverywhere("held");
      await dlm.stopAcquiring();
      await turn();
      expect(ended()).toBe(true);
      await expect(call).rejects.toBeInstanceOf(LockUnavailableError);
      await expect(call).rejects.toThrow(/stopAcquiring\(\)/);
      await expect(dlm.acquire("later", 1000)).rejects.toBeInstanceOf(LockUnavailableError);
      await dlm.stopAcquiring();
      // the lock held before goes on through the clients, still open
      const extendedFrom = mine.expiresAt;
      expect(await dlm.extend(mine, 60_000)).toBe(mine);
      expect(mine.expiresAt).toBeGreaterThan(extendedFrom);
      expect(await dlm.unlock(mine)).toBe(true);
      // the holder's key alone: no queue entry of the ended call, nothing of the released lock
      await expect.poll(async () => (await leftovers()).map((left) => left.keys)).toEqual(admins.map(() => ["held"]));
      expect(await Promise.all(admins.map((admin) => admin.get("held")))).toEqual(admins.map(() => held.value));
      await dlm.quit();
      await until("no hand-over channel is listened to", async () =>
        (await leftovers()).every((left) => left.channels.length === 0),
      );
      await held.release();
      await holder.quit();
    },
  );
});
