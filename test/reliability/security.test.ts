/**
 * Security (docs/reliability.md S1–S7): unguessable values, compare-and-set on the exact value,
 * constant scripts, the least privilege the library needs, AUTH + TLS passthrough, and no lock
 * value, key or Redis error text in anything that leaves the library.
 */
import { createHash } from "node:crypto";
import diagnosticsChannel from "node:diagnostics_channel";
import { inspect } from "node:util";
import {
  type Lock,
  LockContentionError,
  LockLostError,
  type LockStore,
  LockUnavailableError,
  MemoryStore,
  RedisStore,
  Redlock,
} from "@redlock-kit/core";
import type { Redis, RedisOptions } from "ioredis";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  ACQUIRE_SCRIPT,
  EXTEND_SCRIPT,
  FENCED_ACQUIRE_SCRIPT,
  FENCED_SET_SCRIPT,
  RAISE_FENCES_SCRIPT,
  RELEASE_SCRIPT,
} from "../../packages/core/src/stores/scripts.js";
import { useInvariants } from "../helpers/invariants.js";
import { arrival, attemptsOf, nextExtensions } from "../helpers/lock-events.js";
import {
  connectionsOf,
  insideScripts,
  type Monitor,
  scriptOf,
  sentBy,
  sentByClientsWith,
  startMonitors,
} from "../helpers/monitor.js";
import { assertRedisInstalled } from "../helpers/redis-installed.js";
import { freePort, type RedisServer, sleep, startServer } from "../helpers/redis-servers.js";
import { createTestCertificates, type TestCertificates } from "../helpers/tls.js";
import { warmUp } from "../helpers/warm-up.js";

/** Every 128-bit slice node:crypto's random sources wrote, as hex: where lock values must come from. */
const randomSlices = vi.hoisted(() => new Set<string>());
vi.mock("node:crypto", async (importOriginal) => {
  const crypto = await importOriginal<typeof import("node:crypto")>();
  const record = <T extends NodeJS.ArrayBufferView>(view: T): T => {
    const hex = Buffer.from(view.buffer, view.byteOffset, view.byteLength).toString("hex");
    for (let i = 0; i + 32 <= hex.length; i += 32) randomSlices.add(hex.slice(i, i + 32));
    return view;
  };
  const sources = {
    randomFillSync: <T extends NodeJS.ArrayBufferView>(buffer: T, offset?: number, size?: number) =>
      record(crypto.randomFillSync(buffer, offset, size)),
    randomBytes: (size: number) => record(crypto.randomBytes(size)),
    getRandomValues: <T extends NodeJS.TypedArray>(array: T): T => record(crypto.getRandomValues(array)),
  };
  return { ...crypto, ...sources, default: { ...crypto, ...sources } };
});

const cluster: { servers: RedisServer[] } = { servers: [] };
const tlsPorts: number[] = [];
let certificates: TestCertificates;
let direct: Redis[] = [];

beforeAll(async () => {
  assertRedisInstalled();
  certificates = createTestCertificates();
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    tlsPorts.push(port);
    cluster.servers.push(await startServer({ args: certificates.serverArgs(port) }));
  }
  direct = cluster.servers.map((server) => server.client());
  // a test's one attempt at a short lock waits a tenth of its ttl for the new clients to say who they are
  await warmUp(new Redlock(direct), { quit: true });
  // The least the library needs: its scripts (by SHA, or sent once) and the commands they call, on its own keys.
  for (const client of direct) {
    await client.call(
      "ACL",
      ...["SETUSER", "locker", "reset", "on", ">lockpw", "~lock:*", "resetchannels"],
      ...["+evalsha", "+eval", "+get", "+set", "+pttl", "+pexpire", "+del"],
    );
  }
}, 30_000);

afterAll(async () => {
  await Promise.all(cluster.servers.map((server) => server.stop()));
  certificates?.remove();
});

const invariants = useInvariants(cluster, { maxTtlMs: 2000 });

/**
 * The per-instance bound of every Redlock here whose subject is not the bound. The default, a tenth
 * of the ttl (100 ms for a 1 s lock, 50 ms below it), is missed by a healthy loopback Redis on a
 * loaded 2-vCPU machine: a one-attempt call then fails unavailable, or names a timeout among its
 * causes, instead of meeting the refusal, the ACL error or the holder the test is about. An instance
 * that must time out is stopped (SIGSTOP) and never answers, whatever the bound.
 */
