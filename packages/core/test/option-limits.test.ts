/**
 * Options that pass their own range check but cannot work together: a ttl the drift and the
 * per-instance timeout use up, attempts with no pause between them, an extension threshold shorter
 * than an extension may take.
 */
import type { Redis } from "ioredis";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { aborted } from "#test-helpers/aborted.js";
import { type DelayProxy, startDelayProxy } from "#test-helpers/delay-proxy.js";
import { arrival, nextExtensions } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { checkLockOptions, createHttpLockPolicy, LockContentionError, Redlock } from "../src/index.js";

const cluster = useRedisServers(3);
let clients: Redis[];
let proxies: DelayProxy[] = [];

beforeAll(() => {
  clients = cluster.servers.map((server) => server.client());
});

afterEach(async () => {
  await Promise.all(proxies.map((proxy) => proxy.close()));
  proxies = [];
  await Promise.all(clients.map((client) => client.flushall()));
});

const dbsizes = () => Promise.all(clients.map((client) => client.dbsize()));

describe("a ttl that can never give a valid lock", () => {
  it.each([
    ["ttl 2 (the drift alone is 2 ms)", 2, {}],
    ["ttl 4 with driftFactor 0.49", 4, { driftFactor: 0.49 }],
    ["ttl 100 with driftFactor 0.49 (51 ms of drift)", 100, { driftFactor: 0.49 }],
  ])("%s is a RangeError naming the ttl, before anything is written", async (_, ttl, options) => {
    const dlm = new Redlock(clients, { retryCount: 0 });
    const error = await dlm.lock("tiny", ttl, options).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RangeError);
    expect((error as Error).message).toMatch(new RegExp(`^ttl of ${ttl} ms can never give a valid lock`));
    expect(await dbsizes()).toEqual([0, 0, 0]);
  });

  it("is refused where a route or a @Locked method declares it, naming the option", () => {
    expect(() => checkLockOptions({ ttl: 2 })).toThrow(/^options\.ttl of 2 ms can never give a valid lock/);
    expect(() => checkLockOptions({ ttl: 4, driftFactor: 0.49 }, "defaults")).toThrow(/^defaults\.ttl of 4 ms/);
    // the smallest ttls that leave validity after the drift and the timeout still work
    expect(() => checkLockOptions({ ttl: 5 })).not.toThrow();
  });
});

