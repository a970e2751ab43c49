import { Redis } from "ioredis";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { type DelayProxy, startDelayProxy } from "#test-helpers/delay-proxy.js";
import { attemptsOf } from "#test-helpers/lock-events.js";
import { closeNodeRedis, connectedNodeRedis, type NodeRedisClient } from "#test-helpers/node-redis.js";
import { queuedChannel, queueOf } from "#test-helpers/queues.js";
import { queueSizes } from "#test-helpers/quorum.js";
import { type RedisServer, sleep, useRedisServers } from "#test-helpers/redis.js";
import { scriptCalls as scriptCallsOf } from "#test-helpers/workers.js";
import {
  type AcquireReply,
  type Lock,
  LockContentionError,
  type LockStore,
  MemoryStore,
  type QueueTicket,
  RedisStore,
  Redlock,
} from "../src/index.js";
import { RELEASE_SCRIPT } from "../src/stores/scripts.js";

const cluster = useRedisServers(3);
let clients: Redis[] = [];
const redlocks: Redlock[] = [];

beforeAll(() => {
  clients = cluster.servers.map((server) => server.client());
});

afterEach(async () => {
  await Promise.all(redlocks.splice(0).map((dlm) => dlm.quit()));
  await Promise.all(clients.map((client) => client.flushall()));
});

/** A poll interval so long that only a hand-over can wake a waiter within the test. */
const NO_POLLING = { retryDelay: 60_000, retryJitter: 0 };
/** A wait of a minute, cut at 15 s: a test whose hand-over never comes fails instead of hanging. */
const WAIT = () => ({ wait: 60_000, signal: AbortSignal.timeout(15_000) });

/** A Redlock of its own, as another process would have: its own hand-over channel. */
function redlock(options = {}, instances: readonly (Redis | LockStore)[] = clients): Redlock {
  const dlm = new Redlock(instances, options);
  redlocks.push(dlm);
  return dlm;
}

/** RedisStores on `clients` whose `onHandOver` goes through `subscribing` (to delay or interfere with it). */
function storesSubscribing(subscribing: (subscribe: () => Promise<() => void>) => Promise<() => void>) {
  const inner = clients.map((client) => new RedisStore(client));
  const stores: LockStore[] = inner.map((store) => ({
    acquire: (keys, value, ttl, ticket) => store.acquire(keys, value, ttl, ticket),
    extend: (keys, value, ttl) => store.extend(keys, value, ttl),
    release: (keys, value) => store.release(keys, value),
    leaveQueue: (keys, value, ticket) => store.leaveQueue(keys, value, ticket),
    onHandOver: (channel, listener) => subscribing(() => store.onHandOver(channel, listener)),
  }));
  return { inner, stores };
}

/** Resolves once `check` holds (Redis notices a closed connection a moment after the client closed it). */
async function until(check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition never held");
    await sleep(5);
  }
}

/** Resolves once `count` waiters are queued for `key` on every instance. */
async function untilQueued(key: string, count: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const sizes = await Promise.all(clients.map((client) => client.zcard(queueOf(key))));
    if (sizes.every((size) => size === count)) return;
    if (Date.now() > deadline) throw new Error(`queue sizes ${sizes}, expected ${count}`);
    await sleep(5);
  }
}

/** Starts one waiter per Redlock on `resource`, each only once the previous one is queued everywhere. */
async function queueInOrder(dlms: readonly Redlock[], resource: string, order: number[]): Promise<Promise<void>[]> {
  const done: Promise<void>[] = [];
  for (const [id, dlm] of dlms.entries()) {
    done.push(
      dlm.acquire(resource, 5000, WAIT()).then(async (lock) => {
        order.push(id);
        await lock.release();
      }),
    );
    await untilQueued(resource, id + 1);
  }
  return done;
}