const ANSWER_MS = 900;
const valuesOf = (key: string) => Promise.all(direct.map((client) => client.get(key)));

/** The commands an instance ran that an attempt sends (its SET, or its script), from INFO commandstats. */
async function attemptCommands(client: Redis): Promise<number> {
  const stats = await client.info("commandstats");
  let calls = 0;
  for (const match of stats.matchAll(/cmdstat_(?:set|eval|evalsha):calls=(\d+)/g)) calls += Number(match[1]);
  return calls;
}

/** RedisStores that record every lock value they are asked to write, so a test can look for it. */
function recording(clients: readonly Redis[]) {
  const values = new Set<string>();
  const stores: LockStore[] = clients.map((client) => {
    const inner = new RedisStore(client);
    return {
      acquire(keys, value, ttl) {
        values.add(value);
        return inner.acquire(keys, value, ttl);
      },
      acquireFenced(keys, value, ttl) {
        values.add(value);
        return inner.acquireFenced(keys, value, ttl);
      },
      extend: (keys, value, ttl) => inner.extend(keys, value, ttl),
      release: (keys, value) => inner.release(keys, value),
      raiseFences: (keys, value, fences) => inner.raiseFences(keys, value, fences),
    };
  });
  return { stores, values };
}

/** What `dlm.lock(resource)` failed with, and the attempts of each call on it that ended unavailable meanwhile. */
async function unavailableAfter(dlm: Redlock, resource: string) {
  let error: unknown;
  const attempts = await attemptsOf(
    resource,
    async () => {
      error = await dlm.lock(resource, 1000).catch((e: unknown) => e);
    },
    "unavailable",
  );
  return { error, attempts };
}

/** Everything a logger or an error handler could print of `error`. */
function printable(error: unknown): string {
  const e = error as Error;
  return [String(e), e.message, e.stack, JSON.stringify(e), inspect(e, { depth: null, showHidden: true })].join("\n");
}

const REDIS_TEXT = /OOM|NOPERM|WRONGPASS|BUSY|ReplyError|ECONNREFUSED|NOSCRIPT/;

/** The checks of S6 on an error that left the library for a lock attempt on `resources`. */
function expectNothingLeaked(error: unknown, values: Iterable<string>, resources: readonly string[]) {
  expect(error).toBeInstanceOf(LockUnavailableError);
  const unavailable = error as LockUnavailableError;
  const text = printable(unavailable);
  for (const value of values) expect(text).not.toContain(value);
  // what an HTTP error handler sends: the fixed body, and the message when `expose` is true
  expect(unavailable.body).toEqual({ error: "Lock service unavailable" });
  expect(unavailable.message).not.toMatch(REDIS_TEXT);
  for (const resource of resources) expect(unavailable.message).not.toContain(resource);
  // causes keep the Redis message for operators, never the command and its arguments
  for (const cause of unavailable.causes) expect(Object.keys(cause.error).filter((key) => key !== "name")).toEqual([]);
  return unavailable;
}

describe("lock values", () => {
  it("are 128 random bits from node:crypto: distinct, evenly spread, untouched by a stubbed Math.random and Date.now", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0);
    vi.spyOn(Date, "now").mockReturnValue(0);
    try {
      const dlm = new Redlock([new MemoryStore()], { retryCount: 0 });
      const values = new Set<string>();
      let ones = 0;
      for (let i = 0; i < 20_000; i++) {
        const lock = await dlm.acquire(`value:${i}`, 1000);
        expect(lock.value).toMatch(/^[0-9a-f]{32}$/);
        values.add(lock.value);
        for (const digit of lock.value) ones += (Number.parseInt(digit, 16).toString(2).match(/1/g) ?? []).length;
        await lock.release();
      }
      expect(values.size).toBe(20_000);
      // each value is bytes node:crypto wrote, at run time, whatever the source looks like
      expect([...values].filter((value) => !randomSlices.has(value))).toEqual([]);
      // 2.56 M bits: a fair source gives 50 % ones with a standard deviation of 0.03 %
      const share = ones / (20_000 * 128);
      expect(share).toBeGreaterThan(0.495);
      expect(share).toBeLessThan(0.505);
    } finally {
      vi.restoreAllMocks();
    }
  });
});

