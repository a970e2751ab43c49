/**
 * One Redis server given twice under other names must not vote twice: Redlock asks each server for
 * its run_id before the first vote counts, and again after a reconnect.
 */
import type { Redis } from "ioredis";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { type DelayProxy, startDelayProxy } from "#test-helpers/delay-proxy.js";
import { type Monitor, scriptOf, startMonitor } from "#test-helpers/monitor.js";
import { queueOf } from "#test-helpers/queues.js";
import { freePort, type RedisServer, useRedisServers } from "#test-helpers/redis.js";
import { Lock, LockConfigurationError, LockContentionError, LockUnavailableError, Redlock } from "../src/index.js";

const cluster = useRedisServers(3);
/** Long enough that its per-instance timeout (1 s) covers a busy machine: timing is not the subject here. */
const TTL = 10_000;
let direct: Redis[] = [];
const closing: { quit(): Promise<unknown> }[] = [];
const proxies: DelayProxy[] = [];

beforeAll(() => {
  direct = cluster.servers.map((server) => server.client());
});

afterEach(async () => {
  await Promise.all(closing.splice(0).map((thing) => thing.quit()));
  await Promise.all(proxies.splice(0).map((proxy) => proxy.close()));
  await Promise.all(direct.map((client) => client.flushall()));
});

const servers = () => cluster.servers as [RedisServer, RedisServer, RedisServer];
const dbsizes = () => Promise.all(direct.map((client) => client.dbsize()));
function track<T extends { quit(): Promise<unknown> }>(thing: T): T {
  closing.push(thing);
  return thing;
}

/** A client of `server` that Redlock does not own; closed after the test. */
function clientOf(server: RedisServer, options: Parameters<RedisServer["client"]>[0] = {}): Redis {
  return track(server.client(options));
}

/** The next 'ready' of `client` (events.once would reject on the 'error' a reset emits first). */
const nextReady = (client: Redis) => new Promise((resolve) => client.once("ready", resolve));

async function proxyTo(port: number): Promise<DelayProxy> {
  const proxy = await startDelayProxy(port);
  proxies.push(proxy);
  return proxy;
}

