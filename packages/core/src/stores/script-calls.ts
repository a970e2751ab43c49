/**
 * What a Redis store sends for each script of scripts.ts (its SHA, its KEYS and ARGV) and how it
 * reads the replies, once for every client library: `RedisStore` (ioredis) and `NodeRedisStore`
 * (node-redis) run the same scripts on the same keys, so they lock together.
 */
import { createHash } from "node:crypto";
import calculateSlot from "cluster-key-slot";
import { FENCED_SET_SCRIPT, STORE_SCRIPTS, type StoreScript } from "./scripts.js";
import { ACQUIRED, type AcquireReply, type OneKeyRelease, type QueueTicket, type RaiseReply } from "./store.js";

/** The key count, then the keys, then the other arguments: what a script call sends after its SHA. */
export type ScriptArgs = [numKeys: number, ...rest: (string | number)[]];

/** A key's queue of waiters sits beside it: the lock key with this suffix (no braces: same hash tag). */
export const QUEUE_SUFFIX = ":redlock-kit:waiters";
/** A key's fence counter sits beside it too (docs/fencing.md): never expires, never touched by release. */
export const FENCE_SUFFIX = ":redlock-kit:fence";

const sha1 = (lua: string) => createHash("sha1").update(lua).digest("hex");
/** The name Redis knows each script by once it has been sent whole. */
export const SHAS: Readonly<Record<StoreScript, string>> = Object.fromEntries(
  Object.entries(STORE_SCRIPTS).map(([name, lua]) => [name, sha1(lua)]),
) as Record<StoreScript, string>;
/** The SHA of `fencedSet`'s script, called by SHA on node-redis clients (ioredis's defineCommand has its own). */
export const FENCED_SET_SHA = sha1(FENCED_SET_SCRIPT);

/**
 * A multi-key script on a Cluster must stay in one slot; say so before Redis answers CROSSSLOT.
 * A fenced lock needs each key's counter in the key's slot too. `prefix`: the client's own
 * keyPrefix (ioredis), which Redis sees before every key and so hashes too.
 */
export function checkClusterKeys(keys: readonly string[], fencing?: boolean, prefix = ""): void {
  if (keys.length > 1 && calculateSlot.generateMulti(keys.map((key) => prefix + key)) === -1) {
    throw new RangeError(
      `resources of one lock must share a hash slot on a Redis Cluster, got ${keys.map((k) => JSON.stringify(k)).join(", ")}: put the common part in braces, e.g. "{order:42}:payment" and "{order:42}:stock"`,
    );
  }
  const homeless = fencing ? keys.find((key) => besideKey(key, FENCE_SUFFIX, prefix) === undefined) : undefined;
  if (homeless !== undefined) {
    throw new UnfenceableKeyError(
      `a fence counter cannot share the hash slot of ${JSON.stringify(homeless)} on a Redis Cluster: give the resource a hash tag, e.g. "{order:42}"`,
    );
  }
}

/**
 * The `RangeError` of a key whose fence counter cannot sit in its Cluster hash slot: told apart so
 * that an HTTP route, whose key came from the request, answers it 400 (http/http-policy.ts).
 */
export class UnfenceableKeyError extends RangeError {}

/** A queue entry: the channel to tell, how long to hold the key for the waiter, its value. */
export const entryOf = (ticket: QueueTicket, value: string) => `${ticket.channel}:${ticket.holdMs}:${value}`;

/**
 * On a Cluster: the key plus the suffix when that hashes like the key itself (a hash-tagged key
 * keeps its tag), else `{key}` plus the suffix. With the client's `prefix` (ioredis puts it before
 * every key it sends) the slots are those of the keys as sent, and the braces take the prefix in.
 */
export function besideKey(key: string, suffix: string, prefix = ""): string | undefined {
  const slot = calculateSlot(prefix + key);
  const sameTag = key + suffix;
  if (calculateSlot(prefix + sameTag) === slot) return sameTag;
  const braced = `{${prefix}${key}}${suffix}`;
  return calculateSlot(prefix + braced) === slot ? braced : undefined;
}

/** The acquire script answers OK, or the holder's PTTL. */
export function toAcquireReply(reply: unknown): AcquireReply {
  return reply === "OK" ? ACQUIRED : { acquired: false, holderTtl: Number(reply) };
}

/** The fenced acquire script answers the counters (an array of decimal strings), or the holder's PTTL. */
export function toFencedReply(reply: unknown): AcquireReply {
  if (!Array.isArray(reply)) return { acquired: false, holderTtl: Number(reply) };
  return { acquired: true, fences: reply.map(String) };
}