describe("waiting: a release hands the key to the oldest waiter, across Redlocks", () => {
  it("wakes a waiter on release, not after its poll interval", async () => {
    const holder = await redlock().acquire("job", 10_000);
    const waiting = redlock(NO_POLLING).acquire("job", 1000, WAIT());
    await untilQueued("job", 1);
    await holder.release();
    const lock = await waiting;
    expect(lock.valid).toBe(true);
    await lock.release();
  });

  it("serves waiters of different Redlocks in the order they queued, one attempt each after queueing", async () => {
    const holder = await redlock().acquire("fifo", 10_000);
    const dlms = [0, 1, 2, 3].map(() => redlock(NO_POLLING));
    const order: number[] = [];
    const attempts = await attemptsOf("fifo", async () => {
      const done = await queueInOrder(dlms, "fifo", order);
      await holder.release();
      await Promise.all(done);
    });
    expect(order).toEqual([0, 1, 2, 3]);
    // the refused first attempt only: the hand-over grants the lock (src/speed/message-grant.ts),
    // nobody claims, and no vote ever split
    expect(attempts).toEqual([1, 1, 1, 1]);
    for (const client of clients) expect(await client.exists(queueOf("fifo"))).toBe(0);
  });

  it("queues from the first attempt once the Redlock listens: one script call to queue, one to claim", async () => {
    const dlm = redlock(NO_POLLING);
    const holder = await redlock().acquire("listening", 10_000);
    const first = dlm.acquire("listening", 1000, WAIT());
    await untilQueued("listening", 1);
    const stats = async () =>
      Number(/cmdstat_evalsha:calls=(\d+)/.exec(await (clients[0] as Redis).info("commandstats"))?.[1] ?? 0);
    // the Redlock listens now: a second call's first attempt carries its ticket
    const before = await stats();
    const second = dlm.acquire("listening", 1000, WAIT());
    await untilQueued("listening", 2);
    expect((await stats()) - before).toBe(1);
    await holder.release();
    await (await first).release();
    await (await second).release();
  });

  it("skips a waiter whose process is gone: nobody listens on its channel", async () => {
    const holder = await redlock().acquire("gone", 10_000);
    const waiting = redlock(NO_POLLING).acquire("gone", 1000, WAIT());
    await untilQueued("gone", 1);
    // an entry ahead of it, of a process that no longer listens
    for (const client of clients) await client.zadd(queueOf("gone"), 0, "nobody:1000:deadbeef");
    await holder.release();
    const lock = await waiting;
    expect(lock.valid).toBe(true);
    for (const client of clients) expect(await client.get("gone")).toBe(lock.value);
    await lock.release();
  });

  it("a waiter whose signal aborts leaves the queues, and the key goes to the next", async () => {
    const holder = await redlock().acquire("abort", 10_000);
    const controller = new AbortController();
    const first = redlock(NO_POLLING).acquire("abort", 1000, { wait: 60_000, signal: controller.signal });
    await untilQueued("abort", 1);
    const second = redlock(NO_POLLING).acquire("abort", 1000, WAIT());
    await untilQueued("abort", 2);
    controller.abort(new Error("client left"));
    await expect(first).rejects.toThrow("client left");
    await untilQueued("abort", 1);
    await holder.release();
    await (await second).release();
  });

  it("rejects at once when the signal aborts while the waiter subscribes", async () => {
    const holder = await redlock().acquire("joining", 10_000);
    const controller = new AbortController();
    // the abort lands while SUBSCRIBE is on its way, before the waiter sleeps
    const { inner, stores: aborting } = storesSubscribing((subscribe) => {
      controller.abort(new Error("aborted while joining"));
      return subscribe();
    });
    const dlm = redlock(NO_POLLING, aborting);
    await expect(dlm.acquire("joining", 1000, { wait: 60_000, signal: controller.signal })).rejects.toThrow(
      "aborted while joining",
    );
    await holder.release();
    for (const store of inner) store.close();
  });

  it("rejects at once when the signal aborts while the waiter's SUBSCRIBE is unanswered, and leaves nothing", async () => {
    const holder = await redlock().acquire("unanswered", 10_000);
    let asked = 0;
    let answer!: () => void;
    const answered = new Promise<void>((resolve) => {
      answer = resolve;
    });
    const { inner, stores } = storesSubscribing(async (subscribe) => {
      asked++;
      await answered;
      return subscribe();
    });
    // a per-instance timeout longer than expect.poll waits: the subscription's wait would end only then
    const dlm = redlock({ ...NO_POLLING, instanceTimeout: 30_000 }, stores);
    const controller = new AbortController();
    const acquiring = dlm.acquire("unanswered", 60_000, { wait: 60_000, signal: controller.signal });
    const order: string[] = [];
    acquiring.catch(() => order.push("rejected"));
    await expect.poll(() => asked).toBe(3);
    controller.abort(new Error("client left"));
    // before: it rejected only once the SUBSCRIBE was answered (or the per-instance timeout passed)
    await expect.poll(() => order).toEqual(["rejected"]);
    order.push("answered");
    answer();
    await expect(acquiring).rejects.toThrow("client left");
    await dlm.quit();
    expect(await queueSizes(clients, "unanswered")).toEqual([0, 0, 0]);
    expect(await Promise.all(clients.map((client) => client.get("unanswered")))).toEqual(Array(3).fill(holder.value));
    await holder.release();
    for (const store of inner) store.close();
  });

  it("queues a waiter once a SUBSCRIBE slower than its per-instance timeout lands", async () => {
    const holder = await redlock().acquire("slow-subscribe", 10_000);
    // ttl 1000: a per-instance timeout of 100 ms, shorter than this SUBSCRIBE
    const { inner, stores } = storesSubscribing(async (subscribe) => {
      await sleep(300);
      return subscribe();
    });
    const waiting = redlock(NO_POLLING, stores).acquire("slow-subscribe", 1000, WAIT());
    await untilQueued("slow-subscribe", 1);
    await holder.release();
    await (await waiting).release();
    for (const store of inner) store.close();
  });

  it("gives up a waiter's handed keys when its wait ends, so that nothing is left", async () => {
    const expired = () =>
      Promise.all(clients.map(async (client) => Number(/expired_keys:(\d+)/.exec(await client.info("stats"))?.[1])));
    const before = await expired();
    const holder = await redlock().acquire("timeout", 10_000);
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) =>
        // ttl 5000: a per-instance timeout (500 ms) that a loaded machine's replies do not outlast,
        // which would make an attempt unavailable rather than refused (100 ms did)
        redlock({ retryDelay: 20, retryJitter: 20 }).acquire(i % 2 ? "timeout" : ["timeout", `other-${i}`], 5000, {
          wait: 200,
        }),
      ),
    );
    const refused = results.map((r) => (r.status === "rejected" ? (r.reason as Error).constructor.name : "acquired"));
    expect(refused).toEqual(Array(20).fill(LockContentionError.name));
    await holder.release();
    // The release resolves at a quorum, and a waiter whose entry a late attempt left on a server is
    // handed the key there and gives it back on its own. DBSIZE still counts a key that expired
    // until Redis deletes it, and that deletion counts in expired_keys: nothing may be left, and
    // nothing may have gone by expiring (a leaked key would, after its ttl).
    await expect.poll(() => Promise.all(clients.map((client) => client.dbsize()))).toEqual([0, 0, 0]);
    expect(await expired()).toEqual(before);
  });

  it("keeps a split hand-over moving: waiters handed different instances try again after their hold, and all acquire", async () => {
    const holder = await redlock().acquire("split", 10_000);
    const order: number[] = [];
    const done = await queueInOrder([redlock(NO_POLLING), redlock(NO_POLLING), redlock(NO_POLLING)], "split", order);
    // Waiter i is missing from the queues of the instances before i (as when its queueing attempt
    // timed out there), so the release hands instance i to waiter i: nobody is handed a quorum.
    const entries = await (clients[0] as Redis).zrange(queueOf("split"), "0", "-1");
    for (const [i, client] of clients.entries()) {
      for (const entry of entries.slice(0, i)) await client.zrem(queueOf("split"), entry);
    }
    await holder.release();
    // with a minute between polls, only the hand-overs and the retries after a hold can serve them
    await Promise.all(done);
    expect(order.sort()).toEqual([0, 1, 2]);
    for (const client of clients) expect(await client.keys("*")).toEqual([]);
  });

  it("hands over the keys of a multi-resource lock", async () => {
    const holder = await redlock().acquire(["m:a", "m:b"], 10_000);
    const waiting = redlock(NO_POLLING).acquire(["m:b", "m:c"], 1000, WAIT());
    await untilQueued("m:b", 1);
    await holder.release();
    const lock = await waiting;
    expect(lock.resources).toEqual(["m:b", "m:c"]);
    await lock.release();
  });

  it("claims once when one key is handed over while another stays held, then waits without sending", async () => {
    const scriptCalls = async () => (await Promise.all(clients.map(scriptCallsOf))).reduce((a, b) => a + b, 0);
    const holderA = await redlock().acquire("part:a", 10_000);
    const holderB = await redlock().acquire("part:b", 10_000);
    const waiting = redlock(NO_POLLING).acquire(["part:a", "part:b"], 1000, WAIT());
    await untilQueued("part:a", 1);
    await holderA.release();
    // the hand-over of part:a wakes the waiter; its claim is refused by part:b, where it queues
    await untilQueued("part:b", 1);
    const before = await scriptCalls();
    await sleep(500);
    // That hand-over is spent: until part:b is released (a minute between polls) at most one more
    // attempt, sent when an instance's hand-over came while the claim was in flight (it may have
    // run after the claim there), and none after it. A waiter that kept counting it retried at once.
    expect((await scriptCalls()) - before).toBeLessThanOrEqual(clients.length);
    await holderB.release();
    const lock = await waiting;
    expect(lock.resources).toEqual(["part:a", "part:b"]);
    await lock.release();
    for (const client of clients) expect(await client.keys("*")).toEqual([]);
  });

  it("falls back to polling with one warning, and closes its subscriber connection, when the user may not subscribe", async () => {
    for (const client of clients) {
      await client.call("ACL", "SETUSER", "nopubsub", "on", ">pw", "~*", "resetchannels", "+@all");
    }
    const restricted = cluster.servers.map((server) => server.client({ username: "nopubsub", password: "pw" }));
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on("warning", onWarning);
    const connections = async () => ((await (clients[0] as Redis).client("LIST")) as string).trim().split("\n").length;
    try {
      await Promise.all(restricted.map((client) => client.ping()));
      const before = await connections();
      const dlm = new Redlock(restricted, { retryDelay: 30, retryJitter: 10 });
      redlocks.push(dlm);
      const holder = await dlm.acquire("acl", 10_000);
      const waiting = dlm.acquire("acl", 1000, { wait: 5000 });
      // the waiter's SUBSCRIBE was refused while the key was held: it waits by polling from here
      const refused = () => warnings.filter((w) => (w as { code?: string }).code === "REDLOCK_KIT_NO_PUBSUB");
      await until(async () => refused().length > 0);
      expect(await holder.release()).toBe(true);
      const lock = await waiting;
      await lock.release();
      // no subscriber connection outlives the refused SUBSCRIBE
      await until(async () => (await connections()) === before);
      expect(refused()).toHaveLength(1);
      for (const client of clients) expect(await client.exists(queueOf("acl"))).toBe(0);
    } finally {
      process.off("warning", onWarning);
      for (const client of clients) await client.call("ACL", "DELUSER", "nopubsub");
    }
  });

  it("works with the in-process MemoryStore, oldest waiter first", async () => {
    /** The waiters in line: a ticketed attempt refused is queued (in the same synchronous step). */
    class QueueWatchingStore extends MemoryStore {
      readonly queued = new Set<string>();
      override async acquire(keys: readonly string[], value: string, ttl: number, ticket?: QueueTicket) {
        const reply: AcquireReply = await super.acquire(keys, value, ttl, ticket);
        if (ticket !== undefined && !reply.acquired) this.queued.add(value);
        return reply;
      }
    }
    const store = new QueueWatchingStore();
    const holder = await redlock({}, [store]).acquire("mem", 10_000);
    const order: number[] = [];
    const waiters = [0, 1, 2].map((id) =>
      redlock(NO_POLLING, [store])
        .acquire("mem", 1000, WAIT())
        .then(async (lock: Lock) => {
          order.push(id);
          await lock.release();
        }),
    );
    await expect.poll(() => store.queued.size).toBe(3);
    await holder.release();
    await Promise.all(waiters);
    expect(order).toEqual([0, 1, 2]);
  });

  it("leaves no subscription once the last waiter is done and the Redlock quits", async () => {
    const dlm = redlock(NO_POLLING);
    const holder = await redlock().acquire("sub", 10_000);
    const waiting = dlm.acquire("sub", 1000, WAIT());
    await untilQueued("sub", 1);
    const channels = async () =>
      (await (clients[0] as Redis).pubsub("CHANNELS", "redlock-kit:hand-over:*")) as string[];
    expect(await channels()).toHaveLength(1);
    await holder.release();
    await (await waiting).release();
    await dlm.quit();
    await until(async () => (await channels()).length === 0);
  });
});

