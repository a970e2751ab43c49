import type { Cluster, Redis } from "ioredis";
import { HandOverSubscriber, ioredisSubscriber } from "./hand-over-subscriber.js";
import { atPhaseEnd, loopPhase } from "./loop-phase.js";
import {
  ACQUIRE_SCRIPT,
  COMMANDS,
  EXTEND_SCRIPT,
  FENCED_ACQUIRE_SCRIPT,
  RAISE_FENCES_SCRIPT,
  RELEASE_SCRIPT,
} from "./scripts.js";
import type { AcquireReply, LockStore, QueueTicket } from "./store.js";
import { OneKeySet } from "./stores/one-key-set.js";
import {
  acquireArgs,
  besideOf,
  checkClusterKeys,
  entryOf,
  FENCE_SUFFIX,
  isOne,
  QUEUE_SUFFIX,
  releaseArgs,
  type ScriptArgs,
  type ScriptName,
  SHAS,
  toAcquireReply,
  toFencedReply,
} from "./stores/script-calls.js";

export { FENCE_SUFFIX };

/** Commands per corked write: enough to save most writes, few enough that Redis starts early. */
export const MAX_BATCH = 16;

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
  readonly #oneKey = new OneKeySet();
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
    if (this.#cluster) checkClusterKeys(keys, fencing);
  }

  acquire(keys: readonly string[], value: string, ttl: number, ticket?: QueueTicket): Promise<AcquireReply> {
    this.#beforeSend();
    const queues = ticket === undefined ? undefined : besideOf(keys, QUEUE_SUFFIX, this.#cluster);
    const key = keys[0] as string;
    if (queues === undefined && keys.length === 1 && this.#oneKey.usable) {
      // one key, nobody queued: SET NX PX GET (one-key-set.ts)
      return this.#oneKey.acquire(value, {
        setGet: () => (this.client as Redis).set(key, value, "PX", ttl, "NX", "GET"),
        extend: () => this.#call(COMMANDS.extend, [1, key, value, ttl], isOne),
        pttl: () => this.client.pttl(key),
        script: () => this.#call(COMMANDS.acquire, [1, key, value, ttl], toAcquireReply),
      });
    }
    return this.#call(COMMANDS.acquire, acquireArgs(keys, value, ttl, queues, ticket), toAcquireReply);
  }

  /** Phase 1 of fencing: the acquire script's work, plus each taken key's counter incremented and returned. */
  acquireFenced(keys: readonly string[], value: string, ttl: number, ticket?: QueueTicket): Promise<AcquireReply> {
    this.#beforeSend();
    // checkKeys refused keys whose counter has no home: this is defined
    const counters = besideOf(keys, FENCE_SUFFIX, this.#cluster) as string[];
    const queues = ticket === undefined ? undefined : besideOf(keys, QUEUE_SUFFIX, this.#cluster);
    return this.#call(COMMANDS.acquireFenced, acquireArgs(keys, value, ttl, queues, ticket, counters), toFencedReply);
  }

  /** Phase 2 of fencing: raises each key's counter to its fence if every key still holds `value`. */
  raiseFences(keys: readonly string[], value: string, fences: readonly string[]): Promise<boolean> {
    this.#beforeSend();
    const counters = besideOf(keys, FENCE_SUFFIX, this.#cluster) as string[];
    return this.#call(COMMANDS.raiseFences, [keys.length * 2, ...keys, ...counters, value, ...fences], isOne);
  }

  extend(keys: readonly string[], value: string, ttl: number): Promise<boolean> {
    this.#beforeSend();
    return this.#call(COMMANDS.extend, [keys.length, ...keys, value, ttl], isOne);
  }

  /** Compare-and-delete, handing each deleted key to the oldest waiter queued on it (`requeue` queued again first). */
  release(keys: readonly string[], value: string, requeue?: QueueTicket): Promise<number> {
    this.#oneKey.released(value);
    this.#beforeSend();
    const queues = besideOf(keys, QUEUE_SUFFIX, this.#cluster);
    return this.#call(COMMANDS.release, releaseArgs(keys, value, queues, requeue), Number);
  }

  /** Listens on a subscriber connection of its own, created on first use (the client is never put in subscriber mode). */
  onHandOver(channel: string, listener: (key: string, value: string) => void): Promise<() => void> {
    this.#subscriber ??= new HandOverSubscriber(ioredisSubscriber(this.client));
    return this.#subscriber.listen(channel, listener);
  }

  async leaveQueue(keys: readonly string[], value: string, ticket: QueueTicket): Promise<void> {
    const queues = besideOf(keys, QUEUE_SUFFIX, this.#cluster);
    if (queues === undefined) return;
    const entry = entryOf(ticket, value);
    await Promise.all(queues.map((queue) => this.client.zrem(queue, entry)));
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
