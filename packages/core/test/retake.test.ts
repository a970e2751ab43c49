/**
 * Retake (src/speed/retake.ts): a Redlock that releases a one-key lock and asks for the key again
 * in the same event-loop turn takes it back first, at most MAX_STREAK times in a row, while a waiter
 * of another Redlock (another process) heads the queue; then the key is handed to that waiter. A
 * release left free for a retake that does not come is handed over by a kick. Each Redlock here has
 * its own hand-over channel, as a process of its own would.
 */
import { afterEach, describe, expect, it } from "vitest";
import { type Lock, type LockStore, LockUnavailableError, RedisStore, Redlock } from "../src/index.js";
import { MAX_HELD_MS, MAX_STREAK } from "../src/speed/retake.js";
import { useRedlocks } from "./helpers/redlocks.js";

const redis = useRedlocks(3);

/** A poll interval so long that only a hand-over can wake a waiter within the test. */
const NO_POLLING = { retryDelay: 60_000, retryJitter: 0 };
/**
 * A monotonic clock 100 times slower than real time: a section held here, however slow the
 * machine, counts as shorter than MAX_HELD_MS, so that the release may be retaken. The tests that
 * need a long section use the real clock.
 */
const SLOW_CLOCK = { clock: () => performance.now() / 100 };
/** A wait cut at 15 s: a hand-over that never comes fails the test instead of hanging it. */
const WAIT = () => ({ wait: 60_000, signal: AbortSignal.timeout(15_000) });

