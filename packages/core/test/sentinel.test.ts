import { Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startDelayProxy } from "#test-helpers/delay-proxy.js";
import { trackTimers } from "#test-helpers/invariants.js";
import { startSentinel, startServer, type TestSentinel, until } from "#test-helpers/redis.js";
import { LockConfigurationError, LockUnavailableError, Redlock } from "../src/index.js";

let sentinel: TestSentinel;

beforeAll(async () => {
  sentinel = await startSentinel();
}, 60_000);

afterAll(async () => {
  await sentinel?.stop();
});

it("locks through ioredis Sentinel options before and after a failover to the replica", async () => {
  const dlm = new Redlock([{ sentinels: [{ host: "127.0.0.1", port: sentinel.sentinelPort }], name: sentinel.name }], {
    retryDelay: 50,
    retryJitter: 50,
  });
  const before = await dlm.acquire("sentinel:a", 5000);
  expect(await sentinel.master.client().get("sentinel:a")).toBe(before.value);
  expect(await before.release()).toBe(true);

  await sentinel.master.kill();
  await until("the sentinel promotes the replica", async () => (await sentinel.masterPort()) === sentinel.replica.port);

  // ioredis asks the sentinel for the new master when it reconnects; `wait` covers that gap
  const after = await dlm.acquire("sentinel:b", 5000, { wait: 10_000 });
  expect(await sentinel.replica.client().get("sentinel:b")).toBe(after.value);
  expect(await after.release()).toBe(true);
  await dlm.quit();
}, 40_000);

/**
 * Sentinel addresses whose failover detector the test drives. The detector hears +switch-master on
 * every address of `sentinels`. A Sentinel accepts no PUBLISH from a client, so the second address
 * is a plain redis-server the test publishes on; the first is the real sentinel, behind a proxy that
 * can hold a client's question for the master.
 */
async function cutOffRig() {
  const proxy = await startDelayProxy(sentinel.sentinelPort);
  const announcer = await startServer();
  const admin = announcer.client();
  const master = new Redis({ port: await sentinel.masterPort(), host: "127.0.0.1" });
  const detectors = async () => ((await admin.pubsub("NUMSUB", "+switch-master")) as [string, number])[1];
  return {
    sentinels: [
      { host: "127.0.0.1", port: proxy.port },
      { host: "127.0.0.1", port: announcer.port },
    ],
    master,
    detectors,
    /**
     * Kills the master's `killed` connections (CLIENT KILL arguments); their next attempt asks the
     * sentinel, which hears the question late, and a failover is announced meanwhile: the
     * detectors disconnect their connectors mid-attempt ("Connection is closed.", then `end`).
     */
    async cutOff(...killed: string[]) {
      proxy.holdCommandsWhen = (chunk) => chunk.includes("get-master-addr-by-name");
      await master.call("CLIENT", "KILL", ...killed);
      await until("the attempt to ask the sentinel", async () => proxy.heldCommandBytes > 0);
      await admin.publish("+switch-master", `${sentinel.name} 127.0.0.1 1 127.0.0.1 2`);
      await until("the detectors acted", async () => (await detectors()) === 0);
      proxy.releaseCommands();
    },
    async close() {
      master.disconnect();
      await Promise.all([proxy.close(), announcer.stop()]);
    },
  };
}

/** A `retryStrategy` that reconnects at once after a lost connection, then returns `later`; `asked` lists its `times`. */
function retryOnceThen(later: number | null) {
  const asked: number[] = [];
  const retryStrategy = (times: number) => {
    asked.push(times);
    return times === 1 ? 0 : later;
  };
  return { asked, retryStrategy };
}

it("keeps a client made from Sentinel options when its failover detector cuts off a connection attempt (ioredis would end it for good)", async () => {
  const rig = await cutOffRig();
  const dlm = new Redlock([{ sentinels: rig.sentinels, name: sentinel.name }]);
  try {
    await (await dlm.acquire("sentinel:cut-off", 5000)).release();
    await until("the failover detector subscribed", async () => (await rig.detectors()) === 1);
    await rig.cutOff("TYPE", "normal", "SKIPME", "yes");

    const lock = await dlm.acquire("sentinel:cut-off", 5000, { wait: 10_000 });
    expect(await rig.master.get("sentinel:cut-off")).toBe(lock.value);
    expect(await lock.release()).toBe(true);
  } finally {
    await dlm.quit();
    await rig.close();
  }
}, 40_000);