describe("waiting with an instance stopped", () => {
  it("a wait with one of three instances stopped (SIGSTOP) starts no attempt past its deadline", async () => {
    // each step that meets the stopped instance waits this long, on timers: what is not a timer
    // (a few round trips) only makes the call longer
    const instanceTimeout = 3000;
    const waiter = redlock({ retryDelay: 200, retryJitter: 0, instanceTimeout });
    await waiter.unlock(await waiter.acquire("warm", 20_000)); // the servers' identities are known
    await redlock().acquire("stopped", 60_000);
    const stopped = cluster.servers[2];
    stopped?.pause();
    try {
      // the first attempt and its give-back each wait one timeout for the stopped instance; the
      // call then joins the queue with time left
      const wait = 2.5 * instanceTimeout;
      const attempts = await attemptsOf(
        "stopped",
        () => expect(waiter.acquire("stopped", 20_000, { wait })).rejects.toBeInstanceOf(LockContentionError),
        "contention",
      );
      // no attempt starts past the deadline: the first attempt, its give-back and joining the queue
      // each wait one timeout for the stopped instance (9 s on timers; a slow machine only adds),
      // past the 7.5 s deadline, so there is no second attempt (before: one, ending 6 s past it)
      expect(attempts).toEqual([1]);
    } finally {
      stopped?.resume();
    }
  });

  it("a call queued on fewer than a quorum (one instance stopped, another's attempts unanswered) spends no retry on the attempt after each hold", async () => {
    const [, b, c] = cluster.servers as [RedisServer, RedisServer, RedisServer];
    const proxy = await startDelayProxy(b.port);
    const instanceTimeout = 200;
    const waiter = redlock({ ...NO_POLLING, instanceTimeout }, [
      clients[0] as Redis,
      b.client({ port: proxy.port }),
      c.client(),
    ]);
    const holder = redlock();
    // another call of the waiter's Redlock waits for a key held for good: it listens on every
    // instance throughout, so the call below queues from its first attempt
    await holder.acquire("listening", 60_000);
    const listening = waiter.acquire("listening", 1000, WAIT());
    listening.catch(() => {});
    await untilQueued("listening", 1);
    const held = await holder.acquire("short-queue", 60_000);
    // instance 2 stopped, and the waiter's scripts to instance 1 unanswered (its subscriber there
    // still listens): each attempt is refused by instance 0 alone and times out on the other two
    c.pause();
    proxy.holdCommandsWhen = (chunk) => /evalsha|eval/i.test(chunk.toString());
    try {
      const before = await scriptCallsOf(clients[0] as Redis);
      let outcome = "waiting";
      const waiting = waiter.acquire("short-queue", 1000, { ...NO_POLLING, retryCount: 1 });
      waiting.then(
        (lock) => lock.release().then(() => (outcome = "acquired")),
        (error: Error) => (outcome = `${error.name}: ${error.message}`),
      );
      // queued on one instance, fewer than a quorum: no release could wake it, so it tries again
      // after each hold (2 x 200 ms). Those attempts only look for a place in line; its one retry is
      // a minute away (before: the first of them was counted, and the call gave up at the second)
      await until(async () => outcome !== "waiting" || (await scriptCallsOf(clients[0] as Redis)) - before >= 4);
      expect(outcome).toBe("waiting");
      c.resume();
      proxy.releaseCommands();
      await holder.unlock(held);
      await until(async () => outcome !== "waiting");
      expect(outcome).toBe("acquired");
    } finally {
      c.resume();
      proxy.releaseCommands();
      await proxy.close();
    }
  });
});

