import type { LockStore, QueueTicket } from "../stores/store.js";
import type { ServerIdentityCheck } from "./server-identity.js";

/** What the quorum operations of one Redlock share: its instances and how many must agree. */
export interface QuorumContext {
  /** The instances' stores, in the order given. */
  readonly stores: readonly LockStore[];
  /** How many instances must agree: ⌊N/2⌋+1. */
  readonly quorum: number;
  /** Which instances may vote: one vote per Redis server (quorum/server-identity.ts). */
  readonly identity: ServerIdentityCheck;
  /** Monotonic ms: validity is measured on it. */
  readonly clock: () => number;
}

/** What the instances are asked about: keys, value, and the ttl to set. */
export interface LockRequest {
  readonly keys: readonly string[];
  readonly value: string;
  readonly ttl: number;
}

/** An acquisition's request; a waiter's attempts carry its queue ticket. */
export interface AcquireRequest extends LockRequest {
  ticket: QueueTicket | undefined;
  /** Attempts sent so far with this value. */
  sent: number;
  /** The per-instance timeout each attempt's answers are waited for (LockStore.acquire's `budgetMs`). */
  readonly budgetMs: number;
}

// One function each, given the request as fanOut's argument: no closure per call.
export const acquireCall = (store: LockStore, r: AcquireRequest) =>
  store.acquire(r.keys, r.value, r.ttl, r.ticket, r.budgetMs);
export const extendCall = (store: LockStore, r: LockRequest) => store.extend(r.keys, r.value, r.ttl);
export const releaseCall = (store: LockStore, r: Omit<LockRequest, "ttl">) => store.release(r.keys, r.value);
/**
 * A failed attempt's release. Answered NOSCRIPT (a lost script cache), it is sent whole again only
 * while the call has sent no attempt since: sent again, it would run behind that attempt on the
 * connection and delete the key the attempt took (docs/reliability.md, F8).
 */
export const giveBackCall = (store: LockStore, r: AcquireRequest) =>
  store.release(r.keys, r.value, undefined, noAttemptSince(r));
/** `giveBackCall` by a waiter that tries again: it is queued again where it gives keys back, keeping its place. */
export const requeueCall = (store: LockStore, r: AcquireRequest) =>
  store.release(r.keys, r.value, r.ticket, noAttemptSince(r));

function noAttemptSince(r: AcquireRequest): () => boolean {
  const sent = r.sent;
  return () => r.sent === sent;
}
