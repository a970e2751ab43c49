import type { AcquireReply } from "../stores/store.js";
import type { AcquireFailure } from "./acquire-failure.js";
import { failuresOf, type Vote } from "./ballot.js";

/** How many instances answered `yes`. */
export function countVotes<T>(votes: readonly Vote<T>[], yes: (value: T) => boolean): number {
  let count = 0;
  for (const vote of votes) if (vote.ok && yes(vote.value)) count++;
  return count;
}

/** One acquisition attempt, counted: instances that took the keys, that refused, and the longest holder ttl. */
export interface AcquireTally {
  yes: number;
  held: number;
  retryAfterMs: number;
}

export function tallyAcquire(votes: readonly Vote<AcquireReply>[]): AcquireTally {
  const tally: AcquireTally = { yes: 0, held: 0, retryAfterMs: 0 };
  for (const vote of votes) {
    if (!vote.ok) continue;
    if (vote.value.acquired) tally.yes++;
    else {
      tally.held++;
      tally.retryAfterMs = Math.max(tally.retryAfterMs, waitFor(vote.value.holderTtl));
    }
  }
  return tally;
}

/** How long a refusal says to wait: the holder's ttl; a key gone (-2) is free now, so 1 ms (Retry-After 1, try again at once). */
export const waitFor = (holderTtl: number): number => (holderTtl === -2 ? 1 : holderTtl);

/**
 * Contention when another owner refused and the instances that answered could have formed a
 * quorum (waiting may help); otherwise unavailability (waiting on the owner would not).
 */
export function classify(
  tally: AcquireTally,
  votes: readonly Vote<AcquireReply>[],
  value: string,
  quorum: number,
  validity: number,
): AcquireFailure {
  if (tally.held > 0 && tally.yes + tally.held >= quorum) {
    return { kind: "contention", retryAfterMs: tally.retryAfterMs };
  }
  if (tally.yes >= quorum && validity <= 0) {
    return {
      kind: "unavailable",
      causes: failuresOf(votes, value),
      message: "Lock acquisition took longer than the ttl: no validity left",
    };
  }
  return { kind: "unavailable", causes: failuresOf(votes, value) };
}

/** An instance answered and refused: another owner holds the keys there. */
export const isRefused = (vote: Vote<AcquireReply> | undefined) => vote?.ok === true && !vote.value.acquired;

/** Indexes of the instances that did not take the keys: a waiter may sit in their queues. */
export function notTaken(votes: readonly Vote<AcquireReply>[]): number[] {
  const indexes: number[] = [];
  votes.forEach((vote, index) => {
    if (!vote.ok || !vote.value.acquired) indexes.push(index);
  });
  return indexes;
}