describe("compare-and-set on the exact value", () => {
  it("a stale holder's extend and release reach the scripts, which refuse them on the value: the next holder's keys are untouched", async () => {
    // The stale holder's clock stands still, so it still believes its lock valid once the keys
    // have expired and another owner took them: the refusal can only come from the scripts'
    // compare on the value (a local "validity ended" check would hide a script that skips it).
    const frozen = performance.now();
    const a = new Redlock(direct, { retryCount: 0, instanceTimeout: ANSWER_MS, clock: () => frozen });
    const b = new Redlock(direct, { retryCount: 0, instanceTimeout: ANSWER_MS });
    const stale = await a.acquire("cas:r", 1000);
    await expect.poll(() => valuesOf("cas:r")).toEqual([null, null, null]);
    const current = await b.acquire("cas:r", 2000);
    const before = await Promise.all(direct.map((client) => client.pttl("cas:r")));
    expect(stale.valid).toBe(true);

    const monitors = await startMonitors(cluster.servers, invariants);
    await expect(stale.extend(5000)).rejects.toBeInstanceOf(LockLostError);
    expect(await stale.release()).toBe(false);
    for (const monitor of monitors) {
      await monitor.caughtUp();
      const calls = sentByClientsWith(monitor.seen, stale.value);
      // each script ran on every node with the stale value, and stopped at its GET: no PEXPIRE, no DEL
      // (the release looks whether anyone waits for the key first: EXISTS on its queue)
      expect(calls.map(scriptOf)).toEqual(["extend", "release"]);
      expect(insideScripts(monitor.seen, calls)).toEqual(["get", "exists", "get"]);
    }
    expect(await valuesOf("cas:r")).toEqual([current.value, current.value, current.value]);
    const after = await Promise.all(direct.map((client) => client.pttl("cas:r")));
    for (const [i, ttl] of after.entries()) expect(ttl).toBeLessThanOrEqual(before[i] as number);
    expect(await current.release()).toBe(true);
  });

  it("resources that look like Lua or Redis syntax are data: KEYS and ARGV only, a canary survives", async () => {
    await direct[0]?.set("canary", "alive", "PX", 5000);
    const dlm = new Redlock(direct, { retryCount: 0, instanceTimeout: ANSWER_MS });
    const hostile = [
      'x") redis.call("flushall") --',
      "]] .. redis.call('flushall') .. [[",
      "a\nb",
      "a\u0000b",
      "*",
      "{x}",
    ];
    const lock = await dlm.acquire(hostile, 2000);
    await lock.extend(2000);
    for (const key of hostile) expect(await direct[1]?.get(key)).toBe(lock.value);
    expect(await direct[0]?.get("canary")).toBe("alive");
    expect(await lock.release()).toBe(true);
    expect(await direct[0]?.dbsize()).toBe(1);
    await direct[0]?.del("canary");
  });
});