describe("one server listed twice", () => {
  it("refuses localhost and 127.0.0.1 of one server, naming both entries, before any key is written", async () => {
    const [a, b] = servers();
    // b is held by another owner: with a counted twice, the lock would get 2 of 3 votes
    await direct[1]?.set("twice", "other-owner", "PX", 10_000);
    const dlm = track(
      new Redlock(
        [
          { host: "localhost", port: a.port },
          { host: "127.0.0.1", port: a.port },
          { host: "127.0.0.1", port: b.port },
        ],
        { retryCount: 0 },
      ),
    );
    // a long ttl, so that its per-instance timeout covers a slow first connection to "localhost"
    const error = await dlm.lock("twice", 10_000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockConfigurationError);
    expect((error as LockConfigurationError).message).toBe(
      `instances[1] (127.0.0.1:${a.port}/0) is the same Redis server as instances[0] (localhost:${a.port}/0): it would vote twice`,
    );
    expect((error as LockConfigurationError).instances).toEqual([0, 1]);
    expect((error as LockConfigurationError).status).toBe(500);
    expect(await direct[0]?.dbsize()).toBe(0);
    expect(await direct[1]?.get("twice")).toBe("other-owner");
    // it stays refused: every call, extend included, checks again while the list is wrong
    await expect(dlm.acquire("other", TTL)).rejects.toBeInstanceOf(LockConfigurationError);
  });

  it("asks again a server that answered INFO BUSY (a script spinning): listed twice, it is refused once the script ended, never counted unchecked", async () => {
    const [a, b] = servers();
    const admin = clientOf(a);
    const spinner = clientOf(a);
    const killer = clientOf(a);
    const probe = clientOf(a, { maxRetriesPerRequest: 0 });
    // connected before the spin: their ready checks are done, Redlock's INFO is the first answered BUSY
    const twice = [clientOf(a), clientOf(a, { host: "localhost" })];
    await Promise.all([admin, spinner, killer, probe, ...twice].map((client) => client.ping()));
    await admin.config("SET", "busy-reply-threshold", "100");
    const spinning = spinner.eval("while true do end", 0).catch((e: unknown) => e);
    let dlm: Redlock | undefined;
    try {
      await expect.poll(() => probe.get("busy:probe").then(String, (e: Error) => e.message)).toMatch(/^BUSY/);
      // built now, on connected clients: its INFO, sent at once, is answered BUSY, and the call asks again
      dlm = track(new Redlock([...twice, clientOf(b)], { retryCount: 0 }));
      // a's entries cannot say who they are: they do not vote
      await expect(dlm.acquire("busy-twice", TTL)).rejects.toBeInstanceOf(LockUnavailableError);
    } finally {
      await killer.script("KILL");
      await spinning;
      await admin.config("SET", "busy-reply-threshold", "5000");
    }
    // asked again now: one server, listed twice
    await expect(dlm?.acquire("busy-twice", TTL)).rejects.toThrow(
      `instances[1] (localhost:${a.port}/0) is the same Redis server as instances[0] (127.0.0.1:${a.port}/0)`,
    );
    expect(await dbsizes()).toEqual([0, 0, 0]);
  });

  it("refuses two databases of one server: they share its fate", async () => {
    const [a, b, c] = servers();
    const dlm = new Redlock([clientOf(a, { db: 0 }), clientOf(b), clientOf(a, { db: 3 }), clientOf(c)]);
    await expect(dlm.lock("dbs", TTL)).rejects.toThrow(
      `instances[2] (127.0.0.1:${a.port}/3) is the same Redis server as instances[0] (127.0.0.1:${a.port}/0)`,
    );
    expect(await dbsizes()).toEqual([0, 0, 0]);
  });

  it("asks each server once per connection, however many locks and Redlocks use it", async () => {
    const [a, b, c] = servers();
    const clients = [clientOf(a), clientOf(b), clientOf(c)];
    await Promise.all(clients.map((client) => client.ping()));
    await Promise.all(direct.map((client) => client.config("RESETSTAT")));
    for (let i = 0; i < 3; i++) {
      const dlm = new Redlock(clients);
      for (let j = 0; j < 5; j++) await (await dlm.acquire(`once:${j}`, TTL)).release();
    }
    const infos = await Promise.all(
      direct.map(async (client) =>
        Number(/cmdstat_info:calls=(\d+)/.exec(await client.info("commandstats"))?.[1] ?? 0),
      ),
    );
    // one INFO per server from the Redlocks; the stats read above is not counted yet when INFO runs
    expect(infos).toEqual([1, 1, 1]);
  });

  it("checks a reconnected client again: moved onto a server already listed, it is refused; moved back, it locks", async () => {
    const [a, b, c] = servers();
    const proxy = await proxyTo(b.port);
    const moving = clientOf(b, { port: proxy.port });
    const dlm = new Redlock([clientOf(a), moving, clientOf(c)], { retryCount: 0 });
    await (await dlm.acquire("moved", TTL)).release();
    // the release resolves at a quorum: let the last instance's delete arrive before the move
    await expect.poll(dbsizes).toEqual([0, 0, 0]);

    proxy.targetPort = a.port;
    const reconnected = nextReady(moving);
    proxy.resetAll();
    await reconnected;
    await expect(dlm.acquire("moved", TTL)).rejects.toThrow(
      `instances[1] (127.0.0.1:${proxy.port}/0) is the same Redis server as instances[0] (127.0.0.1:${a.port}/0)`,
    );
    expect(await dbsizes()).toEqual([0, 0, 0]);

    proxy.targetPort = b.port;
    const back = nextReady(moving);
    proxy.resetAll();
    await back;
    await (await dlm.acquire("moved", TTL)).release();
  });

  it("an instance unreachable at the first lock cannot vote; it is checked as soon as it connects", async () => {
    const [a, b] = servers();
    const proxy = await proxyTo(await freePort());
    const late = clientOf(b, { port: proxy.port });
    const dlm = new Redlock([clientOf(a), clientOf(b), late], { retryCount: 0 });
    // two of three: the third cannot be asked who it is, nor vote
    await (await dlm.acquire("late", TTL)).release();

    proxy.targetPort = a.port;
    await nextReady(late);
    await expect(dlm.acquire("late", TTL)).rejects.toBeInstanceOf(LockConfigurationError);
    expect(await dbsizes()).toEqual([0, 0, 0]);
  });

  it("an instance that has not said who it is fails a fenced vote with that reason, not a TypeError", async () => {
    const [a] = servers();
    const unreachable = await Promise.all([proxyTo(await freePort()), proxyTo(await freePort())]);
    const dlm = new Redlock([clientOf(a), ...unreachable.map((proxy) => clientOf(a, { port: proxy.port }))], {
      retryCount: 0,
      fencing: true,
    });
    const error = await dlm.acquire("unasked", TTL).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockUnavailableError);
    const causes = (error as LockUnavailableError).causes.map(({ instance, error }) => [instance, error.message]);
    expect(causes).toEqual([
      [1, "Not asked: this server has not yet said who it is on its current connection"],
      [2, "Not asked: this server has not yet said who it is on its current connection"],
    ]);
  });

  it("an extension is refused too once a reconnect made two entries one server", async () => {
    const [a, b, c] = servers();
    const proxy = await proxyTo(b.port);
    const moving = clientOf(b, { port: proxy.port });
    const dlm = new Redlock([clientOf(a), moving, clientOf(c)], { retryCount: 0 });
    const lock = await dlm.acquire("extended", 5000);
    proxy.targetPort = a.port;
    const reconnected = nextReady(moving);
    proxy.resetAll();
    await reconnected;
    await expect(lock.extend(5000)).rejects.toBeInstanceOf(LockConfigurationError);
    await lock.release();
  });

  it("a server that refuses INFO is used unchecked, with one process warning", async () => {
    const [a, b, c] = servers();
    for (const client of direct) {
      await client.acl("SETUSER", "noinfo", "on", ">pw", "~*", "+@all", "-info");
    }
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on("warning", onWarning);
    try {
      const options = { username: "noinfo", password: "pw", enableReadyCheck: false };
      const dlm = new Redlock([a.client(options), b.client(options), c.client(options)]);
      await (await dlm.acquire("noinfo", TTL)).release();
      await (await dlm.acquire("noinfo", TTL)).release();
      await new Promise((resolve) => setImmediate(resolve));
      const ours = warnings.filter((w) => (w as { code?: string }).code === "REDLOCK_KIT_NO_SERVER_ID");
      expect(ours).toHaveLength(1);
    } finally {
      process.off("warning", onWarning);
      // DELUSER closes the user's connections: its clients end here, not in afterEach
      for (const client of direct) await client.acl("DELUSER", "noinfo");
    }
  });
});

