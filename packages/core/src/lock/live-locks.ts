import { type Lock, type LockState, STATE } from "./lock.js";

/** Below this many entries nothing is swept: a sweep would cost more than the memory it frees. */
const MIN_SWEEP_SIZE = 1024;

/**
 * Beyond this many live locks, `holdsAnyKey` stops looking and answers false: a waiter then polls
 * as it would without the check, and a Redlock holding that many locks pays no more per poll.
 */
const MAX_KEY_SCAN = 256;

/**
 * The locks one Redlock took and has not released: `inspect()` tells "a lock of this process holds
 * the key" from "another owner does", a release's trace says how long the lock was held, and a
 * waiter of this Redlock sends no poll that one of its valid locks would refuse (`holdsAnyKey`).
 *
 * A list threaded through the locks' states, not a Map: adding and removing a lock allocate
 * nothing. Two Maps (by value and by key) cost 4–8 µs of CPU per lock+unlock, about 3 % of the
 * throughput of sequential lock+unlock on one instance (the loop of bench/'s "Sequential
 * lock+unlock" row, A/B in one process outside the runner, whose spread hides it): V8 shrinks or
 * rehashes a Map that each release empties in a runtime call, and each lock had an entry object. The lookups walk the list: `inspect()` is an operator's
 * call, and a poll's check walks at most MAX_KEY_SCAN locks.
 *
 * Losing a lock needs no bookkeeping here: the lookups read its validity. A lock dropped without a
 * release stays until the list has doubled in size since the last sweep, so a program that forgets
 * to release cannot grow it without bound.
 */
export class LiveLocks {
  #head: LockState | undefined;
  #size = 0;
  #sweepAt = MIN_SWEEP_SIZE;

  add(lock: Lock): void {
    const state = lock[STATE];
    if (state.live) return;
    state.live = true;
    state.livePrev = undefined;
    state.liveNext = this.#head;
    if (this.#head !== undefined) this.#head.livePrev = state;
    this.#head = state;
    if (++this.#size >= this.#sweepAt) this.#sweep();
  }

  delete(lock: Lock): void {
    const state = lock[STATE];
    state.swept = false;
    this.#unlink(state);
  }

  /** Whether a valid lock of ours holds one of these Redis keys. */
  holdsAnyKey(keys: readonly string[]): boolean {
    if (this.#size > MAX_KEY_SCAN) return false;
    for (let state = this.#head; state !== undefined; state = state.liveNext) {
      if (state.keys.some((key) => keys.includes(key)) && state.valid) return true;
    }
    return false;
  }

  /** Whether `value` is the value of a lock of ours that is still valid. */
  holds(value: string): boolean {
    for (let state = this.#head; state !== undefined; state = state.liveNext) {
      if (state.value === value) return state.valid;
    }
    return false;
  }

  /** Milliseconds since `lock` was acquired (on its Redlock's clock), until it is released (swept or not). */
  heldMs(lock: Lock): number | undefined {
    const state = lock[STATE];
    return state.live || state.swept ? state.clock() - state.acquiredAt : undefined;
  }

  /** Number of registered locks (for leak checks). */
  get size(): number {
    return this.#size;
  }

  #unlink(state: LockState): void {
    if (!state.live) return;
    state.live = false;
    const { livePrev, liveNext } = state;
    if (livePrev === undefined) this.#head = liveNext;
    else livePrev.liveNext = liveNext;
    if (liveNext !== undefined) liveNext.livePrev = livePrev;
    state.livePrev = undefined;
    state.liveNext = undefined;
    this.#size--;
  }

  #sweep(): void {
    for (let state = this.#head; state !== undefined; ) {
      const next = state.liveNext;
      if (!state.valid) {
        this.#unlink(state);
        // a lost lock may still be released, and its release still traced with the time it was held
        state.swept = true;
      }
      state = next;
    }
    this.#sweepAt = Math.max(MIN_SWEEP_SIZE, this.#size * 2);
  }
}
