import type { LockStore } from "./store.js";

/**
 * Waiters for held locks in this process, woken by release notifications instead of a full poll
 * interval. A release wakes only the oldest waiter on that resource here (oldest first, no
 * thundering herd); polling with jitter stays as the fallback for releases that publish nothing
 * (expiry, other libraries).
 */
export class ReleaseWaiters {
  readonly #stores: readonly LockStore[];
  readonly #byKey = new Map<string, KeyWaiters>();

  constructor(stores: readonly LockStore[]) {
    this.#stores = stores.filter((store) => typeof store.onRelease === "function");
  }

  get enabled(): boolean {
    return this.#stores.length > 0;
  }

  /** Number of resources with waiters (for leak checks). */
  get size(): number {
    return this.#byKey.size;
  }

  /**
   * Queues a waiter on `keys` and subscribes where nobody here listens yet (bounded by `timeoutMs`).
   * A waiter that joins a new subscription starts with a pending wake-up: a release may have
   * happened before it was in place. One that joins subscriptions already in place does not: such
   * a release woke a waiter queued before it, and an immediate retry would only be refused.
   */
  async join(keys: readonly string[], timeoutMs: number): Promise<Waiter> {
    const waiter = new Waiter(this, keys);
    const subscribing: Promise<void>[] = [];
    let heard = true;
    for (const key of keys) {
      let entry = this.#byKey.get(key);
      if (entry === undefined) {
        entry = new KeyWaiters();
        this.#byKey.set(key, entry);
        subscribing.push(entry.subscribe(this.#stores, key, timeoutMs));
      }
      if (!entry.listening) heard = false;
      entry.waiters.push(waiter);
    }
    if (heard) waiter.pending = false;
    await Promise.all(subscribing);
    return waiter;
  }

  /** @internal */
  leave(waiter: Waiter): void {
    for (const key of waiter.keys) {
      const entry = this.#byKey.get(key);
      if (!entry) continue;
      const index = entry.waiters.indexOf(waiter);
      if (index !== -1) entry.waiters.splice(index, 1);
      if (entry.waiters.length === 0) {
        this.#byKey.delete(key);
        entry.unsubscribe();
      }
    }
  }
}

class KeyWaiters {
  readonly waiters: Waiter[] = [];
  /** Subscribing has settled: a release from now on reaches this entry (where the instance can notify). */
  listening = false;
  #unsubscribes: (() => void)[] = [];
  #closed = false;

  async subscribe(stores: readonly LockStore[], key: string, timeoutMs: number): Promise<void> {
    const wake = () => this.#wakeOldest();
    await Promise.all(
      stores.map(async (store) => {
        let timer: NodeJS.Timeout | undefined;
        const subscribed = (store.onRelease as NonNullable<LockStore["onRelease"]>).call(store, key, wake);
        const timeout = new Promise<undefined>((resolve) => {
          timer = setTimeout(resolve, timeoutMs, undefined);
        });
        try {
          // A late subscription still counts once it lands; waiters poll meanwhile.
          subscribed.then((unsubscribe) => this.#keep(unsubscribe)).catch(() => {});
          await Promise.race([subscribed, timeout]);
        } catch {
          // this instance cannot notify: polling covers it
        } finally {
          clearTimeout(timer);
        }
      }),
    );
    this.listening = true;
  }

  unsubscribe(): void {
    this.#closed = true;
    for (const unsubscribe of this.#unsubscribes) unsubscribe();
    this.#unsubscribes = [];
  }

  #keep(unsubscribe: () => void): void {
    if (this.#closed) unsubscribe();
    else this.#unsubscribes.push(unsubscribe);
  }

  /**
   * Wakes the oldest waiter, or, if it is mid-attempt, lets it retry at once should it be refused.
   * Never a younger one meanwhile: a release on N instances arrives as N notifications, and each
   * would otherwise wake one more waiter only to be refused.
   */
  #wakeOldest(): void {
    const oldest = this.waiters[0];
    if (oldest === undefined) return;
    if (oldest.sleeping) oldest.wake();
    else oldest.pending = true;
  }
}

export class Waiter {
  /** A release arrived while this waiter was not asleep. */
  pending = true;
  #wake: (() => void) | undefined;

  constructor(
    readonly owner: ReleaseWaiters,
    readonly keys: readonly string[],
  ) {}

  get sleeping(): boolean {
    return this.#wake !== undefined;
  }

  wake(): void {
    this.#wake?.();
  }

  /** Sleeps up to `ms`, less if a release of one of the keys arrives; rejects with the signal's reason. */
  sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
    if (this.pending) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.#wake = undefined;
      };
      const onAbort = () => {
        done();
        reject(signal?.reason);
      };
      const timer = setTimeout(() => {
        done();
        resolve();
      }, ms);
      this.#wake = () => {
        done();
        resolve();
      };
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  leave(): void {
    this.owner.leave(this);
  }
}