it("leaves a client made from Sentinel options ended when its own retryStrategy says stop at the cut-off attempt: the instance counts as down", async () => {
  const rig = await cutOffRig();
  // reconnect once (the attempt that is cut off), then stop, as ioredis documents it: not a number
  const { asked, retryStrategy } = retryOnceThen(null);
  const dlm = new Redlock([{ sentinels: rig.sentinels, name: sentinel.name, retryStrategy }], {
    retryDelay: 50,
    retryJitter: 0,
  });
  try {
    await (await dlm.acquire("sentinel:given-up", 5000)).release();
    await until("the failover detector subscribed", async () => (await rig.detectors()) === 1);
    await rig.cutOff("TYPE", "normal", "SKIPME", "yes");

    // the wait outlasts any reconnect: a revived client would lock
    const outcome = await dlm.acquire("sentinel:given-up", 5000, { wait: 5000 }).then(
      (lock) => lock.release().then(() => "acquired"),
      (error: unknown) => error,
    );
    expect(outcome).toBeInstanceOf(LockUnavailableError);
    // ioredis asked about attempt 1; Redlock about the cut-off one, as ioredis would have
    expect(asked).toEqual([1, 2]);
    expect(await rig.master.get("sentinel:given-up")).toBeNull();
  } finally {
    await dlm.quit();
    await rig.close();
  }
}, 40_000);

it("asks a client's retryStrategy for the delay after a cut-off attempt, and quit() drops the reconnect waiting for it: no timer left", async () => {
  const rig = await cutOffRig();
  const { asked, retryStrategy } = retryOnceThen(600_000);
  const dlm = new Redlock([{ sentinels: rig.sentinels, name: sentinel.name, retryStrategy }]);
  const timers = trackTimers();
  try {
    await (await dlm.acquire("sentinel:quit-pending", 5000)).release();
    await until("the failover detector subscribed", async () => (await rig.detectors()) === 1);
    await rig.cutOff("TYPE", "normal", "SKIPME", "yes");
    await until("the reconnect after the cut-off attempt was asked for", async () => asked.length === 2);
    expect(asked).toEqual([1, 2]);

    await dlm.quit();
    // a cleared timer leaves the list once Node reports it destroyed; a leaked one would stay ten minutes
    const revives = () => timers.alive().filter((stack) => stack.includes("stores/keep-connecting.ts"));
    await until("no reconnect timer left", async () => revives().length === 0).catch(() => {});
    expect(revives()).toEqual([]);
  } finally {
    timers.stop();
    await dlm.quit();
    await rig.close();
  }
}, 40_000);

/**
 * A holder of `key` on the sentinel, and `waiter` (through `rig.sentinels`) waiting for it; once the
 * waiter is subscribed, its subscriber's next connection attempt is cut off, then `afterCutOff`
 * runs, then the release: the waiter must take the key. Both Redlocks quit, the rig closes.
 */
async function releaseToWaiterCutOff(
  rig: Awaited<ReturnType<typeof cutOffRig>>,
  key: string,
  waiter: Redlock,
  afterCutOff: () => Promise<void>,
): Promise<void> {
  const holder = new Redlock([
    { sentinels: [{ host: "127.0.0.1", port: sentinel.sentinelPort }], name: sentinel.name },
  ]);
  const { master } = rig;
  try {
    const held = await holder.acquire(key, 30_000);
    const waiting = waiter.acquire(key, 5000, { wait: 10_000 });
    waiting.catch(() => {}); // awaited below; a failure there must not also surface as unhandled
    await until(
      "the waiter subscribed, both its connections watching for failovers",
      async () =>
        (await rig.detectors()) === 2 && (await master.pubsub("CHANNELS", "redlock-kit:hand-over:*")).length === 1,
    );

    await rig.cutOff("TYPE", "pubsub");
    await afterCutOff();

    expect(await held.release()).toBe(true);
    const lock = await waiting;
    expect(await master.get(key)).toBe(lock.value);
    expect(await lock.release()).toBe(true);
  } finally {
    await Promise.all([holder.quit(), waiter.quit()]);
    await rig.close();
  }
}

it("keeps a waiter's subscriber connection on Sentinel options when the failover detector cuts off its reconnect: the release still wakes it", async () => {
  const rig = await cutOffRig();
  // polls once a minute: within its wait only a hand-over message can wake it
  const waiter = new Redlock([{ sentinels: rig.sentinels, name: sentinel.name }], {
    retryDelay: 60_000,
    retryJitter: 0,
  });
  await releaseToWaiterCutOff(rig, "sentinel:woken", waiter, () =>
    until(
      "the waiter subscribed again",
      async () => (await rig.master.pubsub("CHANNELS", "redlock-kit:hand-over:*")).length === 1,
    ),
  );
}, 40_000);

it("leaves a waiter's subscriber connection ended when the retryStrategy it shares with its client says stop at the cut-off attempt: the waiter polls", async () => {
  const rig = await cutOffRig();
  // the subscriber is a duplicate() of the client and shares its options
  const { asked, retryStrategy } = retryOnceThen(null);
  // the client still votes: the waiter takes the key at a poll
  const waiter = new Redlock([{ sentinels: rig.sentinels, name: sentinel.name, retryStrategy }], {
    retryDelay: 100,
    retryJitter: 0,
  });
  await releaseToWaiterCutOff(rig, "sentinel:polls", waiter, async () => {
    // the client's own detector reconnects it too, an ordinary reconnect (its retryStrategy asked about attempt 1)
    await until("the subscriber's retryStrategy asked about the cut-off attempt", async () => asked.includes(2));
    expect(await rig.master.pubsub("CHANNELS", "redlock-kit:hand-over:*")).toEqual([]);
  });
}, 40_000);

