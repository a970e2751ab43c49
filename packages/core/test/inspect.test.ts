import { inspect as utilInspect } from "node:util";
import { describe, expect, it } from "vitest";
import { LockConfigurationError, type LockStore, LockUnavailableError, MemoryStore, Redlock } from "../src/index.js";
import { LiveLocks } from "../src/lock/live-locks.js";
import { Lock, LockState } from "../src/lock/lock.js";
import { fingerprint } from "../src/observe/inspect.js";
import { useRedlocks } from "./helpers/redlocks.js";

const { server, client, clients, redlock } = useRedlocks(3);

/** A poll interval so long that only a release notification can wake a waiter within the test. */
const NO_POLLING = { retryDelay: 60_000, retryJitter: 0 };

describe("inspect()", () => {
  it("reports a free resource on every instance and the quorum", async () => {
    const view = await redlock().inspect("nobody");
    expect(view).toMatchObject({ resource: "nobody", key: "nobody", state: "free", quorum: 2, held: 0, free: 3 });
    expect(view.unknown).toBe(0);
    expect(view.ours).toBe(false);
    expect(view.holder).toBeUndefined();
    expect(view.instances.map((instance) => instance.state)).toEqual(["free", "free", "free"]);
    expect(view.instances[0]?.description).toBe(`127.0.0.1:${server(0).port}/0`);
  });

  it("tells a lock of this Redlock from another owner's, and shows the ttl without the value", async () => {
    const mine = redlock();
    const theirs = redlock();
    const lock = await mine.acquire("report", 5000);
    const ownView = await mine.inspect("report");
    const otherView = await theirs.inspect("report");
    for (const view of [ownView, otherView]) {
      expect(view.state).toBe("held");
      expect(view.held).toBe(3);
      expect(view.ttlMs).toBeGreaterThan(0);
      expect(view.ttlMs).toBeLessThanOrEqual(5000);
      expect(new Set(view.instances.map((instance) => instance.holder)).size).toBe(1);
      expect(view.holder).toMatch(/^[0-9a-f]{8}$/);
      for (const shown of [JSON.stringify(view), utilInspect(view, { depth: 5 })]) {
        expect(shown).not.toContain(lock.value);
      }
    }
    expect(ownView.ours).toBe(true);
    expect(ownView.instances.every((instance) => instance.ours === true)).toBe(true);
    expect(otherView.ours).toBe(false);
    expect(otherView.instances.every((instance) => instance.ours === false)).toBe(true);
    expect(await theirs.isLocked("report")).toBe(true);

    await lock.release();
    expect(await theirs.isLocked("report")).toBe(false);
    // released: the same value put back by hand is no longer a lock of ours
    await Promise.all(clients().map((c) => c.set("report", lock.value, "PX", 5000)));
    expect((await mine.inspect("report")).ours).toBe(false);
  });

  it("stops calling a lock ours once its validity has ended", async () => {
    const dlm = redlock();
    const lock = await dlm.acquire("short", 200);
    await expect.poll(() => lock.valid).toBe(false);
    // the value is back by hand: the keys exist, but the lock they belonged to is no longer valid
    await Promise.all(clients().map((c) => c.set("short", lock.value, "PX", 5000)));
    const view = await dlm.inspect("short");
    expect(view.state).toBe("held");
    expect(view.ours).toBe(false);
  });

  it("counts one holder's keys for the quorum and reports how long a quorum of them remains", async () => {
    const dlm = redlock();
    await client(0).set("split", "a", "PX", 9000);
    await client(1).set("split", "a", "PX", 3000);
    await client(2).set("split", "b", "PX", 9000);
    const view = await dlm.inspect("split");
    expect(view.state).toBe("held");
    expect(view.held).toBe(3);
    // a's keys: 9000 and 3000; a quorum (2) of them remains until the shorter one expires
    expect(view.ttlMs).toBeGreaterThan(2000);
    expect(view.ttlMs).toBeLessThanOrEqual(3000);
    const holders = view.instances.map((instance) => instance.holder);
    expect(holders[0]).toBe(holders[1]);
    expect(holders[2]).not.toBe(holders[0]);
    expect(view.holder).toBe(holders[0]);
  });

  it("calls a resource free when no holder has a quorum, and reports a key without expiry as -1", async () => {
    const dlm = redlock();
    await client(0).set("partial", "a", "PX", 9000);
    await client(1).set("partial", "b");
    const view = await dlm.inspect("partial");
    expect(view.state).toBe("free");
    expect(view.held).toBe(2);
    expect(view.ttlMs).toBeUndefined();
    expect(view.instances[1]).toMatchObject({ state: "held", ttlMs: -1 });
    expect(await dlm.isLocked("partial")).toBe(false);

    await client(0).set("forever", "a");
    await client(1).set("forever", "a", "PX", 9000);
    expect((await dlm.inspect("forever")).ttlMs).toBeGreaterThan(8000);
    await client(1).persist("forever");
    expect((await dlm.inspect("forever")).ttlMs).toBe(-1);
  });

  it("is unknown when the instances that did not answer could decide, and says which did not", async () => {
    const dlm = redlock({ instanceTimeout: 100 });
    await client(0).set("maybe", "a", "PX", 9000);
    server(1).pause();
    const view = await dlm.inspect("maybe");
    expect(view.state).toBe("unknown");
    expect(view.instances.map((instance) => instance.state)).toEqual(["held", "unknown", "free"]);
    expect(view.instances[1]?.error?.message).toBe("No answer within 100 ms");
    const error = await dlm.isLocked("maybe").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockUnavailableError);
    expect((error as LockUnavailableError).causes.map((cause) => cause.instance)).toEqual([1]);

    // held on the two instances that answered: the silent one cannot change the verdict
    await client(2).set("maybe", "a", "PX", 9000);
    expect((await dlm.inspect("maybe")).state).toBe("held");
    // free on the two that answered: no holder can have a quorum
    await Promise.all([client(0).del("maybe"), client(2).del("maybe")]);
    expect((await dlm.inspect("maybe", { instanceTimeout: 50 })).state).toBe("free");
  });

  it("isLocked() on data of another type (a hash) at the key is a LockConfigurationError, as for acquire(), not an outage", async () => {
    const dlm = redlock();
    await Promise.all(clients().map((c) => c.hset("profile:7", "name", "someone else's data")));
    const error = await dlm.isLocked("profile:7").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockConfigurationError);
    expect((error as Error).message).toMatch(/WRONGTYPE/);
    expect((error as LockConfigurationError).instances).toEqual([0, 1, 2]);
    for (const c of clients()) expect(await c.hget("profile:7", "name")).toBe("someone else's data");
    // on a minority, the instances that hold strings decide, as an acquisition's votes would
    await client(0).del("profile:7");
    await client(0).set("profile:7", "a", "PX", 9000);
    await client(1).del("profile:7");
    await client(1).set("profile:7", "a", "PX", 9000);
    expect(await dlm.isLocked("profile:7")).toBe(true);
  });

  it("refuses one server listed twice (a host alias), as an acquisition does, rather than count its key twice", async () => {
    const alias = server(0).client({ host: "localhost" });
    const dlm = new Redlock([client(0), alias, client(1)]);
    try {
      // held on one server of the two: no quorum, whatever the list says
      await client(0).set("twice", "someone", "PX", 9000);
      const error = await dlm.isLocked("twice").catch((e: unknown) => e);
      expect(error).toBeInstanceOf(LockConfigurationError);
      expect((error as Error).message).toMatch(
        /^instances\[1\] \(localhost:\d+\/0\) is the same Redis server as instances\[0\]/,
      );
      await expect(dlm.inspect("twice")).rejects.toBeInstanceOf(LockConfigurationError);
      await expect(dlm.forceRelease("twice")).rejects.toBeInstanceOf(LockConfigurationError);
      expect(await client(0).get("twice")).toBe("someone");
      await expect(dlm.acquire("other", 1000)).rejects.toBeInstanceOf(LockConfigurationError);
    } finally {
      await dlm.quit();
      alias.disconnect();
    }
  });

  it("sends only GET and PTTL, one pipeline per instance", async () => {
    const dlm = redlock();
    await dlm.acquire("read-only", 5000);
    await Promise.all(clients().map((c) => c.config("RESETSTAT")));
    await dlm.inspect("read-only");
    for (const c of clients()) {
      const stats = (await c.info("commandstats"))
        .split("\r\n")
        .filter((line) => line.startsWith("cmdstat_"))
        .map((line) => line.replace(/:calls=(\d+),.*/, ":$1"))
        .filter((line) => !line.startsWith("cmdstat_config") && !line.startsWith("cmdstat_info"));
      expect(stats.sort()).toEqual(["cmdstat_get:1", "cmdstat_pttl:1"]);
    }
  });

  it("reads keys with the key prefix", async () => {
    const dlm = redlock({ keyPrefix: "lock:" });
    const lock = await dlm.acquire("42", 5000);
    const view = await dlm.inspect("42");
    expect(view).toMatchObject({ resource: "42", key: "lock:42", state: "held", ours: true });
    await lock.release();
  });

  it("works on MemoryStore, and reports a store without inspect() as unknown", async () => {
    const memory = new Redlock([new MemoryStore()]);
    const lock = await memory.acquire("m", 5000);
    expect(await memory.inspect("m")).toMatchObject({ state: "held", ours: true, quorum: 1 });
    await lock.release();
    expect((await memory.inspect("m")).state).toBe("free");

    const bare: LockStore = {
      acquire: async () => ({ acquired: true }),
      extend: async () => true,
      release: async () => 1,
      description: "bare",
    };
    const view = await new Redlock([bare]).inspect("m");
    expect(view.state).toBe("unknown");
    expect(view.instances[0]?.error?.message).toBe("bare cannot be inspected: it has no inspect()");
  });

  it("refuses bad arguments before any command", async () => {
    const dlm = redlock();
    await expect(dlm.inspect("")).rejects.toThrow(TypeError);
    await expect(dlm.inspect(42 as never)).rejects.toThrow(TypeError);
    await expect(dlm.isLocked("x", { instanceTimeout: 0 })).rejects.toThrow(
      "options.instanceTimeout must be a positive integer",
    );
    await expect(dlm.forceRelease("x", [] as never)).rejects.toThrow("options must be an object");
    const holder = "0123abcd";
    const refused: [unknown, ErrorConstructor, string][] = [
      [
        undefined,
        TypeError,
        "options.holder must be a holder as inspect() shows it (8 lowercase hex digits) or an array",
      ],
      ["0123ABCD", TypeError, 'got "0123ABCD"'],
      [42, TypeError, "got 42"],
      [[holder, holder], RangeError, "options.holder must have one entry per instance (3), got 2"],
      [[holder, null, holder], TypeError, "options.holder[1] must be a holder as inspect() shows it"],
    ];
    for (const [value, type, message] of refused) {
      const error = await dlm.forceRelease("x", { holder: value as never }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(type);
      expect((error as Error).message).toContain(message);
    }
  });
});

