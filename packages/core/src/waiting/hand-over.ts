import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import type { LockStore, QueueTicket } from "../stores/store.js";

/** How long a Redlock stays subscribed after its last waiter left, so that the next one need not subscribe again. */
const LINGER_MS = 2000;
/** How long a waiter that gave up is remembered, to pass on a key handed to it after it left. */
const LEFT_MEMORY_MS = 30_000;
/** At most this many are remembered (a burst of timeouts must not grow the heap without bound). */
const LEFT_MEMORY_MAX = 10_000;

/**
 * Waiting between processes. A call that may wait queues itself, on every instance, on the key
 * it was refused (the acquire script does it in the same round trip); a release hands the key to
 * the oldest waiter of the queue whose process still listens, holds the key for it, and tells its
 * process on its Redlock's hand-over channel. The waiter claims the key once a quorum of
 * instances handed it over. So one release wakes one waiter across all processes (no herd),
 * every instance picks the same waiter (the queue order is the waiter's first-attempt time, the
 * same number everywhere: no split votes), and a waiter that died is skipped (nobody hears its
 * channel) or, if only frozen, loses the key when its hold lapses. Polling stays the fallback:
 * keys that expire, holders of other libraries, users without pub/sub permission.
 *
 * Ordering across processes: first come, first served by first-attempt time, for waiters that
 * are queued on every instance; calls that do not wait (and pollers that find the key free after
 * an expiry) may take a free key first.
 */
export class HandOvers {
  /** This Redlock's hand-over channel name (base64url: no ':'). */
  readonly channel = randomBytes(12).toString("base64url");
  readonly #stores: readonly LockStore[];
  readonly #quorum: number;
  /** Indexes of the stores that can hand keys over. */
  readonly #able: readonly number[];
  readonly #waiters = new Map<string, Waiter>();
  /** Values of waiters that gave up, with when to forget them. */
  readonly #left = new Map<string, number>();
  #stops: (() => void)[] = [];
  #listening = 0;
  #subscribing: Promise<void> | undefined;
  /** Counts subscribe/unsubscribe cycles, so that a late SUBSCRIBE of an ended cycle is undone. */
  #epoch = 0;
  #linger: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(stores: readonly LockStore[], quorum: number) {
    this.#stores = stores;
    this.#quorum = quorum;
    this.#able = stores.flatMap((store, index) =>
      typeof store.onHandOver === "function" && typeof store.leaveQueue === "function" ? [index] : [],
    );
  }

  /** A quorum of instances can hand keys over: waiting calls queue themselves. */
  get enabled(): boolean {
    return this.#able.length >= this.#quorum;
  }

  /** A quorum of instances tells this process of hand-overs now. */
  get listening(): boolean {
    return this.#listening >= this.#quorum;
  }

  /** Waiters in this process (for leak checks). */
  get size(): number {
    return this.#waiters.size;
  }

  /** Registers a waiter for `value` on `keys`; its ticket is offered only while a quorum listens (`listen`). */
  enter(keys: readonly string[], value: string, ttl: number, timeoutMs: number, waitMs: number): Waiter {
    clearTimeout(this.#linger);
    this.#linger = undefined;
    const holdMs = Math.min(ttl, Math.max(2 * timeoutMs, 20));
    const ticket: QueueTicket = {
      channel: this.channel,
      order: performance.timeOrigin + performance.now(),
      holdMs,
      keepMs: Math.ceil(Math.min(waitMs, 86_400_000)) + holdMs,
    };
    const waiter = new Waiter(this, keys, value, ticket, this.#quorum);
    this.#waiters.set(value, waiter);
    return waiter;
  }

  /** Subscribes where this Redlock does not listen yet, waiting at most `timeoutMs`. */
  async listen(timeoutMs: number): Promise<void> {
    if (!this.listening) await this.#subscribe(timeoutMs);
  }

  /** @internal A waiter is done: it acquired, or gave up (then it leaves the queues). */
  leave(waiter: Waiter, queuedOn: readonly number[]): void {
    if (this.#waiters.get(waiter.value) !== waiter) return;
    this.#waiters.delete(waiter.value);
    if (queuedOn.length > 0) {
      if (!waiter.acquired) this.#remember(waiter.value);
      for (const index of queuedOn) {
        const store = this.#stores[index] as LockStore;
        store.leaveQueue?.(waiter.keys, waiter.value, waiter.ticket).catch(() => {});
      }
    }
    if (this.#waiters.size === 0 && !this.#closed) {
      clearTimeout(this.#linger);
      this.#linger = setTimeout(() => this.#unsubscribe(), LINGER_MS);
      this.#linger.unref();
    }
  }

  /** Stops listening for good (Redlock.quit()). */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#linger);
    this.#unsubscribe();
  }

  /** A release on instance `index` handed `key` to `value`. */
  #handed(index: number, key: string, value: string): void {
    const waiter = this.#waiters.get(value);
    if (waiter !== undefined) {
      waiter.handed(index);
      return;
    }
    // A waiter that gave up: pass the key on at once rather than let its hold lapse. Any other
    // value is a lock of ours that already holds on a quorum: the key is simply one more vote.
    const forgetAt = this.#left.get(value);
    if (forgetAt !== undefined && forgetAt > Date.now()) {
      (this.#stores[index] as LockStore).release([key], value).catch(() => {});
    }
  }

  #remember(value: string): void {
    const now = Date.now();
    // oldest first: drop what is past its time
    for (const [old, forgetAt] of this.#left) {
      if (forgetAt > now && this.#left.size < LEFT_MEMORY_MAX) break;
      this.#left.delete(old);
    }
    this.#left.set(value, now + LEFT_MEMORY_MS);
  }

  #subscribe(timeoutMs: number): Promise<void> {
    const epoch = this.#epoch;
    this.#subscribing ??= Promise.all(
      this.#able.map(async (index) => {
        const store = this.#stores[index] as LockStore;
        const subscribed = (store.onHandOver as NonNullable<LockStore["onHandOver"]>).call(
          store,
          this.channel,
          (key, value) => this.#handed(index, key, value),
        );
        // A late subscription still counts once it lands; waiters poll meanwhile.
        subscribed.then(
          (stop) => {
            if (epoch !== this.#epoch) stop();
            else {
              this.#stops.push(stop);
              // a waiter that could not queue while too few instances listened may queue now
              if (++this.#listening === this.#quorum) for (const waiter of this.#waiters.values()) waiter.nudge();
            }
          },
          () => {},
        );
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          subscribed.catch(() => {}),
          new Promise((resolve) => {
            timer = setTimeout(resolve, timeoutMs);
          }),
        ]);
        clearTimeout(timer);
      }),
    ).then(() => {});
    return this.#subscribing;
  }

  #unsubscribe(): void {
    if (this.#waiters.size > 0 && !this.#closed) return;
    this.#subscribing = undefined;
    this.#epoch++;
    this.#listening = 0;
    for (const stop of this.#stops.splice(0)) stop();
  }
}

