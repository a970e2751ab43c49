import { randomBytes } from "node:crypto";
import type { Vote } from "./fan-out.js";
import type { Lock } from "./lock.js";
import type { LockStore, ReleaseReply } from "./store.js";

/**
 * Waiters for held locks in this process, woken by release notifications instead of a full poll
 * interval. A release wakes only the oldest waiter on that resource here (oldest first, no
 * thundering herd); polling with jitter stays as the fallback for releases that publish nothing
 * (expiry, other libraries).
 *
 * A release by this process hands the key straight to its own oldest waiter when nobody else
 * listens for it: the waiter's attempt follows the release on the same connection, one round trip
 * instead of two (release, then notification and attempt). Whether anybody else listens is what
 * the previous release by this process counted (`releaseNotifying`); while another process waits
 * too, releases go through the notifications, where every process's oldest waiter has the same
 * chance. Meanwhile new calls with `wait` join the back of the queue (see Redlock#acquire).
 *
 * The lock that a call of this Redlock took while others here waited for its key is recorded
 * (`held`); until it is released, lost or past its validity, their attempts are answered as
 * refused without a command (`heldHere`): the key holds that lock's value.
 */
export class ReleaseWaiters {
  /** What this process's releases announce when they handed the key over here: our listeners skip it. */
  readonly handOffNotice = `handed-over:${randomBytes(9).toString("base64url")}`;
  readonly #stores: readonly LockStore[];
  /** Every instance can count who heard a release: hand-offs are possible. */
  readonly #counting: boolean;
  readonly #byKey = new Map<string, KeyWaiters>();

  constructor(stores: readonly LockStore[]) {
    this.#stores = stores.filter((store) => typeof store.onRelease === "function");
    this.#counting =
      this.#stores.length === stores.length && stores.every((store) => typeof store.releaseNotifying === "function");
  }

  get enabled(): boolean {
    return this.#stores.length > 0;
  }

  /** Number of resources with waiters (for leak checks). */
  get size(): number {
    return this.#byKey.size;
  }

  /** The waiters on a single-key lock's key, when its release should count its listeners. */
  waitingOn(keys: readonly string[]): KeyWaiters | undefined {
    return this.#counting && keys.length === 1 ? this.#byKey.get(keys[0] as string) : undefined;
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
        entry = new KeyWaiters(this.handOffNotice);
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

  /** Records the lock that now holds `keys`, for the keys that waiters of this process wait on. */
  held(keys: readonly string[], lock: Lock): void {
    for (const key of keys) {
      const entry = this.#byKey.get(key);
      if (entry !== undefined) entry.holder = lock;
    }
  }

  /**
   * The ms of validity left to a lock of this Redlock that holds one of `keys`, if one does: an
   * attempt now would be refused (the key holds that lock's value), so it need not be sent.
   */
  heldHere(keys: readonly string[]): number | undefined {
    for (const key of keys) {
      // 0 once the lock is released, lost or past its validity
      const left = this.#byKey.get(key)?.holder?.remainingMs ?? 0;
      if (left > 0) return left;
    }
    return undefined;
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

export class KeyWaiters {
  readonly waiters: Waiter[] = [];
  /** The last lock of this Redlock that took the key while waiters waited (it may be released since). */
  holder: Lock | undefined;
  /** Subscribing has settled: a release from now on reaches this entry (where the instance can notify). */
  listening = false;
  readonly #handOffNotice: string;
  #unsubscribes: (() => void)[] = [];
  #stores = 0;
  #closed = false;
  /** The last release by this process was heard by our own subscription alone, on every instance. */
  #alone = false;

  constructor(handOffNotice: string) {
    this.#handOffNotice = handOffNotice;
  }

  /** A release by this process may hand the key to our oldest waiter: nobody else listens for it. */
  get alone(): boolean {
    return this.#alone && this.#unsubscribes.length === this.#stores && !this.#closed;
  }

  /**
   * Learns from a release's replies whether anybody but us listens: alone when a quorum of
   * instances answered that one listener (ours) listens for the key, and none answered more.
   */
  heard(votes: readonly Vote<ReleaseReply>[], quorum: number): void {
    let alone = 0;
    for (const vote of votes) {
      if (!vote.ok) continue;
      if (vote.value.listeners !== 1) {
        this.#alone = false;
        return;
      }
      alone++;
    }
    this.#alone = alone >= quorum;
  }

  async subscribe(stores: readonly LockStore[], key: string, timeoutMs: number): Promise<void> {
    this.#stores = stores.length;
    const wake = (notice: string) => {
      // this process's own release, which already handed the key to the oldest waiter
      if (notice !== this.#handOffNotice) this.wakeOldest();
    };
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
  wakeOldest(): void {
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
