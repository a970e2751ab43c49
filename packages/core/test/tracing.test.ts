import { AsyncLocalStorage } from "node:async_hooks";
import diagnosticsChannel from "node:diagnostics_channel";
import { inspect } from "node:util";
import { describe, expect, it } from "vitest";
import { aborted } from "#test-helpers/aborted.js";
import { arrival, nextExtensions } from "#test-helpers/lock-events.js";
import { sleep } from "#test-helpers/redis.js";
import {
  type Lock,
  LockContentionError,
  LockLostError,
  type LockStore,
  type LockTraceContext,
  LockUnavailableError,
  RedisStore,
  Redlock,
  reenteringLocks,
  tracingChannels,
} from "../src/index.js";
import { useRedlocks } from "./helpers/redlocks.js";

const { server, clients, redlock } = useRedlocks(3);

const NAMES = ["acquire", "extend", "release", "using"] as const;
type Name = (typeof NAMES)[number];
const EVENTS = ["start", "end", "asyncStart", "asyncEnd", "error"] as const;

interface Event {
  channel: Name;
  event: (typeof EVENTS)[number];
  context: LockTraceContext & Record<string, unknown>;
  /** A copy of the context as it was when the event was published. */
  snapshot: Record<string, unknown>;
}

/**
 * Records every event of the four channels, subscribed by name (as a user or an APM tool would,
 * without importing core) while `run` runs.
 */
async function record(run: () => Promise<unknown>): Promise<Event[]> {
  const events: Event[] = [];
  const subscriptions = NAMES.map((channel) => {
    const handlers = Object.fromEntries(
      EVENTS.map((event) => [
        event,
        (context: unknown) => {
          const traced = context as Event["context"];
          events.push({ channel, event, context: traced, snapshot: { ...traced } });
        },
      ]),
    );
    const tracing = diagnosticsChannel.tracingChannel(`redlock-kit:${channel}`);
    tracing.subscribe(handlers as never);
    return () => tracing.unsubscribe(handlers as never);
  });
  try {
    await run();
  } finally {
    for (const unsubscribe of subscriptions) unsubscribe();
  }
  return events;
}

const on = (events: Event[], channel: Name) => events.filter((event) => event.channel === channel);
const sequence = (events: Event[], channel: Name) => on(events, channel).map((event) => event.event);

