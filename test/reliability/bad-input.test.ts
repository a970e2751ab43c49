/**
 * Bad input at every entry point (docs/reliability.md B1–B4): the Redlock constructor and methods,
 * key templates and key functions, the four HTTP adapters and `@Locked`. Each gets a typed error
 * (or a 400), and nothing reaches Redis. packages/core/test/validation.test.ts covers the plain
 * bad ttls, resources and options; this file covers hostile shapes and prototype pollution.
 */
import {
  compileKey,
  type HttpKeySource,
  type KeySpec,
  Lock,
  LockKeyError,
  MemoryStore,
  Redlock,
} from "@redlock-kit/core";
import { Locked } from "@redlock-kit/decorators";
import type { Redis } from "ioredis";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { buildApp, type Framework } from "../helpers/http-apps.js";
import { send } from "../helpers/http-client.js";
import { useInvariants } from "../helpers/invariants.js";
import { useRedisServers } from "../helpers/redis-servers.js";
import { warmUp } from "../helpers/warm-up.js";

const cluster = useRedisServers(3);
const invariants = useInvariants(cluster, { maxTtlMs: 1000 });
let direct: Redis[] = [];

beforeAll(async () => {
  direct = cluster.servers.map((server) => server.client());
  // a test's one attempt at a 1 s lock waits 100 ms for the new clients to say who they are
  await warmUp(new Redlock(direct), { quit: true });
});

/**
 * The per-instance bound of this file's 1 s locks, each taken in one attempt: the default (a tenth of
 * the ttl, 100 ms) is missed by a loaded machine's Redis, and the call then fails unavailable, not
 * on what the test is about. Half the ttl, as the default is never more than half.
 */
const BOUND = 500;

const POLLUTABLE = ["retryCount", "wait", "keyPrefix", "ttl", "clock", "polluted", "instanceTimeout", "redlock"];

afterEach(() => {
  // a test that failed half-way must not leave the prototype polluted for the next
  for (const name of POLLUTABLE) delete (Object.prototype as Record<string, unknown>)[name];
});

async function nothingInRedis() {
  expect(await Promise.all(direct.map((client) => client.dbsize()))).toEqual([0, 0, 0]);
}

/** Key functions that return junk or fail; each must be a LockKeyError, never a lock on "undefined". */
const junkKeys: [string, (source: unknown) => unknown][] = [
  [
    "throws",
    () => {
      throw new Error("db password is hunter2");
    },
  ],
  ["returns undefined", () => undefined],
  ["returns null", () => null],
  ["returns an empty string", () => ""],
  ["returns a number", () => 42],
  ["returns an object", () => ({ toString: () => "order:1" })],
  ["returns an empty array", () => []],
  ["returns an array with a non-string", () => ["a", 1]],
  ["returns a promise", async () => "order:1"],
  ["returns a 1 MiB string", () => "x".repeat(1 << 20)],
  ["returns 1001 names", () => Array.from({ length: 1001 }, (_, i) => `r${i}`)],
  ["writes a missing value into the name", (source) => `order:${(source as { id?: string }).id}`],
  ["writes a missing value before a _", (source) => `${(source as { tenant?: string }).tenant}_7`],
];