it("accepts two Sentinel deployments that both name their master mymaster: their sentinels tell them apart", async () => {
  // the same sentinels and name twice are still refused at once
  const mine = {
    sentinels: [{ host: "127.0.0.1", port: sentinel.sentinelPort }],
    name: sentinel.name,
    lazyConnect: true,
  };
  expect(() => new Redlock([mine, { ...mine }])).toThrow(TypeError);
  const other = await startSentinel(sentinel.name);
  try {
    const dlm = new Redlock([
      { sentinels: [{ host: "127.0.0.1", port: sentinel.sentinelPort }], name: sentinel.name },
      { sentinels: [{ host: "127.0.0.1", port: other.sentinelPort }], name: other.name },
    ]);
    const lock = await dlm.acquire("sentinel:same-name", 10_000);
    const masters = [await sentinel.masterPort(), await other.masterPort()];
    const values = await Promise.all(
      masters.map(async (port) => {
        const client = new Redis({ host: "127.0.0.1", port });
        try {
          return await client.get("sentinel:same-name");
        } finally {
          client.disconnect();
        }
      }),
    );
    expect(values).toEqual([lock.value, lock.value]);
    await lock.release();
    await dlm.quit();
  } finally {
    await other.stop();
  }
}, 60_000);

it("accepts two Sentinel-managed masters as two distinct instances", () => {
  const sentinels = [{ host: "127.0.0.1", port: sentinel.sentinelPort }];
  const dlm = new Redlock([
    { sentinels, name: "one", lazyConnect: true },
    { sentinels, name: "two", lazyConnect: true },
    { sentinels, name: "three", lazyConnect: true },
  ]);
  expect(dlm.quorum).toBe(2);
  return dlm.quit();
});

it("refuses a Sentinel-managed master listed again as a plain client of that server, and a plain client of the sentinel", async () => {
  // The Sentinel's answers held back: its client says who it is after the plain client voted, the
  // order a loaded machine can give (a Sentinel client takes more round trips before its INFO).
  const proxy = await startDelayProxy(sentinel.sentinelPort);
  proxy.holdNewReplies = true;
  const master = await sentinel.masterPort();
  const server = new Redis({ host: "127.0.0.1", port: master });
  // Two entries only: a third instance's vote would let the plain client lock while the Sentinel's
  // client, not yet known, does not vote (its vote counts as unavailable, as documented).
  const twice = new Redlock([
    { sentinels: [{ host: "127.0.0.1", port: proxy.port }], name: sentinel.name },
    { host: "127.0.0.1", port: master },
  ]);
  const wrong = new Redlock([{ host: "127.0.0.1", port: sentinel.sentinelPort }]);
  try {
    await expect(twice.acquire("sentinel:twice", 5000, { retryCount: 0 })).rejects.toThrow(LockUnavailableError);
    proxy.releaseReplies();
    // tried again until the Sentinel's client has said who it is
    await expect(twice.lock("sentinel:twice", 5000, { wait: 15_000 })).rejects.toThrow(
      `instances[1] (127.0.0.1:${master}/0) is the same Redis server as instances[0] (sentinel:${sentinel.name}/0)`,
    );
    expect(await server.get("sentinel:twice")).toBeNull();

    await expect(wrong.lock("sentinel:wrong", 5000)).rejects.toThrow(LockConfigurationError);
    await expect(wrong.lock("sentinel:wrong", 5000)).rejects.toThrow(/is a sentinel \(redis_mode:sentinel\)/);
  } finally {
    server.disconnect();
    await Promise.all([twice.quit(), wrong.quit()]);
    await proxy.close();
  }
});

it("force-releases through Sentinel options only the holder given", async () => {
  const dlm = new Redlock([{ sentinels: [{ host: "127.0.0.1", port: sentinel.sentinelPort }], name: sentinel.name }]);
  try {
    await dlm.acquire("sentinel:forced", 60_000);
    const { holder } = await dlm.inspect("sentinel:forced");
    expect(await dlm.forceRelease("sentinel:forced", { holder: "00000000" })).toMatchObject({ deleted: 0, kept: 1 });
    expect(await dlm.forceRelease("sentinel:forced", { holder: holder as string })).toMatchObject({
      deleted: 1,
      kept: 0,
    });
    expect((await dlm.inspect("sentinel:forced")).state).toBe("free");
  } finally {
    await dlm.quit();
  }
}, 40_000);
