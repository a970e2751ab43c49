/**
 * Fencing tokens on a quorum (docs/fencing.md has the proof). Phase 1 is the acquisition itself:
 * each instance that takes the keys increments each key's fence counter and returns it, and a
 * key's fence is the largest counter among those instances. Phase 2, the write-back: on a quorum,
 * atomically, "if I still hold the keys, raise each counter to its fence". Any later acquisition's
 * quorum overlaps the write-back's, so its increment starts at or above this fence.
 */
import type { AcquireFailure } from "../quorum/acquire-failure.js";
import { failuresOf, fanOut, type Vote } from "../quorum/ballot.js";
import { waitFor } from "../quorum/votes.js";
import type { AcquireReply, LockStore, QueueTicket, RaiseReply } from "../stores/store.js";

/** A counter or fence: a positive decimal integer of at most 19 digits (Redis counters are 64-bit signed). */
const FENCE = /^[1-9][0-9]{0,18}$/;
/** The largest value INCR reaches: 2^63 − 1. */
const MAX_FENCE = 2n ** 63n - 1n;

/** The keys, the value and (for a waiting call) the ticket of one fenced attempt. */
interface FencedRequest {
  readonly keys: readonly string[];
  readonly value: string;
  readonly ttl: number;
  readonly ticket: QueueTicket | undefined;
}

/** Phase 2's outcome: the fences, or why a quorum could not confirm them. */
export type WriteBack =
  | { readonly fences: readonly string[] }
  | { readonly fences: undefined; readonly failure: AcquireFailure };

/** Whether `fence` is a fence this library can have issued: a canonical decimal integer from 1 to 2^63 − 1. */
export function isFence(fence: unknown): fence is string {
  return typeof fence === "string" && FENCE.test(fence) && BigInt(fence) <= MAX_FENCE;
}

/**
 * Phase 1 on one store. A reply whose fences are not one valid counter per key counts as the
 * instance's error, not as a yes: a fence must never be made up.
 */
export function fencedAcquireCall(store: LockStore, request: FencedRequest): Promise<AcquireReply> {
  const acquire = store.acquireFenced as NonNullable<LockStore["acquireFenced"]>;
  return acquire.call(store, request.keys, request.value, request.ttl, request.ticket).then((reply) => {
    if (reply.acquired && (reply.fences?.length !== request.keys.length || !reply.fences.every(isFence))) {
      throw new Error("Instance answered a fenced acquisition without a valid counter per key");
    }
    return reply;
  });
}

/** Each key's fence: the largest counter among the instances that took the keys. */
export function largestFences(votes: readonly Vote<AcquireReply>[], count: number): string[] {
  const largest = new Array<bigint>(count).fill(0n);
  for (const vote of votes) {
    const fences = vote.ok && vote.value.acquired ? vote.value.fences : undefined;
    if (fences === undefined) continue;
    for (let i = 0; i < count; i++) {
      const fence = BigInt(fences[i] as string);
      if (fence > (largest[i] as bigint)) largest[i] = fence;
    }
  }
  return largest.map(String);
}

interface RaiseRequest {
  readonly keys: readonly string[];
  readonly value: string;
  readonly fences: readonly string[];
}

const raiseCall = (store: LockStore, r: RaiseRequest) =>
  (store.raiseFences as NonNullable<LockStore["raiseFences"]>).call(store, r.keys, r.value, r.fences);

/**
 * Phase 2: writes the fences back on every instance, resolving once a quorum confirmed that it
 * still held the keys and raised their counters (the others' commands are on their way). Fewer
 * than a quorum: the lock must not be returned (fail closed). `voided` drops the confirmations of
 * instances whose connection changed meanwhile (quorum/server-identity.ts).
 */
export async function writeBackFences(
  stores: readonly LockStore[],
  request: FencedRequest,
  votes: readonly Vote<AcquireReply>[],
  timeoutMs: number,
  quorum: number,
  voided: (confirmations: Vote<RaiseReply>[]) => Vote<RaiseReply>[] | Promise<Vote<RaiseReply>[]>,
): Promise<WriteBack> {
  const fences = largestFences(votes, request.keys.length);
  const raise: RaiseRequest = { keys: request.keys, value: request.value, fences };
  const quorumOf = { need: quorum, yes: (held: RaiseReply) => held === true };
  const confirmations = await voided(await fanOut(stores, raiseCall, raise, timeoutMs, quorumOf));
  let confirmed = 0;
  let lost = 0;
  // the longest remaining ttl among the refusals' new holders, as an acquire refusal reports it
  let retryAfterMs = 0;
  for (const vote of confirmations) {
    if (!vote.ok) continue;
    const reply = vote.value;
    if (reply === true) confirmed++;
    else {
      lost++;
      if (reply !== false) retryAfterMs = Math.max(retryAfterMs, waitFor(reply.holderTtl));
    }
  }
  if (confirmed >= quorum) return { fences };
  // A refusal: our value was no longer on the keys there (another owner took them, or they
  // expired). That is contention, not an outage, when those answers alone cost the quorum: had
  // every instance that erred or was silent confirmed, there would still be none. Otherwise the
  // errors (a counter that is not one, a connection that moved) are reported as unavailability,
  // with their causes. No holder's ttl (a key without expiry, or a store that does not say) leaves
  // retryAfterMs 0: the lock's own ttl is suggested (acquireError).
  const failed = confirmations.length - confirmed - lost;
  if (confirmed + failed < quorum) return { fences: undefined, failure: { kind: "contention", retryAfterMs } };
  return {
    fences: undefined,
    failure: {
      kind: "unavailable",
      causes: failuresOf(confirmations, request.value),
      message: `Fences could not be written back on a quorum (${confirmed} of ${stores.length} instances still held the lock, ${quorum} needed)`,
    },
  };
}
