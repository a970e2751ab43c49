import { performance } from "node:perf_hooks";
import {
  ACQUIRED,
  type AcquireReply,
  type LockStore,
  type OneKeyRelease,
  type QueueTicket,
  type RaiseReply,
  type StoredKey,
} from "./store.js";

interface Entry {
  value: string;
  expiresAt: number;
}

/** A waiter queued on a key, as the Redis queue entry would describe it. */
interface Queued {
  readonly value: string;
  readonly ticket: QueueTicket;
}

/** A key's waiters, oldest first; the queue expires as the Redis one does (each queuing keeps it at least its `keepMs`). */
interface Queue {
  readonly waiters: Queued[];
  expiresAt: number;
}

type HandOverListener = (key: string, value: string) => void;

/**
 * An in-process store with the same semantics as `RedisStore`, but for retake (a release reserves
 * nothing: README, Stores): for single-process apps, demos and your own unit tests. It locks
 * nothing across processes.
 *
 * @example
 * const dlm = new Redlock([new MemoryStore()]);
 */
export class MemoryStore implements LockStore {
  readonly description = "memory";
  readonly #entries = new Map<string, Entry>();
  readonly #queues = new Map<string, Queue>();
  readonly #channels = new Map<string, HandOverListener>();
  /** Fence counters per key: never expire, never touched by release. */
  readonly #fences = new Map<string, bigint>();
  readonly #now: () => number;
  #writesSinceSweep = 0;

  /** @param now monotonic clock in ms, for tests (fake timers: the same as the Redlock's `clock`). */
  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** Number of live keys (expired ones are not counted). */
  get size(): number {
    this.#sweep();
    return this.#entries.size;
  }

  async acquire(keys: readonly string[], value: string, ttl: number, ticket?: QueueTicket): Promise<AcquireReply> {
    return this.#acquire(keys, value, ttl, ticket);
  }