describe("a command in flight while its connection moves", () => {
  /**
   * [a, proxy to b, c], every server known. The command `send()` sends to b is swallowed; then the
   * proxy leads its next connection to a (a failover, a DNS change), where ioredis sends it again.
   */
  async function resentToA(key: string, send: () => Promise<unknown>) {
    const [a, b, c] = servers();
    const proxy = await proxyTo(b.port);
    const dlm = track(new Redlock([clientOf(a), clientOf(b, { port: proxy.port }), clientOf(c)], { retryCount: 0 }));
    await (await dlm.acquire("warm", TTL)).release();
    await expect.poll(dbsizes).toEqual([0, 0, 0]);
    // another owner holds the key on c: a lock needs a and b
    await direct[2]?.set(key, "other-owner", "PX", 60_000);
    return {
      dlm,
      /** `landed`: true once the command reached a directly. */
      async run(landed = async () => (await direct[0]?.exists(key)) === 1): Promise<unknown> {
        proxy.blackhole = true;
        const outcome = send().catch((error: unknown) => error);
        await expect.poll(landed).toBe(true);
        proxy.blackhole = false;
        proxy.targetPort = a.port;
        proxy.resetAll();
        return outcome;
      },
    };
  }

  it("an acquire answered by a server already listed is not its second vote: no second holder", async () => {
    const sent = await resentToA("inflight", () => sent.dlm.acquire("inflight", TTL));
    const first = await sent.run();
    // the other owner is gone: a correct list [a, b, c] takes b and c
    await direct[2]?.del("inflight");
    const other = track(new Redlock([clientOf(servers()[0]), clientOf(servers()[1]), clientOf(servers()[2])]));
    const second = await other.acquire("inflight", TTL, { retryCount: 0 });
    // before: a counted twice made `first` a lock held on a alone, and `second` held it too
    expect([first, second].filter((lock) => lock instanceof Lock && lock.valid)).toHaveLength(1);
    expect(first).toBeInstanceOf(LockContentionError);
    expect(second.valid).toBe(true);
    // what `first` took on a was given back (polled: acquire resolves at a quorum, the third SET may land later)
    await expect
      .poll(() => Promise.all(direct.map((client) => client.get("inflight"))))
      .toEqual(Array(3).fill(second.value));
  });

  it("an extension answered by a server already listed is not its second vote", async () => {
    let lock: Lock | undefined;
    const sent = await resentToA("extended", () => (lock as Lock).extend(3 * TTL));
    // taken on a and b (another owner holds c)
    lock = await sent.dlm.acquire("extended", TTL);
    const outcome = await sent.run(async () => ((await direct[0]?.pttl("extended")) ?? 0) > TTL);
    const ours = await Promise.all(
      direct.map(
        async (client) => (await client.get("extended")) === lock?.value && (await client.pttl("extended")) > TTL,
      ),
    );
    // only a has the new expiry (b's key keeps its old one): one server of three
    expect(ours).toEqual([true, false, false]);
    // before: the extension resolved, a counted twice
    expect(outcome).toBeInstanceOf(LockUnavailableError);
    await lock.release();
  });

  it("a fence write-back answered by a server already listed is not its second confirmation: fences keep growing", async () => {
    const [a, b, c] = servers();
    const proxy = await proxyTo(b.port);
    const dlm = track(
      new Redlock([clientOf(a), clientOf(b, { port: proxy.port }), clientOf(c)], { retryCount: 0, fencing: true }),
    );
    await (await dlm.acquire("warm", TTL)).release();
    await expect.poll(() => Promise.all(direct.map((client) => client.exists("warm")))).toEqual([0, 0, 0]);
    // counters 100, 5, 5 (docs/fencing.md, "Why both phases are needed"); another owner holds c
    const key = "raised";
    await direct[0]?.set(`${key}:redlock-kit:fence`, "100");
    await direct[1]?.set(`${key}:redlock-kit:fence`, "5");
    await direct[2]?.set(`${key}:redlock-kit:fence`, "5");
    await direct[2]?.set(key, "other-owner", "PX", 60_000);
    const monitor = await startMonitor(track(a.client()));
    track({ quit: () => monitor.close() });

    // phase 1 runs on b, whose answer is held until b's connection swallows what is sent next: phase 2
    proxy.holdReplies();
    const acquiring = dlm.acquire(key, TTL).catch((error: unknown) => error);
    await expect.poll(() => direct[1]?.exists(key)).toBe(1);
    proxy.blackhole = true;
    proxy.releaseReplies();
    await expect.poll(() => monitor.seen.some((executed) => scriptOf(executed) === "raise-fences")).toBe(true);
    // ioredis sends b's write-back again on the next connection, which now reaches a
    proxy.blackhole = false;
    proxy.targetPort = a.port;
    proxy.resetAll();
    const first = await acquiring;
    if (first instanceof Lock) await first.release();

    // the first holder's keys are gone (b's expired); another owner holds a: the next lock is taken on b and c
    await Promise.all(direct.map((client) => client.del(key)));
    await direct[0]?.set(key, "third-owner", "PX", 60_000);
    const other = track(new Redlock([clientOf(a), clientOf(b), clientOf(c)], { retryCount: 0, fencing: true }));
    const second = await other.acquire(key, TTL);
    // before: b's counter was never raised, so the later holder got 7 after the earlier one's 101
    const fences = [first, second].flatMap((lock) => (lock instanceof Lock ? [BigInt(lock.fence as string)] : []));
    expect(fences).toEqual([...fences].sort((x, y) => (x < y ? -1 : 1)));
    expect(first).toBeInstanceOf(LockUnavailableError);
    // c refused the first write-back (the other owner's key) and was raised to its fence, 101, all the same
    expect(second.fence).toBe("102");
  });
});

