import { createHash } from "node:crypto";
import diagnosticsChannel from "node:diagnostics_channel";
import type { Redis } from "ioredis";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import type { RedisServer } from "../../../test/helpers/redis-process.js";
import { sleep, useRedisServers } from "../../../test/helpers/redis-servers.js";
import {
  type AcquireMessage,
  type Lock,
  LockContentionError,
  LockLostError,
  MemoryStore,
  Redlock,
} from "../src/index.js";
import { RELEASE_SCRIPT } from "../src/scripts.js";

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

/** A poll interval so long that only a release notification can wake a waiter within the test. */
const NO_POLLING = { retryDelay: 60_000, retryJitter: 0 };

function redlock(options = {}) {
  const dlm = new Redlock(clients, options);
  redlocks.push(dlm);
  return dlm;
}

/** A Redlock on the first instance alone, never polling: one connection, whose commands Redis runs in the order sent. */
function onFirstInstance(): Redlock {
  const dlm = new Redlock([clients[0] as Redis], NO_POLLING);
  redlocks.push(dlm);
  return dlm;
}

async function subscribedChannels(): Promise<number> {
  let total = 0;
  for (const client of clients) total += ((await client.pubsub("CHANNELS")) as string[]).length;
  return total;
}

/** Attempts of each call on `resource` that ended with `outcome`, in the order they ended. */
async function attemptsOf(
  resource: string,
  run: () => Promise<void>,
  outcome: AcquireMessage["outcome"] = "acquired",
): Promise<number[]> {
  const attempts: number[] = [];
  const record = (message: unknown) => {
    const { resources, outcome: ended, attempts: count } = message as AcquireMessage;
    if (resources[0] === resource && ended === outcome) attempts.push(count);
  };
  diagnosticsChannel.subscribe("redlock-kit:acquire", record);
  try {
    await run();
  } finally {
    diagnosticsChannel.unsubscribe("redlock-kit:acquire", record);
  }
  return attempts;
}