describe("tracing channels", () => {
  it("are idle until someone subscribes, and are the channels a subscriber finds by name", () => {
    for (const name of NAMES) {
      expect(tracingChannels[name].hasSubscribers).toBe(false);
      const handlers = { start() {} };
      diagnosticsChannel.tracingChannel(`redlock-kit:${name}`).subscribe(handlers as never);
      expect(tracingChannels[name].hasSubscribers).toBe(true);
      diagnosticsChannel.tracingChannel(`redlock-kit:${name}`).unsubscribe(handlers as never);
      expect(tracingChannels[name].hasSubscribers).toBe(false);
    }
  });

  it("trace an acquisition: start and end around the call, asyncStart and asyncEnd when it settles", async () => {
    const dlm = redlock();
    let lock: Lock | undefined;
    const events = await record(async () => {
      lock = await dlm.acquire(["a", "b"], 2000);
    });
    expect(sequence(events, "acquire")).toEqual(["start", "end", "asyncStart", "asyncEnd"]);
    const [start, , , asyncEnd] = on(events, "acquire");
    expect(start?.snapshot).toEqual({ resources: ["a", "b"], instances: 3, ttl: 2000, attempts: 0 });
    expect(asyncEnd?.snapshot).toEqual({
      resources: ["a", "b"],
      instances: 3,
      ttl: 2000,
      attempts: 1,
      outcome: "acquired",
    });
    expect(on(events, "acquire").every((event) => event.context === start?.context)).toBe(true);
    await lock?.release();
  });

  it("report contention with the attempts made, as an error only when the call rejects", async () => {
    const holder = await redlock().acquire("busy", 5000);
    const dlm = redlock({ retryCount: 2, retryDelay: 10, retryJitter: 0 });
    const events = await record(async () => {
      expect(await dlm.lock("busy", 1000)).toBeNull();
      await expect(dlm.acquire("busy", 1000)).rejects.toThrow(LockContentionError);
    });
    const ends = on(events, "acquire").filter((event) => event.event === "asyncEnd");
    expect(ends.map((event) => [event.snapshot.outcome, event.snapshot.attempts])).toEqual([
      ["contention", 3],
      ["contention", 3],
    ]);
    const errors = on(events, "acquire").filter((event) => event.event === "error");
    expect(errors).toHaveLength(1);
    expect(errors[0]?.context.error).toBeInstanceOf(LockContentionError);
    await holder.release();
  });

  it("report bad arguments as such when the signal aborts in the same tick", async () => {
    const dlm = redlock();
    const events = await record(async () => {
      const calls = [
        (signal: AbortSignal) => dlm.lock("", 1000, { signal }),
        (signal: AbortSignal) => dlm.acquire("a", Number.NaN, { signal }),
      ];
      for (const call of calls) {
        const controller = new AbortController();
        const calling = call(controller.signal);
        controller.abort();
        await expect(calling).rejects.not.toBe(controller.signal.reason);
      }
    });
    const ended = on(events, "acquire").filter((event) => event.event === "asyncEnd");
    expect(ended.map((event) => [event.snapshot.outcome, (event.snapshot.error as Error).name])).toEqual([
      ["error", "TypeError"],
      ["error", "RangeError"],
    ]);
  });

  it("report unavailability, an aborted wait and bad arguments", async () => {
    const dlm = redlock({ retryCount: 0, instanceTimeout: 100 });
    const waiting = redlock();
    const holder = await redlock().acquire("held", 5000);
    const events = await record(async () => {
      await expect(waiting.acquire("held", 1000, { wait: 60_000, signal: AbortSignal.timeout(300) })).rejects.toThrow();
      await expect(dlm.lock("", 1000)).rejects.toThrow(TypeError);
      server(0).pause();
      server(1).pause();
      await expect(dlm.acquire("down", 1000)).rejects.toThrow(LockUnavailableError);
    });
    const outcomes = on(events, "acquire")
      .filter((event) => event.event === "asyncEnd")
      .map((event) => event.snapshot.outcome);
    expect(outcomes).toEqual(["aborted", "error", "unavailable"]);
    server(0).resume();
    server(1).resume();
    await holder.release();
  });

  it("trace extension and release: extended, lost, released, lost, already released, with the time held", async () => {
    const dlm = redlock();
    let heldAtLeastMs = 0;
    const events = await record(async () => {
      const kept = await dlm.acquire("kept", 5000);
      const acquiredAt = performance.now();
      await kept.extend(5000);
      await sleep(20);
      // a 20 ms timer may fire a few µs short of 20 ms on performance.now(): compare with what passed
      heldAtLeastMs = performance.now() - acquiredAt;
      await kept.release();
      await kept.release();
      const taken = await dlm.acquire("taken", 5000);
      await Promise.all(clients().map((client) => client.del("taken")));
      await expect(taken.extend(5000)).rejects.toThrow("Lock could not be extended");
      await taken.release();
    });
    expect(
      on(events, "extend")
        .filter((e) => e.event === "asyncEnd")
        .map((e) => e.snapshot),
    ).toEqual([
      { resources: ["kept"], instances: 3, ttl: 5000, outcome: "extended" },
      expect.objectContaining({ resources: ["taken"], outcome: "lost" }),
    ]);
    expect(sequence(events, "extend")).toEqual([
      "start",
      "end",
      "asyncStart",
      "asyncEnd",
      ...["start", "end"],
      "error",
      "asyncStart",
      "asyncEnd",
    ]);
    const releases = on(events, "release").filter((e) => e.event === "asyncEnd");
    expect(releases.map((e) => [e.snapshot.resources, e.snapshot.outcome])).toEqual([
      [["kept"], "released"],
      [["kept"], "already-released"],
      [["taken"], "lost"],
    ]);
    expect(releases[0]?.snapshot.heldMs).toBeGreaterThanOrEqual(heldAtLeastMs);
    expect(releases[1]?.snapshot).not.toHaveProperty("heldMs");
  });

  it("trace using() around its acquisition, extensions and release, which run inside its context", async () => {
    const dlm = redlock();
    const store = new AsyncLocalStorage<unknown>();
    tracingChannels.using.start.bindStore(store, (context) => context);
    const parents: [string, unknown][] = [];
    const onStart = (name: string) => () => parents.push([name, store.getStore()]);
    const starts = (["acquire", "extend", "release"] as const).map((name) => {
      const handler = onStart(name);
      diagnosticsChannel.subscribe(`tracing:redlock-kit:${name}:start`, handler);
      return () => diagnosticsChannel.unsubscribe(`tracing:redlock-kit:${name}:start`, handler);
    });
    try {
      const events = await record(async () => {
        // 2 s, renewed at half of it (a renewal up to ~1 s late still comes in time): fn lasts until
        // that auto-extension came
        const result = await dlm.using("job", 2000, async () => {
          await arrival(nextExtensions("job", 1), "the lock's renewal");
          return 42;
        });
        expect(result).toBe(42);
      });
      const [start, , , asyncEnd] = on(events, "using");
      expect(sequence(events, "using")).toEqual(["start", "end", "asyncStart", "asyncEnd"]);
      expect(asyncEnd?.snapshot).toEqual({ resources: ["job"], instances: 3, ttl: 2000, outcome: "completed" });
      expect(parents.map(([name]) => name)).toContain("extend");
      expect(parents[0]).toEqual(["acquire", start?.context]);
      expect(parents.every(([, parent]) => parent === start?.context)).toBe(true);
    } finally {
      tracingChannels.using.start.unbindStore(store);
      for (const unsubscribe of starts) unsubscribe();
    }
  });

  it("mark detached the renewal of a lock taken while nobody traced extensions, and no other extension", async () => {
    const dlm = redlock();
    let renewed!: () => void;
    const renewal = new Promise<void>((resolve) => {
      renewed = resolve;
    });
    // begun before anyone subscribes; 2 s, renewed at half of it
    const early = dlm.using("early", 2000, () => renewal);
    await expect.poll(() => dlm.isLocked("early")).toBe(true);
    const events = await record(async () => {
      await dlm.using("late", 2000, async (_, lock) => {
        await lock.extend(2000);
        await arrival(nextExtensions("late", 1), "the late lock's renewal");
      });
      await arrival(nextExtensions("early", 1), "the early lock's renewal");
      renewed();
      await early;
    });
    // the late lock's manual extension and renewals, however many, then the early lock's renewal
    const starts = on(events, "extend").filter((event) => event.event === "start");
    const marks = (name: string) =>
      new Set(starts.filter((event) => event.context.resources[0] === name).map((event) => event.snapshot.detached));
    expect([marks("late"), marks("early")]).toEqual([new Set([undefined]), new Set([true])]);
  });

  it("mark detached that renewal alone, not an extension a subscriber makes as it starts", async () => {
    const dlm = redlock();
    let renewed!: () => void;
    const renewal = new Promise<void>((resolve) => {
      renewed = resolve;
    });
    // begun before anyone subscribes; 2 s, renewed at half of it
    const early = dlm.using("early", 2000, () => renewal);
    await expect.poll(() => dlm.isLocked("early")).toBe(true);
    const other = await dlm.acquire("other", 10_000);
    const marks: Record<string, unknown> = {};
    let nested: Promise<unknown> | undefined;
    const handlers = {
      start(context: unknown) {
        const traced = context as LockTraceContext & { detached?: true };
        marks[traced.resources[0] as string] = traced.detached;
        // a subscriber extending another lock while the renewal's start is published
        if (traced.resources[0] === "early") nested ??= dlm.extend(other, 10_000);
      },
    };
    tracingChannels.extend.subscribe(handlers as never);
    try {
      await arrival(nextExtensions("early", 1), "the early lock's renewal");
      await nested;
    } finally {
      tracingChannels.extend.unsubscribe(handlers as never);
    }
    renewed();
    await early;
    await dlm.unlock(other);
    // before: { early: true, other: true }
    expect(marks).toEqual({ early: true, other: undefined });
  });

  it("report a using() whose lock was lost while fn ran, and fn's own error", async () => {
    const dlm = redlock();
    const failure = new Error("fn failed");
    const events = await record(async () => {
      await dlm.using("lost", 300, async (signal) => {
        // listened for before the keys go: the renewal, due at half the 300 ms ttl, may find them
        // gone and abort the signal before this section goes on (an "abort" listener added then
        // never fires)
        const lost = aborted(signal);
        await Promise.all(clients().map((client) => client.del("lost")));
        await lost;
      });
      await expect(
        dlm.using("thrown", 1000, () => {
          throw failure;
        }),
      ).rejects.toBe(failure);
      await expect(dlm.using("not-a-function", 1000, 42 as never)).rejects.toThrow(TypeError);
    });
    const ends = on(events, "using").filter((event) => event.event === "asyncEnd");
    expect(ends.map((event) => [event.snapshot.resources, event.snapshot.outcome])).toEqual([
      [["lost"], "lost"],
      [["thrown"], "completed"],
      [["not-a-function"], "error"],
    ]);
    expect(ends[1]?.snapshot.error).toBe(failure);
  });

  it("report a using() as lost when its release finds a quorum no longer held the lock, though no renewal came", async () => {
    const dlm = redlock();
    const events = await record(async () => {
      // 10 s: no renewal comes while fn runs, so only the release can tell
      await dlm.using("deleted", 10_000, () => Promise.all(clients().map((client) => client.del("deleted"))));
      // fn's own release of a lock still held is not a loss
      await dlm.using("released-by-fn", 10_000, (_, lock) => lock.release());
    });
    const ends = (name: Name) => on(events, name).filter((event) => event.event === "asyncEnd");
    expect(ends("release").map((event) => [event.snapshot.resources, event.snapshot.outcome])).toEqual([
      [["deleted"], "lost"],
      [["released-by-fn"], "released"],
      [["released-by-fn"], "already-released"],
    ]);
    expect(ends("using").map((event) => [event.snapshot.resources, event.snapshot.outcome])).toEqual([
      [["deleted"], "lost"],
      [["released-by-fn"], "completed"],
    ]);
  });

  it("report as completed a using() released while a call that re-entered its lock still ran: its signal aborts, no loss", async () => {
    const dlm = redlock();
    let signal: AbortSignal | undefined;
    let finish = () => {};
    let reentered: Promise<unknown> = Promise.resolve();
    const events = await record(async () => {
      await dlm.using("job", 10_000, (fnSignal, lock) => {
        signal = fnSignal;
        // started and not awaited, as a @Locked call that fn does not await
        reentered = reenteringLocks([lock], () => new Promise<void>((resolve) => (finish = resolve)));
      });
    });
    expect(signal?.aborted).toBe(true);
    finish();
    await reentered;
    const ends = on(events, "using").filter((event) => event.event === "asyncEnd");
    expect(ends.map((event) => event.snapshot.outcome)).toEqual(["completed"]);
  });

  it("point channels: one message for each call that ends, a call on a lock already released or lost included", async () => {
    const messages: [string, Record<string, unknown>][] = [];
    const listeners = (["acquire", "extend", "release"] as const).map((name) => {
      const listener = (message: unknown) => messages.push([name, message as Record<string, unknown>]);
      diagnosticsChannel.subscribe(`redlock-kit:${name}`, listener);
      return () => diagnosticsChannel.unsubscribe(`redlock-kit:${name}`, listener);
    });
    const dlm = redlock();
    try {
      const lock = await dlm.acquire("point", 2000);
      await lock.extend(2000);
      await lock.release();
      expect(await lock.release()).toBe(false);
      await expect(lock.extend(2000)).rejects.toThrow(LockLostError);
      const lapsed = await dlm.acquire("lapsed", 200, { instanceTimeout: 50 });
      await aborted(lapsed.signal); // its validity ended
      await expect(lapsed.extend(2000)).rejects.toThrow(LockLostError);
      await expect(dlm.acquire("point", 2000, { signal: AbortSignal.abort() })).rejects.toThrow();
      await dlm.quit();
      await expect(dlm.acquire("point", 2000)).rejects.toThrow(LockUnavailableError);
    } finally {
      for (const unsubscribe of listeners) unsubscribe();
    }
    expect(messages.map(([name, message]) => [name, message.outcome ?? message.extended ?? message.released])).toEqual([
      ["acquire", "acquired"],
      ["extend", true],
      ["release", true],
      ["release", false],
      ["extend", false],
      ["acquire", "acquired"],
      ["extend", false],
      ["acquire", "aborted"],
      ["acquire", "unavailable"],
    ]);
  });

  it("point channels: a lock won just as the caller's signal aborted is published as the call ended, aborted, once, and its give-back as no release", async () => {
    const controller = new AbortController();
    // armed once the call has sent its attempt: its next look at the clock is when the win is
    // answered, and the signal aborts in the microtask after it, once the call has won and before its
    // caller is handed the lock
    let armed = false;
    const clock = () => {
      if (armed) {
        armed = false;
        queueMicrotask(() => controller.abort(new Error("client left")));
      }
      return performance.now();
    };
    const dlm = redlock({ clock });
    const messages: [string, unknown][] = [];
    const listeners = (["acquire", "release"] as const).map((name) => {
      const listener = (message: unknown) => {
        const { outcome, released } = message as { outcome?: string; released?: boolean };
        messages.push([name, outcome ?? released]);
      };
      diagnosticsChannel.subscribe(`redlock-kit:${name}`, listener);
      return () => diagnosticsChannel.unsubscribe(`redlock-kit:${name}`, listener);
    });
    try {
      const acquiring = dlm.acquire("raced", 5000, { signal: controller.signal });
      armed = true;
      await expect(acquiring).rejects.toThrow("client left");
      // given back
      await expect
        .poll(async () => (await Promise.all(clients().map((client) => client.exists("raced")))).join())
        .toBe("0,0,0");
    } finally {
      for (const unsubscribe of listeners) unsubscribe();
    }
    expect(messages).toEqual([["acquire", "aborted"]]);
  });

  it("point channels: a call that gave up, aborted as it let go of its places in the queues, is published as aborted, once", async () => {
    const holder = await redlock().acquire("gave-up", 10_000);
    const controller = new AbortController();
    // The call's wait ends once its queued attempt was sent, not by the machine's clock: with a
    // real 100 ms wait, a loaded machine ended it before it queued, and it gave up with no place
    // in line to let go of (resolved null, no abort). Its clock jumps past the wait then.
    let skipped = 0;
    const clock = () => performance.now() + skipped;
    // the caller's instances: real RedisStores whose release (only the call's let-go at its end, here)
    // aborts the signal as it is sent, after the call gave up and before it ends
    const stores: LockStore[] = clients().map((client) => {
      const store = new RedisStore(client);
      return {
        acquire: (keys, value, ttl, ticket, budgetMs) => {
          if (ticket !== undefined) skipped = 120_000;
          return store.acquire(keys, value, ttl, ticket, budgetMs);
        },
        extend: (keys, value, ttl) => store.extend(keys, value, ttl),
        release: (keys, value, requeue, resend) => {
          controller.abort(new Error("client left"));
          return store.release(keys, value, requeue, resend);
        },
        releaseOne: (key, value, channel, how) => store.releaseOne(key, value, channel, how),
        onHandOver: (channel, listener) => store.onHandOver(channel, listener),
        leaveQueue: (keys, value, ticket) => store.leaveQueue(keys, value, ticket),
      };
    });
    const dlm = new Redlock(stores, { clock });
    const messages: string[] = [];
    const listener = (message: unknown) => messages.push((message as { outcome: string }).outcome);
    diagnosticsChannel.subscribe("redlock-kit:acquire", listener);
    try {
      await expect(dlm.lock("gave-up", 5000, { signal: controller.signal, wait: 60_000 })).rejects.toThrow(
        "client left",
      );
    } finally {
      await dlm.quit(); // resolves once the call itself has ended
      diagnosticsChannel.unsubscribe("redlock-kit:acquire", listener);
      await holder.release();
    }
    expect(messages).toEqual(["aborted"]);
  });

  it("a subscriber that throws changes no call; Node reports its error as an uncaught exception", async () => {
    const thrown = new Error("subscriber bug");
    const throwing = () => {
      throw thrown;
    };
    const tracing = { asyncEnd: throwing };
    diagnosticsChannel.subscribe("redlock-kit:release", throwing);
    diagnosticsChannel.tracingChannel("redlock-kit:acquire").subscribe(tracing as never);
    const errors: unknown[] = [];
    process.setUncaughtExceptionCaptureCallback((error) => errors.push(error));
    const dlm = redlock();
    let result: unknown;
    try {
      result = await dlm.using("subscribed", 2000, () => dlm.isLocked("subscribed"));
      // every tick queued meanwhile has run before an immediate scheduled now
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.setUncaughtExceptionCaptureCallback(null);
      diagnosticsChannel.unsubscribe("redlock-kit:release", throwing);
      diagnosticsChannel.tracingChannel("redlock-kit:acquire").unsubscribe(tracing as never);
    }
    expect(result).toBe(true); // acquired, held while fn ran
    expect(await dlm.isLocked("subscribed")).toBe(false); // and released
    // diagnostics_channel catches it and throws it again on the next tick: the process's, not core's
    expect(errors).toEqual([thrown, thrown]);
  });

  it("never carry the lock's value", async () => {
    const dlm = redlock({ instanceTimeout: 100 });
    const values: string[] = [];
    const events = await record(async () => {
      await dlm.using("secret", 300, async (_, lock) => {
        values.push(lock.value);
        await sleep(200);
      });
      const lock = await dlm.acquire("secret", 1000);
      values.push(lock.value);
      server(0).pause();
      server(1).pause();
      await lock.extend(1000).catch(() => {});
      await lock.release();
    });
    expect(events.length).toBeGreaterThan(10);
    const shown = events.map((event) => `${JSON.stringify(event.snapshot)} ${inspect(event.context, { depth: 5 })}`);
    for (const value of values) for (const text of shown) expect(text).not.toContain(value);
  });
});
