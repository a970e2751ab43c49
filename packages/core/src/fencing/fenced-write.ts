import type { Cluster, Redis } from "ioredis";
import { type KnownClient, knownClient, notAClient } from "../stores/client-library.js";
import { callScript, type NodeRedisClientLike, senderOf } from "../stores/node-redis/client-shape.js";
import { defineOnce } from "../stores/redis-store.js";
import { FENCED_SET_SHA, isOne } from "../stores/script-calls.js";
import { COMMANDS, FENCED_SET_SCRIPT } from "../stores/scripts.js";
import { checkString, describeValue, isWellFormed } from "../validate.js";
import { isFence } from "./quorum-fences.js";

/** A resource written by `fencedSet`: its value and the fence of the write that stored it. */
export interface FencedValue {
  readonly value: string;
  readonly fence: string;
}

interface FencedSetClient {
  [COMMANDS.fencedSet](numKeys: 1, key: string, value: string, fence: string): Promise<number>;
}

function checkFence(fence: unknown): string {
  const text = typeof fence === "bigint" ? String(fence) : fence;
  if (isFence(text)) return text;
  const hint =
    fence === undefined ? " (was the lock taken with fencing: true? A lock on several resources has lock.fences)" : "";
  const problem = `fence must be a decimal integer from 1 to 2^63 - 1 as a string or bigint, got ${describeValue(fence)}${hint}`;
  throw typeof fence === "string" || typeof fence === "bigint" ? new RangeError(problem) : new TypeError(problem);
}

/**
 * A string Redis stores as given. Redis receives UTF-8, where every lone UTF-16 surrogate becomes
 * the same U+FFFD: two keys would be one hash (one resource's fence compared with another's), and a
 * value would read back as something else.
 */
function checkWellFormed(name: string, value: unknown): string {
  if (!isWellFormed(checkString(name, value))) {
    throw new TypeError(`${name} must be well-formed Unicode, got a lone surrogate in ${describeValue(value)}`);
  }
  return value as string;
}

function checkKey(key: unknown): string {
  if (checkWellFormed("key", key).length === 0) throw new TypeError("key must be a non-empty string");
  return key as string;
}

/** The client, told apart as ioredis or node-redis; anything else (a pool, a Promise, a store) is a TypeError. */
function checkClient(client: unknown): KnownClient {
  const known = knownClient(client);
  if (known !== undefined) return known;
  const what = notAClient(client);
  if (what !== undefined) throw new TypeError(`client is ${what}`);
  throw new TypeError(
    `client must be an ioredis client or Cluster, or a node-redis client, Cluster or Sentinel, got ${describeValue(client)}`,
  );
}

/**
 * The fenced write for a resource kept in Redis: stores `value` with `fence` in the hash `key`
 * (fields `value` and `fence`), atomically, only if `fence` is greater than the fence stored there.
 * A holder whose lock expired while it was paused carries an older fence than the holder after it,
 * so its late write is refused instead of overwriting the newer one (docs/fencing.md). Each
 * acquisition's fence admits one write: write the section's result once, at its end.
 *
 * The client is the one of the Redis that holds the resource (not necessarily a lock instance): an
 * ioredis client or Cluster, or a node-redis client, Cluster or Sentinel (by SHA, NOSCRIPT handled).
 * Resolves to `true` when written, `false` when refused (stop: someone newer wrote); rejects with
 * `TypeError`/`RangeError` for a bad key, value or fence (a key or value with a lone UTF-16
 * surrogate included: Redis would store another string), and with Redis's error ("not a fence"),
 * writing nothing, when the hash's stored fence is not a decimal integer (something else wrote it).
 *
 * @example
 * const lock = await dlm.acquire("report:7", 5000, { fencing: true });
 * try {
 *   const report = await build();
 *   if (!(await fencedSet(redis, "report:7", report, lock.fence))) console.warn("a newer holder wrote first");
 * } finally {
 *   await lock.release();
 * }
 */
export async function fencedSet(
  client: Redis | Cluster | NodeRedisClientLike,
  key: string,
  value: string,
  fence: string | bigint | undefined,
): Promise<boolean> {
  checkKey(key);
  checkWellFormed("value", value);
  const checked = checkFence(fence);
  const known = checkClient(client);
  if (known.library === "node-redis") {
    return callScript(
      senderOf(known.client, known.kind),
      FENCED_SET_SHA,
      FENCED_SET_SCRIPT,
      [1, key, value, checked],
      isOne,
    );
  }
  defineOnce(known.client, COMMANDS.fencedSet, FENCED_SET_SCRIPT);
  const written = await (known.client as unknown as FencedSetClient)[COMMANDS.fencedSet](1, key, value, checked);
  return isOne(written);
}

/** Reads what `fencedSet` stored at `key`: its value and fence, or `null` when nothing was written. */
export async function fencedGet(
  client: Redis | Cluster | NodeRedisClientLike,
  key: string,
): Promise<FencedValue | null> {
  checkKey(key);
  const known = checkClient(client);
  const [value, fence] = (
    known.library === "node-redis"
      ? await senderOf(known.client, known.kind)(key, ["HMGET", key, "value", "fence"])
      : await known.client.hmget(key, "value", "fence")
  ) as (string | null)[];
  return value == null || fence == null ? null : { value, fence };
}