describe("waiting across quit()", () => {
  /** Subscriber connections on each server. */
  const pubsubClients = () =>
    Promise.all(
      clients.map(
        async (client) =>
          String(await client.call("CLIENT", "LIST", "TYPE", "pubsub"))
            .trim()
            .split("\n")
            .filter(Boolean).length,
      ),
    );

  it("a call still in its first attempt at quit() ends there and subscribes nowhere: no subscriber connection outlives quit()", async () => {
    const holder = await redlock().acquire("quit-mid-call", 10_000);
    const dlm = new Redlock(clients, { retryDelay: 100, retryJitter: 0 });
    const call = dlm.acquire("quit-mid-call", 2000, { wait: 600 });
    await dlm.quit();
    await expect(call).rejects.toThrow(/quit\(\)/);
    await holder.release();
    // a subscriber opened after quit() is never closed: this would time out
    await until(async () => (await pubsubClients()).every((count) => count === 0));
  });

  it("quit() of one Redlock leaves the hand-overs of another on the stores they share; the last quit() closes the connection", async () => {
    const stores = clients.map((client) => new RedisStore(client));
    const a = redlock(NO_POLLING, stores);
    const b = redlock(NO_POLLING, stores);
    const holder = redlock();
    // a waited first: it still listens (the linger) when it quits
    let lock = await holder.acquire("shared", 10_000);
    const first = a.acquire("shared", 1000, WAIT());
    await untilQueued("shared", 1);
    await lock.release();
    await (await first).release();
    lock = await holder.acquire("shared", 10_000);
    const waiting = b.acquire("shared", 1000, WAIT());
    await untilQueued("shared", 1);
    await a.quit();
    await lock.release();
    // no polling: only a hand-over wakes it before WAIT's signal aborts
    await (await waiting).release();
    await b.quit();
    await until(async () => (await pubsubClients()).every((count) => count === 0));
  });
});

