import calculateSlot from "cluster-key-slot";
import type { Cluster, Redis } from "ioredis";
import { type ScriptArgs, ScriptCaller } from "../speed/evalsha-bypass.js";
import { WriteBatcher } from "../speed/write-batching.js";
import { HandOverSubscriber } from "../waiting/hand-over-subscriber.js";
import { COMMANDS, STORE_SCRIPTS } from "./scripts.js";
import { ACQUIRED, type AcquireReply, type LockStore, type QueueTicket } from "./store.js";

/** A key's queue of waiters sits beside it: the lock key with this suffix (no braces: same hash tag). */
const QUEUE_SUFFIX = ":redlock-kit:waiters";
/** A key's fence counter sits beside it too (docs/fencing.md): never expires, never touched by release. */
export const FENCE_SUFFIX = ":redlock-kit:fence";

/**
 * One Redlock instance on an ioredis client: standalone, Sentinel or Cluster.
 * The scripts are defined once per client (ioredis sends them whole the first
 * time and recovers from NOSCRIPT); after that they are called by SHA. On a
 * Cluster, a multi-resource lock needs its resources in one hash slot (share a
 * `{tag}`), or Redis answers CROSSSLOT.
 */
export class RedisStore implements LockStore {
  readonly client: Redis | Cluster;
  readonly description: string;
  readonly #cluster: boolean;
  /** Calls the scripts, by EVALSHA once sent (speed/evalsha-bypass.ts). */
  readonly #scripts: ScriptCaller;
  /** Batches the writes of one event-loop phase (speed/write-batching.ts); none on a Cluster. */
  readonly #batcher: WriteBatcher | undefined;
  #subscriber: HandOverSubscriber | undefined;
  /** `SET NX GET` works here (Redis >= 7); false once the server refused its syntax. */
  #plainSet = true;
  /** Set by the first `SET NX GET` answer: until then a refusal of its syntax can still come (see #setNx). */
  #plainSetKnown = false;
  /** While #plainSetKnown is false: one-key acquires in flight by lock value, which a release waits for. */
  readonly #unknownSets = new Map<string, Promise<unknown>>();

  constructor(client: Redis | Cluster) {
    this.client = client;
    this.#cluster = "isCluster" in client && client.isCluster;
    this.description = describeClient(client);
    for (const [name, lua] of Object.entries(STORE_SCRIPTS)) defineOnce(client, name, lua);
    this.#scripts = new ScriptCaller(client, this.#cluster);
    this.#batcher = this.#cluster ? undefined : new WriteBatcher(client as Redis);
  }

