import type { Redis } from "ioredis";
import { queueOf } from "./queues.js";

/**
 * What the protocol promises, read on each instance: a quorum, not every instance. A lock, a
 * release or a hand-over resolves once a majority answered, and on a loaded machine the rest can
 * legitimately differ: a call that timed out there, an attempt that ran there just before the old
 * holder's key expired, a reservation let go there after the next lock's attempt. A waiter then
 * takes that free key instead of queuing there. A test that waits for every instance where only a
 * quorum is promised hangs until its timeout; these are the conditions to wait for instead.
 */

/** The size of `key`'s queue of waiters on each instance, read through `clients`. */
export const queueSizes = (clients: readonly Redis[], key: string): Promise<number[]> =>
  Promise.all(clients.map((client) => client.zcard(queueOf(key))));

/** How many of `count` instances make a quorum. */
export const quorumOf = (count: number): number => Math.floor(count / 2) + 1;

/** Whether `values` (one key read on each instance) show `value`'s lock on a quorum and nobody else's anywhere. */
export function heldByQuorum(values: readonly (string | null)[], value: string): boolean {
  const ours = values.filter((held) => held === value).length;
  return ours >= quorumOf(values.length) && values.every((held) => held === null || held === value);
}

/** Whether `sizes` (one queue's size on each instance) show `n` waiters in line on a quorum: what a release serves them by. */
export function queuedOnQuorum(sizes: readonly number[], n: number): boolean {
  return sizes.filter((size) => size === n).length >= quorumOf(sizes.length);
}