describe("waiting behind a lock that stands on two of three instances, the third free", () => {
  const scriptCalls = async () => (await Promise.all(clients.map(scriptCallsOf))).reduce((a, b) => a + b, 0);

  /**
   * A lock held on the first two instances only, as after the third restarted empty (or was down
   * when the lock was taken), and a call of another Redlock waiting for it with `options`: each of
   * its attempts takes the free key and gives it back, queued again there. Resolves once it is in
   * line on the two holding instances.
   */
  async function waitBehindTwo(resource: string, options: object) {
    const holder = await redlock().acquire(resource, 10_000);
    await (clients[2] as Redis).del(resource);
    const waiting = redlock().acquire(resource, 1000, options);
    /** How the call stands: "waiting", or how it ended. */
    let outcome = "waiting";
    waiting.then(
      () => (outcome = "acquired"),
      (error: Error) => (outcome = `${error.name}: ${error.message}`),
    );
    await until(async () => {
      const sizes = await Promise.all(clients.map((client) => client.zcard(queueOf(resource))));
      return sizes[0] === 1 && sizes[1] === 1;
    });
    return { holder, waiting, outcome: () => outcome };
  }

  it("a call with retryCount is not woken by its own give-back of the free instance: its retries last until the release", async () => {
    const { holder, waiting, outcome } = await waitBehindTwo("two-of-three", { ...NO_POLLING, retryCount: 1 });
    const before = await scriptCalls();
    await sleep(500);
    // The give-back queues it again on the free instance, and leaves the key free there: handed
    // back to the waiter (the head of that queue) it woke it after one hold (2 x the per-instance
    // timeout, 200 ms) for an attempt that was refused again and counted as a retry.
    expect(outcome()).toBe("waiting");
    expect((await scriptCalls()) - before).toBeLessThanOrEqual(1);
    expect(await (clients[2] as Redis).exists("two-of-three")).toBe(0);
    expect(await (clients[2] as Redis).zcard(queueOf("two-of-three"))).toBe(1);
    await holder.release();
    const lock = await waiting;
    expect(lock.valid).toBe(true);
    await lock.release();
  });

  it("the oldest waiter's retries are not spent by a younger waiter's polls, each handing it the free key", async () => {
    const { holder, waiting, outcome } = await waitBehindTwo("polled", { ...NO_POLLING, retryCount: 2 });
    // a younger waiter of another Redlock (its own channel, as another process's) polling every 100 ms
    const younger = redlock().acquire("polled", 1000, { ...WAIT(), retryDelay: 100, retryJitter: 0 });
    younger.catch(() => {});
    const before = await scriptCallsOf(clients[2] as Redis);
    // each poll takes the free key and gives it back, which hands it to the oldest (the head there):
    // it attempts after a hold, refused as before, and was counted a retry
    await until(async () => (await scriptCallsOf(clients[2] as Redis)) - before >= 20);
    // before: 'LockContentionError: Resource is locked', after about a second of a 2 x 60 s wait
    expect(outcome()).toBe("waiting");
    await holder.release();
    // first in line, first served
    const lock = await waiting;
    expect(lock.valid).toBe(true);
    await lock.release();
    await (await younger).release();
  });

  it("a call with wait sends nothing between its polls while that lock is held", async () => {
    const { holder, waiting } = await waitBehindTwo("two-of-three-wait", { ...NO_POLLING, ...WAIT() });
    const before = await scriptCalls();
    await sleep(500);
    // before: one attempt and one give-back per hold, for as long as the lock was held
    expect((await scriptCalls()) - before).toBeLessThanOrEqual(1);
    await holder.release();
    const lock = await waiting;
    expect(lock.valid).toBe(true);
    await lock.release();
  });
});

describe("a hand-over that reaches a waiter whose call acquired and is over", () => {
  it("is passed on, not held for the released lock's value: its entry left in a queue (the ZREM lost) holds nothing", async () => {
    const holder = await redlock().acquire("stale-entry", 10_000);
    const dlm = redlock();
    const waiting = dlm.acquire("stale-entry", 30_000, { ...NO_POLLING, ...WAIT() });
    await untilQueued("stale-entry", 1);
    // its entry in the third queue, as a ZREM lost with its connection would leave it
    const [entry] = await (clients[2] as Redis).zrange(queueOf("stale-entry"), "0", "0");
    await holder.release();
    const lock = await waiting;
    await lock.release();
    await (clients[2] as Redis).zadd(queueOf("stale-entry"), 1, entry as string);
    // another holder's release there hands the key to that entry: its Redlock still listens (the
    // subscription lingers), and its grant would hold the key for the entry's 30 s
    const third = new RedisStore(clients[2] as Redis);
    expect((await third.acquire(["stale-entry"], "another", 10_000)).acquired).toBe(true);
    expect(await third.release(["stale-entry"], "another")).toBe(1);
    // before: the key held the released lock's value for 30 s
    await until(async () => (await (clients[2] as Redis).exists("stale-entry")) === 0);
  });
});