describe("scripts", () => {
  it("are constants, called by SHA and sent whole only after NOSCRIPT: none is built per call", async () => {
    const all = {
      ACQUIRE_SCRIPT,
      EXTEND_SCRIPT,
      RELEASE_SCRIPT,
      FENCED_ACQUIRE_SCRIPT,
      RAISE_FENCES_SCRIPT,
      FENCED_SET_SCRIPT,
    };
    for (const [name, script] of Object.entries(all)) {
      expect(await direct[0]?.script("LOAD", script), name).toBe(createHash("sha1").update(script).digest("hex"));
    }
    // fresh clients, so the first call of each script goes through ioredis's defined command
    const clients = cluster.servers.map((server) => invariants.client(server));
    // one attempt at a 1 s lock waits 111 ms for them to say who they are; warmed by a Redlock of its
    // own (its scripts sent on its own account) before node 0 forgets the scripts and is watched
    await warmUp(new Redlock(clients), { quit: true });
    // node 0 forgets them: the library must fall back to sending each script whole
    await direct[0]?.script("FLUSH");
    const [monitor] = (await startMonitors(cluster.servers.slice(0, 1), invariants)) as [Monitor];
    const dlm = new Redlock(clients, { retryCount: 0, instanceTimeout: ANSWER_MS });
    // different keys, key counts, values and ttls: a script built per call would change its SHA
    // (a one-key lock is acquired without a script, by SET NX GET: these take two and three keys)
    const one = await dlm.acquire(['k") redis.call("flushall") --', "k:c", "k:d"], 1111);
    const two = await dlm.acquire(["k:a", "k:b"], 1212);
    await one.extend(2222);
    await two.extend(2323);
    await one.release();
    await two.release();
    // fencing's two scripts: the acquire that counts, and the write-back of the token on a quorum
    await (await dlm.acquire("k:g", 3434, { fencing: true })).release();
    await monitor.caughtUp();
    const byTtl = new Map<string, Set<string | undefined>>();
    for (const executed of monitor.seen) {
      const script = scriptOf(executed);
      if (script === undefined) continue;
      const key = ["1111", "1212", "2222", "2323"].includes(executed.args.at(-1) as string)
        ? (executed.args.at(-1) as string)
        : script === "release"
          ? "release"
          : "fencing";
      byTtl.set(key, (byTtl.get(key) ?? new Set()).add(script));
    }
    expect(Object.fromEntries([...byTtl].map(([key, scripts]) => [key, [...scripts]]))).toEqual({
      "1111": ["acquire"],
      "1212": ["acquire"],
      "2222": ["extend"],
      "2323": ["extend"],
      release: ["release"],
      fencing: ["fenced-acquire", "raise-fences"],
    });
    // after SCRIPT FLUSH each script was sent whole once (EVAL), its body hashing to the constant's SHA
    const whole = monitor.seen.filter((executed) => executed.args[0] === "eval").map(scriptOf);
    expect(whole.sort()).toEqual(["acquire", "extend", "fenced-acquire", "raise-fences", "release"]);
  });

  it("are all the library sends on a lock's connection: its scripts at the top level, their GET/SET/PTTL/PEXPIRE/DEL/PUBLISH inside them", async () => {
    const clients = cluster.servers.map((server) => invariants.client(server));
    // three attempts at a 1 s lock wait 100 ms each for the new clients to say who they are: warmed
    // before the monitor starts, so what it sees is the test's alone
    await warmUp(new Redlock(clients), { quit: true });
    const [monitor] = (await startMonitors(cluster.servers.slice(0, 1), invariants)) as [Monitor];
    const dlm = invariants.track(new Redlock(clients, { retryCount: 2, retryDelay: 20, instanceTimeout: ANSWER_MS }));
    const held = await dlm.acquire("sent:r", 1000);
    expect(await dlm.lock("sent:r", 1000)).toBeNull();
    await held.extend(1000);
    await held.release();
    // auto-extension: the section lasts until its renewal (at half of the 2 s ttl) came
    await dlm.using("sent:r", 2000, () => arrival(nextExtensions("sent:r", 1), "the lock's renewal"));
    // a waiter: queued by the script, handed the key by the release (SUBSCRIBE on a connection of
    // its own to its Redlock's hand-over channel, PUBLISH in the script)
    // held until released below, however slow the machine: a key that expired before the waiter
    // queued everywhere would be taken free, and nothing handed over
    const busy = await dlm.acquire(["sent:w", "sent:x"], 30_000);
    const waiting = dlm.acquire("sent:w", 1000, { wait: 30_000, retryDelay: 1000 });
    // only a queued waiter is handed the key: release once it is queued everywhere
    const queues = cluster.servers.map((server) => invariants.client(server));
    await expect.poll(() => Promise.all(queues.map((q) => q.zcard("sent:w:redlock-kit:waiters")))).toEqual([1, 1, 1]);
    await busy.release();
    await (await waiting).release();
    // fencing: the counter's INCR inside the acquire script, the raise of it inside the write-back
    await dlm.using("sent:r", 1000, () => sleep(10), { fencing: true });
    await monitor.caughtUp();
    // the library's connections: those that named this test's keys or a hand-over channel
    // (any other client of the server, the harness's or a stray one, is not the library's)
    const keys = ["sent:r", "sent:w", "sent:x"];
    const library = connectionsOf(monitor.seen, ({ args }) =>
      args.some((arg) => keys.includes(arg) || arg.startsWith("redlock-kit:hand-over:")),
    );
    const outside = new Set(sentBy(monitor.seen, library));
    const scripts = monitor.seen.filter((executed) => library.has(executed.source) && scriptOf(executed) !== undefined);
    const inside = new Set(insideScripts(monitor.seen, scripts));
    // at the top level only the scripts, the one-key acquire (SET ... NX ... GET, then PTTL when
    // refused), ZREM of a waiter that leaves a queue, ioredis's handshake (HELLO) and ready check
    // (INFO), and the hand-over subscription: no DEL, and no SET that could overwrite a holder or
    // leave a key without expiry
    expect(
      [...outside].filter(
        (name) =>
          !["evalsha", "eval", "set", "pttl", "zrem", "hello", "info", "subscribe", "unsubscribe"].includes(
            name as string,
          ),
      ),
    ).toEqual([]);
    const sets = monitor.seen.filter((executed) => library.has(executed.source) && executed.args[0] === "set");
    expect(sets.length).toBeGreaterThan(0);
    for (const set of sets)
      expect(set.args.map((arg) => arg.toLowerCase())).toEqual(expect.arrayContaining(["nx", "px", "get"]));
    expect(outside).toContain("evalsha");
    expect(outside).toContain("subscribe");
    // what ran inside the scripts, and every step the scenario needed
    expect(
      [...inside].filter(
        (name) =>
          ![
            "get",
            "set",
            "pttl",
            "pexpire",
            "del",
            "exists",
            "publish",
            "pubsub",
            "zadd",
            "zrem",
            "zpopmin",
            "zrange",
            "incr",
          ].includes(name as string),
      ),
    ).toEqual([]);
    for (const name of ["get", "set", "pexpire", "del", "publish", "pubsub", "zadd", "zpopmin", "incr"])
      expect(inside, name).toContain(name);
  });
});