describe("the Redlock constructor and methods", () => {
  it("JSON with __proto__ in the options pollutes nothing and is not read", async () => {
    const options = JSON.parse(
      '{"__proto__": {"retryCount": -1, "keyPrefix": "evil:", "polluted": 1}, "retryCount": 0}',
    );
    const dlm = new Redlock(direct, options);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    const lock = await dlm.acquire("proto:json", 1000, { instanceTimeout: BOUND });
    expect(await direct[0]?.get("proto:json")).toBe(lock.value);
    expect(await direct[0]?.get("evil:proto:json")).toBeNull();
    await lock.release();
  });

  it("a polluted Object.prototype is ignored by the constructor and by every call", async () => {
    const proto = Object.prototype as Record<string, unknown>;
    // not keyPrefix: ioredis itself reads an inherited keyPrefix from its per-command option objects,
    // so a polluted runtime prefixes every command of every ioredis client, this library's or not
    Object.assign(proto, { retryCount: -1, wait: "forever", ttl: -5, clock: () => 0, instanceTimeout: -1 });
    try {
      // the call's {} still inherits the polluted instanceTimeout: -1
      const dlm = new Redlock(direct, { instanceTimeout: BOUND });
      const lock = await dlm.acquire("proto:global", 1000, {});
      expect(lock.valid).toBe(true);
      expect(lock.remainingMs).toBeGreaterThan(0);
      expect(await direct[0]?.get("proto:global")).toBe(lock.value);
      await dlm.extend(lock, 1000);
      await lock.release();
    } finally {
      for (const name of POLLUTABLE) delete proto[name];
    }
    await nothingInRedis();
  });

  it("an options getter that throws surfaces its error before any client is created", () => {
    const hostile = {
      get retryCount(): number {
        throw new Error("getter");
      },
    };
    expect(() => new Redlock([{ host: "127.0.0.1", port: cluster.servers[0]?.port }], hostile)).toThrow("getter");
  });

  it.each([
    ["a Symbol", Symbol("r")],
    ["a String object", new String("r")],
    ["an array-like object", { length: 1, 0: "r" }],
    ["a function", () => "r"],
    ["a bigint", 1n],
    ["an array with an object", ["a", { toString: (): string => "b" }]],
    ["1001 resources", Array.from({ length: 1001 }, (_, i) => `r${i}`)],
  ])("resource %s is a TypeError or RangeError, with nothing written", async (_, resource) => {
    const dlm = new Redlock(direct);
    const error = await dlm.lock(resource as never, 1000).catch((e: unknown) => e);
    expect(error instanceof TypeError || error instanceof RangeError).toBe(true);
    await nothingInRedis();
  });

  it("names that are odd but valid are data: unicode, NUL, newline, .. and * are distinct keys", async () => {
    const dlm = new Redlock(direct, { retryCount: 0, instanceTimeout: BOUND });
    const names = ["lock:é🔒", "a\u0000b", "a", "line\nbreak", "..", "*"];
    const locks = await Promise.all(names.map((name) => dlm.acquire(name, 1000)));
    expect(new Set(locks.map((lock) => lock.value)).size).toBe(names.length);
    for (const [i, name] of names.entries()) expect(await direct[1]?.get(name)).toBe(locks[i]?.value);
    await Promise.all(locks.map((lock) => lock.release()));
  });

  it("extend, unlock and using refuse what is not theirs to take, with nothing written", async () => {
    const dlm = new Redlock(direct);
    const forged = Object.create(Lock.prototype) as Lock;
    await expect(dlm.unlock(forged)).rejects.toBeInstanceOf(TypeError);
    await expect(dlm.extend(forged, 1000)).rejects.toBeInstanceOf(TypeError);
    await expect(dlm.unlock(null as never)).rejects.toBeInstanceOf(TypeError);
    await expect(dlm.using("u", 1000, async () => {}, { maxHoldMs: -1 })).rejects.toBeInstanceOf(RangeError);
    await expect(dlm.using("u", 1000, async () => {}, { extendThreshold: 2 })).rejects.toBeInstanceOf(RangeError);
    await expect(dlm.using("u", 1000, async () => {}, "fast" as never)).rejects.toBeInstanceOf(TypeError);
    await nothingInRedis();
  });

  it("using() releases and rethrows the very error of a section that throws synchronously or rejects", async () => {
    const dlm = new Redlock(direct, { instanceTimeout: BOUND });
    const sync = new RangeError("sync");
    await expect(
      dlm.using("throws", 1000, () => {
        throw sync;
      }),
    ).rejects.toBe(sync);
    const rejected = { not: "an Error" };
    await expect(dlm.using("throws", 1000, () => Promise.reject(rejected))).rejects.toBe(rejected);
    await nothingInRedis();
  });
});