describe("waiting behind a lock of its own Redlock", () => {
  /** Acquire attempts that reached the instances so far: the scripts and the one-key SETs. */
  const attemptsSent = async () => {
    let sent = 0;
    for (const client of clients) {
      const stats = await client.info("commandstats");
      for (const command of ["evalsha", "eval", "set"]) {
        sent += Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
      }
    }
    return sent;
  };
  const POLLING_FAST = { retryDelay: 2, retryJitter: 0 };

  it("sends no poll while that lock holds the key, and the waiters take it in turn on its release", async () => {
    const dlm = redlock(POLLING_FAST);
    const holder = await dlm.acquire("own", 10_000);
    const order: number[] = [];
    const waiters = [0, 1, 2, 3].map((id) =>
      dlm.acquire("own", 10_000, WAIT()).then(async (lock) => {
        order.push(id);
        await lock.release();
      }),
    );
    await untilQueued("own", 4);
    const queued = await attemptsSent();
    // a hundred poll intervals: every poll would be refused by `holder`, and none is sent
    await sleep(200);
    expect(await attemptsSent()).toBe(queued);
    await holder.release();
    await Promise.all(waiters);
    expect(order).toEqual([0, 1, 2, 3]);
    for (const client of clients) expect(await client.exists(queueOf("own"))).toBe(0);
  });

  it("counts each poll left out as a refused attempt: retryCount still ends the call", async () => {
    const dlm = redlock(POLLING_FAST);
    const holder = await dlm.acquire("own-count", 10_000);
    const attempts = await attemptsOf(
      "own-count",
      async () => {
        await expect(dlm.acquire("own-count", 1000, { retryCount: 5 })).rejects.toBeInstanceOf(LockContentionError);
      },
      "contention",
    );
    expect(attempts).toEqual([6]);
    expect(holder.valid).toBe(true);
    await holder.release();
  });

  it("polls again once that lock's validity ended unreleased, and takes the expired key", async () => {
    const dlm = redlock(POLLING_FAST);
    const holder = await dlm.acquire("own-expired", 300);
    const lock = await dlm.acquire("own-expired", 1000, WAIT());
    expect(holder.valid).toBe(false);
    expect(lock.valid).toBe(true);
    await lock.release();
  });
});

/**
 * Makes `dlm` listen for hand-overs: a call of it waits in line (until `signal` aborts) for "other",
 * which another Redlock holds, queued on every instance. `listening`: that call, settled quietly
 * (in an object: an async function's result would wait for it).
 */
async function waitInLine(dlm: Redlock, signal: AbortSignal): Promise<{ listening: Promise<unknown> }> {
  await redlock().acquire("other", 30_000);
  const listening = dlm.acquire("other", 20_000, { wait: 60_000, signal }).catch(() => {});
  await untilQueued("other", 1);
  return { listening };
}

describe("a waiting call that wins just as it ends", () => {
  it.each([
    ["its signal aborts", ["won"]],
    ["its signal aborts", ["won", "won:2"]],
    ["stopAcquiring() comes", ["won"]],
    ["stopAcquiring() comes", ["won", "won:2"]],
  ] as const)(
    "when %s (%o), it leaves the queues before it gives the lock back: a minority holder's later release does not hand it the key",
    async (ending, resources) => {
      const [a, b, c] = cluster.servers as [RedisServer, RedisServer, RedisServer];
      // another owner holds the key on the third instance only
      const held = await redlock({}, [clients[2] as Redis]).acquire("won", 30_000);
      // the waiting Redlock reaches the first two instances through proxies that can hold their replies back
      const proxies = await Promise.all([a, b].map((server) => startDelayProxy(server.port)));
      const own = [...proxies.map((proxy) => new Redis({ host: "127.0.0.1", port: proxy.port })), c.client()];
      for (const client of own) client.on("error", () => {});
      // the held replies are waited for, not timed out
      const dlm = new Redlock(own, { ...NO_POLLING, instanceTimeout: 10_000 });
      const stop = new AbortController();
      try {
        // it listens, and is connected: the call below queues from its first attempt, its only command
        const { listening } = await waitInLine(dlm, stop.signal);
        for (const proxy of proxies) proxy.holdReplies();
        const controller = new AbortController();
        const call = dlm.acquire(resources, 20_000, { wait: 60_000, signal: controller.signal });
        // an abort rejects it at once, while the test still drives the replies: its outcome is read below
        call.catch(() => {});
        // its attempt took the keys on the first two instances and queued it behind the holder on the third
        const [first, second, third] = clients as [Redis, Redis, Redis];
        await until(
          async () =>
            (await first.exists(...resources)) === resources.length &&
            (await second.exists(...resources)) === resources.length &&
            (await third.zcard(queueOf("won"))) === 1,
        );
        const value = await first.get("won");
        // it ends before it hears that it won
        const stopping = ending === "stopAcquiring() comes" ? dlm.stopAcquiring() : controller.abort(new Error("left"));
        // the attempt's replies come: it won, and gives the lock back; the replies to that release are held
        for (const proxy of proxies) {
          proxy.releaseReplies();
          proxy.holdReplies();
        }
        await until(async () => (await first.get("won")) !== value && (await second.get("won")) !== value);
        // that release was sent on every connection at once: behind it on the third instance's
        await (own[2] as Redis).ping();
        // the holder releases there before the call has settled
        expect(await held.release()).toBe(true);
        for (const proxy of proxies) proxy.releaseReplies();
        await expect(call).rejects.toThrow(ending === "stopAcquiring() comes" ? /stopAcquiring\(\)/ : "left");
        await stopping;
        // nobody else waits for the key: it is free everywhere, not held for the call that left
        expect(await third.get("won")).not.toBe(value);
        expect(await Promise.all(clients.map((client) => client.get("won")))).toEqual([null, null, null]);
        stop.abort();
        await listening;
      } finally {
        stop.abort();
        await dlm.quit();
        for (const client of own) client.disconnect();
        await Promise.all(proxies.map((proxy) => proxy.close()));
      }
    },
  );
});