describe("least privilege: ACL user `locker` with ~lock:* +evalsha +eval +get +set +pttl +pexpire +del", () => {
  const asLocker = (extra: RedisOptions = {}) =>
    cluster.servers.map((server) =>
      // ioredis's ready check needs INFO; that is ioredis's need, not the library's
      invariants.client(server, { username: "locker", password: "lockpw", enableReadyCheck: false, ...extra }),
    );

  it("runs the whole happy path: lock, contention, extend, using with auto-extension, waiting, release", async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(printable(warning));
    process.on("warning", onWarning);
    try {
      const clients = asLocker();
      // the first acquire's attempts wait 100 ms each for the new clients' INFO (refused here: no +info)
      await warmUp(new Redlock(clients, { keyPrefix: "lock:" }), { quit: true });
      const dlm = invariants.track(
        new Redlock(clients, { keyPrefix: "lock:", retryDelay: 20, retryJitter: 10, instanceTimeout: ANSWER_MS }),
      );
      const lock = await dlm.acquire(["a", "b"], 1000);
      await expect.poll(() => valuesOf("lock:a")).toEqual([lock.value, lock.value, lock.value]);
      await expect(dlm.acquire("a", 1000, { retryCount: 0 })).rejects.toBeInstanceOf(LockContentionError);
      await lock.extend(1000);
      // released once the waiter's first attempt ran on every instance (refused: this user cannot
      // queue nor subscribe, so it polls), not after a guessed time: released first, it took the
      // key at its first attempt and never waited
      const before = await Promise.all(direct.map(attemptCommands));
      const attempts = await attemptsOf("a", async () => {
        const waiting = dlm.acquire("a", 1000, { wait: 3000 });
        await expect
          .poll(async () =>
            (await Promise.all(direct.map(attemptCommands))).every((calls, i) => calls > (before[i] ?? 0)),
          )
          .toBe(true);
        await lock.release();
        await (await waiting).release();
      });
      expect(attempts).toEqual([expect.any(Number)]);
      expect(attempts[0]).toBeGreaterThan(1);
      // auto-extension: 2 s, renewed at half of it (a renewal up to ~1 s late still comes in time);
      // the section lasts until that renewal came
      const result = await dlm.using("c", 2000, async (signal, lock) => {
        const taken = lock.expiresAt;
        const [renewal] = await arrival(nextExtensions("c", 1), "the lock's renewal");
        return { extended: renewal?.extended, later: lock.expiresAt > taken, aborted: signal.aborted };
      });
      expect(result).toEqual({ extended: true, later: true, aborted: false });
      for (const warning of warnings) expect(warning).not.toContain("lockpw");
    } finally {
      process.off("warning", onWarning);
    }
  });

  it("fencing needs +incr as well: without it a fenced lock is 503 on every node, an unfenced one still works", async () => {
    const { stores, values } = recording(asLocker());
    const dlm = new Redlock(stores, { keyPrefix: "lock:", retryCount: 0, instanceTimeout: ANSWER_MS });
    const error = await dlm.lock("f", 1000, { fencing: true }).catch((e: unknown) => e);
    const unavailable = expectNothingLeaked(error, values, ["f"]);
    const denied = "can't run this command or subcommand";
    expect(unavailable.causes.map((cause) => cause.error.message)).toEqual([
      expect.stringContaining(denied),
      expect.stringContaining(denied),
      expect.stringContaining(denied),
    ]);
    // the INCR comes before any SET in the script: the refusal took no key
    expect(await valuesOf("lock:f")).toEqual([null, null, null]);
    await (await dlm.acquire("f", 1000)).release();
  });

  it("a key outside its pattern is NOPERM on every node: 503 (not 423), nothing leaked", async () => {
    const { stores, values } = recording(asLocker());
    const dlm = new Redlock(stores, { retryCount: 0, instanceTimeout: ANSWER_MS });
    const error = await dlm.lock("other:r", 1000).catch((e: unknown) => e);
    const unavailable = expectNothingLeaked(error, values, ["other:r"]);
    expect(unavailable.status).toBe(503);
    expect(unavailable.causes.map((cause) => cause.error.message)).toEqual([
      expect.stringContaining("NOPERM"),
      expect.stringContaining("NOPERM"),
      expect.stringContaining("NOPERM"),
    ]);
  });
});