  /**
   * A multi-key script on a Cluster must stay in one slot; say so before Redis answers CROSSSLOT.
   * A fenced lock needs each key's counter in the key's slot too.
   */
  checkKeys(keys: readonly string[], fencing?: boolean): void {
    if (!this.#cluster) return;
    if (keys.length > 1 && calculateSlot.generateMulti(keys as string[]) === -1) {
      throw new RangeError(
        `resources of one lock must share a hash slot on a Redis Cluster, got ${keys.map((k) => JSON.stringify(k)).join(", ")}: put the common part in braces, e.g. "{order:42}:payment" and "{order:42}:stock"`,
      );
    }
    const homeless = fencing ? keys.find((key) => besideKey(key, FENCE_SUFFIX) === undefined) : undefined;
    if (homeless !== undefined) {
      throw new RangeError(
        `a fence counter cannot share the hash slot of ${JSON.stringify(homeless)} on a Redis Cluster: give the resource a hash tag, e.g. "{order:42}"`,
      );
    }
  }

  acquire(keys: readonly string[], value: string, ttl: number, ticket?: QueueTicket): Promise<AcquireReply> {
    this.#batcher?.beforeSend();
    const queues = ticket === undefined ? undefined : this.#besideOf(keys, QUEUE_SUFFIX);
    if (queues === undefined) {
      if (keys.length === 1 && this.#plainSet) return this.#setNx(keys[0] as string, value, ttl);
      return this.#scripts.call(COMMANDS.acquire, [keys.length, ...keys, value, ttl], toAcquireReply);
    }
    const t = ticket as QueueTicket;
    const args: ScriptArgs = [keys.length * 2, ...keys, ...queues, value, ttl, entryOf(t, value), t.order, t.keepMs];
    return this.#scripts.call(COMMANDS.acquire, args, toAcquireReply);
  }

  /**
   * One key, nobody queued: `SET key value NX PX ttl GET`, one command instead of the acquire
   * script (Redis runs it in about half the time; the sequential bench rows show it). GET tells a
   * free key (nil) from another owner's (PTTL then asks how long it has left) and from our own
   * value (a SET re-sent after a reconnect, or a key handed to us with a short hold), which gets our
   * ttl by the extend script: a compare-and-PEXPIRE, so that if the lock was released meanwhile
   * (Redlock had its quorum without this answer) this second command cannot set the key again.
   * Redis 6 refuses NX with GET: the acquire script is used from then on; the acquires sent before
   * that was known are waited for by a release of their value, which would otherwise overtake the
   * script sent after the refusal and leave the key set.
   */
  #setNx(key: string, value: string, ttl: number): Promise<AcquireReply> {
    const setGet = (this.client as Redis).set(key, value, "PX", ttl, "NX", "GET") as Promise<string | null>;
    const reply = setGet.then(
      (old) => {
        this.#plainSetKnown = true;
        if (old === null) return ACQUIRED;
        if (old === value) {
          return this.#scripts.call(COMMANDS.extend, [1, key, value, ttl], (extended) =>
            extended === 1 ? ACQUIRED : { acquired: false as const, holderTtl: 0 },
          );
        }
        return this.client
          .pttl(key)
          .then((left) => ({ acquired: false, holderTtl: left === -1 ? -1 : Math.max(0, left) }));
      },
      (error: unknown) => {
        if (!(error instanceof Error) || !/syntax error/i.test(error.message)) throw error;
        this.#plainSet = false;
        this.#plainSetKnown = true;
        return this.#scripts.call(COMMANDS.acquire, [1, key, value, ttl], toAcquireReply);
      },
    );
    if (this.#plainSetKnown) return reply;
    this.#unknownSets.set(value, reply);
    const settled = () => this.#unknownSets.delete(value);
    reply.then(settled, settled);
    return reply;
  }

  /** Phase 1 of fencing: the acquire script's work, plus each taken key's counter incremented and returned. */
  acquireFenced(keys: readonly string[], value: string, ttl: number, ticket?: QueueTicket): Promise<AcquireReply> {
    this.#batcher?.beforeSend();
    // checkKeys refused keys whose counter has no home: this is defined
    const counters = this.#besideOf(keys, FENCE_SUFFIX) as string[];
    const queues = ticket === undefined ? undefined : this.#besideOf(keys, QUEUE_SUFFIX);
    if (queues === undefined) {
      return this.#scripts.call(
        COMMANDS.acquireFenced,
        [keys.length * 2, ...keys, ...counters, value, ttl],
        toFencedReply,
      );
    }
    const t = ticket as QueueTicket;
    const queued = [...keys, ...queues, ...counters];
    const args: ScriptArgs = [queued.length, ...queued, value, ttl, entryOf(t, value), t.order, t.keepMs];
    return this.#scripts.call(COMMANDS.acquireFenced, args, toFencedReply);
  }

  /** Phase 2 of fencing: raises each key's counter to its fence if every key still holds `value`. */
  raiseFences(keys: readonly string[], value: string, fences: readonly string[]): Promise<boolean> {
    this.#batcher?.beforeSend();
    const counters = this.#besideOf(keys, FENCE_SUFFIX) as string[];
    return this.#scripts.call(COMMANDS.raiseFences, [keys.length * 2, ...keys, ...counters, value, ...fences], isOne);
  }

  extend(keys: readonly string[], value: string, ttl: number): Promise<boolean> {
    this.#batcher?.beforeSend();
    return this.#scripts.call(COMMANDS.extend, [keys.length, ...keys, value, ttl], isOne);
  }