  /** As `acquire`; where it takes the keys, it also increments and returns each key's fence counter. */
  async acquireFenced(
    keys: readonly string[],
    value: string,
    ttl: number,
    ticket?: QueueTicket,
  ): Promise<AcquireReply> {
    const reply = this.#acquire(keys, value, ttl, ticket);
    if (!reply.acquired) return reply;
    const fences = keys.map((key) => {
      const fence = (this.#fences.get(key) ?? 0n) + 1n;
      this.#fences.set(key, fence);
      return String(fence);
    });
    return { acquired: true, fences };
  }

  /**
   * Raises each key's fence counter to its fence (never lowers one); confirms it only if every key
   * still holds `value`, otherwise refuses with the remaining ttl of the first key no longer ours
   * (-2: gone). A refusal raises the counters too, as the Redis stores' script does: an instance
   * that refused the acquisition must not stay behind its fence.
   */
  async raiseFences(keys: readonly string[], value: string, fences: readonly string[]): Promise<RaiseReply> {
    keys.forEach((key, i) => {
      const fence = BigInt(fences[i] as string);
      if (fence > (this.#fences.get(key) ?? 0n)) this.#fences.set(key, fence);
    });
    for (const key of keys) {
      const entry = this.#live(key);
      if (entry?.value !== value) return { raised: false, holderTtl: entry ? this.#left(entry) : -2 };
    }
    return true;
  }

  /** An entry's remaining ttl in whole ms, as PTTL reports it. */
  #left(entry: Entry): number {
    return Math.max(0, Math.ceil(entry.expiresAt - this.#now()));
  }

  #acquire(keys: readonly string[], value: string, ttl: number, ticket: QueueTicket | undefined): AcquireReply {
    // refused if another owner holds any key, with the longest ttl left among them (as the acquire
    // script); queued behind the first
    let holderTtl: number | undefined;
    for (const key of keys) {
      const entry = this.#live(key);
      if (entry && entry.value !== value) {
        if (ticket !== undefined && holderTtl === undefined) this.#enqueue(key, value, ticket);
        holderTtl = Math.max(holderTtl ?? 0, this.#left(entry));
      }
    }
    if (holderTtl !== undefined) return { acquired: false, holderTtl };
    const expiresAt = this.#now() + ttl;
    for (const key of keys) {
      this.#entries.set(key, { value, expiresAt });
      if (ticket !== undefined) this.#dequeue(key, value);
    }
    // Expired entries are dropped on access; sweep now and then so unread ones do not pile up.
    if (++this.#writesSinceSweep >= 1000) this.#sweep();
    return ACQUIRED;
  }

  async extend(keys: readonly string[], value: string, ttl: number): Promise<boolean> {
    const entries: Entry[] = [];
    for (const key of keys) {
      const entry = this.#live(key);
      if (!entry || entry.value !== value) return false;
      entries.push(entry);
    }
    const expiresAt = this.#now() + ttl;
    for (const entry of entries) entry.expiresAt = expiresAt;
    return true;
  }

  /**
   * Deletes the keys that hold `value`, handing each to its oldest waiter that still listens
   * (`requeue` first queued again; the key stays free where that waiter is the oldest that listens).
   */
  async release(keys: readonly string[], value: string, requeue?: QueueTicket): Promise<number> {
    let released = 0;
    for (const key of keys) {
      if (this.#live(key)?.value === value) {
        this.#entries.delete(key);
        released++;
        if (requeue !== undefined) this.#enqueue(key, value, requeue);
        this.#handOver(key, requeue === undefined ? undefined : value);
      }
    }
    return released;
  }

  /**
   * `release` for one key by the Redlock listening on `channel`: when the head of the key's queue is
   * that Redlock's waiter `how.grant` names, the key is set to its value for its ttl and its entry
   * removed, nobody told (-2, speed/own-grant.ts: its validity counts from the release, as on Redis).
   * `how.reserve` is not done: no retake here (README, Stores), the key is handed over as by `release`.
   */
  async releaseOne(key: string, value: string, channel: string, how: OneKeyRelease): Promise<number> {
    if (this.#live(key)?.value !== value) return 0;
    const grant = how.grant;
    const head = this.#liveQueue(key)?.waiters[0];
    if (grant !== undefined && head?.ticket.channel === channel && head.value === grant.value) {
      this.#dequeue(key, grant.value);
      this.#entries.set(key, { value: grant.value, expiresAt: this.#now() + grant.ttl });
      return -2;
    }
    return this.release([key], value);
  }

  async inspect(key: string): Promise<StoredKey | null> {
    const entry = this.#live(key);
    return entry ? { value: entry.value, ttlMs: this.#left(entry) } : null;
  }

  async onHandOver(channel: string, listener: HandOverListener): Promise<() => void> {
    this.#channels.set(channel, listener);
    return () => {
      if (this.#channels.get(channel) === listener) this.#channels.delete(channel);
    };
  }

  async leaveQueue(keys: readonly string[], value: string): Promise<void> {
    for (const key of keys) this.#dequeue(key, value);
  }

  #enqueue(key: string, value: string, ticket: QueueTicket): void {
    let queue = this.#liveQueue(key);
    if (queue === undefined) {
      queue = { waiters: [], expiresAt: 0 };
      this.#queues.set(key, queue);
    }
    // as the script's PEXPIRE: the queue lives at least keepMs more, never less than it had
    queue.expiresAt = Math.max(queue.expiresAt, this.#now() + ticket.keepMs);
    const waiters = queue.waiters;
    if (waiters.some((queued) => queued.value === value)) return;
    // in order, as the Redis queue's score sorts it
    let at = waiters.length;
    while (at > 0 && (waiters[at - 1] as Queued).ticket.order > ticket.order) at--;
    waiters.splice(at, 0, { value, ticket });
  }

  #dequeue(key: string, value: string): void {
    const queue = this.#liveQueue(key);
    if (queue === undefined) return;
    const at = queue.waiters.findIndex((queued) => queued.value === value);
    if (at !== -1) queue.waiters.splice(at, 1);
    if (queue.waiters.length === 0) this.#queues.delete(key);
  }

  /**
   * Hands `key` to its oldest waiter that still listens. `giver`: a waiter giving the key back,
   * queued again; reached, it keeps its place and the key stays free, as on Redis.
   */
  #handOver(key: string, giver?: string): void {
    const queue = this.#liveQueue(key)?.waiters;
    if (queue === undefined) return;
    for (let head = queue.shift(); head !== undefined; head = queue.shift()) {
      if (head.value === giver) {
        queue.unshift(head);
        return;
      }
      const listener = this.#channels.get(head.ticket.channel);
      if (listener === undefined) continue;
      this.#entries.set(key, { value: head.value, expiresAt: this.#now() + head.ticket.holdMs });
      const waiter = head.value;
      // told after this call, as by a Redis store's message; by a promise job, not queueMicrotask,
      // which fake timers hold (Jest's by default): the waiter of a user's test would never hear it
      void Promise.resolve().then(() => listener(key, waiter));
      break;
    }
    if (queue.length === 0) this.#queues.delete(key);
  }

  #live(key: string): Entry | undefined {
    return this.#unexpired(this.#entries, key);
  }

  /** A key's queue, unless it expired (a waiter that never left the queue leaves nothing behind). */
  #liveQueue(key: string): Queue | undefined {
    return this.#unexpired(this.#queues, key);
  }

  /** What `map` holds under `key`, dropped once expired, as Redis drops an expired key when read. */
  #unexpired<T extends { expiresAt: number }>(map: Map<string, T>, key: string): T | undefined {
    const held = map.get(key);
    if (held && held.expiresAt <= this.#now()) {
      map.delete(key);
      return undefined;
    }
    return held;
  }

  #sweep(): void {
    this.#writesSinceSweep = 0;
    const now = this.#now();
    for (const map of [this.#entries, this.#queues]) {
      for (const [key, held] of map) if (held.expiresAt <= now) map.delete(key);
    }
  }
}
