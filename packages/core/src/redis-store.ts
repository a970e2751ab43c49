import { createHash } from "node:crypto";
import calculateSlot from "cluster-key-slot";
import type { Cluster, Redis } from "ioredis";
import { HandOverSubscriber } from "./hand-over-subscriber.js";
import { atPhaseEnd, loopPhase } from "./loop-phase.js";
import {
  ACQUIRE_SCRIPT,
  COMMANDS,
  EXTEND_SCRIPT,
  FENCED_ACQUIRE_SCRIPT,
  RAISE_FENCES_SCRIPT,
  RELEASE_SCRIPT,
} from "./scripts.js";
import { ACQUIRED, type AcquireReply, type LockStore, type QueueTicket } from "./store.js";

/** Commands per corked write: enough to save most writes, few enough that Redis starts early. */
export const MAX_BATCH = 16;

type ScriptArgs = [numKeys: number, ...rest: (string | number)[]];

/** A key's queue of waiters sits beside it: the lock key with this suffix (no braces: same hash tag). */
const QUEUE_SUFFIX = ":redlock-kit:waiters";
/** A key's fence counter sits beside it too (docs/fencing.md): never expires, never touched by release. */
export const FENCE_SUFFIX = ":redlock-kit:fence";
/** The scripts a store calls (the fenced write is the user's, on the resource's client: fenced-write.ts). */
type ScriptName = Exclude<(typeof COMMANDS)[keyof typeof COMMANDS], typeof COMMANDS.fencedSet>;

const sha1 = (lua: string) => createHash("sha1").update(lua).digest("hex");
/** The name Redis knows each script by once it has been sent whole. */
const SHAS: Readonly<Record<ScriptName, string>> = {
  [COMMANDS.acquire]: sha1(ACQUIRE_SCRIPT),
  [COMMANDS.extend]: sha1(EXTEND_SCRIPT),
  [COMMANDS.release]: sha1(RELEASE_SCRIPT),
  [COMMANDS.acquireFenced]: sha1(FENCED_ACQUIRE_SCRIPT),
  [COMMANDS.raiseFences]: sha1(RAISE_FENCES_SCRIPT),
};