/** A script's integer 1: a number, or "1" from an ioredis client with `stringNumbers` (every integer reply a string). */
export const isOne = (reply: unknown) => reply === 1 || reply === "1";

/** The raise script answers OK, or the PTTL of the first key no longer ours (anything else: a refusal that says nothing). */
export function toRaiseReply(reply: unknown): RaiseReply {
  if (reply === "OK") return true;
  // the PTTL is a decimal string on an ioredis client with `stringNumbers`
  const ttl = typeof reply === "number" || typeof reply === "string" ? Number(reply) : Number.NaN;
  return Number.isInteger(ttl) ? { raised: false, holderTtl: ttl } : false;
}

/**
 * The fence counters beside `keys`, or undefined where one cannot sit in its key's hash slot (a
 * Cluster key without a hash tag whose braced form would hash elsewhere): it cannot be fenced.
 * `prefix` as for `besideKey`.
 */
export function countersOf(keys: readonly string[], cluster: boolean, prefix = ""): string[] | undefined {
  const beside = keys.map((key) => (cluster ? besideKey(key, FENCE_SUFFIX, prefix) : key + FENCE_SUFFIX));
  return beside.every((key) => key !== undefined) ? (beside as string[]) : undefined;
}

/**
 * The waiters' queues beside `keys`, or undefined on a Cluster: it hands nothing over
 * (`LockStore.handsOver`), so nobody queues there and its scripts name the lock's keys alone. A
 * queue named too, which no node has, made a one-key release a script on two keys, which a node
 * answers TRYAGAIN while the slot migrates: the release failed and the key stayed until its ttl.
 */
export function queuesOf(keys: readonly string[], cluster: boolean): string[] | undefined {
  return cluster ? undefined : keys.map((key) => key + QUEUE_SUFFIX);
}

/** ACQUIRE_SCRIPT, or FENCED_ACQUIRE_SCRIPT with the fence `counters`: with `queues`, a refused caller queues. */
export function acquireArgs(
  keys: readonly string[],
  value: string,
  ttl: number,
  queues: readonly string[] | undefined,
  ticket: QueueTicket | undefined,
  counters: readonly string[] = [],
): ScriptArgs {
  if (queues === undefined || ticket === undefined) {
    return [keys.length + counters.length, ...keys, ...counters, value, ttl];
  }
  const queued = [...keys, ...queues, ...counters];
  return [queued.length, ...queued, value, ttl, entryOf(ticket, value), ticket.order, ticket.keepMs];
}

/**
 * RELEASE_SCRIPT: with `queues`, each deleted key is handed to the oldest waiter queued on it; with
 * `requeue` too (a waiter giving back what a failed attempt took), that waiter is queued again first.
 */
export function releaseArgs(
  keys: readonly string[],
  value: string,
  queues: readonly string[] | undefined,
  requeue?: QueueTicket,
): ScriptArgs {
  if (queues === undefined) return [keys.length, ...keys, value];
  const args: ScriptArgs = [keys.length * 2, ...keys, ...queues, value, "1"];
  if (requeue !== undefined) args.push(entryOf(requeue, value), requeue.order, requeue.keepMs);
  return args;
}

/**
 * What a give-back that queues its waiter again (`requeue`) sends whole again after a NOSCRIPT:
 * the same, while the call is `inLine`; once it left the queues, without the requeue. Sent whole
 * again, it runs behind the call's ZREM, and would queue the call again for a later release to
 * hand the key to (in-flight-acquires.ts).
 */
export const releaseAgain =
  (
    keys: readonly string[],
    value: string,
    queues: readonly string[] | undefined,
    requeue: QueueTicket,
    inLine: () => boolean,
  ) =>
  (): ScriptArgs =>
    releaseArgs(keys, value, queues, inLine() ? requeue : undefined);

/**
 * RELEASE_SCRIPT for one key released by a Redlock that listens on `channel`: the key may be
 * reserved for its next call (speed/retake.ts), or given to `grant`, its own waiter at the head of
 * the queue (speed/own-grant.ts). A reservation with none of the Redlock's waiters queued on the
 * key is mode 'R', which reads no queue.
 */
export function oneKeyReleaseArgs(
  key: string,
  value: string,
  queue: string,
  channel: string,
  { reserve, grant, ownQueued }: OneKeyRelease,
): ScriptArgs {
  if (reserve !== undefined && grant === undefined && ownQueued === false) {
    return [1, key, value, "R", reserve.value, reserve.ttl];
  }
  const args: ScriptArgs =
    reserve === undefined
      ? [2, key, queue, value, "r", channel, "", 0]
      : [2, key, queue, value, "r", channel, reserve.value, reserve.ttl];
  if (grant !== undefined) args.push(grant.value, grant.ttl);
  return args;
}
