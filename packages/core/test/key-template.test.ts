import { describe, expect, it } from "vitest";
import { keyReads } from "../src/http/key-template.js";
import {
  compileKey,
  createHttpLockPolicy,
  FetchResponseTracker,
  LockKeyError,
  MemoryStore,
  Redlock,
} from "../src/index.js";

/** What `run` throws (undefined if it returns). */
function thrownBy(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    return error;
  }
  return undefined;
}

const http = (over: Record<string, unknown> = {}) => ({
  params: { id: "42" },
  query: { page: 2 },
  body: { sku: "A-1", nested: { ok: true } },
  headers: { "x-tenant": "acme" },
  ...over,
});

describe("compileKey", () => {
  it("resolves dotted paths from params, query, body and headers", () => {
    expect(compileKey("order:{params.id}")(http())).toEqual(["order:42"]);
    expect(compileKey("{headers.x-tenant}:{body.sku}:{query.page}")(http())).toEqual(["acme:A-1:2"]);
    expect(compileKey("flag:{body.nested.ok}")(http())).toEqual(["flag:true"]);
  });

  it("tells which top-level parts a template reads (adapters skip parsing a query nobody reads)", () => {
    expect(keyReads("order:{params.id}", "query")).toBe(false);
    expect(keyReads("order:{params.id}", "params")).toBe(true);
    expect(keyReads("{headers.x-tenant}:{query.page}", "query")).toBe(true);
    expect(keyReads("{{query.page}}:{params.id}", "query")).toBe(false);
    expect(keyReads("queries:{params.query}", "query")).toBe(false);
    expect(keyReads(() => "k", "query")).toBe(true);
  });

  it("resolves argument lists for decorators", () => {
    expect(compileKey("order:{0}")(["7"])).toEqual(["order:7"]);
    expect(compileKey("account:{0.accountId}:{1}")([{ accountId: "a" }, 3])).toEqual(["account:a:3"]);
  });

  it("keeps literal braces written as {{ and }}", () => {
    expect(compileKey("{{tag}}:{0}")(["x"])).toEqual(["{tag}:x"]);
    expect(compileKey("plain")({})).toEqual(["plain"]);
  });

  it.each([
    ["missing", http({ params: {} })],
    ["undefined", http({ params: { id: undefined } })],
    ["null", http({ params: { id: null } })],
    ["empty string", http({ params: { id: "" } })],
    ["no params at all", { query: {}, body: {}, headers: {} }],
  ])("throws LockKeyError (400) naming the part when the value is %s", (_, source) => {
    const error = thrownBy(() => compileKey("order:{params.id}")(source)) as LockKeyError;
    expect(error).toBeInstanceOf(LockKeyError);
    expect(error.status).toBe(400);
    expect(error.path).toBe("params.id");
    expect(error.message).toBe('Lock key part "params.id" is missing');
  });

  it.each([
    ["an object", { id: { a: 1 } }],
    ["an array of numbers", { id: [1, 2] }],
    ["an array with a non-string", { id: ["a", null] }],
    ["NaN", { id: Number.NaN }],
    ["a function", { id: () => "1" }],
  ])("refuses a non-scalar value: %s", (_, params) => {
    expect(() => compileKey("order:{params.id}")(http({ params }))).toThrow(LockKeyError);
  });

  it("joins a wildcard param given as a list of segments (Express 5's /files/*path) into its path", () => {
    const resolve = compileKey("file:{params.path}");
    expect(resolve(http({ params: { path: ["a", "b", "c"] } }))).toEqual(["file:a/b/c"]);
    expect(resolve(http({ params: { path: ["a"] } }))).toEqual(["file:a"]);
    // a segment holding "/" (from %2F) gives the key of the same path split there: a coarser lock, never two keys
    expect(resolve(http({ params: { path: ["a/b", "c"] } }))).toEqual(["file:a/b/c"]);
    // the joined path is escaped as one value: a "/" after the placeholder escapes the inner ones
    expect(compileKey("file:{params.path}/meta")(http({ params: { path: ["a", "b"] } }))).toEqual(["file:a%2Fb/meta"]);
    expect(resolve(http({ params: { path: ["50%", "{x}"] } }))).toEqual(["file:50%25/%7Bx%7D"]);
    // dots among other characters are names like any other
    expect(resolve(http({ params: { path: ["...", ".a", "b.."] } }))).toEqual(["file:.../.a/b.."]);
  });

  it.each([
    ["an empty list", [], "is missing"],
    ["an empty segment (/files/a//b)", ["a", "", "b"], 'has an empty, "." or ".." path segment'],
    ["a trailing empty segment (/files/a/)", ["a", ""], 'has an empty, "." or ".." path segment'],
    ["one empty segment", [""], 'has an empty, "." or ".." path segment'],
    ["an empty segment inside one (a%2F/b)", ["a/", "b"], 'has an empty, "." or ".." path segment'],
    ["a . segment", ["a", ".", "b"], 'has an empty, "." or ".." path segment'],
    ["a .. segment", ["a", "..", "b"], 'has an empty, "." or ".." path segment'],
    ["a .. inside one (a%2F..)", ["a/..", "b"], 'has an empty, "." or ".." path segment'],
    // biome-ignore lint/suspicious/noSparseArray: a hole is what is tested
    ["a hole", [, "a"], 'has an empty, "." or ".." path segment'],
    ["a non-string segment", ["a", 1], "must be a string, a number or a list of path segments"],
    ["a lone surrogate", ["a", "\ud800"], "is not well-formed Unicode"],
    ["a path longer than the cap", ["x".repeat(600), "y".repeat(600)], "is longer than 1024 characters"],
    ["more segments than fit", Array.from({ length: 5000 }, () => "x"), "is longer than 1024 characters"],
  ])("refuses a wildcard param list with %s (400 naming the part)", (_, path, message) => {
    const error = thrownBy(() => compileKey("file:{params.path}")(http({ params: { path } }))) as LockKeyError;
    expect(error).toBeInstanceOf(LockKeyError);
    expect(error.status).toBe(400);
    expect(error.message).toBe(`Lock key part "params.path" ${message}`);
  });

  it("reads Fastify's wildcard param ({params.*}, /files/*) as any string param", () => {
    const resolve = compileKey("file:{params.*}");
    expect(resolve(http({ params: { "*": "a/b/c" } }))).toEqual(["file:a/b/c"]);
    expect(resolve(http({ params: { "*": "a" } }))).toEqual(["file:a"]);
    // the same escaping: a "/" after the placeholder escapes the inner ones
    expect(compileKey("file:{params.*}/meta")(http({ params: { "*": "a/b" } }))).toEqual(["file:a%2Fb/meta"]);
    expect(resolve(http({ params: { "*": "50%/{x}" } }))).toEqual(["file:50%25/%7Bx%7D"]);
    expect(resolve(http({ params: { "*": ".../.a/b.." } }))).toEqual(["file:.../.a/b.."]);
    // a list (were a router to give one) is joined as Express's is
    expect(resolve(http({ params: { "*": ["a", "b"] } }))).toEqual(["file:a/b"]);
    expect(keyReads("file:{params.*}", "params")).toBe(true);
  });

  it.each([
    ["missing", {}, "is missing"],
    ["empty (/files/)", { "*": "" }, "is missing"],
    ["an empty segment (/files/a//b)", { "*": "a//b" }, 'has an empty, "." or ".." path segment'],
    ["a trailing empty segment (/files/a/)", { "*": "a/" }, 'has an empty, "." or ".." path segment'],
    ["a leading empty segment (/files//a)", { "*": "/a" }, 'has an empty, "." or ".." path segment'],
    ["a . segment (/files/a/./b)", { "*": "a/./b" }, 'has an empty, "." or ".." path segment'],
    ["a .. segment (/files/a/../b)", { "*": "a/../b" }, 'has an empty, "." or ".." path segment'],
    ["only . (/files/%2E)", { "*": "." }, 'has an empty, "." or ".." path segment'],
    ["only ..", { "*": ".." }, 'has an empty, "." or ".." path segment'],
    ["a lone surrogate", { "*": "a/\ud800" }, "is not well-formed Unicode"],
    ["a path longer than the cap", { "*": "x".repeat(1025) }, "is longer than 1024 characters"],
    ["an object", { "*": { a: "b" } }, "must be a string or a number"],
  ])("refuses Fastify's wildcard param when %s (400 naming the part)", (_, params, message) => {
    const error = thrownBy(() => compileKey("file:{params.*}")(http({ params }))) as LockKeyError;
    expect(error).toBeInstanceOf(LockKeyError);
    expect(error.status).toBe(400);
    expect(error.path).toBe("params.*");
    expect(error.message).toBe(`Lock key part "params.*" ${message}`);
  });

  it("applies the segment rule to the wildcard only: a named param is an opaque value, read as it comes", () => {
    expect(compileKey("tag:{params.id}")(http({ params: { id: ".." } }))).toEqual(["tag:.."]);
    expect(compileKey("tag:{params.id}")(http({ params: { id: "a//b" } }))).toEqual(["tag:a//b"]);
  });

  it("refuses lists outside params: a repeated query value, a body's list or header names no one value", () => {
    const source = http({ query: { id: ["1", "2"] }, body: { ids: ["1", "2"] }, headers: { "x-id": ["1", "2"] } });
    for (const key of ["q:{query.id}", "b:{body.ids}", "h:{headers.x-id}"]) {
      expect(() => compileKey(key)(source)).toThrow("must be a string or a number");
    }
    expect(() => compileKey("order:{0}")([["1", "2"]])).toThrow('Lock key part "0" must be a string or a number');
  });

  it("wraps a wildcard list whose Proxy trap throws as LockKeyError naming the part", () => {
    const trapped = new Proxy(["a", "b"], {
      get(target, property) {
        if (property === "0") throw new Error("secret internal detail");
        return Reflect.get(target, property);
      },
    });
    const error = thrownBy(() => compileKey("f:{params.p}")(http({ params: { p: trapped } }))) as LockKeyError;
    expect(error).toBeInstanceOf(LockKeyError);
    expect(error.body).toEqual({ error: 'Lock key part "params.p" could not be resolved' });
    expect(error.cause).toBeDefined();
  });

  it("never walks the prototype chain", () => {
    expect(() => compileKey("{params.constructor.name}")(http())).toThrow(LockKeyError);
    expect(() => compileKey("{params.__proto__}")(http())).toThrow(LockKeyError);
    expect(() => compileKey("{params.toString}")(http())).toThrow(LockKeyError);
  });

  it("accepts key functions returning a string or a list, and wraps throws and junk as LockKeyError", () => {
    expect(compileKey((s: { id: string }) => `k:${s.id}`)({ id: "1" })).toEqual(["k:1"]);
    expect(compileKey(() => ["a", "b"])({})).toEqual(["a", "b"]);
    const thrower = compileKey(() => {
      throw new Error("secret internal detail");
    });
    expect(() => thrower({})).toThrow(LockKeyError);
    expect(() => thrower({})).toThrow("Lock key could not be resolved");
    for (const junk of [undefined, null, "", 42, {}, [], [""], [1], ["a", null]]) {
      expect(() => compileKey(() => junk as never)({})).toThrow(LockKeyError);
    }
    expect(() => compileKey(() => "x".repeat(1 << 20))({})).toThrow(LockKeyError);
    expect(() => compileKey(() => Promise.reject(new Error("async")) as never)({})).toThrow(/synchronously/);
  });

  it("refuses a name into which a key function turned an object ([object Promise]: an await left out), and says a template value is a promise", () => {
    const id = Promise.resolve("7");
    const objectInName = new LockKeyError(
      'Lock key function returned a name with "[object" in it: it turned an object into text (a promise not awaited?)',
    );
    expect(thrownBy(() => compileKey(([orderId]: [unknown]) => `order:${orderId}`)([id]))).toEqual(objectInName);
    expect(thrownBy(() => compileKey((s: { user: unknown }) => ["a", `t:${s.user}`])({ user: {} }))).toEqual(
      objectInName,
    );
    expect(thrownBy(() => compileKey("order:{0}")([id]))).toEqual(
      new LockKeyError('Lock key part "0" is a promise: await it before the call', "0"),
    );
    // text that only looks alike is a name like any other
    expect(compileKey(() => "order:[objection]")({})).toEqual(["order:[objection]"]);
  });

  it("refuses a name in which a key function wrote a missing value (undefined) or a failed number (NaN)", () => {
    const missing = new LockKeyError(
      'Lock key function returned a name with "undefined" or "NaN" in it: a value it read was missing',
    );
    const byBody = compileKey((s: { body: { id?: unknown } }) => `order:${s.body.id}`);
    expect(thrownBy(() => byBody({ body: {} }))).toEqual(missing);
    expect(thrownBy(() => compileKey((s: { n: string }) => ["a", `n:${Number(s.n)}:x`])({ n: "x7" }))).toEqual(missing);
    expect(thrownBy(() => compileKey(() => "undefined")({}))).toEqual(missing);
    // "_" separates as ":" does: `${tenant}_${id}` with no tenant, `order_${id}` with no id
    const byParts = compileKey((s: { tenant?: string; id?: string }) => `${s.tenant}_${s.id}`);
    expect(thrownBy(() => byParts({ id: "42" }))).toEqual(missing);
    expect(thrownBy(() => byParts({ tenant: "acme" }))).toEqual(missing);
    expect(thrownBy(() => compileKey(() => ["a", "n_NaN_1"])({}))).toEqual(missing);
    // a word that only contains the text is a name like any other
    expect(byBody({ body: { id: "undefinedness" } })).toEqual(["order:undefinedness"]);
    expect(compileKey(() => "userundefined:NaNa")({})).toEqual(["userundefined:NaNa"]);
    expect(byParts({ tenant: "acme", id: "42" })).toEqual(["acme_42"]);
  });

  it("wraps a key function's result whose `then` getter or Proxy trap throws as LockKeyError, like the function's throw", () => {
    const secret = new Error("secret internal detail");
    // biome-ignore lint/suspicious/noThenProperty: a thenable whose `then` throws is what is tested
    const thenGetter = Object.defineProperty({}, "then", {
      get() {
        throw secret;
      },
    });
    const trappedList = new Proxy(["a"], {
      get(target, property) {
        if (property === "length") return target.length;
        throw secret;
      },
    });
    const revoked = Proxy.revocable([], {});
    revoked.revoke();
    for (const result of [thenGetter, trappedList, revoked.proxy]) {
      const error = thrownBy(() => compileKey(() => result as never)({})) as LockKeyError;
      expect(error).toBeInstanceOf(LockKeyError);
      expect(error.status).toBe(400);
      expect(error.body).toEqual({ error: "Lock key could not be resolved" });
      expect(error.cause).toBeDefined();
    }
  });

  it("wraps a template value whose getter or Proxy trap throws as LockKeyError naming the part, like a key function's throw", () => {
    const secret = new Error("secret internal detail");
    const getter = {
      get id(): string {
        throw secret;
      },
    };
    const trap = new Proxy(
      { id: "1" },
      {
        getOwnPropertyDescriptor: () => {
          throw secret;
        },
      },
    );
    const revoked = Proxy.revocable({}, {});
    revoked.revoke();
    for (const params of [getter, trap, revoked.proxy]) {
      const error = thrownBy(() => compileKey("order:{params.id}")(http({ params }))) as LockKeyError;
      expect(error).toBeInstanceOf(LockKeyError);
      expect(error.status).toBe(400);
      expect(error.path).toBe("params.id");
      expect(error.body).toEqual({ error: 'Lock key part "params.id" could not be resolved' });
    }
  });

  it("escapes values so that different values never make one key", () => {
    const resolve = compileKey("t:{headers.x-tenant}:o:{params.id}");
    const a = resolve(http({ headers: { "x-tenant": "a:o:1" }, params: { id: "2" } }));
    const b = resolve(http({ headers: { "x-tenant": "a" }, params: { id: "1:o:2" } }));
    expect(a).toEqual(["t:a%3Ao%3A1:o:2"]);
    expect(b).toEqual(["t:a:o:1%3Ao%3A2"]);
    // the escape itself, and braces (a value never picks a Cluster hash slot), are escaped too
    expect(compileKey("k:{0}")(["50%3A"])).toEqual(["k:50%253A"]);
    expect(compileKey("k:{0}")(["{tag}x"])).toEqual(["k:%7Btag%7Dx"]);
    // a separator that is not ASCII is escaped as its UTF-8 bytes; a value without it is untouched
    expect(compileKey("{0}→{1}")(["a→b", "c"])).toEqual(["a%E2%86%92b→c"]);
    expect(compileKey("order:{params.id}")(http())).toEqual(["order:42"]);
  });

  it("refuses two placeholders with nothing between them, at compile time", () => {
    expect(() => compileKey("{0}{1}")).toThrow(TypeError);
    expect(() => compileKey("{0}{1}")).toThrow(/\{0\} and \{1\} with nothing between them/);
  });

  it("refuses lone surrogates: in a value or a key function's result (400), in the template (TypeError)", () => {
    for (const value of ["\ud800", "\udfff", "a\ud83d"]) {
      expect(() => compileKey("k:{0}")([value])).toThrow('Lock key part "0" is not well-formed Unicode');
      expect(() => compileKey(() => value)({})).toThrow(LockKeyError);
    }
    expect(compileKey("k:{0}")(["🔒"])).toEqual(["k:🔒"]);
    expect(() => compileKey("k\ud800:{0}")).toThrow(TypeError);
  });

  it("refuses a key that would end in a suffix of the library's own keys (400): a lock there would touch a fence counter", () => {
    expect(() => compileKey("order:{0}")(["1:redlock-kit:fence"])).toThrow(LockKeyError);
    expect(() => compileKey("order:{0}")(["1:redlock-kit:waiters"])).toThrow(LockKeyError);
    expect(() => compileKey(() => "order:1:redlock-kit:fence")({})).toThrow(LockKeyError);
    expect(compileKey("order:{0}")(["1:redlock-kit:fences"])).toEqual(["order:1:redlock-kit:fences"]);
  });

  it("refuses a key that the Redlock's keyPrefix makes one of the library's own keys (400), sending nothing", async () => {
    const store = new MemoryStore();
    const dlm = new Redlock([store], { keyPrefix: "lock:" });
    // "lock:" + "redlock-kit:fence" is the fence counter of "lock" for a Redlock without a prefix
    const outcome = await createHttpLockPolicy(dlm, { ttl: 1000 })
      .route(() => "redlock-kit:fence")
      .beginTracked(
        { params: {}, query: {}, body: undefined, headers: {} },
        new FetchResponseTracker(new AbortController().signal),
      );
    expect(outcome.kind).toBe("rejected");
    const { error, response } = outcome as Extract<typeof outcome, { kind: "rejected" }>;
    expect(error).toBeInstanceOf(LockKeyError);
    expect(response.status).toBe(400);
    expect(await store.inspect("lock:redlock-kit:fence")).toBeNull();
    await dlm.quit();
  });

  it("refuses at compile time (TypeError) a template whose fixed text alone can never give a valid key: past the cap, or ending in a reserved suffix", () => {
    const never = [
      // constant: the one key it makes is too long or reserved
      "x".repeat(1025),
      "order:redlock-kit:fence",
      // each placeholder adds at least one character: 1021 + 2 + 2 > 1024
      `${"x".repeat(1021)}{0}:{1}:`,
      `${"x".repeat(1024)}{0}`,
      // whatever the values, the key ends in the library's own suffix
      "order:{0}:redlock-kit:fence",
      "order:{0}:redlock-kit:waiters",
      "{0}:q:redlock-kit:waiters",
    ];
    for (const template of never) {
      const error = thrownBy(() => compileKey(template));
      expect(error, template.slice(0, 40)).toBeInstanceOf(TypeError);
      expect((error as Error).message, template.slice(0, 40)).toMatch(/^key template ".*" (is|can only make keys) /);
    }
    expect(thrownBy(() => compileKey("order:{0}:redlock-kit:fence"))).toEqual(
      new TypeError(
        'key template "order:{0}:redlock-kit:fence" can only make keys that end in ":redlock-kit:fence", the library\'s own keys beside each lock',
      ),
    );
    expect(thrownBy(() => compileKey(`${"x".repeat(1024)}{0}`))).toEqual(
      new TypeError(
        `key template ${JSON.stringify(`${"x".repeat(40)}…`)} can only make keys longer than 1024 characters (1024 characters of text and 1 placeholder)`,
      ),
    );
    // the longest that can still fit, and suffixes a value may still avoid or that are not the library's
    expect(compileKey(`${"x".repeat(1022)}{0}:`)(["a"])).toEqual([`${"x".repeat(1022)}a:`]);
    expect(compileKey("x".repeat(1024))({})).toEqual(["x".repeat(1024)]);
    expect(compileKey("order:{0}redlock-kit:fence")(["1"])).toEqual(["order:1redlock-kit:fence"]);
    expect(compileKey("order:{0}:redlock-kit:fences")(["1"])).toEqual(["order:1:redlock-kit:fences"]);
  });

  it("refuses at declaration (TypeError) a route whose constant key the Redlock's keyPrefix makes one of the library's own keys", async () => {
    const dlm = new Redlock([new MemoryStore()], { keyPrefix: "job:redlock-kit:" });
    const policy = createHttpLockPolicy(dlm);
    expect(thrownBy(() => policy.route("fence"))).toEqual(
      new TypeError(
        'key template "fence" cannot be used with this Redlock: resource "fence" with keyPrefix "job:redlock-kit:" is the key "job:redlock-kit:fence", which ends in ":redlock-kit:fence", the library\'s own keys beside each lock',
      ),
    );
    expect(() => policy.route("waiters")).toThrow(TypeError);
    // a placeholder's value decides (a request for "fence" is a 400), and another text is a key like any other
    expect(() => policy.route("{params.id}")).not.toThrow();
    expect(() => policy.route("fences")).not.toThrow();
    await dlm.quit();
  });

  it("gives each kind of value its own key or a LockKeyError, never another value's key", () => {
    const key = (template: string, body: unknown) =>
      thrownBy(() => compileKey(template)(http({ body }))) ?? compileKey(template)(http({ body }));
    const refused = (part: string, why: string) => new LockKeyError(`Lock key part "${part}" ${why}`, part);
    // a value never closes the template's own hash tag, nor opens one
    expect(key("{{{body.a}}}:x", { a: "x}" })).toEqual(["{x%7D}:x"]);
    expect(key("k:{body.a}", { a: "{a}" })).toEqual(["k:%7Ba%7D"]);
    // own properties only: what a class or Object.prototype has is missing, what JSON sent is data
    expect(key("k:{body.constructor}", {})).toEqual(refused("body.constructor", "is missing"));
    expect(key("k:{body.constructor.name}", new (class Order {})())).toEqual(
      refused("body.constructor.name", "is missing"),
    );
    expect(key("k:{body.constructor}", JSON.parse('{"constructor": "c"}'))).toEqual(["k:c"]);
    expect(key("k:{body.__proto__.a}", JSON.parse('{"__proto__": {"a": "1"}}'))).toEqual(
      refused("body.__proto__.a", "is missing"),
    );
    // scalars as String() writes them: -0 is 0, as for the handler that compares them
    expect([0, -0, 7.5, true, 10n].map((a) => key("k:{body.a}", { a }))).toEqual([
      ["k:0"],
      ["k:0"],
      ["k:7.5"],
      ["k:true"],
      ["k:10"],
    ]);
    for (const a of [new Date(0), new String("x"), Symbol("x"), () => "x", { toString: () => "x" }, ["x"]]) {
      expect(key("k:{body.a}", { a })).toEqual(refused("body.a", "must be a string or a number"));
    }
    // Unicode as sent: the library does not normalise, so "é" and "e" + U+0301 are two keys
    expect(key("k:{body.a}", { a: "é" })).not.toEqual(key("k:{body.a}", { a: "e\u0301" }));
    // a value under the cap whose escapes take the key past it
    expect(key("k:{body.a}", { a: "%".repeat(400) })).toEqual(
      new LockKeyError("Lock key is longer than 1024 characters"),
    );
    // the text a request sent is what it names, whatever it reads like
    expect(key("k:{body.a}", { a: "undefined" })).toEqual(["k:undefined"]);
    expect(key("k:{body.a}", { a: "null" })).toEqual(["k:null"]);
  });

  it("refuses a value longer than the key cap before building the key", () => {
    expect(() => compileKey("k:{0}")(["x".repeat(1025)])).toThrow('Lock key part "0" is longer than 1024 characters');
  });

  it("never reads __proto__, even as an own property (a prototype-less query object, JSON)", () => {
    const query = Object.assign(Object.create(null) as Record<string, string>, { ["__proto__"]: "x" });
    expect(Object.hasOwn(query, "__proto__")).toBe(true);
    expect(() => compileKey("q:{query.__proto__}")(http({ query }))).toThrow(LockKeyError);
    expect(() => compileKey("q:{body.__proto__}")(http({ body: JSON.parse('{"__proto__": "x"}') }))).toThrow(
      LockKeyError,
    );
  });

  it("refuses a route key that reads a header by a name with capitals, which no request has (TypeError at declaration)", async () => {
    const dlm = new Redlock([new MemoryStore()]);
    const policy = createHttpLockPolicy(dlm);
    expect(() => policy.route("t:{headers.X-Tenant}:o:{params.id}")).toThrow(
      "reads {headers.X-Tenant}: request header names are lower case, write {headers.x-tenant}",
    );
    expect(() => policy.route("t:{headers.x-tenant}:o:{params.id}")).not.toThrow();
    // a header value's own paths may have capitals, and other roots are not headers
    expect(() => policy.route("t:{headers.x-json.Tenant}:{params.Id}")).not.toThrow();
    await dlm.quit();
  });

  it("declares a route reading {params.*} and refuses one reading {query.*} (TypeError at declaration)", async () => {
    const dlm = new Redlock([new MemoryStore()]);
    const policy = createHttpLockPolicy(dlm);
    expect(() => policy.route("f:{params.*}")).not.toThrow();
    expect(() => policy.route("f:{query.*}")).toThrow('key template "f:{query.*}" has a malformed placeholder at 2');
    await dlm.quit();
  });

  it("rejects malformed templates at compile time with TypeError", () => {
    for (const bad of ["", "a{", "a}", "{}", "{a..b}", "{a b}", 42, null, undefined]) {
      expect(() => compileKey(bad as never)).toThrow(TypeError);
    }
    // "*" is a name in {params.*} (Fastify's wildcard) and nowhere else
    for (const bad of ["{query.*}", "{params.a*}", "{params.*.x}", "{*}", "{params*}", "{0.*}", "{body.params.*}"]) {
      expect(() => compileKey(bad)).toThrow(`key template ${JSON.stringify(bad)} has a malformed placeholder at 0`);
    }
  });
});