describe("a hand-over heard on a subscriber connection that reaches another entry's server", () => {
  /** A poll interval so long that only a hand-over can wake the waiter within the test. */
  const WAITING = () => ({ wait: 60_000, signal: AbortSignal.timeout(15_000) });

  /** How many subscriptions to hand-over channels `client`'s server has. */
  async function handOverListeners(client: Redis): Promise<number> {
    const channels = (await client.pubsub("CHANNELS", "redlock-kit:hand-over:*")) as string[];
    if (channels.length === 0) return 0;
    const counts = (await client.pubsub("NUMSUB", ...channels)) as (string | number)[];
    return counts.filter((_, i) => i % 2 === 1).reduce<number>((sum, n) => sum + Number(n), 0);
  }

  /**
   * A holder on [a, b, c] holds `key`; a waiter on [a, proxy to b, c] is queued on all three, and
   * `move` leads its subscriber connection of entry b to a (`queued`: after the waiter queued,
   * else before it subscribed), so that a's one hand-over message reaches it twice. The holder's
   * key on c is gone (expired there): c hands nothing over, so the waiter is granted the key by a
   * alone, and b's release finds nobody listening on b.
   */
  async function heardTwice(key: string, queued: boolean, move: (proxy: DelayProxy, moving: Redis) => Promise<void>) {
    const [a, b, c] = servers();
    const proxy = await proxyTo(b.port);
    const moving = clientOf(b, { port: proxy.port });
    const waiter = track(new Redlock([clientOf(a), moving, clientOf(c)], { retryDelay: 60_000, retryJitter: 0 }));
    const holder = track(new Redlock([clientOf(a), clientOf(b), clientOf(c)]));
    // every entry has said who it is: a, b, c
    await (await waiter.acquire(`${key}:warm`, TTL)).release();
    const held = await holder.acquire(key, TTL);
    // acquire resolves at a quorum: the waiter must find the holder's key on all three, c included
    await expect.poll(() => Promise.all(direct.map((client) => client.get(key)))).toEqual(Array(3).fill(held.value));
    if (!queued) await move(proxy, moving);
    const waiting = waiter.acquire(key, TTL, WAITING()).catch((error: unknown) => error);
    await expect.poll(() => Promise.all(direct.map((client) => client.zcard(queueOf(key))))).toEqual([1, 1, 1]);
    if (queued) await move(proxy, moving);
    // a has both of the waiter's subscriber connections, b none
    await expect.poll(() => Promise.all(direct.map(handOverListeners))).toEqual([2, 0, 1]);
    await direct[2]?.del(key);
    await held.release();
    const first = await waiting;
    // a claim resolves at a quorum: `other` must find the waiter's key on every server, or its attempt
    // may take the last one first, and the claim there be refused
    if (first instanceof Lock) {
      await expect.poll(() => Promise.all(direct.map((client) => client.get(key)))).toEqual(Array(3).fill(first.value));
    }
    // a correct list [a, b, c] finds b and c free
    const other = track(new Redlock([clientOf(a), clientOf(b), clientOf(c)]));
    const second = await other.acquire(key, TTL, { retryCount: 0 }).catch((error: unknown) => error);
    return { first, second };
  }

  it("entry b's address leads to a after a reconnect: a's one message is not two grants, the list is refused", async () => {
    const [a] = servers();
    const { first, second } = await heardTwice("moved-both", true, async (proxy, moving) => {
      // a failover or DNS change: both connections of entry b (data and subscriber) now reach a
      proxy.targetPort = a.port;
      const reconnected = nextReady(moving);
      proxy.resetAll();
      await reconnected;
    });
    // before: a's message counted for entries a and b, a quorum from one server; the waiter held
    // the lock with its key on a alone, and `second` took b and c
    expect([first, second].filter((lock) => lock instanceof Lock && lock.valid)).toHaveLength(1);
    // the waiter claims instead, and its claim meets the identity check
    expect(first).toBeInstanceOf(LockConfigurationError);
    expect((second as Lock).valid).toBe(true);
  });

  it("entry b's subscriber connection, opened later, reaches a while its data connection stays on b: the waiter claims", async () => {
    const [a] = servers();
    const { first, second } = await heardTwice("moved-subscriber", false, async (proxy) => {
      // new connections to b's address reach a; the data connection, open already, stays on b
      proxy.targetPort = a.port;
    });
    // before: two grants from a, the waiter held with its key on a alone, and `second` took b and c
    expect([first, second].filter((lock) => lock instanceof Lock && lock.valid)).toHaveLength(1);
    expect(first).toBeInstanceOf(Lock);
    expect(second).toBeInstanceOf(LockContentionError);
    // its claim took the key on every server, and `second` took none of it
    expect(await Promise.all(direct.map((client) => client.get("moved-subscriber")))).toEqual(
      Array(3).fill((first as Lock).value),
    );
    await (first as Lock).release();
  });
});