/** Resolves once `check` holds. */
async function until(check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition never held");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe.each([1, 3])("retake on %i instance(s)", (count) => {
  const redlocks: Redlock[] = [];
  afterEach(async () => {
    await Promise.all(redlocks.splice(0).map((dlm) => dlm.quit()));
  });
  const instances = () => redis.clients().slice(0, count);
  const redlock = (clock = SLOW_CLOCK) => {
    const dlm = new Redlock(instances(), { ...NO_POLLING, ...clock });
    redlocks.push(dlm);
    return dlm;
  };
  /** Resolves once `n` waiters are queued on `key` on every instance. */
  const queued = (key: string, n: number) =>
    until(async () =>
      (await Promise.all(instances().map((c) => c.zcard(`${key}:redlock-kit:waiters`)))).every((q) => q === n),
    );

  /**
   * `a` holds `key` as a looper (its acquire followed its own release of the key in one turn), and
   * listens for hand-overs for as long as the test runs (a call of its own waits on another key).
   */
  async function looper(a: Redlock, b: Redlock, key: string) {
    const blocker = await b.acquire(`${key}:blocker`, 10_000);
    const listening = a.acquire(`${key}:blocker`, 10_000, WAIT());
    await queued(`${key}:blocker`, 1);
    const first = await a.acquire(key, 10_000);
    await a.unlock(first);
    const lock = await a.acquire(key, 10_000, WAIT());
    const done = async () => {
      await b.unlock(blocker);
      await a.unlock(await listening);
    };
    return { lock, done };
  }

  it("a looping Redlock takes the key back first, at most MAX_STREAK times in a row, then the other Redlock's waiter gets it", async () => {
    const [a, b] = [redlock(), redlock()];
    const key = `retake:${count}`;
    let { lock, done } = await looper(a, b, key);
    const holders = ["a"];
    // b heads the queue on every instance
    const waiting = b.acquire(key, 10_000, WAIT()).then((held) => {
      holders.push("b");
      return held;
    });
    await queued(key, 1);
    let next: Promise<Lock> | undefined;
    for (let section = 0; section <= MAX_STREAK; section++) {
      expect(await a.unlock(lock)).toBe(true);
      next = a.acquire(key, 10_000, WAIT());
      if (section === MAX_STREAK) break;
      lock = await next;
      holders.push("a");
    }
    const taken = await waiting;
    expect(holders).toEqual(["a", ...Array.from({ length: MAX_STREAK }, () => "a"), "b"]);
    // a's last call queued behind b, and is handed the key by b's release
    await b.unlock(taken);
    lock = await (next as Promise<Lock>);
    expect(await a.unlock(lock)).toBe(true);
    await done();
  });

  it("a looper that held the key MAX_HELD_MS or longer hands it to the other Redlock's waiter at once", async () => {
    const [a, b] = [redlock({ clock: () => performance.now() }), redlock()];
    const key = `long:${count}`;
    const { lock, done } = await looper(a, b, key);
    const holders = ["a"];
    const waiting = b.acquire(key, 10_000, WAIT()).then((held) => {
      holders.push("b");
      return held;
    });
    await queued(key, 1);
    // a long section: retaking it would keep b waiting for whole sections and gain next to nothing
    await new Promise((resolve) => setTimeout(resolve, MAX_HELD_MS + 5));
    expect(await a.unlock(lock)).toBe(true);
    const next = a.acquire(key, 10_000, WAIT()).then((held) => {
      holders.push("a");
      return held;
    });
    const taken = await waiting;
    expect(holders).toEqual(["a", "b"]);
    await b.unlock(taken);
    expect(await a.unlock(await next)).toBe(true);
    expect(holders).toEqual(["a", "b", "a"]);
    await done();
  });

  it("a key left free for a retake that does not come is handed to the waiting Redlock (a kick), which no poll could wake", async () => {
    const [a, b] = [redlock(), redlock()];
    const key = `kick:${count}`;
    const { lock, done } = await looper(a, b, key);
    const waiting = b.acquire(key, 10_000, WAIT());
    await queued(key, 1);
    // the release leaves the key free for a, which does not ask for it again
    expect(await a.unlock(lock)).toBe(true);
    const taken = await waiting;
    expect(taken.valid).toBe(true);
    expect(await Promise.all(instances().map((c) => c.get(key)))).toEqual(instances().map(() => taken.value));
    await b.unlock(taken);
    await done();
  });

  it("a retake whose call fails (aborted) still lets the waiting Redlock have the key", async () => {
    const [a, b] = [redlock(), redlock()];
    const key = `aborted:${count}`;
    const { lock, done } = await looper(a, b, key);
    const waiting = b.acquire(key, 10_000, WAIT());
    await queued(key, 1);
    expect(await a.unlock(lock)).toBe(true);
    const controller = new AbortController();
    const retaking = a.acquire(key, 10_000, { ...WAIT(), signal: controller.signal });
    controller.abort(new Error("gave up"));
    await expect(retaking).rejects.toThrow("gave up");
    const taken = await waiting;
    expect(taken.valid).toBe(true);
    await b.unlock(taken);
    await done();
  });

  it("a retake whose attempt fails (the instances refuse it with an error) tells the waiting Redlock at once", async () => {
    // a's instances: real RedisStores whose acquire can be made to fail
    let failing = false;
    const inner = instances().map((client) => new RedisStore(client));
    const stores: LockStore[] = inner.map((store) => {
      return {
        acquire: (keys, value, ttl, ticket) =>
          failing ? Promise.reject(new Error("instance down")) : store.acquire(keys, value, ttl, ticket),
        extend: (keys, value, ttl) => store.extend(keys, value, ttl),
        release: (keys, value, requeue) => store.release(keys, value, requeue),
        releaseOne: (key, value, channel, how) => store.releaseOne(key, value, channel, how),
        handOverIfFree: (key) => store.handOverIfFree(key),
        onHandOver: (channel, listener) => store.onHandOver(channel, listener),
        leaveQueue: (keys, value, ticket) => store.leaveQueue(keys, value, ticket),
      };
    });
    const a = new Redlock(stores, { ...NO_POLLING, ...SLOW_CLOCK });
    redlocks.push(a);
    const b = redlock();
    const key = `failed:${count}`;
    const { lock, done } = await looper(a, b, key);
    const waiting = b.acquire(key, 10_000, WAIT());
    await queued(key, 1);
    expect(await a.unlock(lock)).toBe(true);
    failing = true;
    await expect(a.acquire(key, 10_000, { retryCount: 0 })).rejects.toThrow(LockUnavailableError);
    failing = false;
    const taken = await waiting;
    expect(taken.valid).toBe(true);
    await b.unlock(taken);
    await done();
    for (const store of inner) store.close();
  });

  it("a waiter of the releasing Redlock itself is handed the key before that Redlock's new call", async () => {
    const [a, b] = [redlock(), redlock()];
    const key = `own:${count}`;
    const { lock, done } = await looper(a, b, key);
    const order: string[] = [];
    const own = a.acquire(key, 10_000, WAIT()).then((held) => {
      order.push("own waiter");
      return held;
    });
    await queued(key, 1);
    expect(await a.unlock(lock)).toBe(true);
    const again = a.acquire(key, 10_000, WAIT()).then((held) => {
      order.push("new call");
      return held;
    });
    await a.unlock(await own);
    await a.unlock(await again);
    expect(order).toEqual(["own waiter", "new call"]);
    await done();
  });
});
