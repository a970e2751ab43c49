import type { Cluster, Redis } from "ioredis";
import { ScriptCaller } from "../speed/evalsha-bypass.js";
import { WriteBatcher } from "../speed/write-batching.js";
import { HandOverSubscriber, ioredisSubscriber } from "../waiting/hand-over-subscriber.js";
import { AcquiresFirst } from "./acquires-first.js";
import { InFlightAcquires } from "./in-flight-acquires.js";
import { InstanceChannel } from "./instance-channel.js";
import { type OneKeyCommands, OneKeySet } from "./one-key-set.js";
import {
  acquireArgs,
  checkClusterKeys,
  countersOf,
  entryOf,
  FENCE_SUFFIX,
  isOne,
  oneKeyReleaseArgs,
  queuesOf,
  releaseAgain,
  releaseArgs,
  toAcquireReply,
  toFencedReply,
  toRaiseReply,
} from "./script-calls.js";
import { COMMANDS } from "./scripts.js";
import type { AcquireReply, LockStore, OneKeyRelease, QueueTicket, RaiseReply } from "./store.js";

export { FENCE_SUFFIX };

/**
 * One Redlock instance on an ioredis client: standalone, Sentinel or Cluster.
 * Each script is sent whole the first time, then called by SHA, and sent whole again
 * after a NOSCRIPT (speed/evalsha-bypass.ts). On a Cluster, a multi-resource lock needs
 * its resources in one hash slot (share a `{tag}`), or Redis answers CROSSSLOT.
 */