describe("clients already connected when the Redlock is built", () => {
  /** A chunk that starts with an INFO command (RESP, as ioredis writes it). */
  const isInfo = (chunk: Buffer) => /^\*\d+\r\n\$4\r\ninfo\r\n/i.test(chunk.toString("latin1"));

  /** [a, b, c] behind proxies, their clients connected, and a monitor on each server. */
  async function connectedBehindProxies() {
    const proxied = await Promise.all(servers().map((server) => proxyTo(server.port)));
    const clients = servers().map((server, i) => clientOf(server, { port: proxied[i]?.port }));
    await Promise.all(clients.map((client) => client.ping()));
    const monitors = await Promise.all(servers().map((server) => startMonitor(clientOf(server))));
    for (const monitor of monitors) track({ quit: () => monitor.close() });
    return { proxied, clients, monitors };
  }

  /** What the connection that sent ECHO `mark` had the server execute, in order (command names). */
  function commandsOfConnection(monitor: Monitor, mark: string): string[] {
    const source = monitor.seen.find(({ args }) => args[0] === "echo" && args[1] === mark)?.source;
    return monitor.seen.filter((executed) => executed.source === source).map(({ args }) => args[0] as string);
  }

  it("are asked who they are at construction: a slow INFO (3× a 500 ms lock's 50 ms bound) costs the first single attempt no vote, one INFO per connection", async () => {
    const { proxied, clients, monitors } = await connectedBehindProxies();
    for (const proxy of proxied) proxy.upDelayFor = (chunk) => (isInfo(chunk) ? 150 : 0);
    const dlm = track(new Redlock(clients, { retryCount: 0 }));
    // sent behind whatever the construction sent on each connection, answered after it
    await Promise.all(clients.map((client) => client.echo("built")));
    // before: the INFO went out with this attempt, which waited 50 ms for it and had no vote
    // (LockUnavailableError: "Not asked: this server has not yet said who it is")
    await (await dlm.acquire("early", 500)).release();
    await Promise.all(monitors.map((monitor) => monitor.caughtUp()));
    for (const monitor of monitors) {
      // the INFO came before the test's ECHO, and no other after it (the attempt, its release)
      const commands = commandsOfConnection(monitor, "built");
      expect(commands.slice(0, 2)).toEqual(["info", "echo"]);
      expect(commands.filter((name) => name === "info")).toHaveLength(1);
    }
  });

  it("quit() right after construction does not wait for the INFO sent then; a connection that ends before it is answered leaves no unhandled rejection", async () => {
    const proxied = await Promise.all(servers().map((server) => proxyTo(server.port)));
    // not tracked: they end here, their INFO unanswered
    const clients = servers().map((server, i) => server.client({ port: proxied[i]?.port }));
    await Promise.all(clients.map((client) => client.ping()));
    for (const proxy of proxied) proxy.holdCommandsWhen = isInfo;
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    try {
      const dlm = new Redlock(clients);
      // sent at construction, held by the proxies
      await expect.poll(() => proxied.map((proxy) => proxy.heldCommandBytes > 0)).toEqual([true, true, true]);
      await dlm.quit();
      await Promise.all(
        clients.map((client, i) => {
          const ended = new Promise((resolve) => client.once("end", resolve));
          client.disconnect();
          // the proxy would keep the half-closed connection open behind the INFO it holds
          proxied[i]?.resetAll();
          return ended;
        }),
      );
      // rejections are reported once the microtasks of that turn ran
      await new Promise((resolve) => setImmediate(resolve));
      expect(unhandled).toEqual([]);
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
  });

  it("a failed attempt gives nothing back to an instance it did not ask (not yet identified)", async () => {
    const { proxied, clients, monitors } = await connectedBehindProxies();
    const [, , toC] = proxied as [DelayProxy, DelayProxy, DelayProxy];
    // c never answers INFO during the attempt; another owner holds a and b
    toC.holdCommandsWhen = isInfo;
    await direct[0]?.set("unreached", "other-owner", "PX", 60_000);
    await direct[1]?.set("unreached", "other-owner", "PX", 60_000);
    const dlm = track(new Redlock(clients, { retryCount: 0 }));
    try {
      // a and b refuse: contention, whatever c says
      await expect(dlm.acquire("unreached", 2000)).rejects.toBeInstanceOf(LockContentionError);
    } finally {
      toC.releaseCommands();
    }
    // behind what c's connection had sent
    await clients[2]?.echo("after");
    await monitors[2]?.caughtUp();
    // before: ["info", "eval", "echo"], the give-back of a value c never saw
    expect(commandsOfConnection(monitors[2] as Monitor, "after")).toEqual(["info", "echo"]);
  });
});