describe("forceRelease()", () => {
  it("deletes the key on every instance whatever its value, and counts where it existed", async () => {
    const dlm = redlock();
    const held = await redlock().acquire("stuck", 60_000);
    await client(2).set("stuck", "someone-else", "PX", 60_000);
    const result = await dlm.forceRelease("stuck");
    expect(result).toMatchObject({ resource: "stuck", key: "stuck", deleted: 3, unknown: 0 });
    expect(result.instances.map((instance) => instance.deleted)).toEqual([true, true, true]);
    expect(await Promise.all(clients().map((c) => c.exists("stuck")))).toEqual([0, 0, 0]);
    expect(JSON.stringify(result)).not.toContain(held.value);
    // the old holder learns it at its next extension
    await expect(held.extend(60_000)).rejects.toThrow("Lock could not be extended on a quorum");
    expect((await dlm.forceRelease("stuck")).deleted).toBe(0);
  });

  it.each([
    ["whatever holds the key", (_: string) => undefined],
    ["the holder shown", (holder: string) => ({ holder })],
  ])("wakes a waiter at once, as a release does: %s", async (_, options) => {
    const holder = await redlock().acquire("crashed", 60_000);
    // the holder's acquire resolves at a quorum: the waiter starts once every instance holds the key,
    // and the key is forced free once the waiter is queued on every instance (else its first attempt
    // could simply find the key free, and nothing would be handed over)
    await expect.poll(() => Promise.all(clients().map((c) => c.exists("crashed")))).toEqual([1, 1, 1]);
    const waiting = redlock(NO_POLLING).acquire("crashed", 1000, { wait: 60_000, signal: AbortSignal.timeout(10_000) });
    await expect
      .poll(() => Promise.all(clients().map((c) => c.zcard("crashed:redlock-kit:waiters"))))
      .toEqual([1, 1, 1]);
    expect((await redlock().forceRelease("crashed", options(fingerprint(holder.value)))).deleted).toBe(3);
    const lock = await waiting;
    expect(lock.valid).toBe(true);
    expect(holder.valid).toBe(true); // it does not know yet: that is why this is unsafe
    await lock.release();
  });

  it("reports instances that did not answer", async () => {
    const dlm = redlock({ instanceTimeout: 100 });
    await redlock().acquire("half", 60_000);
    server(0).pause();
    const result = await dlm.forceRelease("half");
    expect(result.deleted).toBe(2);
    expect(result.unknown).toBe(1);
    expect(result.instances[0]?.deleted).toBeUndefined();
    expect(result.instances[0]?.error?.message).toBe("No answer within 100 ms");
  });

  it("with holder, deletes on each instance only the holder given for it", async () => {
    const dlm = redlock();
    const shown = await redlock().acquire("seen", 60_000);
    await client(2).set("seen", "someone-else", "PX", 60_000);
    const holder = fingerprint(shown.value);
    // one holder for every instance: the other holder's key is kept
    const everywhere = await dlm.forceRelease("seen", { holder });
    expect(everywhere).toMatchObject({ deleted: 2, kept: 1, unknown: 0 });
    expect(everywhere.instances.map(({ deleted, holder }) => [deleted, holder])).toEqual([
      [true, undefined],
      [true, undefined],
      [false, fingerprint("someone-else")],
    ]);
    // one per instance: nothing is deleted where none is given
    await Promise.all(clients().map((c) => c.set("seen", shown.value, "PX", 60_000)));
    const each = await dlm.forceRelease("seen", { holder: [holder, undefined, fingerprint("nobody")] });
    expect(each).toMatchObject({ deleted: 1, kept: 2 });
    expect(await Promise.all(clients().map((c) => c.get("seen")))).toEqual([null, shown.value, shown.value]);
    expect((await dlm.forceRelease("seen")).kept).toBe(0);
  });

  it("works on MemoryStore through its inspect()", async () => {
    const dlm = new Redlock([new MemoryStore()]);
    const other = await dlm.acquire("m", 60_000);
    expect((await dlm.forceRelease("m")).deleted).toBe(1);
    expect(other.valid).toBe(true);
    expect((await dlm.inspect("m")).state).toBe("free");
  });
});