export class RedisStore implements LockStore {
  readonly client: Redis | Cluster;
  readonly description: string;
  readonly #cluster: boolean;
  /**
   * A Cluster that reads from replicas: a refused SET NX GET's PTTL, read-only, would ask a replica
   * for the holder's ttl. One-key acquisitions run the acquire script, whose refusal carries the
   * PTTL read on the master, in the same step.
   */
  readonly #replicaReads: boolean;
  /** The client's keyPrefix, which ioredis puts before every key and Redis hashes with it (Cluster slots). */
  readonly #prefix: string;
  /** Not on a Cluster, whose PUBLISH counts only one node's subscribers (`LockStore.handsOver`): waiters poll there, queued nowhere. */
  readonly handsOver: boolean;
  /** Calls the scripts, by EVALSHA once sent (speed/evalsha-bypass.ts). */
  readonly #scripts: ScriptCaller;
  /** Batches the writes of one event-loop phase (speed/write-batching.ts); none on a Cluster. */
  readonly #batcher: WriteBatcher | undefined;
  /** On a Cluster, whose client may send an acquire again after later commands: the call's next attempt and releases wait for it (acquires-first.ts). */
  readonly #acquiresFirst: AcquiresFirst | undefined;
  #subscriber: HandOverSubscriber | undefined;
  readonly #oneKey = new OneKeySet();
  readonly #inFlight = new InFlightAcquires();
  /** This instance's name of a Redlock's hand-over channel (instance-channel.ts). */
  readonly #channel = new InstanceChannel();
  /** Give-backs that queue their waiter again, until answered: marked when the waiter leaves the queues. */
  readonly #requeues = new InFlightAcquires();
  readonly #oneKeyCommands: OneKeyCommands = {
    setGet: (key, value, ttl) => (this.client as Redis).set(key, value, "PX", ttl, "NX", "GET"),
    extend: (key, value, ttl) => this.#scripts.call(COMMANDS.extend, [1, key, value, ttl], isOne),
    pttl: (key) => this.client.pttl(key),
    script: (key, value, ttl) =>
      this.#inFlight.send(value, (wanted) =>
        this.#scripts.call(COMMANDS.acquire, [1, key, value, ttl], toAcquireReply, wanted),
      ),
  };

  constructor(client: Redis | Cluster) {
    this.client = client;
    this.#cluster = "isCluster" in client && client.isCluster;
    this.#replicaReads = readsFromReplicas(client);
    this.handsOver = !this.#cluster;
    this.#prefix = String(client.options.keyPrefix ?? "");
    this.description = describeClient(client);
    this.#scripts = new ScriptCaller(client, this.#cluster);
    this.#batcher = this.#cluster ? undefined : new WriteBatcher(client as Redis);
    this.#acquiresFirst = this.#cluster ? new AcquiresFirst() : undefined;
  }

  /**
   * A multi-key script on a Cluster must stay in one slot; say so before Redis answers CROSSSLOT.
   * A fenced lock needs each key's counter in the key's slot too.
   */
  checkKeys(keys: readonly string[], fencing?: boolean): void {
    if (this.#cluster) checkClusterKeys(keys, fencing, this.#prefix);
  }

  acquire(
    keys: readonly string[],
    value: string,
    ttl: number,
    ticket?: QueueTicket,
    budgetMs?: number,
  ): Promise<AcquireReply> {
    if (this.#acquiresFirst === undefined) return this.#acquire(keys, value, ttl, ticket, budgetMs);
    return this.#acquiresFirst.acquire(value, () => this.#acquire(keys, value, ttl, ticket, budgetMs));
  }

  #acquire(
    keys: readonly string[],
    value: string,
    ttl: number,
    ticket: QueueTicket | undefined,
    budgetMs: number | undefined,
  ): Promise<AcquireReply> {
    this.#batcher?.beforeSend();
    const queues = ticket === undefined ? undefined : queuesOf(keys, this.#cluster);
    if (queues === undefined && keys.length === 1 && this.#oneKey.usable && !this.#replicaReads) {
      // one key, nobody queued: SET NX PX GET (one-key-set.ts)
      return this.#oneKey.acquire(keys[0] as string, value, ttl, this.#oneKeyCommands, budgetMs);
    }
    return this.#inFlight.send(value, (wanted) =>
      this.#scripts.call(
        COMMANDS.acquire,
        acquireArgs(keys, value, ttl, queues, this.#channel.ticket(ticket)),
        toAcquireReply,
        wanted,
      ),
    );
  }

  /** Phase 1 of fencing: the acquire script's work, plus each taken key's counter incremented and returned. */
  acquireFenced(keys: readonly string[], value: string, ttl: number, ticket?: QueueTicket): Promise<AcquireReply> {
    // checkKeys refused keys whose counter has no home: this is defined
    const counters = countersOf(keys, this.#cluster, this.#prefix) as string[];
    const queues = ticket === undefined ? undefined : queuesOf(keys, this.#cluster);
    const send = () => {
      this.#batcher?.beforeSend();
      return this.#inFlight.send(value, (wanted) =>
        this.#scripts.call(
          COMMANDS.acquireFenced,
          acquireArgs(keys, value, ttl, queues, this.#channel.ticket(ticket), counters),
          toFencedReply,
          wanted,
        ),
      );
    };
    return this.#acquiresFirst === undefined ? send() : this.#acquiresFirst.acquire(value, send);
  }

  /** Phase 2 of fencing: raises each key's counter to its fence if every key still holds `value`. */
  raiseFences(keys: readonly string[], value: string, fences: readonly string[]): Promise<RaiseReply> {
    this.#batcher?.beforeSend();
    const counters = countersOf(keys, this.#cluster, this.#prefix) as string[];
    return this.#scripts.call(
      COMMANDS.raiseFences,
      [keys.length * 2, ...keys, ...counters, value, ...fences],
      toRaiseReply,
    );
  }

  extend(keys: readonly string[], value: string, ttl: number): Promise<boolean> {
    this.#batcher?.beforeSend();
    return this.#scripts.call(COMMANDS.extend, [keys.length, ...keys, value, ttl], isOne);
  }

  /** Compare-and-delete, handing each deleted key to the oldest waiter queued on it (the giver of `ticket` queued again first). */
  release(keys: readonly string[], value: string, ticket?: QueueTicket, resend?: () => boolean): Promise<number> {
    const requeue = this.#channel.ticket(ticket);
    this.#oneKey.released(value);
    this.#inFlight.released(value);
    this.#batcher?.beforeSend();
    const queues = queuesOf(keys, this.#cluster);
    if (this.#acquiresFirst !== undefined) {
      const send = () =>
        this.#scripts.call(COMMANDS.release, releaseArgs(keys, value, queues, requeue), Number, resend);
      return this.#acquiresFirst.release(value, send, resend);
    }
    const args = releaseArgs(keys, value, queues, requeue);
    if (requeue === undefined) return this.#scripts.call(COMMANDS.release, args, Number, resend);
    return this.#requeues.send(value, (inLine) =>
      this.#scripts.call(COMMANDS.release, args, Number, resend, releaseAgain(keys, value, queues, requeue, inLine)),
    );
  }

  /** `release` for one key by the Redlock listening on `channel`: reserved for its next call, or granted to its own waiter (`LockStore.releaseOne`). */
  releaseOne(key: string, value: string, channel: string, how: OneKeyRelease): Promise<number> {
    this.#oneKey.released(value);
    this.#inFlight.released(value);
    const queue = queuesOf([key], this.#cluster)?.[0];
    if (queue === undefined) return this.release([key], value);
    this.#batcher?.beforeSend();
    return this.#scripts.call(
      COMMANDS.release,
      oneKeyReleaseArgs(key, value, queue, this.#channel.name(channel), how),
      Number,
    );
  }

  /** Listens on a subscriber connection of its own, created on first use (the client is never put in subscriber mode). */
  onHandOver(
    channel: string,
    listener: (key: string, value: string, server: string | undefined) => void,
    subscribedAgain?: () => void,
  ): Promise<() => void> {
    this.#subscriber ??= new HandOverSubscriber(ioredisSubscriber(this.client));
    // A client with a keyPrefix sends prefixed keys, so the script names the key with its prefix;
    // the waiter knows it without.
    const prefix = this.client.options.keyPrefix;
    const name = this.#channel.name(channel);
    if (prefix === undefined || prefix === "") return this.#subscriber.listen(name, listener, subscribedAgain);
    return this.#subscriber.listen(
      name,
      (key, value, server) => listener(key.startsWith(prefix) ? key.slice(prefix.length) : key, value, server),
      subscribedAgain,
    );
  }

  /** Its ZREM goes behind any attempt or requeue in flight: one answered NOSCRIPT later does not queue it again. */
  async leaveQueue(keys: readonly string[], value: string, ticket: QueueTicket): Promise<void> {
    this.#inFlight.released(value);
    this.#requeues.released(value);
    const queues = queuesOf(keys, this.#cluster);
    if (queues === undefined) return;
    const entry = entryOf(this.#channel.ticket(ticket), value);
    await Promise.all(queues.map((queue) => this.client.zrem(queue, entry)));
  }

  /** Closes the subscriber connection this store opened; the client it was given stays open. */
  close(): void {
    this.#subscriber?.close();
    this.#subscriber = undefined;
  }
}

/**
 * Whether `client` is a Cluster whose `scaleReads` is not "master": ioredis then sends read-only
 * commands (GET, PTTL, and pipelines of nothing else) to replicas, which replicate asynchronously
 * and may not have a lock taken a moment ago. Scripts and MULTI are not read-only: they go to the
 * slot's master whatever `scaleReads` says.
 */
export function readsFromReplicas(client: Redis | Cluster): boolean {
  return "isCluster" in client && client.isCluster && (client as Cluster).options.scaleReads !== "master";
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
