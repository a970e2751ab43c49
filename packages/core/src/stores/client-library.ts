import { Cluster, Redis } from "ioredis";
import { isLegacyMode, type NodeRedisBase, type NodeRedisKind, nodeRedisKind } from "./node-redis/client-shape.js";

/**
 * A Redis client as redlock-kit tells it apart, once for every caller (Redlock's instances and
 * `fencedSet`/`fencedGet`): ioredis, or node-redis in one of its three shapes.
 */
export type KnownClient =
  | { readonly library: "ioredis"; readonly client: Redis | Cluster }
  | { readonly library: "node-redis"; readonly kind: NodeRedisKind; readonly client: NodeRedisBase };

function isIoredisClient(value: unknown): value is Redis | Cluster {
  if (value instanceof Redis || value instanceof Cluster) return true;
  // another installed copy of ioredis
  const v = value as { defineCommand?: unknown; evalsha?: unknown } | null;
  return (
    typeof v === "object" && v !== null && typeof v.defineCommand === "function" && typeof v.evalsha === "function"
  );
}

/** Which library `value` is a client of, or undefined when it is neither (see `notAClient`). */
export function knownClient(value: unknown): KnownClient | undefined {
  // first: ioredis clients also have `sendCommand` and `duplicate`, but no `isOpen`
  if (isIoredisClient(value)) return { library: "ioredis", client: value };
  const kind = nodeRedisKind(value);
  return kind === undefined ? undefined : { library: "node-redis", kind, client: value as NodeRedisBase };
}

/**
 * What an object with a `sendCommand()` (or a Promise) is when it is no client redlock-kit can use,
 * or undefined. Such an object must not be read as ioredis options: `new Redis(it)` would be a
 * client of localhost:6379, another server than the one the caller meant.
 */
export function notAClient(value: unknown): string | undefined {
  const v = value as { sendCommand?: unknown; execute?: unknown; then?: unknown; options?: unknown } | null;
  if (typeof v !== "object" || v === null) return undefined;
  if (typeof v.then === "function") {
    return "a Promise (a node-redis connect() not awaited?): give the client itself, e.g. await client.connect() first";
  }
  if (typeof v.sendCommand !== "function") return undefined;
  if (typeof v.execute === "function" && "isOpen" in v) {
    return "a node-redis client pool (createClientPool): each command may run on another of its connections, so a give-back could overtake the acquire it undoes; give a client (createClient()), Cluster or Sentinel";
  }
  if (isLegacyMode(v)) {
    return "a node-redis v4 client in legacyMode (its sendCommand takes a callback and returns no Promise): give a node-redis v5 or v6 client, Cluster or Sentinel, or an ioredis client";
  }
  if (!("isOpen" in v)) {
    return "a node-redis legacy-mode client (.legacy()) or a client of another library: give the node-redis client (createClient()), Cluster or Sentinel itself, or an ioredis client";
  }
  return "a client redlock-kit does not know: give an ioredis client or Cluster, or a node-redis (v5, v6) client, Cluster or Sentinel";
}