describe("retryDelay 0 with retryJitter 0", () => {
  it("and a wait is a RangeError naming retryDelay, per call or in the constructor, with nothing written", async () => {
    const dlm = new Redlock(clients, { retryDelay: 0, retryJitter: 0 });
    const holder = await new Redlock(clients).acquire("spin", 5000);
    const error = await dlm.lock("spin", 1000, { wait: 300 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RangeError);
    expect((error as Error).message).toMatch(/^options\.retryDelay and options\.retryJitter are both 0 with a wait/);
    expect(() => new Redlock(clients, { retryDelay: 0, retryJitter: 0, wait: 100 })).toThrow(RangeError);
    expect(() => checkLockOptions({ ttl: 1000, retryDelay: 0, retryJitter: 0, wait: 100 })).toThrow(/retryDelay/);
    expect(await Promise.all(clients.map((client) => client.get("spin")))).toEqual([
      holder.value,
      holder.value,
      holder.value,
    ]);
    await holder.release();
  });

  it("without a wait keeps its bounded retries, and a pause of 1 ms is enough to wait", async () => {
    // 500 ms per instance: the 1 s locks' default 100 ms, which a loaded machine's Redis misses,
    // answered unavailable where the test meets a holder
    const dlm = new Redlock(clients, { retryDelay: 0, retryJitter: 0, retryCount: 2, instanceTimeout: 500 });
    const holder = await dlm.acquire("bounded", 5000);
    await expect(dlm.acquire("bounded", 1000)).rejects.toBeInstanceOf(LockContentionError);
    await expect(dlm.acquire("bounded", 1000, { wait: 50, retryDelay: 1 })).rejects.toBeInstanceOf(LockContentionError);
    await holder.release();
  });
});

describe("retryDelay and retryJitter that add up past 2^31 - 1 ms", () => {
  const longest = 2 ** 31 - 1;

  it("are a RangeError naming both, per call, in the constructor and where a lock is declared, with nothing written", async () => {
    const holder = await new Redlock(clients).acquire("far-off", 5000);
    const dlm = new Redlock(clients, { retryCount: 2 });
    // each passes its own check; with the default jitter (100 ms) the pause is past what a timer can
    // wait, and Node fires such a timer after 1 ms: the retries would come at once
    const error = await dlm.lock("far-off", 1000, { retryDelay: longest }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RangeError);
    expect((error as Error).message).toMatch(
      /^options\.retryDelay \+ options\.retryJitter must be at most 2147483647 ms/,
    );
    expect(() => new Redlock(clients, { retryDelay: longest - 50, retryJitter: 100 })).toThrow(RangeError);
    expect(() => checkLockOptions({ ttl: 1000, retryJitter: longest })).toThrow(
      /^options\.retryDelay \+ options\.retryJitter/,
    );
    expect(await Promise.all(clients.map((client) => client.get("far-off")))).toEqual([
      holder.value,
      holder.value,
      holder.value,
    ]);
    expect(await dbsizes()).toEqual([1, 1, 1]);
    // the longest pause a timer can wait is accepted
    expect(() => new Redlock(clients, { retryDelay: longest - 100, retryJitter: 100 })).not.toThrow();
    await holder.release();
  });
});

describe("a route's options that cannot work with its Redlock's own", () => {
  it.each([
    [
      "the Redlock's instanceTimeout 1000 with a route's ttl 500",
      { instanceTimeout: 1000 },
      { ttl: 500 },
      /instanceTimeout must be shorter than the ttl, got 1000 for a ttl of 500/,
    ],
    [
      "the Redlock's driftFactor 0.49 with a route's ttl 100",
      { driftFactor: 0.49 },
      { ttl: 100 },
      /ttl of 100 ms can never give a valid lock/,
    ],
    [
      "the Redlock's retryDelay and retryJitter 0 with a route's wait",
      { retryDelay: 0, retryJitter: 0 },
      { wait: 100 },
      /retryDelay and options\.retryJitter are both 0/,
    ],
  ])("%s is a RangeError where the route is declared, not at each request", (_, own, route, message) => {
    const dlm = new Redlock(clients, own);
    // alone, each passes: the conflict is with the Redlock the route locks with
    expect(() => checkLockOptions(route)).not.toThrow();
    const policy = createHttpLockPolicy(dlm);
    const declared = (() => policy.route("declared", route)) as () => unknown;
    expect(declared).toThrow(RangeError);
    expect(declared).toThrow(/^options cannot be used with this Redlock: /);
    expect(declared).toThrow(message);
    // the defaults alone are not refused: every route may set a ttl of its own
    expect(() => createHttpLockPolicy(dlm, route)).not.toThrow();
  });
});

describe("an extension threshold shorter than two per-instance timeouts", () => {
  it("is raised to them: a lock whose quorum answers in 100 ms stays valid with extendThreshold 0.05", async () => {
    // two of three instances 50 ms away each way: every quorum needs one of them (100 ms at least)
    proxies = await Promise.all(
      cluster.servers.slice(1).map((server) => startDelayProxy(server.port, { upDelayMs: 50, downDelayMs: 50 })),
    );
    const far = proxies.map((proxy) => cluster.servers[0]?.client({ port: proxy.port }) as Redis);
    // a per-instance timeout 8 times the round trip: a loaded machine's delays stay inside it
    const dlm = new Redlock([clients[0] as Redis, ...far], { instanceTimeout: 800 });
    // Three renewals in a row, each one that extended the lock, before its signal could abort: the
    // events themselves, not how many fit in a window of time. Started with 100 ms left (0.05 of
    // 2 s), an extension of at least 100 ms lands after the validity ended, and the signal aborts first.
    const renewals = nextExtensions("far", 3);
    const outcome = await dlm
      .using(
        "far",
        2000,
        async (signal) => {
          const lost = new Promise<"lost">((resolve) => signal.addEventListener("abort", () => resolve("lost")));
          const first = await arrival(Promise.race([renewals, lost]), "three extensions or the lock's loss");
          return first === "lost" ? `lost: ${String(signal.reason)}` : first.map((renewal) => renewal.extended);
        },
        { extendThreshold: 0.05 },
      )
      .finally(renewals.stop);
    expect(outcome).toEqual([true, true, true]);
    for (const client of far) client.disconnect();
  }, 20_000);

  it("is raised to them: a renewal that first waits for a reconnected server to say who it is still lands in time", async () => {
    // a and b 10 ms away each way; c's connection through a proxy of its own
    proxies = await Promise.all(
      cluster.servers.map((server, i) => startDelayProxy(server.port, i < 2 ? { upDelayMs: 10, downDelayMs: 10 } : {})),
    );
    const through = cluster.servers.map((server, i) => server.client({ port: proxies[i]?.port }));
    const reconnecting = through[2] as Redis;
    // extendThreshold 0.05 of 2 s is 100 ms: raised to two per-instance timeouts (one before)
    const dlm = new Redlock(through, { instanceTimeout: 200 });
    const renewal = nextExtensions("reconnected", 1);
    const outcome = await dlm
      .using(
        "reconnected",
        2000,
        async (signal) => {
          // c's connection drops; the new one passes its ready check, but the INFO that says which
          // server it reaches is held: the renewal waits one per-instance timeout for it before its
          // votes go out (a and b answer them; c cannot vote)
          (proxies[2] as DelayProxy).holdCommandsWhen = (chunk) =>
            /\$4\r\ninfo\r\n\$6\r\nserver\r\n/i.test(chunk.toString());
          const ready = new Promise((resolve) => reconnecting.once("ready", resolve));
          (proxies[2] as DelayProxy).resetAll();
          await ready;
          const lost = aborted(signal).then(() => "lost" as const);
          const first = await arrival(Promise.race([renewal, lost]), "the renewal or the lock's loss");
          return first === "lost"
            ? `lost: ${String(signal.reason)}`
            : { extended: first[0]?.extended, lost: signal.aborted };
        },
        { extendThreshold: 0.05 },
      )
      .finally(renewal.stop);
    // before: started one per-instance timeout before the end, the renewal was confirmed by a and b
    // after the validity had ended: reported lost, its signal aborted, while a quorum held the keys
    expect(outcome).toEqual({ extended: true, lost: false });
    for (const client of through) client.disconnect();
  }, 20_000);
});