/** One call waiting for its keys. */
export class Waiter {
  acquired = false;
  /** An attempt carried its ticket: it is in the queues. */
  queued = false;
  /** Instances that handed the keys to this waiter (see `holding`). */
  readonly #handed = new Set<number>();
  readonly #quorum: number;
  #wake: (() => void) | undefined;
  /** Shortens a sleep to the hold of a first hand-over (see `sleep`). */
  #handedSome: (() => void) | undefined;

  constructor(
    readonly owner: HandOvers,
    readonly keys: readonly string[],
    readonly value: string,
    readonly ticket: QueueTicket,
    quorum: number,
  ) {
    this.#quorum = quorum;
  }

  /** The ticket to send with an attempt: only while a quorum listens (otherwise nobody could be told). */
  get offer(): QueueTicket | undefined {
    return this.owner.listening ? this.ticket : undefined;
  }

  /** Instances that handed the keys to this waiter and hold them for it, not yet claimed: released when it gives up. */
  get holding(): ReadonlySet<number> {
    return this.#handed;
  }

  /**
   * After a failed attempt: the keys it took, handed ones included, are given back (and so handed
   * on to the next in line); only instances that refused it may since have handed it the keys.
   */
  keepOnly(refused: (index: number) => boolean): void {
    for (const index of this.#handed) if (!refused(index)) this.#handed.delete(index);
  }

  /** Wakes it if it never queued: it can now. */
  nudge(): void {
    if (!this.queued) this.#wake?.();
  }

  /** @internal */
  handed(index: number): void {
    this.#handed.add(index);
    if (this.#handed.size >= this.#quorum) this.#wake?.();
    else this.#handedSome?.();
  }

  /**
   * Sleeps up to `ms`, less if a quorum of instances hands the keys over; rejects with the signal's
   * reason. Once some instance handed it the keys, it sleeps at most one hold more: a quorum that
   * does not follow means the instances picked different waiters (one missed some queues), and
   * the next attempt gives back what it cannot use, so that no waiters hold each other's votes
   * for longer than a hold.
   */
  sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
    if (this.#handed.size >= this.#quorum) return Promise.resolve();
    return new Promise((resolve, reject) => {
      let shortened = false;
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.#wake = undefined;
        this.#handedSome = undefined;
      };
      const onAbort = () => {
        done();
        reject(signal?.reason);
      };
      const wake = () => {
        done();
        resolve();
      };
      let timer = setTimeout(wake, ms);
      this.#wake = wake;
      this.#handedSome = () => {
        if (shortened || ms <= this.ticket.holdMs) return;
        shortened = true;
        clearTimeout(timer);
        timer = setTimeout(wake, this.ticket.holdMs);
      };
      if (this.#handed.size > 0) this.#handedSome();
      signal?.addEventListener("abort", onAbort, { once: true });
      // an abort that came before the listener was added
      if (signal?.aborted) onAbort();
    });
  }
}