describe("AUTH + TLS passthrough", () => {
  const overTls = (options: RedisOptions) =>
    cluster.servers.map((server, i) =>
      invariants.client(server, {
        port: tlsPorts[i] as number,
        tls: { ca: certificates.ca, servername: "localhost" },
        enableReadyCheck: false,
        ...options,
      }),
    );

  it("works with the user's own TLS clients authenticated as the ACL user", async () => {
    const clients = overTls({ username: "locker", password: "lockpw" });
    // connected first: until its TLS handshake and AUTH are done an instance cannot vote, and on a loaded
    // machine the handshakes can outlast every attempt of the acquisition (each waits a per-instance
    // timeout, 100 ms here), which would then fail as unavailable. Not once(): a connection error
    // that ioredis retries would reject it
    const ready = clients.map((client) =>
      client.status === "ready" ? undefined : new Promise((resolve) => client.once("ready", resolve)),
    );
    await arrival(Promise.all(ready), "the TLS connections");
    const dlm = invariants.track(new Redlock(clients, { keyPrefix: "lock:", instanceTimeout: ANSWER_MS }));
    const lock = await dlm.acquire("tls", 1000);
    await expect.poll(() => valuesOf("lock:tls")).toEqual([lock.value, lock.value, lock.value]);
    await lock.extend(1000);
    expect(await lock.release()).toBe(true);
  });

  it("a wrong password is 503 after the retries, with no WRONGPASS and no password in the error", async () => {
    const { stores, values } = recording(overTls({ username: "locker", password: "wrong-pw-123" }));
    const dlm = new Redlock(stores, { keyPrefix: "lock:", retryCount: 1, retryDelay: 20, instanceTimeout: 200 });
    // each attempt ends on the instances' refusals (or the per-instance deadline): retryCount 1 makes
    // two, then 503; a call that hung on the refused connections fails by the test's timeout
    const { error, attempts } = await unavailableAfter(dlm, "tls");
    expect(attempts).toEqual([2]);
    expect(expectNothingLeaked(error, values, ["tls"]).causes.map(({ instance }) => instance)).toEqual([0, 1, 2]);
    expect(printable(error)).not.toContain("wrong-pw-123");
  });

  it("a plaintext client against the TLS port is 503 on its one attempt", async () => {
    const clients = cluster.servers.map((server, i) =>
      invariants.client(server, { port: tlsPorts[i] as number, username: "locker", password: "lockpw" }),
    );
    const { stores, values } = recording(clients);
    const dlm = new Redlock(stores, { retryCount: 0, instanceTimeout: 200 });
    // one attempt, ended by the broken connections (or the per-instance deadline), then 503; a call
    // that waited on them fails by the test's timeout
    const { error, attempts } = await unavailableAfter(dlm, "lock:plain");
    expect(attempts).toEqual([1]);
    expect(expectNothingLeaked(error, values, ["lock:plain"]).causes.map(({ instance }) => instance)).toEqual([
      0, 1, 2,
    ]);
  });
});