/** The commands `defineCommand` adds, called with the key count first (numberOfKeys is left unset). */
interface ScriptedClient {
  [COMMANDS.acquire](...args: ScriptArgs): Promise<"OK" | number>;
  [COMMANDS.extend](...args: ScriptArgs): Promise<number>;
  [COMMANDS.release](...args: ScriptArgs): Promise<number>;
  [COMMANDS.acquireFenced](...args: ScriptArgs): Promise<string[] | number>;
  [COMMANDS.raiseFences](...args: ScriptArgs): Promise<number>;
}

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
  readonly #scripts: ScriptedClient;
  readonly #cluster: boolean;
  #subscriber: HandOverSubscriber | undefined;
  /** `SET NX GET` works here (Redis >= 7); false once the server refused its syntax. */
  #plainSet = true;
  /** Set by the first `SET NX GET` answer: until then a refusal of its syntax can still come (see #setNx). */
  #plainSetKnown = false;
  /** While #plainSetKnown is false: the values of one-key acquires in flight, true once released (see #setNx). */
  readonly #unknownSets = new Map<string, boolean>();
  /** Scripts this store has called once through the defined command, which sent them whole. */
  readonly #sent = new Set<ScriptName>();
  /** The event-loop phase of our last command; the socket we corked, with how many commands it holds. */
  #phase = -1;
  #corked: Redis["stream"] | undefined;
  #batched = 0;

  constructor(client: Redis | Cluster) {
    this.client = client;
    this.#cluster = "isCluster" in client && client.isCluster;
    this.description = describeClient(client);
    defineOnce(client, COMMANDS.acquire, ACQUIRE_SCRIPT);
    defineOnce(client, COMMANDS.extend, EXTEND_SCRIPT);
    defineOnce(client, COMMANDS.release, RELEASE_SCRIPT);
    defineOnce(client, COMMANDS.acquireFenced, FENCED_ACQUIRE_SCRIPT);
    defineOnce(client, COMMANDS.raiseFences, RAISE_FENCES_SCRIPT);
    this.#scripts = client as unknown as ScriptedClient;
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
    this.#beforeSend();
    const queues = ticket === undefined ? undefined : this.#besideOf(keys, QUEUE_SUFFIX);
    if (queues === undefined) {
      if (keys.length === 1 && this.#plainSet) return this.#setNx(keys[0] as string, value, ttl);
      return this.#call(COMMANDS.acquire, [keys.length, ...keys, value, ttl], toAcquireReply);
    }
    const t = ticket as QueueTicket;
    const args: ScriptArgs = [keys.length * 2, ...keys, ...queues, value, ttl, entryOf(t, value), t.order, t.keepMs];
    return this.#call(COMMANDS.acquire, args, toAcquireReply);
  }

  /**
   * One key, nobody queued: `SET key value NX PX ttl GET`, one command instead of the acquire
   * script (Redis runs it in about half the time; the sequential bench rows show it). GET tells a
   * free key (nil) from another owner's (PTTL then asks how long it has left) and from our own
   * value (a SET re-sent after a reconnect, or a key handed to us with a short hold), which gets our
   * ttl by the extend script: a compare-and-PEXPIRE, so that if the lock was released meanwhile
   * (Redlock had its quorum without this answer) this second command cannot set the key again.
   * Redis 6 refuses NX with GET: the acquire script is used from then on. An acquire refused so
   * whose value was released meanwhile sends nothing more (the script would land after that
   * release and set the key again): it answers "not acquired".
   */
  #setNx(key: string, value: string, ttl: number): Promise<AcquireReply> {
    const setGet = (this.client as Redis).set(key, value, "PX", ttl, "NX", "GET") as Promise<string | null>;
    const reply = setGet.then(
      (old) => {
        this.#plainSetKnown = true;
        if (old === null) return ACQUIRED;
        if (old === value) {
          return this.#call(COMMANDS.extend, [1, key, value, ttl], (extended) =>
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
        if (this.#unknownSets.get(value) === true) return { acquired: false as const, holderTtl: 0 };
        return this.#call(COMMANDS.acquire, [1, key, value, ttl], toAcquireReply);
      },
    );
    if (this.#plainSetKnown) return reply;
    this.#unknownSets.set(value, false);
    const settled = () => this.#unknownSets.delete(value);
    reply.then(settled, settled);
    return reply;
  }

  /** Phase 1 of fencing: the acquire script's work, plus each taken key's counter incremented and returned. */
  acquireFenced(keys: readonly string[], value: string, ttl: number, ticket?: QueueTicket): Promise<AcquireReply> {
    this.#beforeSend();
    // checkKeys refused keys whose counter has no home: this is defined
    const counters = this.#besideOf(keys, FENCE_SUFFIX) as string[];
    const queues = ticket === undefined ? undefined : this.#besideOf(keys, QUEUE_SUFFIX);
    if (queues === undefined) {
      return this.#call(COMMANDS.acquireFenced, [keys.length * 2, ...keys, ...counters, value, ttl], toFencedReply);
    }
    const t = ticket as QueueTicket;
    const queued = [...keys, ...queues, ...counters];
    const args: ScriptArgs = [queued.length, ...queued, value, ttl, entryOf(t, value), t.order, t.keepMs];
    return this.#call(COMMANDS.acquireFenced, args, toFencedReply);
  }

  /** Phase 2 of fencing: raises each key's counter to its fence if every key still holds `value`. */
  raiseFences(keys: readonly string[], value: string, fences: readonly string[]): Promise<boolean> {
    this.#beforeSend();
    const counters = this.#besideOf(keys, FENCE_SUFFIX) as string[];
    return this.#call(COMMANDS.raiseFences, [keys.length * 2, ...keys, ...counters, value, ...fences], isOne);
  }

  extend(keys: readonly string[], value: string, ttl: number): Promise<boolean> {
    this.#beforeSend();
    return this.#call(COMMANDS.extend, [keys.length, ...keys, value, ttl], isOne);
  }

  /** Compare-and-delete, handing each deleted key to the oldest waiter queued on it (`requeue` queued again first). */
  release(keys: readonly string[], value: string, requeue?: QueueTicket): Promise<number> {
    if (this.#unknownSets.has(value)) this.#unknownSets.set(value, true);
    this.#beforeSend();
    const queues = this.#besideOf(keys, QUEUE_SUFFIX);
    if (queues === undefined) return this.#call(COMMANDS.release, [keys.length, ...keys, value], Number);
    const args: ScriptArgs = [keys.length * 2, ...keys, ...queues, value, "1"];
    if (requeue !== undefined) args.push(entryOf(requeue, value), requeue.order, requeue.keepMs);
    return this.#call(COMMANDS.release, args, Number);
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

  /**
   * A plain EVALSHA once the script has been sent: ioredis's `defineCommand` wraps every call in
   * a Command subclass and a retry promise, which cost 1–2 µs of CPU per command, 6 commands per
   * lock+unlock on 3 instances (sequential on 3 instances: 1.11x the floor this way, 1.00x through
   * the defined command, in one A/B run; bench/). The first call of each script, and any call
   * Redis answers NOSCRIPT (a restart, SCRIPT FLUSH, a failover), goes through the defined
   * command, which sends the script whole. A Cluster always uses it: its nodes load scripts
   * one by one.
   */
  #call<T>(name: ScriptName, args: ScriptArgs, parse: (reply: unknown) => T): Promise<T> {
    const defined = (): Promise<T> => (this.#scripts[name](...args) as Promise<unknown>).then(parse);
    if (this.#cluster || !this.#sent.has(name)) {
      this.#sent.add(name);
      return defined();
    }
    const bySha: Promise<unknown> = (this.client as Redis).evalsha(SHAS[name], ...args);
    return bySha.then(parse, (error: unknown) => {
      if (!(error instanceof Error) || !error.message.includes("NOSCRIPT")) throw error;
      return defined();
    });
  }

  /**
   * Nagle's rule for Redis commands, per event-loop phase: the first command of a phase is written
   * at once; the ones that follow in the same phase (the requests an HTTP server read together,
   * the replies of a burst answered together) are corked and leave together, because a loopback
   * write costs more than the rest of a lock's client-side work. A batch is flushed after
   * `MAX_BATCH` commands, and whatever is left at `setImmediate`, the end of the phase: one
   * write for a whole burst would leave Redis idle while we build it, and us idle while Redis
   * runs it (64 concurrent locks on one instance: 1.1x the raw-ioredis floor, 0.7x with one
   * write per burst). Commands still in flight from an earlier phase delay nothing: a
   * third instance that answers after the quorum must not hold back the next lock.
   * ioredis auto-pipelining batches too, but delays a lone command and builds a Pipeline per
   * write (half the sequential throughput, in bench/).
   */
  #beforeSend(): void {
    if (this.#cluster) return;
    const phase = loopPhase();
    if (this.#phase !== phase) {
      this.#phase = phase;
      return;
    }
    if (this.#corked !== undefined) {
      if (++this.#batched < MAX_BATCH) return;
      this.#uncork();
    }
    const client = this.client as Redis;
    const stream = client.stream;
    // not connected yet: ioredis queues the command and sends it once ready
    if (client.status !== "ready" || !stream?.writable) return;
    this.#corked = stream;
    this.#batched = 1;
    stream.cork();
    atPhaseEnd(this.#uncork);
  }

  readonly #uncork = (): void => {
    const stream = this.#corked;
    this.#corked = undefined;
    stream?.uncork();
  };

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