/**
 * Clients of the three instances for a waiting Redlock, on `library`, the third through a proxy that
 * can hold its replies back. `behindAnswers()` resolves once what the library sent on the third
 * connection in answer to the replies due there has run (a script sent whole again on a NOSCRIPT
 * is sent before the second PING, and runs before it).
 */
async function thirdThroughProxy(library: "ioredis" | "node-redis") {
  const [a, b, c] = cluster.servers as [RedisServer, RedisServer, RedisServer];
  const proxy = await startDelayProxy(c.port);
  const ports = [a.port, b.port, proxy.port];
  const own =
    library === "ioredis"
      ? ports.map((port) => new Redis({ host: "127.0.0.1", port }))
      : await connectedNodeRedis(ports);
  for (const client of own) client.on("error", () => {});
  const ping = () => (own[2] as { ping(): Promise<unknown> }).ping();
  return {
    proxy,
    own,
    behindAnswers: async () => {
      await ping();
      await new Promise(setImmediate);
      await ping();
    },
    close: async () => {
      if (library === "ioredis") for (const client of own as Redis[]) client.disconnect();
      else closeNodeRedis(own as NodeRedisClient[]);
      await proxy.close();
    },
  };
}

describe("a waiting call's attempt answered NOSCRIPT after the call won", () => {
  it.each(["ioredis", "node-redis"] as const)(
    "%s: it is not sent again behind the call's leaving of the queues: a minority holder's later release does not hand it the key",
    async (library) => {
      const third = clients[2] as Redis;
      // another owner holds the key on the third instance only
      const held = await redlock({}, [third]).acquire("flushed", 30_000);
      // the waiting Redlock reaches the third instance through a proxy that can hold its replies back
      const { proxy, own, behindAnswers, close } = await thirdThroughProxy(library);
      // the held replies are waited for, not timed out
      const dlm = new Redlock(own, { ...NO_POLLING, instanceTimeout: 10_000 });
      const stop = new AbortController();
      try {
        // it listens, and each connection has run the acquire script (ioredis sent it whole): the
        // call below queues from its first attempt, by SHA
        const { listening } = await waitInLine(dlm, stop.signal);
        // and it listens on the third instance: a hand-over there is heard (its channel heads its queue entry)
        const channel = await queuedChannel(third, "other");
        await until(async () => ((await third.pubsub("NUMSUB", channel)) as unknown[])[1] === 1);
        // the third instance's script cache is emptied (SCRIPT FLUSH, a restart), and its replies held back
        await third.script("FLUSH");
        proxy.holdReplies();
        // it wins on the first two; the third ran its attempt (NOSCRIPT), then its ZREM as it left the queues
        const lock = await dlm.acquire("flushed", 20_000, { wait: 60_000 });
        proxy.releaseReplies();
        // a script sent whole again on the NOSCRIPT is sent before the second PING, and runs before it
        await behindAnswers();
        // its release has a quorum without the third instance, where it is sent whole again (NOSCRIPT)
        expect(await lock.release()).toBe(true);
        await behindAnswers();
        // the holder releases there after the call left: nobody else waits for the key
        expect(await held.release()).toBe(true);
        expect(await third.get("flushed")).not.toBe(lock.value);
        expect([await third.get("flushed"), ...(await queueSizes(clients, "flushed"))]).toEqual([null, 0, 0, 0]);
        stop.abort();
        await listening;
      } finally {
        stop.abort();
        await dlm.quit();
        await close();
      }
    },
  );
});