describe("the registry of live locks", () => {
  let now = 0;
  const clock = () => now;
  const owner = { unlock: async () => true, extend: async (lock: Lock) => lock };
  let serial = 0;
  /** A lock on `keys` valid for `ttl` ms on the test clock, made without a store. */
  const lockOn = (keys: readonly string[], ttl: number) => {
    const value = `v${serial++}`;
    const state = new LockState(keys, value, 100, clock);
    state.validUntil = now + ttl;
    state.acquiredAt = now;
    return new Lock(owner, keys, value, state);
  };

  it("forgets invalid locks each time it reaches its threshold, and keeps valid ones", () => {
    const live = new LiveLocks();
    const kept = lockOn(["kept"], 60_000);
    live.add(kept);
    for (const round of [1, 2]) {
      const expiring = 1024 - live.size - 1;
      for (let i = 0; i < expiring; i++) live.add(lockOn([`e${round}:${i}`], 50));
      expect(live.size).toBe(1023);
      now += 100;
      live.add(lockOn([`trigger${round}`], 60_000));
      expect(live.size).toBe(round + 1);
    }
    expect(live.holds(kept.value)).toBe(true);
    now += 7;
    expect(live.heldMs(kept)).toBe(207);
    live.delete(kept);
    expect(live.holds(kept.value)).toBe(false);
    expect(live.heldMs(kept)).toBeUndefined();
    live.delete(kept);
    expect(live.size).toBe(2);
  });

  it("counts a lock once however often it is added, and forgets it on delete wherever it sits in the list", () => {
    const live = new LiveLocks();
    const locks = [lockOn(["a"], 1000), lockOn(["b"], 1000), lockOn(["c"], 1000)];
    for (const lock of locks) live.add(lock);
    live.add(locks[1] as Lock);
    expect(live.size).toBe(3);
    live.delete(locks[1] as Lock);
    expect(live.holds((locks[1] as Lock).value)).toBe(false);
    expect(live.holds((locks[0] as Lock).value) && live.holds((locks[2] as Lock).value)).toBe(true);
    live.delete(locks[2] as Lock);
    live.delete(locks[0] as Lock);
    expect(live.size).toBe(0);
    expect(live.holdsAnyKey(["a", "b", "c"])).toBe(false);
  });

  it("tells whether a valid lock holds one of some keys, and stops looking past 256 live locks", () => {
    const live = new LiveLocks();
    const pair = lockOn(["x", "y"], 1000);
    live.add(pair);
    expect(live.holdsAnyKey(["y"])).toBe(true);
    expect(live.holdsAnyKey(["z", "x"])).toBe(true);
    expect(live.holdsAnyKey(["z"])).toBe(false);
    const others = Array.from({ length: 255 }, (_, i) => lockOn([`o${i}`], 1000));
    for (const lock of others) live.add(lock);
    expect(live.size).toBe(256);
    expect(live.holdsAnyKey(["x"])).toBe(true);
    const more = lockOn(["m"], 1000);
    live.add(more);
    // a waiter then polls: the answer costs nothing however many locks this Redlock holds
    expect(live.holdsAnyKey(["x"])).toBe(false);
    live.delete(more);
    expect(live.holdsAnyKey(["x"])).toBe(true);
    now += 1000;
    expect(live.holdsAnyKey(["x"])).toBe(false);
  });
});
