import {
  type InstanceFailure,
  LockConfigurationError,
  LockContentionError,
  LockUnavailableError,
  type RedlockError,
} from "../errors.js";
import { FENCE_SUFFIX } from "../stores/script-calls.js";
import { COUNTER_WRONGTYPE } from "../stores/scripts.js";

/** Why an acquisition failed, as the quorum loop tallied its last attempt. */
export type AcquireFailure =
  | { readonly kind: "contention"; readonly retryAfterMs: number }
  | { readonly kind: "unavailable"; readonly causes: readonly InstanceFailure[]; readonly message?: string };

/**
 * Answers that say the deployment is wrong, not that Redis is busy or down: a lock key holding data
 * of another type (WRONGTYPE), a Cluster node asked through a plain client (MOVED, ASK, CROSSSLOT).
 * Waiting or retrying changes nothing, so they end the call at once with `LockConfigurationError`
 * (500) rather than pose as an outage (503). READONLY (a master demoted to replica), LOADING, OOM,
 * BUSY, NOPERM and timeouts stay unavailability: they pass, or are for the operator to see in the
 * causes.
 */
const MISCONFIGURED = /^(WRONGTYPE|MOVED|ASK|CROSSSLOT)\b/;

const misconfigured = (failure: AcquireFailure): readonly InstanceFailure[] =>
  failure.kind === "unavailable" ? failure.causes.filter((cause) => MISCONFIGURED.test(cause.error.message)) : [];

/** True when retrying cannot help: some instance answered as a wrongly deployed one. */
export function isMisconfigured(failure: AcquireFailure): boolean {
  return misconfigured(failure).length > 0;
}

/**
 * The error a failed acquisition rejects with. A holder whose key has no expiry (another tool's key
 * at the lock's name: PTTL -1, reported as 0), or whose ttl is not known (a custom store's fence
 * write-back that did not read it), gives no remaining time to wait for:
 * the lock's own `ttl` is suggested instead, so that `Retry-After` is not the 1 s floor for a key
 * that may never go.
 */
export function acquireError(resources: readonly string[], failure: AcquireFailure, ttl: number): RedlockError {
  if (failure.kind === "contention") {
    return new LockContentionError(resources, failure.retryAfterMs > 0 ? failure.retryAfterMs : ttl);
  }
  const unavailable = new LockUnavailableError(resources, failure.causes, failure.message);
  const wrong = misconfigured(failure);
  if (wrong.length === 0) return unavailable;
  const instances = wrong.map((cause) => cause.instance);
  const named = instances.map((index) => `instances[${index}]`).join(", ");
  const wrongType = wrong.filter((cause) => cause.error.message.startsWith("WRONGTYPE"));
  const message =
    wrongType.length === 0
      ? `${named} answered as a Redis Cluster node (${wrong[0]?.error.message.split(" ")[0]}): give Redlock an ioredis Cluster for it`
      : wrongType.every((cause) => cause.error.message.startsWith(COUNTER_WRONGTYPE))
        ? `A fence counter (the key with "${FENCE_SUFFIX}" appended) holds data of another type on ${named} (WRONGTYPE): something else wrote the library's key; leave those keys to it, or give Redlock a keyPrefix that keeps its keys apart`
        : `A lock key holds data of another type on ${named} (WRONGTYPE): another application uses the name; give Redlock a keyPrefix that keeps lock keys apart`;
  return new LockConfigurationError(message, instances, resources, { cause: unavailable });
}

/** What an acquisition rejects with when `Redlock.stopAcquiring()` (or `quit()`) ended it, or came before it. */
export const quitError = (resources: readonly string[]): LockUnavailableError =>
  new LockUnavailableError(
    resources,
    [],
    "Lock service unavailable: Redlock.stopAcquiring() or quit() was called, no more locks are taken",
  );