describe("a waiter's give-back answered NOSCRIPT after a release of its own Redlock granted it the key", () => {
  it("the grant by that instance is not counted: the give-back, sent whole again behind the release, deletes the granted key there", async () => {
    const [a, b, c] = cluster.servers as [RedisServer, RedisServer, RedisServer];
    const [first, second, third] = clients as [Redis, Redis, Redis];
    // the waiting Redlock reaches every instance through a proxy that can hold its replies back,
    // and its subscriber connections through others
    const proxies = await Promise.all([a, b, c].map((server) => startDelayProxy(server.port)));
    const subscriberProxies = await Promise.all([a, b, c].map((server) => startDelayProxy(server.port)));
    const [pa, , pc] = proxies as [DelayProxy, DelayProxy, DelayProxy];
    const own = proxies.map((proxy, i) => {
      const client = new Redis({ host: "127.0.0.1", port: proxy.port });
      const duplicate = client.duplicate.bind(client);
      client.duplicate = (override) => duplicate({ ...override, port: (subscriberProxies[i] as DelayProxy).port });
      client.on("error", () => {});
      return client;
    });
    // held replies are timed out after 1 s (the call's attempt on the third instance), and only then
    const dlm = new Redlock(own, { ...NO_POLLING, instanceTimeout: 1000 });
    const stop = new AbortController();
    try {
      // it listens, and each connection has run the release script once (sent whole): later by SHA
      const { listening } = await waitInLine(dlm, stop.signal);
      await (await dlm.acquire("warm", 5000)).release();
      // its channel as the second and third instances name it
      const channels = new Map([second, third].map((client) => [client, queuedChannel(client, "other")]));
      // its own lock of "k", on every instance; the second instance then loses it (an expiry, a restart)
      const held = await dlm.acquire("k", 60_000);
      await until(async () =>
        (await Promise.all(clients.map((client) => client.get("k")))).every((v) => v === held.value),
      );
      await second.del("k");
      // its subscriber connections to the second and third instances drop and stay down (their
      // new connections hear nothing): nobody hears a hand-over to its waiters there
      for (const proxy of subscriberProxies.slice(1)) proxy.holdNewReplies = true;
      for (const client of [second, third]) await client.call("CLIENT", "KILL", "TYPE", "pubsub");
      const numsub = async (client: Redis) =>
        ((await client.pubsub("NUMSUB", await (channels.get(client) as Promise<string>))) as unknown[])[1];
      await until(async () => (await numsub(second)) === 0 && (await numsub(third)) === 0);
      // a waiter of the same Redlock: refused by the first instance, takes the free second, and its
      // attempt on the third runs (refused, queued) but is answered after the per-instance timeout
      pc.holdReplies();
      const errors = () =>
        third.info("errorstats").then((info) => Number(/errorstat_NOSCRIPT:count=(\d+)/.exec(info)?.[1] ?? 0));
      const noscripts = await errors();
      const waiting = dlm.acquire("k", 30_000, { wait: 60_000, signal: AbortSignal.timeout(30_000) });
      waiting.catch(() => {});
      await until(async () => (await third.zcard(queueOf("k"))) === 1);
      // the third instance's script cache is emptied: the give-back that follows is answered NOSCRIPT
      await third.script("FLUSH");
      await until(async () => (await errors()) > noscripts);
      // another process's release loads the script again there
      await third.script("LOAD", RELEASE_SCRIPT);
      // the Redlock releases its lock, granting the key to its waiter at the head of each queue;
      // the first instance's answer is held too, so that the waiter hears every grant at once
      pa.holdReplies();
      void held.release();
      await until(async () => {
        const values = await Promise.all([first.get("k"), third.get("k")]);
        return values.every((value) => value !== null && value !== held.value);
      });
      for (const proxy of proxies) proxy.releaseReplies();
      const lock = await waiting;
      // the give-back sent whole again on its NOSCRIPT has run behind the release on the third instance
      await (own[2] as Redis).ping();
      await new Promise(setImmediate);
      await (own[2] as Redis).ping();
      // the waiter holds the lock, and no other Redlock can take it beside it
      const other = await redlock().lock("k", 30_000, { retryCount: 0 });
      expect({ waiter: lock.valid, other: other?.valid ?? false }).toEqual({ waiter: true, other: false });
      stop.abort();
      await listening;
    } finally {
      stop.abort();
      for (const proxy of [...proxies, ...subscriberProxies]) proxy.releaseReplies();
      await dlm.quit();
      for (const client of own) client.disconnect();
      await Promise.all([...proxies, ...subscriberProxies].map((proxy) => proxy.close()));
    }
  }, 30_000);
});

describe("a waiter's give-back answered NOSCRIPT after its call left the queues", () => {
  it.each(["ioredis", "node-redis"] as const)(
    "%s: it is sent whole again without queueing the call again behind its ZREM",
    async (library) => {
      const [first, second, third] = clients as [Redis, Redis, Redis];
      // the waiting Redlock reaches the third instance through a proxy that can hold its replies back
      const { proxy, own, behindAnswers, close } = await thirdThroughProxy(library);
      // held replies are timed out after 1 s
      const dlm = new Redlock(own, { ...NO_POLLING, instanceTimeout: 1000 });
      const stop = new AbortController();
      const inLine = new AbortController();
      try {
        // it listens, and each connection has run the release script once (sent whole): later by SHA
        const { listening } = await waitInLine(dlm, stop.signal);
        await (await dlm.acquire("warm", 5000)).release();
        // "q" is held on the first two instances; another Redlock's waiter is in line on all three,
        // and the third instance's key is gone since (an expiry)
        await redlock({}, [first, second]).acquire("q", 60_000);
        await redlock({}, [third]).acquire("q", 60_000);
        const ahead = redlock(NO_POLLING).acquire("q", 20_000, { wait: 60_000, signal: inLine.signal });
        ahead.catch(() => {});
        await untilQueued("q", 1);
        await third.del("q");
        // the call: refused by the first two (queued behind that waiter), it takes the free third
        // instance, whose answer comes after the per-instance timeout
        proxy.holdReplies();
        const controller = new AbortController();
        const call = dlm.acquire("q", 20_000, { wait: 60_000, signal: controller.signal });
        call.catch(() => {});
        await until(async () => (await third.get("q")) !== null);
        const value = (await third.get("q")) as string;
        // the third instance's script cache is emptied: the give-back that follows is answered NOSCRIPT
        const noscripts = () =>
          third.info("errorstats").then((info) => Number(/errorstat_NOSCRIPT:count=(\d+)/.exec(info)?.[1] ?? 0));
        const before = await noscripts();
        await third.script("FLUSH");
        await until(async () => (await noscripts()) > before);
        // the call ends, and leaves the queues: its ZREM runs on the third instance behind the give-back
        const zrems = () =>
          third.info("commandstats").then((info) => Number(/cmdstat_zrem:calls=(\d+)/.exec(info)?.[1] ?? 0));
        const removed = await zrems();
        controller.abort(new Error("left"));
        await expect(call).rejects.toThrow("left");
        await until(async () => (await zrems()) > removed);
        // the NOSCRIPT comes: the give-back is sent whole again, behind the ZREM
        proxy.releaseReplies();
        await behindAnswers();
        // it gave the key back there, and the call that left is in no queue
        expect(await third.get("q")).not.toBe(value);
        const entries = await Promise.all(clients.map((client) => client.zrange(queueOf("q"), "0", "-1")));
        expect(entries.flat().filter((entry) => entry.endsWith(`:${value}`))).toEqual([]);
        inLine.abort();
        stop.abort();
        await listening;
      } finally {
        inLine.abort();
        stop.abort();
        proxy.releaseReplies();
        await dlm.quit();
        await close();
      }
    },
    30_000,
  );
});
