import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { MessageGrant } from "../speed/message-grant.js";
import type { LockStore, QueueTicket } from "../stores/store.js";
import { refusedForGood } from "./hand-over-subscriber.js";

/** How long a Redlock stays subscribed after its last waiter left, so that the next one need not subscribe again. */
const LINGER_MS = 2000;

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
  /** Its Redlock's monotonic clock: when a waiter's grants reached a quorum (`Waiter.grantsHeardAt`). */
  readonly clock: () => number;
  readonly #stores: readonly LockStore[];
  readonly #quorum: number;
  /** Whether a message heard on instance `index`'s subscriber, from server `server`, may be its grant (quorum/server-identity.ts). */
  readonly #grantsFrom: (index: number, server: string | undefined) => boolean;
  /** Whether a value is that of a lock of this Redlock still valid (`LiveLocks.holds`). */
  readonly #holds: (value: string) => boolean;
  /** Indexes of the stores that can hand keys over. */
  readonly #able: readonly number[];
  readonly #waiters = new Map<string, Waiter>();
  /** The waiters a release of this Redlock may grant their key to (speed/own-grant.ts), by key, oldest first. */
  readonly #grantable = new Map<string, Set<Waiter>>();
  /** How many waiters of this Redlock wait for each key (a waiter may sit in a queue only while counted here). */
  readonly #waiting = new Map<string, number>();
  #stops: (() => void)[] = [];
  #listening = 0;
  /** The latest round of SUBSCRIBEs of this cycle (`#subscribe`). */
  #subscribing: Promise<void> | undefined;
  /** Instances whose SUBSCRIBE of this cycle was refused for a reason that may pass (a lost connection): asked again. */
  readonly #refused = new Set<number>();
  /** Counts subscribe/unsubscribe cycles, so that a late SUBSCRIBE of an ended cycle is undone. */
  #epoch = 0;
  #linger: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(
    stores: readonly LockStore[],
    quorum: number,
    grantsFrom: (index: number, server: string | undefined) => boolean = () => true,
    clock: () => number = () => performance.now(),
    holds: (value: string) => boolean = () => true,
  ) {
    this.clock = clock;
    this.#holds = holds;
    this.#stores = stores;
    this.#quorum = quorum;
    this.#grantsFrom = grantsFrom;
    this.#able = stores.flatMap((store, index) =>
      store.handsOver !== false && typeof store.onHandOver === "function" && typeof store.leaveQueue === "function"
        ? [index]
        : [],
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

  /**
   * Registers a waiter for `value` on `keys`; its ticket is offered only while a quorum listens
   * (`listen`). `grantable`: a release of this Redlock may give it the keys outright (one key, no
   * fencing: speed/own-grant.ts).
   */
  enter(
    keys: readonly string[],
    value: string,
    ttl: number,
    timeoutMs: number,
    waitMs: number,
    grantable: boolean,
  ): Waiter {
    clearTimeout(this.#linger);
    this.#linger = undefined;
    if (this.#refused.size > 0 && !this.#closed) void this.#subscribe(timeoutMs);
    const retryMs = Math.min(ttl, Math.max(2 * timeoutMs, 20));
    const oneKeyGrantable = grantable && keys.length === 1;
    const byMessage = oneKeyGrantable ? new MessageGrant() : undefined;
    // a waiter a hand-over may grant the lock to asks for the key for its whole ttl (speed/message-grant.ts)
    const holdMs = byMessage === undefined ? retryMs : ttl;
    const ticket: QueueTicket = {
      channel: this.channel,
      order: performance.timeOrigin + performance.now(),
      holdMs,
      keepMs: Math.ceil(Math.min(waitMs, 86_400_000)) + holdMs,
    };
    const waiter = new Waiter(this, keys, value, ttl, ticket, retryMs, byMessage, this.#quorum);
    this.#waiters.set(value, waiter);
    for (const key of keys) this.#waiting.set(key, (this.#waiting.get(key) ?? 0) + 1);
    if (oneKeyGrantable) {
      const key = keys[0] as string;
      const waiters = this.#grantable.get(key);
      if (waiters === undefined) this.#grantable.set(key, new Set([waiter]));
      else waiters.add(waiter);
    }
    return waiter;
  }

  /**
   * Whether a waiter of this Redlock may sit in `key`'s queue: it enters before its first queued
   * attempt is sent and leaves after its last, so on each connection a release sent while this is
   * false runs after every queue entry of this Redlock for the key was removed.
   */
  waitsOn(key: string): boolean {
    return this.#waiting.has(key);
  }

  /**
   * Subscribes where this Redlock does not listen yet, waiting at most `timeoutMs`. Not after
   * `close()`: a call that quit() stopped waiting for (an instance did not answer) ends without
   * subscribing, and no connection outlives `quit()`.
   */
  async listen(timeoutMs: number): Promise<void> {
    if (!this.listening && !this.#closed) await this.#subscribe(timeoutMs);
  }

  /**
   * The oldest queued waiter of this Redlock for `key` that a release may grant the key to
   * (speed/own-grant.ts), if any: a release grants it only if it heads the key's queue there.
   */
  grantable(key: string): Waiter | undefined {
    const waiters = this.#grantable.get(key);
    if (waiters === undefined) return undefined;
    for (const waiter of waiters) if (waiter.queued) return waiter;
    return undefined;
  }

  /**
   * A release of this Redlock on instance `index`, started at `start`, gave `key` to `waiter`
   * (speed/own-grant.ts); `attempts` is `waiter.attempts` (attempts and give-backs) when the release
   * was sent. A grant holds only if the waiter sent nothing since: a later attempt or give-back of its
   * own ran after the grant there and may have taken the key back, so the grant is then only a
   * hand-over, which its next attempt verifies. Nor on an instance it ever gave a key back to, as
   * for a grant by message: a give-back answered NOSCRIPT is sent whole again when that answer
   * comes, behind the release, and deletes the granted key. A waiter that gave up meanwhile lets go
   * of the key at once; for one that acquired (a grant that came after the quorum), the key is one
   * more vote of its lock.
   */
  granted(index: number, key: string, waiter: Waiter, start: number, attempts: number): void {
    if (this.#waiters.get(waiter.value) === waiter) {
      if (waiter.attempts === attempts && waiter.byMessage?.gaveBackOn(index) !== true) waiter.granted(index, start);
      else waiter.handed(index);
      return;
    }
    if (waiter.acquired) return;
    (this.#stores[index] as LockStore).release([key], waiter.value).catch(() => {
      // an instance that cannot be told: the key lapses after the waiter's ttl
    });
  }

  /** @internal A waiter is done: it acquired, or gave up (then it leaves the queues). */
  leave(waiter: Waiter, queuedOn: readonly number[]): void {
    if (this.#waiters.get(waiter.value) !== waiter) return;
    this.#waiters.delete(waiter.value);
    for (const key of waiter.keys) {
      const left = (this.#waiting.get(key) ?? 1) - 1;
      if (left === 0) this.#waiting.delete(key);
      else this.#waiting.set(key, left);
    }
    const grantable = this.#grantable.get(waiter.keys[0] as string);
    if (grantable?.delete(waiter) && grantable.size === 0) this.#grantable.delete(waiter.keys[0] as string);
    if (queuedOn.length > 0) {
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

  /** A release on instance `index` handed `key` to `value`; the message came from `server` (its run_id, if known). */
  #handed(index: number, key: string, value: string, server: string | undefined): void {
    const waiter = this.#waiters.get(value);
    if (waiter !== undefined && !waiter.keys.includes(key)) {
      // Another key whose queue is this waiter's: not a key it waits for. Only names that share a
      // queue get here ("x" and "{x}" would on a Cluster, where nothing is handed over; a store of
      // your own may map keys to queues as it likes). Pass it on rather than hold it, and let the
      // waiter attempt at once, which puts it back in that queue (its entry was popped).
      (this.#stores[index] as LockStore).release([key], value).catch(() => {});
      waiter.wake();
      return;
    }
    if (waiter !== undefined) {
      const from = waiter.byMessage?.from(index);
      // a grant only from a subscriber known to reach this instance's own server, distinct from the others'
      if (from === undefined || !this.#grantsFrom(index, server)) waiter.handed(index);
      else waiter.granted(index, from);
      return;
    }
    // A waiter that gave up, or one that acquired whose lock is over (its entry left in a queue where
    // the lock did not stand, its ZREM not applied yet): pass the key on at once rather than let its
    // hold lapse, held for a lock nobody will release. A lock of ours still valid: one more vote.
    // (A waiter leaves only once its lock, if any, is live: no value falls between the two.)
    if (!this.#holds(value)) (this.#stores[index] as LockStore).release([key], value).catch(() => {});
  }

  /**
   * A subscriber connection, lost and opened again, listens again: a release there while it was
   * down skipped this Redlock's waiters (nobody heard the channel: their entries are gone from the
   * queue) or handed a key to one whose message was lost. Each queued waiter tries once (not a
   * retry), which takes a key left free or to it, or puts it back in line at its place. One
   * attempt per waiter and reconnect, as one poll would be.
   */
  #subscribedAgain(epoch: number): void {
    if (epoch !== this.#epoch) return;
    for (const waiter of this.#waiters.values()) waiter.subscribedAgain();
  }

  /**
   * A first SUBSCRIBE landed after its round resolved (the waiters went on at a quorum, or the
   * per-instance timeout): a release there meanwhile skipped the waiters queued there
   * (`Waiter.subscribedLate` says which ones try once).
   */
  #subscribedLate(): void {
    for (const waiter of this.#waiters.values()) waiter.subscribedLate();
  }

  /**
   * Subscribes on every instance at a cycle's start; later, again where a SUBSCRIBE was refused for
   * a reason that may pass (its connection failed: an instance down, `maxRetriesPerRequest`), when
   * the next waiter enters or listens. A refused permission stands until the next cycle: its
   * waiters poll. Resolves once a quorum listens, every SUBSCRIBE of the round settled, or
   * `timeoutMs` passed: a stopped instance must not hold a waiter back from queuing on the others.
   * The rest still count once they land; until then their releases skip this Redlock's waiters
   * (nobody hears the channel): one landing after the round resolved wakes those it may have skipped
   * (`#subscribedLate`).
   */
  #subscribe(timeoutMs: number): Promise<void> {
    if (this.#subscribing !== undefined && this.#refused.size === 0) return this.#subscribing;
    const again = this.#subscribing !== undefined;
    const indexes = again ? [...this.#refused] : this.#able;
    this.#refused.clear();
    const epoch = this.#epoch;
    let settled = 0;
    /** The round resolved: the waiters went on, and a SUBSCRIBE landing now is late. */
    let over = false;
    let done!: () => void;
    const round = new Promise<void>((resolve) => {
      done = () => {
        over = true;
        resolve();
      };
    });
    this.#subscribing = round;
    const timer = setTimeout(done, timeoutMs);
    round.then(() => clearTimeout(timer));
    for (const index of indexes) {
      const store = this.#stores[index] as LockStore;
      // a store of your own that throws counts as one that refused
      const subscribed = new Promise<() => void>((resolve) =>
        resolve(
          (store.onHandOver as NonNullable<LockStore["onHandOver"]>).call(
            store,
            this.channel,
            (key, value, server) => this.#handed(index, key, value, server),
            () => this.#subscribedAgain(epoch),
          ),
        ),
      );
      // A late subscription still counts once it lands; waiters poll meanwhile.
      subscribed
        .then(
          (stop) => {
            if (epoch !== this.#epoch) stop();
            else {
              this.#stops.push(stop);
              // asked again: a release there meanwhile skipped the waiters queued there
              if (again) this.#subscribedAgain(epoch);
              else if (over) this.#subscribedLate();
              // a waiter that could not queue while too few instances listened may queue now
              if (++this.#listening === this.#quorum) {
                for (const waiter of this.#waiters.values()) waiter.nudge();
                done();
              }
            }
          },
          (error: unknown) => {
            if (epoch === this.#epoch && !refusedForGood(error)) this.#refused.add(index);
          },
        )
        .finally(() => {
          if (++settled === indexes.length) done();
        });
    }
    return round;
  }

  #unsubscribe(): void {
    if (this.#waiters.size > 0 && !this.#closed) return;
    this.#subscribing = undefined;
    this.#refused.clear();
    this.#epoch++;
    this.#listening = 0;
    for (const stop of this.#stops.splice(0)) stop();
  }
}

/**
 * How a waiter's sleep ended: `poll`, its poll fell due; `handed`, hand-overs woke it before its
 * poll; `again`, the attempt that follows only takes (or takes back) the waiter's place in line: a
 * subscriber connection subscribed again (`subscribedAgain`), a quorum listens now (`nudge`), it
 * lost its place (`wake`), or one hold passed while it was queued on fewer than a quorum
 * (`WaitingCall.sleep`). Only a `poll` counts as a retry (acquire-loop.ts).
 */
export type Woken = "poll" | "handed" | "again";

/** One call waiting for its keys. */
export class Waiter {
  acquired = false;
  /** An attempt carried its ticket: it is in the queues. */
  queued = false;
  /**
   * Attempts and give-backs sent so far (a give-back follows a failed attempt that took or may have
   * taken keys): a grant counts only if none was sent after the release that granted it.
   */
  attempts = 0;
  /** Instances that handed the keys to this waiter (see `holding`). */
  readonly #handed = new Set<number>();
  /**
   * Of those, the hand-overs no failed attempt has seen yet, with the attempt count when each came:
   * only these wake a sleep. An attempt sent after a hand-over and refused there saw it (the key was
   * lost, or another key of the call is held): trying again at once would be refused again.
   */
  readonly #fresh = new Map<number, number>();
  /**
   * Instances where its last failed attempt gave a key back and it was queued again: the key is free
   * there unless a listening waiter ahead of it was handed it (RELEASE_SCRIPT no longer hands it back
   * to the giver). With fresh hand-overs they may make a quorum, which wakes it (`#ready`).
   */
  #leftFree: ReadonlySet<number> = new Set();
  /** Of those, the instances where a release of this Redlock granted it the key with its ttl (speed/own-grant.ts). */
  readonly #granted = new Set<number>();
  /** The earliest start of the releases that granted it: the granted keys expire no sooner than `ttl` after it. */
  #grantedAt = Number.POSITIVE_INFINITY;
  /** When the grants reached a quorum, on its Redlock's clock (see `grantsHeardAt`). */
  #heardAt: number | undefined;
  readonly #quorum: number;
  #wake: ((woken: Woken) => void) | undefined;
  /** A subscriber connection subscribed again since its last sleep began: its next sleep ends at once (`subscribedAgain`). */
  #again = false;
  /** Shortens a sleep to the hold of a first hand-over (see `sleep`). */
  #handedSome: (() => void) | undefined;

  constructor(
    readonly owner: HandOvers,
    readonly keys: readonly string[],
    readonly value: string,
    /** The ttl the waiting call asked for. */
    readonly ttl: number,
    readonly ticket: QueueTicket,
    /** How long it waits for a quorum of hand-overs to follow a first one (a short hold), ms. */
    readonly retryMs: number,
    /** Set when a hand-over by message grants it the lock (speed/message-grant.ts). */
    readonly byMessage: MessageGrant | undefined,
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
   * After a failed attempt, the instances that did not refuse it: the keys it took there, handed
   * ones included, are given back (and so handed on to the next in line, never back to it:
   * `requeued`, it stays in line there); only instances that refused it may since have handed it
   * the keys.
   */
  gaveBack(indexes: readonly number[], requeued: boolean): void {
    this.#leftFree = new Set(requeued ? indexes : []);
    for (const index of indexes) {
      this.#handed.delete(index);
      this.#fresh.delete(index);
      this.#granted.delete(index);
      this.byMessage?.gaveBack(index);
    }
    this.#dropped();
  }

  /**
   * After a failed attempt, the instances that refused it: a hand-over that came before the attempt
   * was sent is spent there (the key is still ours, for its hold, if another key refused us; or no
   * longer ours), so it neither wakes the next sleep nor grants the lock. The keys stay in `holding`
   * until given back. One that came while the attempt was in flight may have run after it on the
   * instance: it stays fresh, for one more attempt at most.
   */
  refusedBy(indexes: readonly number[]): void {
    for (const index of indexes) {
      const at = this.#fresh.get(index);
      if (at === undefined || at >= this.attempts) continue;
      this.#fresh.delete(index);
      this.#granted.delete(index);
    }
    this.#dropped();
  }

  /** Some grants no longer count. */
  #dropped(): void {
    if (this.#granted.size < this.#quorum) this.#heardAt = undefined;
    if (this.#granted.size === 0) this.#grantedAt = Number.POSITIVE_INFINITY;
  }

  /**
   * When a quorum of instances granted it the keys (speed/own-grant.ts): the monotonic time from
   * which the lock's validity counts (the earliest start of the releases that granted them).
   */
  get grantedAt(): number | undefined {
    return this.#granted.size >= this.#quorum ? this.#grantedAt : undefined;
  }

  /**
   * When this process heard the grant that made a quorum (on its Redlock's clock), while a quorum
   * holds: a call whose last attempt failed keeps grants heard before its deadline, and lets go of
   * later ones (acquire-loop.ts).
   */
  get grantsHeardAt(): number | undefined {
    return this.#heardAt;
  }

  /** Wakes it if it never queued: it can now. */
  nudge(): void {
    if (!this.queued) this.#wake?.("again");
  }

  /** Wakes it for an attempt now (it lost its place in a queue). */
  wake(): void {
    this.#wake?.("again");
  }

  /**
   * A subscriber connection subscribed again (`HandOvers.#subscribedAgain`): a queued waiter's
   * sleep ends now, or its next one at once if it is attempting (that attempt may have run before
   * the release it did not hear of), so that it tries once.
   */
  subscribedAgain(): void {
    if (!this.queued) return;
    this.#again = true;
    this.#wake?.("again");
  }

  /**
   * A first SUBSCRIBE landed late (`HandOvers.#subscribedLate`): a queued waiter tries once, as in
   * `subscribedAgain`, if a release may have skipped it there meanwhile: a release of its key ran
   * (another instance handed it the key). Not for its own give-back there, which leaves it in line
   * (RELEASE_SCRIPT hands no key back to its giver). Not otherwise: on 3 instances the last SUBSCRIBE
   * of a round commonly lands after the first queued attempt, and a try then would cost one attempt
   * per waiter and cycle. A release that ran only there (the holder's keys gone elsewhere) is learnt
   * at the next poll, as before.
   */
  subscribedLate(): void {
    if (this.#handed.size > 0) this.subscribedAgain();
  }

  /**
   * @internal Instance `index` granted it the key with its ttl, no sooner than `start`: a release of
   * this Redlock (speed/own-grant.ts), or a hand-over by message (speed/message-grant.ts).
   */
  granted(index: number, start: number): void {
    this.#granted.add(index);
    if (start < this.#grantedAt) this.#grantedAt = start;
    if (this.#granted.size >= this.#quorum) this.#heardAt ??= this.owner.clock();
    this.handed(index);
  }

  /** @internal */
  handed(index: number): void {
    this.#handed.add(index);
    this.#fresh.set(index, this.attempts);
    if (this.#ready) this.#wake?.("handed");
    else this.#handedSome?.();
  }

  /**
   * Fresh hand-overs, with the keys its last give-back left free, make a quorum: an attempt now may
   * take the lock (a release that hands it the rest wakes it at once, as when the give-back handed
   * the key back to it). A hand-over is needed: free keys alone are what its last attempt saw.
   */
  get #ready(): boolean {
    if (this.#fresh.size === 0) return false;
    let count = this.#fresh.size;
    for (const index of this.#leftFree) if (!this.#fresh.has(index)) count++;
    return count >= this.#quorum;
  }

  /**
   * Sleeps up to `ms`, less if a quorum of instances hands the keys over (or leaves them free:
   * `#ready`); rejects with the signal's reason. Once some instance handed it the keys, it sleeps
   * at most one hold more: a quorum that does not follow means the instances picked different
   * waiters (one missed some queues), and the next attempt gives back what it cannot use, so that no waiters hold each other's votes
   * for longer than a hold. Resolves to how it woke (`Woken`).
   */
  sleep(ms: number, signal: AbortSignal | undefined): Promise<Woken> {
    if (this.#again) {
      this.#again = false;
      return Promise.resolve("again");
    }
    if (this.#ready) return Promise.resolve("handed");
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
      const wake = (woken: Woken) => {
        done();
        resolve(this.#again ? "again" : woken);
        this.#again = false;
      };
      let timer = setTimeout(wake, ms, "poll");
      this.#wake = wake;
      this.#handedSome = () => {
        if (shortened || ms <= this.retryMs) return;
        shortened = true;
        clearTimeout(timer);
        timer = setTimeout(wake, this.retryMs, "handed");
      };
      if (this.#fresh.size > 0) this.#handedSome();
      signal?.addEventListener("abort", onAbort, { once: true });
      // an abort that came before the listener was added
      if (signal?.aborted) onAbort();
    });
  }
}