describe("nothing secret leaves the library", () => {
  it("OOM, a timeout and a refused connection: no value, key or Redis text in message, body or serialisation", async () => {
    const { stores, values } = recording(direct);
    const dlm = new Redlock(stores, { retryCount: 0, instanceTimeout: ANSWER_MS, keyPrefix: "lock:" });
    const resources = ["secret-resource-42"];

    // OOM on two nodes
    await Promise.all(direct.slice(1).map((client) => client.config("SET", "maxmemory", "1")));
    try {
      const oom = expectNothingLeaked(await dlm.lock(resources, 1000).catch((e: unknown) => e), values, resources);
      // the answers whose text must not leak came: the OOM refusals, not a timeout
      expect(oom.causes.map(({ instance, error }) => [instance, error.message.split(" ")[0]])).toEqual([
        [1, "OOM"],
        [2, "OOM"],
      ]);
    } finally {
      await Promise.all(direct.slice(1).map((client) => client.config("SET", "maxmemory", "0")));
    }

    // a timeout (stopped node) and a refused connection (killed node)
    invariants.faultInjected();
    const [, stopped, killed] = cluster.servers as [RedisServer, RedisServer, RedisServer];
    stopped.pause();
    await killed.kill();
    const down = expectNothingLeaked(await dlm.lock(resources, 1000).catch((e: unknown) => e), values, resources);
    // the stopped node timed out (it cannot answer, whatever the bound), the killed one refused
    expect(down.causes.map(({ instance, error }) => [instance, error.message])).toEqual([
      [1, `No answer within ${ANSWER_MS} ms`],
      [2, expect.not.stringMatching(/^No answer/)],
    ]);
    stopped.resume();
    await killed.start();
    await Promise.all(direct.map((client) => client.ping()));
    expect(values.size).toBe(2);
  });

  it("contention and loss name no resource in their message: with expose: true, Koa and Fastify send it to the client", async () => {
    const dlm = new Redlock(direct, { retryCount: 0, instanceTimeout: ANSWER_MS });
    const held = await dlm.acquire("user:alice@example.com", 2000);
    const contention = await dlm.acquire("user:alice@example.com", 1000).catch((e: unknown) => e);
    expect(contention).toBeInstanceOf(LockContentionError);
    expect((contention as LockContentionError).expose).toBe(true);
    expect((contention as Error).message).not.toContain("alice");
    expect((contention as LockContentionError).resources).toEqual(["user:alice@example.com"]);
    await Promise.all(direct.map((client) => client.set("user:alice@example.com", "thief", "PX", 2000)));
    const lost = await held.extend(1000).catch((e: unknown) => e);
    expect(lost).toBeInstanceOf(LockLostError);
    expect((lost as Error).message).not.toContain("alice");
    expect(await held.release()).toBe(false);
    await Promise.all(direct.map((client) => client.del("user:alice@example.com")));
  });

  it("diagnostics_channel messages carry resources and outcomes, never the value", async () => {
    const messages: unknown[] = [];
    const record = (message: unknown) => messages.push(message);
    const names = ["redlock-kit:acquire", "redlock-kit:extend", "redlock-kit:release"];
    for (const name of names) diagnosticsChannel.subscribe(name, record);
    try {
      const dlm = new Redlock(direct, { retryCount: 0, instanceTimeout: ANSWER_MS });
      const lock: Lock = await dlm.acquire("diag", 1000);
      await lock.extend(1000);
      await lock.release();
      expect(messages.length).toBe(3);
      expect(JSON.stringify(messages)).not.toContain(lock.value);
    } finally {
      for (const name of names) diagnosticsChannel.unsubscribe(name, record);
    }
  });
});