describe("key templates and key functions (core)", () => {
  it.each(junkKeys)("a key function that %s is a LockKeyError (400) without its own message", (_, fn) => {
    const resolve = compileKey(fn as KeySpec<unknown>);
    const error = (() => {
      try {
        resolve({});
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(LockKeyError);
    expect((error as LockKeyError).status).toBe(400);
    expect(JSON.stringify((error as LockKeyError).body)).not.toContain("hunter2");
  });

  it.each([
    ["a missing part", "order:{params.id}", { params: {} }],
    ["an object", "order:{params.id}", { params: { id: { toString: () => "1" } } }],
    // a route param list is a wildcard's path segments (Express 5), joined; other lists are refused
    ["a query value given twice", "order:{query.id}", { query: { id: ["1", "2"] } }],
    ["a param list that is not all strings", "order:{params.id}", { params: { id: ["1", 2] } }],
    ["a param list with a dot segment", "file:{params.path}", { params: { path: ["a", "..", "b"] } }],
    ["NaN", "order:{params.id}", { params: { id: Number.NaN } }],
    ["an inherited property", "order:{params.id}", { params: Object.create({ id: "1" }) }],
    ["__proto__", "order:{params.__proto__}", { params: {} }],
    ["constructor.name", "order:{params.constructor.name}", { params: {} }],
    ["a JSON __proto__ body", "order:{body.id}", { body: JSON.parse('{"__proto__": {"id": "1"}}') }],
  ])("a template placeholder holding %s is a LockKeyError", (_, template, source) => {
    expect(() => compileKey(template)(source)).toThrow(LockKeyError);
  });
});

const frameworks: Framework[] = ["express", "koa", "fastify", "hono"];

describe.each(frameworks)("HTTP bad input through %s", (framework) => {
  it("every junk key, a missing param and a __proto__ body answer 400 JSON; the handler never runs; nothing is locked", async () => {
    const dlm = invariants.track(new Redlock(direct, { retryCount: 0 }));
    let ran = 0;
    const handler = async () => {
      ran++;
      return { json: { ok: true } };
    };
    const routes = [
      ...junkKeys.map(([, fn], i) => ({
        method: "post" as const,
        path: `/junk/${i}`,
        key: fn as KeySpec<HttpKeySource>,
        handler,
      })),
      { method: "post" as const, path: "/orders/:id/pay", key: "order:{params.id}:{body.sku}", handler },
    ];
    const app = invariants.track(await buildApp[framework](dlm, routes));
    for (const [i] of junkKeys.entries()) {
      const answer = await send(`${app.url}/junk/${i}`, { method: "POST", body: {} });
      expect(answer.status, junkKeys[i]?.[0]).toBe(400);
      expect(answer.headers["content-type"]).toMatch(/json/);
      expect(answer.text).not.toContain("hunter2");
    }
    for (const body of [{}, { sku: { $gt: "" } }, { sku: ["a", "b"] }]) {
      const answer = await send(`${app.url}/orders/1/pay`, { method: "POST", body });
      expect(answer.status, JSON.stringify(body)).toBe(400);
      expect(JSON.parse(answer.text)).toEqual({ error: expect.stringContaining("body.sku") });
    }
    // Koa's and Fastify's body parsers refuse a __proto__ key themselves; Express's and Hono's parse it as an own
    // property, which the key template does not follow
    const proto = await send(`${app.url}/orders/1/pay`, {
      method: "POST",
      body: JSON.parse('{"__proto__": {"sku": "x"}}'),
    });
    expect(proto.status).toBe(400);
    expect(({} as Record<string, unknown>).sku).toBeUndefined();
    expect(ran).toBe(0);
    await nothingInRedis();
  });

  it("bad route options fail when the route is declared, not per request", async () => {
    const dlm = new Redlock([new MemoryStore()]);
    for (const options of [{ ttl: "5000" }, { ttl: 0 }, { wait: -1 }, { autoExtend: "yes" }, { maxHoldMs: 0 }]) {
      await expect(
        buildApp[framework](dlm, [
          { method: "get", path: "/x", key: "x", options: options as never, handler: async () => ({ json: {} }) },
        ]).then((app) => app.close()),
      ).rejects.toThrow(/ttl|wait|autoExtend|maxHoldMs/);
    }
    await expect(
      buildApp[framework](dlm, [{ method: "get", path: "/x", key: "x:{", handler: async () => ({ json: {} }) }]).then(
        (app) => app.close(),
      ),
    ).rejects.toThrow(TypeError);
  });

  it("a key template no request could make a key of fails when the route is declared, not as a 400 per request", async () => {
    const declare = (dlm: Redlock, key: string) =>
      buildApp[framework](dlm, [{ method: "get", path: "/x/:id", key, handler: async () => ({ json: {} }) }]).then(
        async (app) => {
          await app.close();
          return "declared";
        },
        (error: unknown) => error,
      );
    const plain = new Redlock([new MemoryStore()]);
    for (const key of ["order:{params.id}:redlock-kit:fence", `${"x".repeat(1024)}:{params.id}`]) {
      const error = await declare(plain, key);
      expect(error, key.slice(0, 40)).toBeInstanceOf(TypeError);
      expect((error as Error).message, key.slice(0, 40)).toMatch(/key template ".*" can only make keys /);
    }
    const prefixed = new Redlock([new MemoryStore()], { keyPrefix: "job:redlock-kit:" });
    const error = await declare(prefixed, "fence");
    expect(error).toBeInstanceOf(TypeError);
    expect((error as Error).message).toMatch(/key template "fence" cannot be used with this Redlock: /);
    expect(await declare(prefixed, "{params.id}")).toBe("declared");
    await Promise.all([plain.quit(), prefixed.quit()]);
  });

  it("an option a route does not take (retryCount, a misspelt wait) fails when the route is declared, rather than be ignored", async () => {
    const dlm = new Redlock([new MemoryStore()]);
    const declare = (options: object, defaults?: object) =>
      buildApp[framework](
        dlm,
        [{ method: "get", path: "/x", key: "x", options: options as never, handler: async () => ({ json: {} }) }],
        defaults as never,
      ).then(
        async (app) => {
          await app.close();
          return "declared";
        },
        (error: unknown) => error,
      );
    const retries = await declare({ retryCount: 5 });
    expect(retries).toBeInstanceOf(TypeError);
    expect((retries as Error).message).toMatch(
      /options\.retryCount is not a route lock option \(use wait: the total ms to keep trying\)$/,
    );
    const misspelt = await declare({ ttl: 1000, wiat: 2000 });
    expect((misspelt as Error).message).toMatch(/options\.wiat is not a route lock option$/);
    const defaults = await declare({}, { wiat: 2000 });
    expect((defaults as Error).message).toMatch(/defaults\.wiat is not a route lock option$/);
    expect(await declare({ ttl: 1000, wait: 0, autoExtend: false, maxHoldMs: 5000, fencing: false })).toBe("declared");
  });

  it("route options that cannot work with the Redlock's own fail when the route is declared, not as a 500 per request", async () => {
    const timed = new Redlock(direct, { instanceTimeout: 1000 });
    let ran = 0;
    const handler = async () => {
      ran++;
      return { json: {} };
    };
    const declared = await buildApp[framework](timed, [
      { method: "get", path: "/short", key: "short", options: { ttl: 500 }, handler },
    ]).then(
      async (app) => {
        const answer = await send(`${app.url}/short`);
        await app.close();
        return `declared; the request answered ${answer.status}`;
      },
      (error: unknown) => error,
    );
    expect(declared).toBeInstanceOf(RangeError);
    expect((declared as Error).message).toMatch(
      /options cannot be used with this Redlock: instanceTimeout must be shorter than the ttl, got 1000 for a ttl of 500$/,
    );
    expect(ran).toBe(0);
    await nothingInRedis();
  });
});

describe("@Locked bad input", () => {
  /** Decorates `method` the experimentalDecorators way, which needs no compiler flag to call by hand. */
  function decorate(key: Parameters<typeof Locked>[0], options: Parameters<typeof Locked>[1]) {
    const target = { async run(..._args: unknown[]) {} };
    const descriptor = Object.getOwnPropertyDescriptor(target, "run") as TypedPropertyDescriptor<
      (...args: unknown[]) => Promise<void>
    >;
    Locked(key, options)(target, "run", descriptor);
    return descriptor.value as (...args: unknown[]) => Promise<void>;
  }

  it.each(junkKeys)("a key function that %s rejects the call with LockKeyError, nothing locked", async (_, fn) => {
    const dlm = new Redlock(direct);
    const run = decorate(fn as never, { redlock: dlm });
    await expect(run("a")).rejects.toBeInstanceOf(LockKeyError);
    await nothingInRedis();
  });

  it("a missing or non-scalar argument is a LockKeyError; bad or polluted options fail at decoration", async () => {
    const dlm = new Redlock(direct);
    const run = decorate("order:{0.id}", { redlock: dlm });
    for (const args of [[], [undefined], [{}], [{ id: {} }], [JSON.parse('{"__proto__": {"id": "1"}}')]]) {
      await expect(run(...args)).rejects.toBeInstanceOf(LockKeyError);
    }
    expect(() => decorate("x", { ttl: -1 })).toThrow(RangeError);
    expect(() => decorate("x", "5000" as never)).toThrow(TypeError);
    // JSON's __proto__ is an own key: refused as an unknown option, and nothing is polluted
    expect(() => decorate("x", JSON.parse('{"__proto__": {"ttl": -1}, "ttl": 1000}'))).toThrow(TypeError);
    expect(({} as Record<string, unknown>).ttl).toBeUndefined();
    await nothingInRedis();
  });
});