describe("waiting for a held lock", () => {
  it("wakes a waiter on release instead of after the poll interval", async () => {
    const holder = await redlock().acquire("job", 10_000);
    const waiting = redlock(NO_POLLING).acquire("job", 1000, { wait: 60_000, signal: AbortSignal.timeout(10_000) });
    await sleep(100);
    await holder.release();
    const lock = await waiting;
    expect(lock.valid).toBe(true);
    await lock.release();
  });

  it("wakes waiters of one process oldest first, one per release", async () => {
    const dlm = redlock(NO_POLLING);
    const holder = await redlock().acquire("queue", 10_000);
    const order: number[] = [];
    const waiters = [0, 1, 2].map(async (id) => {
      await sleep(id * 30);
      const lock = await dlm.acquire("queue", 5000, { wait: 60_000, signal: AbortSignal.timeout(10_000) });
      order.push(id);
      await sleep(20);
      await lock.release();
    });
    await sleep(150);
    await holder.release();
    await Promise.all(waiters);
    expect(order).toEqual([0, 1, 2]);
  });

  /** Two calls that wait for `resource`, started `gapMs` apart; resolves `gapMs` after the second. */
  async function twoWaiters(dlm: Redlock, resource: string, gapMs: number) {
    const signal = AbortSignal.timeout(10_000);
    const first = dlm.acquire(resource, 5000, { wait: 60_000, signal });
    await sleep(gapMs);
    const second = dlm.acquire(resource, 5000, { wait: 60_000, signal });
    await sleep(gapMs);
    return { first, second };
  }

  /** A holder, then two waiters 100 ms apart; the holder releases, then each waiter in turn. */
  async function holderThenTwoWaiters(dlm: Redlock, holder: Lock, resource: string): Promise<void> {
    const { first, second } = await twoWaiters(dlm, resource, 100);
    await holder.release();
    await (await first).release();
    await (await second).release();
  }

  it("retries at once only when it had to subscribe: a later waiter on the same key sleeps until told", async () => {
    const dlm = onFirstInstance();
    const holder = await dlm.acquire("joined", 10_000);
    const attempts = await attemptsOf("joined", () => holderThenTwoWaiters(dlm, holder, "joined"));
    // first subscribed (a release before that may have gone unheard): refused, asked again at
    // once, woken by the release. second joined that subscription: refused, then woken.
    expect(attempts).toEqual([3, 2]);
  });

  it("wakes one waiter per release, not one per instance that announces it", async () => {
    // in-process stores deliver the three announcements of one release in a known order (Redis
    // instances race): all three before the woken waiter has run again
    const dlm = new Redlock([new MemoryStore(), new MemoryStore(), new MemoryStore()], NO_POLLING);
    redlocks.push(dlm);
    const holder = await dlm.acquire("announced", 10_000);
    const attempts = await attemptsOf("announced", () => holderThenTwoWaiters(dlm, holder, "announced"));
    // second is not woken by the 2nd and 3rd announcement while first is busy taking the lock
    expect(attempts).toEqual([3, 2]);
  });

  it("leaves no subscription behind when many waiters time out", async () => {
    const holder = await redlock().acquire("busy", 10_000);
    const dlm = redlock({ retryDelay: 20, retryJitter: 20 });
    const results = await Promise.allSettled(
      Array.from({ length: 50 }, (_, i) => dlm.acquire(i % 2 ? "busy" : ["busy", `other-${i}`], 1000, { wait: 200 })),
    );
    expect(results.every((r) => r.status === "rejected" && r.reason instanceof LockContentionError)).toBe(true);
    await sleep(50);
    expect(await subscribedChannels()).toBe(0);
    await holder.release();
  });

  it("ends the wait and unsubscribes when the signal aborts", async () => {
    const holder = await redlock().acquire("abortable", 10_000);
    const controller = new AbortController();
    const waiting = redlock(NO_POLLING).acquire("abortable", 1000, { wait: 60_000, signal: controller.signal });
    await sleep(100);
    expect(await subscribedChannels()).toBe(3);
    controller.abort(new Error("client left"));
    await expect(waiting).rejects.toThrow("client left");
    await sleep(50);
    expect(await subscribedChannels()).toBe(0);
    await holder.release();
  });

  it("falls back to polling with one warning when the user may not subscribe", async () => {
    for (const client of clients) {
      await client.call("ACL", "SETUSER", "nopubsub", "on", ">pw", "~*", "resetchannels", "+@all");
    }
    const restricted = cluster.servers.map((server) => server.client({ username: "nopubsub", password: "pw" }));
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on("warning", onWarning);
    try {
      const dlm = new Redlock(restricted, { retryDelay: 30, retryJitter: 10 });
      redlocks.push(dlm);
      const holder = await dlm.acquire("acl", 10_000);
      const waiting = dlm.acquire("acl", 1000, { wait: 5000 });
      await sleep(100);
      expect(await holder.release()).toBe(true);
      const lock = await waiting;
      await lock.release();
      await sleep(10);
      expect(warnings.filter((w) => (w as { code?: string }).code === "REDLOCK_KIT_NO_PUBSUB")).toHaveLength(1);
    } finally {
      process.off("warning", onWarning);
      for (const client of clients) await client.call("ACL", "DELUSER", "nopubsub");
    }
  });

  it("works with the in-process MemoryStore", async () => {
    const dlm = new Redlock([new MemoryStore()], NO_POLLING);
    const holder = await dlm.acquire("mem", 10_000);
    const waiting = dlm.acquire("mem", 1000, { wait: 60_000, signal: AbortSignal.timeout(10_000) });
    await sleep(50);
    await holder.release();
    const lock: Lock = await waiting;
    expect(lock.valid).toBe(true);
    await lock.release();
  });

  describe("handing a released key to a waiter in the same process", () => {
    const releaseSha = createHash("sha1").update(RELEASE_SCRIPT).digest("hex");

    /** The scripts Redis runs, in order, as [release or acquire/extend, key, the release's notice]. */
    async function watch(client: Redis): Promise<{ log: string[][]; stop: () => Promise<void> }> {
      const monitor = await client.monitor();
      const log: string[][] = [];
      monitor.on("monitor", (_time: string, args: string[]) => {
        const [command = "", sha = ""] = args;
        if (command.toLowerCase() !== "evalsha" && command.toLowerCase() !== "eval") return;
        const kind = sha === releaseSha || args[1] === RELEASE_SCRIPT ? "release" : "acquire/extend";
        log.push([kind, args[3] ?? "", args.length > 5 ? (args[5] ?? "") : "(no notice)"]);
      });
      // MONITOR reports a command after running it: give the last ones time to arrive
      return { log, stop: () => sleep(50).then(() => monitor.disconnect()) };
    }

    it("sends the oldest waiter's attempt right behind the release when nobody else listens", async () => {
      const dlm = onFirstInstance();
      const holder = await dlm.acquire("handed", 10_000);
      const client = clients[0] as Redis;
      await client.config("RESETSTAT");
      const { log, stop } = await watch(client);
      try {
        const attempts = await attemptsOf("handed", () => holderThenTwoWaiters(dlm, holder, "handed"));
        expect(attempts).toEqual([3, 2]);
      } finally {
        await stop();
      }
      // the hand-over is not announced: only this process listened, and it knew
      const stats = await client.info("commandstats");
      expect(stats).toMatch(/cmdstat_publish:calls=2,/);
      expect(stats).toMatch(/cmdstat_pubsub\|numsub:calls=1,/);
      const releases = log.filter(([kind]) => kind === "release").map(([, , notice]) => notice);
      // the holder's release learns that only this process listens; first's hands over; second's has nobody to tell
      expect(releases[0]).toBe("");
      expect(releases[1]).toMatch(/^handed-over:/);
      expect(releases[2]).toBe("(no notice)");
      const handedOver = log.findIndex(([, , notice]) => notice?.startsWith("handed-over:"));
      expect(log[handedOver + 1]?.[0]).toBe("acquire/extend");
    });

    it("announces a hand-over, and still releases, when the user may not run PUBSUB NUMSUB", async () => {
      const admin = clients[0] as Redis;
      await admin.call("ACL", "SETUSER", "nonumsub", "on", ">pw", "~*", "&*", "+@all", "-pubsub|numsub");
      await admin.call("ACL", "LOG", "RESET");
      const restricted = (cluster.servers[0] as RedisServer).client({ username: "nonumsub", password: "pw" });
      try {
        const dlm = new Redlock([restricted], NO_POLLING);
        redlocks.push(dlm);
        const holder = await dlm.acquire("numsub", 10_000);
        const { first, second } = await twoWaiters(dlm, "numsub", 50);
        // learns that only this process listens: the next release is a hand-over
        expect(await holder.release()).toBe(true);
        // the hand-over's release asks PUBSUB NUMSUB, is refused, and announces instead
        expect(await (await first).release()).toBe(true);
        const secondLock = await second;
        expect(secondLock.valid).toBe(true);
        expect(await secondLock.release()).toBe(true);
        const denied = (await admin.call("ACL", "LOG")) as unknown[][];
        expect(denied.some((entry) => entry.includes("pubsub|numsub"))).toBe(true);
      } finally {
        restricted.disconnect();
        await admin.call("ACL", "DELUSER", "nonumsub");
      }
    });

    it("queues a call that may wait behind this process's waiters while the key is handed along, without trying first", async () => {
      const dlm = onFirstInstance();
      const holder = await dlm.acquire("line", 10_000);
      const signal = AbortSignal.timeout(10_000);
      const take = async (id: string, after: number) => {
        await sleep(after);
        const lock = await dlm.acquire("line", 5000, { wait: 60_000, signal });
        await sleep(20);
        await lock.release();
        return id;
      };
      const attempts = await attemptsOf("line", async () => {
        const first = take("first", 0);
        const second = take("second", 50);
        await sleep(100);
        // the holder's release learns that only this process listens; from then on the key is handed along
        await holder.release();
        const third = take("third", 5);
        expect(await Promise.all([first, second, third])).toEqual(["first", "second", "third"]);
      });
      // first subscribed (refused, asked again, woken); second refused, then handed the key; third
      // joined the queue and was handed the key on its only try
      expect(attempts).toEqual([3, 2, 1]);
    });

    it("a queued call whose signal aborts leaves the queue, and the key goes on to the next", async () => {
      const dlm = onFirstInstance();
      const holder = await dlm.acquire("left", 10_000);
      const { first, second } = await twoWaiters(dlm, "left", 50);
      await holder.release();
      const controller = new AbortController();
      const queued = dlm.acquire("left", 5000, { wait: 60_000, signal: controller.signal });
      await sleep(20);
      controller.abort(new Error("gave up"));
      await expect(queued).rejects.toThrow("gave up");
      await (await first).release();
      await (await second).release();
      await sleep(50);
      expect(await subscribedChannels()).toBe(0);
    });

    it("does not hand over while another process waits for the key, and does again once it left", async () => {
      const here = onFirstInstance();
      const elsewhere = onFirstInstance();
      // the other process waits for "shared" too, but cannot take it: it also needs a key held for good
      await redlock().acquire("blocked", 10_000);
      const other = new AbortController();
      const stuck = elsewhere.acquire(["shared", "blocked"], 1000, { wait: 60_000, signal: other.signal });
      stuck.catch(() => {});
      const holder = await here.acquire("shared", 10_000);
      const signal = AbortSignal.timeout(10_000);
      const waiting = [0, 1, 2, 3].map(async (index) => {
        await sleep(50 * (index + 1));
        return here.acquire("shared", 5000, { wait: 60_000, signal });
      });
      await sleep(300);
      const { log, stop } = await watch(clients[0] as Redis);
      try {
        await holder.release();
        await ((await waiting[0]) as Lock).release();
        const secondWaiter = (await waiting[1]) as Lock;
        other.abort(new Error("gave up"));
        await expect(stuck).rejects.toThrow("gave up");
        await sleep(50);
        await secondWaiter.release();
        await ((await waiting[2]) as Lock).release();
        await ((await waiting[3]) as Lock).release();
      } finally {
        await stop();
      }
      const releases = log.filter(([kind, key]) => kind === "release" && key === "shared").map(([, , n]) => n);
      // two releases heard by the other process too; the one after it left learns that, the next
      // hands over; the last has nobody left to tell
      expect(releases).toHaveLength(5);
      expect(releases.slice(0, 3)).toEqual(["", "", ""]);
      expect(releases[3]).toMatch(/^handed-over:/);
      expect(releases[4]).toBe("(no notice)");
    });
  });
});

