import type { LockStore } from "../stores/store.js";
import type { HandOvers } from "../waiting/hand-over.js";

/**
 * The own-waiter grant, for speed only: when a `Redlock` releases a one-key lock and the head of
 * the key's queue is a waiter of that same `Redlock` (another call in this process), the release
 * script gives the key to that waiter outright: it sets the key to the waiter's value for the
 * waiter's own ttl, removes its entry, tells nobody, and answers -2 (RELEASE_SCRIPT, mode 'r'). The
 * releasing process reads that reply, and once a quorum of instances granted the key the waiter
 * holds the lock, its validity counted from the release's start. What it buys: a hand-over from
 * one call to the next in one process costs the release alone, where the message and the claim (a
 * round trip) would follow it. Measured in bench/ ("In one process, contention" and "In one
 * process, queue"). Without this module the waiter is told by message and claims the key, with the
 * same outcome for every lock.
 *
 * Why it is safe: the grant is read from the release's own reply on this process's connection, not
 * from a message that could be stale or forged; each granted key was set with the waiter's ttl after
 * the release started, so it expires no sooner than that start plus the ttl, and the validity is
 * counted from there on a monotonic clock, as for any acquisition. A waiter that left before the
 * reply came lets go of the key at once (`HandOvers.granted`). A waiter that sent an attempt after
 * the release (its own poll) treats the grant as a hand-over, which its attempt or its claim
 * verifies: that attempt, or the give-back after it, ran after the grant and may have changed the
 * key. So does one that gave a key back on that instance during the call: a give-back answered
 * NOSCRIPT is sent whole again behind the release, and deletes the granted key.
 */

/** A waiter a release may grant its key to, and what to do when an instance did. */
export interface Grant {
  readonly value: string;
  readonly ttl: number;
  /** `store` granted the key to the waiter. */
  granted(store: LockStore): void;
}

export class OwnGrants {
  readonly #handOvers: HandOvers;
  readonly #indexes: ReadonlyMap<LockStore, number>;

  constructor(handOvers: HandOvers, stores: readonly LockStore[]) {
    this.#handOvers = handOvers;
    this.#indexes = new Map(stores.map((store, index) => [store, index]));
  }

  /** What a release of `key` that started at `start` may grant: to this Redlock's oldest waiter queued for the key. */
  offer(key: string, start: number): Grant | undefined {
    const waiter = this.#handOvers.grantable(key);
    if (waiter === undefined) return undefined;
    const handOvers = this.#handOvers;
    const indexes = this.#indexes;
    const attempts = waiter.attempts;
    return {
      value: waiter.value,
      ttl: waiter.ttl,
      granted(store) {
        const index = indexes.get(store);
        if (index !== undefined) handOvers.granted(index, key, waiter, start, attempts);
      },
    };
  }
}
