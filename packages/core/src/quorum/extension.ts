import { LockLostError, LockUnavailableError } from "../errors.js";
import { type Lock, markLost, STATE, validityChanged } from "../lock/lock.js";
import { channels } from "../observe/diagnostics.js";
import { driftFor } from "../options.js";
import { failuresOf, fanOut } from "./ballot.js";
import { extendCall, type LockRequest, type QuorumContext } from "./requests.js";
import { countVotes } from "./votes.js";

/**
 * Resets a held lock's expiry to `ttl` ms from now on a quorum (see `Redlock.extend`). A lock is
 * lost when a quorum no longer holds it, or its validity ended before a quorum confirmed; too few answers to tell leave it valid until its current
 * validity ends (or `ttl` from the extension's start, if sooner), and the caller may try again.
 */
export async function extendOnQuorum(ctx: QuorumContext, lock: Lock, ttl: number, driftFactor: number): Promise<Lock> {
  const { stores, quorum, identity, clock } = ctx;
  const state = lock[STATE];
  // refused without asking: still a call that ended, and the point channel says so
  if (state.released || !lock.valid) publishExtension(lock, false, 0);
  if (state.released) throw new LockLostError(lock.resources, "Lock was already released");
  if (!lock.valid) {
    const error = state.lost ?? new LockLostError(lock.resources, "Lock validity ended before the extension");
    markLost(lock, error);
    throw error;
  }
  const drift = driftFor(ttl, driftFactor);
  const start = clock();
  const wallStart = Date.now();
  const request: LockRequest = { keys: state.keys, value: lock.value, ttl };
  const stamp = identity.stamp;
  const voters = identity.current ? stores : await identity.voters(stores, state.instanceTimeout);
  const quorumOf = { need: quorum, yes: (extended: boolean) => extended };
  const sent = ++state.extensionsSent;
  let votes = await fanOut(voters, extendCall, request, state.instanceTimeout, quorumOf);
  if (identity.changedSince(stamp)) votes = await identity.voided(votes, stamp, state.instanceTimeout);
  // Another extension of this lock, sent after this one, was counted first (this one's votes waited
  // in voided()): it ran after this one on every connection, so it set the keys' expiry, and this
  // one may only shorten the validity, never set it past what that one left.
  const overtaken = state.newestAnswered > sent;
  state.newestAnswered = Math.max(state.newestAnswered, sent);
  const elapsed = clock() - start;
  const yes = countVotes(votes, (extended) => extended);
  const refused = countVotes(votes, (extended) => !extended);
  // Released, lost or lapsed while the extension was in flight: a confirmation arriving now does not
  // bring it back (`valid` never turns true again, and a signal that aborted stays the answer).
  const lapsed = !lock.valid;
  const extended = yes >= quorum && ttl - elapsed - drift > 0 && !lapsed;
  publishExtension(lock, extended, elapsed);
  if (extended) {
    if (!overtaken || start + ttl - drift < state.validUntil) {
      state.validUntil = start + ttl - drift;
      state.expiresAt = overtaken ? Math.min(state.expiresAt, wallStart + ttl - drift) : wallStart + ttl - drift;
      validityChanged(lock);
    }
    return lock;
  }
  // A quorum confirmed, too late: the lock lapsed or was released meanwhile, or the extension took
  // the whole ttl it asked for (the keys it shortened may expire at any moment). Not "too few".
  if (yes >= quorum) {
    const error =
      state.lost ??
      new LockLostError(
        lock.resources,
        !lapsed
          ? "Lock extension took longer than its ttl: no validity left"
          : state.released
            ? "Lock was released during the extension"
            : "Lock validity ended before the extension was confirmed",
      );
    markLost(lock, error);
    throw error;
  }
  const causes = failuresOf(votes, lock.value);
  // Too few answers to know: the keys may still be ours on a quorum. The lock stays valid until
  // its current validity ends, and the caller may try again before then. An extension to less
  // than the time left may have shortened the keys wherever it landed (an instance that timed out
  // included): the validity then ends no later than that ttl allows.
  if (start + ttl - drift < state.validUntil) {
    state.validUntil = start + ttl - drift;
    state.expiresAt = Math.min(state.expiresAt, wallStart + ttl - drift);
    validityChanged(lock);
  }
  if (yes < quorum && stores.length - refused >= quorum && lock.valid) {
    throw new LockUnavailableError(
      lock.resources,
      causes,
      `Lock could not be extended: too few instances answered (${yes} of ${stores.length} confirmed, ${quorum} needed)`,
    );
  }
  const error = new LockLostError(
    lock.resources,
    `Lock could not be extended on a quorum (${yes} of ${stores.length} instances, ${quorum} needed)`,
    causes.length > 0 ? { cause: new LockUnavailableError(lock.resources, causes) } : undefined,
  );
  markLost(lock, error);
  throw error;
}

function publishExtension(lock: Lock, extended: boolean, elapsedMs: number): void {
  if (channels.extend.hasSubscribers) channels.extend.publish({ resources: lock.resources, extended, elapsedMs });
}