  /** Compare-and-delete, handing each deleted key to the oldest waiter queued on it. */
  release(keys: readonly string[], value: string): Promise<number> {
    const unknownSet = this.#unknownSets.get(value);
    if (unknownSet !== undefined) {
      const release = () => this.release(keys, value);
      return unknownSet.then(release, release);
    }
    this.#batcher?.beforeSend();
    const queues = this.#besideOf(keys, QUEUE_SUFFIX);
    if (queues === undefined) return this.#scripts.call(COMMANDS.release, [keys.length, ...keys, value], Number);
    return this.#scripts.call(COMMANDS.release, [keys.length * 2, ...keys, ...queues, value, "1"], Number);
  }

  /** Listens on a subscriber connection of its own, created on first use (the client is never put in subscriber mode). */
  onHandOver(channel: string, listener: (key: string, value: string) => void): Promise<() => void> {
    this.#subscriber ??= new HandOverSubscriber(this.client);
    return this.#subscriber.listen(channel, listener);
  }

  async leaveQueue(keys: readonly string[], value: string, ticket: QueueTicket): Promise<void> {
    const queues = this.#besideOf(keys, QUEUE_SUFFIX);
    if (queues === undefined) return;
    const entry = entryOf(ticket, value);
    await Promise.all(queues.map((queue) => this.client.zrem(queue, entry)));
  }

  /**
   * The keys beside `keys` with `suffix` (queues, fence counters), or undefined where one cannot
   * sit in its key's hash slot (a Cluster key without a hash tag whose braced form would hash
   * elsewhere): its waiters poll, and it cannot be fenced.
   */
  #besideOf(keys: readonly string[], suffix: string): string[] | undefined {
    const beside = keys.map((key) => (this.#cluster ? besideKey(key, suffix) : key + suffix));
    return beside.every((key) => key !== undefined) ? (beside as string[]) : undefined;
  }

  /** Closes the subscriber connection this store opened; the client it was given stays open. */
  close(): void {
    this.#subscriber?.close();
    this.#subscriber = undefined;
  }
}

/** A queue entry: the channel to tell, how long to hold the key for the waiter, its value. */
const entryOf = (ticket: QueueTicket, value: string) => `${ticket.channel}:${ticket.holdMs}:${value}`;

/** On a Cluster: the key plus the suffix when that hashes like the key itself (a hash-tagged key keeps its tag), else `{key}` plus the suffix. */
function besideKey(key: string, suffix: string): string | undefined {
  const sameTag = key + suffix;
  if (calculateSlot(sameTag) === calculateSlot(key)) return sameTag;
  const braced = `{${key}}${suffix}`;
  return calculateSlot(braced) === calculateSlot(key) ? braced : undefined;
}

/** The acquire script answers OK, or the holder's PTTL. */
function toAcquireReply(reply: unknown): AcquireReply {
  return reply === "OK" ? ACQUIRED : { acquired: false, holderTtl: Number(reply) };
}

/** The fenced acquire script answers the counters (an array of decimal strings), or the holder's PTTL. */
function toFencedReply(reply: unknown): AcquireReply {
  if (!Array.isArray(reply)) return { acquired: false, holderTtl: Number(reply) };
  return { acquired: true, fences: reply.map(String) };
}

const isOne = (reply: unknown) => reply === 1;

/** Adds `name` to the client unless it has it (a shared client may already carry it). */
export function defineOnce(client: Redis | Cluster, name: string, lua: string): void {
  // A shared client may already carry the command (another Redlock on the same client).
  if (typeof (client as unknown as Record<string, unknown>)[name] !== "function") {
    client.defineCommand(name, { lua });
  }
}

/** host:port/db or the socket path; never the password. */
export function describeClient(client: Redis | Cluster): string {
  if ("isCluster" in client && client.isCluster) return "cluster";
  const options = (client as Redis).options ?? {};
  if (options.sentinels) return `sentinel:${options.name ?? "mymaster"}/${options.db ?? 0}`;
  const where = options.path ?? `${options.host ?? "localhost"}:${options.port ?? 6379}`;
  return `${where}/${options.db ?? 0}`;
}