describe("waiting behind a lock of the same Redlock", () => {
  /** Polls every 10 ms: without the local answer, a waiter would ask Redis many times while the test sleeps. */
  const POLL_FAST = { retryDelay: 10, retryJitter: 0 };

  /** Scripts run, summed over the instances, since the last RESETSTAT. */
  async function scriptCalls(): Promise<number> {
    let total = 0;
    for (const client of clients) {
      const stats = await client.info("commandstats");
      total += Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1] ?? 0);
    }
    return total;
  }

  async function resetStats(): Promise<void> {
    await Promise.all(clients.map((client) => client.config("RESETSTAT")));
  }

  /**
   * A lock that `dlm` took while another of its calls waited for the key (so this Redlock knows it
   * holds the key), and that other call, still waiting.
   */
  async function heldWhileWaited(dlm: Redlock, resource: string, ttl: number, signal: AbortSignal) {
    const first = await dlm.acquire(resource, 10_000);
    const calls = [0, 1].map(() => dlm.acquire(resource, ttl, { wait: 60_000, signal }));
    await sleep(30);
    await first.release();
    // either call may win: one is woken, the other polls
    const winner = await Promise.race(calls.map((call, index) => call.then((lock) => ({ lock, index }))));
    // let an attempt of the other call that raced the winner's (and its release) finish first
    await sleep(50);
    return { holder: winner.lock, waiting: calls[1 - winner.index] as Promise<Lock> };
  }

  it("does not ask Redis while the key is held by a lock of this Redlock, and takes it once released", async () => {
    const dlm = redlock(POLL_FAST);
    const { holder, waiting } = await heldWhileWaited(dlm, "local", 10_000, AbortSignal.timeout(10_000));
    await resetStats();
    await sleep(200);
    expect(await scriptCalls()).toBe(0);
    await holder.release();
    const lock = await waiting;
    expect(lock.valid).toBe(true);
    await lock.release();
  });

  it("asks Redis again once the holder's validity ended without a release", async () => {
    const dlm = redlock(POLL_FAST);
    const { holder, waiting } = await heldWhileWaited(dlm, "forgotten", 300, AbortSignal.timeout(10_000));
    // the holder is never released: its key expires in Redis
    const lock = await waiting;
    expect(holder.valid).toBe(false);
    expect(lock.valid).toBe(true);
    await lock.release();
  });

  it("asks Redis again once the holder is known lost, before its validity would have ended", async () => {
    const dlm = redlock(POLL_FAST);
    const { holder, waiting } = await heldWhileWaited(dlm, "lost", 60_000, AbortSignal.timeout(10_000));
    // someone removed the key behind the holder's back; the holder learns it when it extends
    await Promise.all(clients.map((client) => client.del("lost")));
    await expect(holder.extend(60_000)).rejects.toThrow(LockLostError);
    const lock = await waiting;
    expect(lock.valid).toBe(true);
    await lock.release();
  });

  it("a call that retries a fixed number of times still gives up after them, asking Redis only the first time", async () => {
    const dlm = redlock(POLL_FAST);
    const signal = AbortSignal.timeout(10_000);
    const { holder, waiting } = await heldWhileWaited(dlm, "counted", 10_000, signal);
    await resetStats();
    const attempts = await attemptsOf(
      "counted",
      async () => expect(await dlm.lock("counted", 1000, { retryCount: 3 })).toBeNull(),
      "contention",
    );
    expect(attempts).toEqual([4]);
    // its first try on each instance; the three retries were answered here
    expect(await scriptCalls()).toBe(clients.length);
    await holder.release();
    await (await waiting).release();
  });
});
