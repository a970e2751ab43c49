import { HandOverSubscriber } from "../../waiting/hand-over-subscriber.js";
import { AcquiresFirst } from "../acquires-first.js";
import { InFlightAcquires } from "../in-flight-acquires.js";
import { InstanceChannel } from "../instance-channel.js";
import { type OneKeyCommands, OneKeySet } from "../one-key-set.js";
import {
  acquireArgs,
  checkClusterKeys,
  countersOf,
  entryOf,
  isOne,
  oneKeyReleaseArgs,
  queuesOf,
  releaseAgain,
  releaseArgs,
  type ScriptArgs,
  SHAS,
  toAcquireReply,
  toFencedReply,
  toRaiseReply,
} from "../script-calls.js";
import { COMMANDS, STORE_SCRIPTS, type StoreScript } from "../scripts.js";
import type { AcquireReply, LockStore, OneKeyRelease, QueueTicket, RaiseReply, StoredKey } from "../store.js";
import {
  callScript,
  describeNodeRedis,
  type NodeRedisBase,
  type NodeRedisClientLike,
  type NodeRedisKind,
  nodeRedisKind,
  type Send,
  senderOf,
} from "./client-shape.js";
import { nodeRedisSubscriber } from "./node-redis-subscriber.js";
import { type WatchedNodeRedis, watchedNodeRedis } from "./watched-client.js";

/**
 * One Redlock instance on a node-redis client (the `redis` package): `createClient()`,
 * `createCluster()` or `createSentinel()`, connected or connecting. It runs the same scripts,
 * queues and fence counters as `RedisStore`, so both kinds of client lock the same keys together
 * (mixed lists, two services on two client libraries). `new Redlock([client])` builds it for you;
 * core never imports `redis` itself.
 *
 * Scripts are called by SHA (EVALSHA), and sent whole (EVAL) once when Redis answers NOSCRIPT (a
 * restart, SCRIPT FLUSH, a failover). A client that is not open (never connected, or closed)
 * refuses every command at once: its vote counts as unavailable, never as a hang.
 *
 * @example
 * import { createClient } from "redis";
 * const clients = await Promise.all(
 *   ["redis://a:6379", "redis://b:6379", "redis://c:6379"].map((url) => createClient({ url }).connect()),
 * );
 * const dlm = new Redlock(clients);
 */
export class NodeRedisStore implements LockStore {
  readonly client: NodeRedisClientLike;
  readonly kind: NodeRedisKind;
  readonly description: string;
  /** What server-identity.ts watches to tell one server listed twice. */
  readonly watched: WatchedNodeRedis;
  readonly #send: Send;
  readonly #cluster: boolean;
  /** Not on a Cluster, whose PUBLISH counts only one node's subscribers (`LockStore.handsOver`): waiters poll there, queued nowhere. */
  readonly handsOver: boolean;
  /**
   * On a Cluster, whose client sends a command answered MOVED or ASK again by itself, once it read
   * the slots again, after the commands it sent meanwhile to the slot's new owner: the call's next
   * attempt and releases wait for it (acquires-first.ts).
   */
  readonly #acquiresFirst: AcquiresFirst | undefined;
  #subscriber: HandOverSubscriber | undefined;
  readonly #oneKey = new OneKeySet();
  readonly #inFlight = new InFlightAcquires();
  /** This instance's name of a Redlock's hand-over channel (instance-channel.ts). */
  readonly #channel = new InstanceChannel();
  /** Give-backs that queue their waiter again, until answered: marked when the waiter leaves the queues. */
  readonly #requeues = new InFlightAcquires();
  readonly #oneKeyCommands: OneKeyCommands = {
    setGet: (key, value, ttl) => this.#send(key, ["SET", key, value, "PX", String(ttl), "NX", "GET"]),
    extend: (key, value, ttl) => this.#call(COMMANDS.extend, [1, key, value, ttl], isOne),
    pttl: (key) => this.#send(key, ["PTTL", key]),
    script: (key, value, ttl) =>
      this.#inFlight.send(value, (wanted) =>
        this.#call(COMMANDS.acquire, [1, key, value, ttl], toAcquireReply, wanted),
      ),
  };

  constructor(client: NodeRedisClientLike) {
    const kind = nodeRedisKind(client);
    if (kind === undefined) {
      throw new TypeError("NodeRedisStore needs a node-redis client, Cluster or Sentinel (the redis package)");
    }
    const base = client as unknown as NodeRedisBase;
    this.client = client;
    this.kind = kind;
    this.#cluster = kind === "cluster";
    this.handsOver = !this.#cluster;
    this.#acquiresFirst = this.#cluster ? new AcquiresFirst() : undefined;
    this.#send = senderOf(base, kind);
    this.description = describeNodeRedis(base, kind);
    this.watched = watchedNodeRedis(base, kind, this.#send);
  }

  /** On a Cluster, the keys of one lock (and their fence counters) must share a hash slot. */
  checkKeys(keys: readonly string[], fencing?: boolean): void {
    if (this.#cluster) checkClusterKeys(keys, fencing);
  }

  acquire(
    keys: readonly string[],
    value: string,
    ttl: number,
    ticket?: QueueTicket,
    budgetMs?: number,
  ): Promise<AcquireReply> {
    const queues = ticket === undefined ? undefined : queuesOf(keys, this.#cluster);
    const send = () => {
      if (queues === undefined && keys.length === 1 && this.#oneKey.usable) {
        // one key, nobody queued: SET NX PX GET, as RedisStore (one-key-set.ts)
        return this.#oneKey.acquire(keys[0] as string, value, ttl, this.#oneKeyCommands, budgetMs);
      }
      return this.#inFlight.send(value, (wanted) =>
        this.#call(
          COMMANDS.acquire,
          acquireArgs(keys, value, ttl, queues, this.#channel.ticket(ticket)),
          toAcquireReply,
          wanted,
        ),
      );
    };
    return this.#acquiresFirst === undefined ? send() : this.#acquiresFirst.acquire(value, send);
  }

  /** Phase 1 of fencing: the acquire script's work, plus each taken key's counter incremented and returned. */
  acquireFenced(keys: readonly string[], value: string, ttl: number, ticket?: QueueTicket): Promise<AcquireReply> {
    // checkKeys refused keys whose counter has no home: this is defined
    const counters = countersOf(keys, this.#cluster) as string[];
    const queues = ticket === undefined ? undefined : queuesOf(keys, this.#cluster);
    const send = () =>
      this.#inFlight.send(value, (wanted) =>
        this.#call(
          COMMANDS.acquireFenced,
          acquireArgs(keys, value, ttl, queues, this.#channel.ticket(ticket), counters),
          toFencedReply,
          wanted,
        ),
      );
    return this.#acquiresFirst === undefined ? send() : this.#acquiresFirst.acquire(value, send);
  }

  /** Phase 2 of fencing: raises each key's counter to its fence if every key still holds `value`. */
  raiseFences(keys: readonly string[], value: string, fences: readonly string[]): Promise<RaiseReply> {
    const counters = countersOf(keys, this.#cluster) as string[];
    return this.#call(COMMANDS.raiseFences, [keys.length * 2, ...keys, ...counters, value, ...fences], toRaiseReply);
  }

  extend(keys: readonly string[], value: string, ttl: number): Promise<boolean> {
    return this.#call(COMMANDS.extend, [keys.length, ...keys, value, ttl], isOne);
  }

  /** Compare-and-delete, handing each deleted key to the oldest waiter queued on it (the giver of `ticket` queued again first). */
  release(keys: readonly string[], value: string, ticket?: QueueTicket, resend?: () => boolean): Promise<number> {
    const requeue = this.#channel.ticket(ticket);
    this.#oneKey.released(value);
    this.#inFlight.released(value);
    const queues = queuesOf(keys, this.#cluster);
    const args = releaseArgs(keys, value, queues, requeue);
    if (this.#acquiresFirst !== undefined) {
      // a Cluster queues no waiter: nothing to queue again
      return this.#acquiresFirst.release(value, () => this.#call(COMMANDS.release, args, Number, resend), resend);
    }
    if (requeue === undefined) return this.#call(COMMANDS.release, args, Number, resend);
    return this.#requeues.send(value, (inLine) =>
      this.#call(COMMANDS.release, args, Number, resend, releaseAgain(keys, value, queues, requeue, inLine)),
    );
  }

  /** `release` for one key by the Redlock listening on `channel`: reserved for its next call, or granted to its own waiter (`LockStore.releaseOne`). */
  releaseOne(key: string, value: string, channel: string, how: OneKeyRelease): Promise<number> {
    this.#oneKey.released(value);
    this.#inFlight.released(value);
    const queue = queuesOf([key], this.#cluster)?.[0];
    if (queue === undefined) return this.release([key], value);
    return this.#call(COMMANDS.release, oneKeyReleaseArgs(key, value, queue, this.#channel.name(channel), how), Number);
  }

  /** Listens on a subscriber connection of its own (a `duplicate()`), opened on first use and closed by `close()`. */
  onHandOver(
    channel: string,
    listener: (key: string, value: string, server: string | undefined) => void,
    subscribedAgain?: () => void,
  ): Promise<() => void> {
    this.#subscriber ??= new HandOverSubscriber(
      nodeRedisSubscriber(this.client as unknown as NodeRedisBase, this.kind),
    );
    return this.#subscriber.listen(this.#channel.name(channel), listener, subscribedAgain);
  }

  /** Its ZREM goes behind any attempt or requeue in flight: one answered NOSCRIPT later does not queue it again. */
  async leaveQueue(keys: readonly string[], value: string, ticket: QueueTicket): Promise<void> {
    this.#inFlight.released(value);
    this.#requeues.released(value);
    const queues = queuesOf(keys, this.#cluster);
    if (queues === undefined) return;
    const entry = entryOf(this.#channel.ticket(ticket), value);
    await Promise.all(queues.map((queue) => this.#send(queue, ["ZREM", queue, entry])));
  }

  /** GET and PTTL, sent together (node-redis writes the commands of one tick at once); no script. */
  async inspect(key: string): Promise<StoredKey | null> {
    const [value, ttl] = await Promise.all([this.#send(key, ["GET", key]), this.#send(key, ["PTTL", key])]);
    // The two commands are not atomic: a key that expired between them (PTTL -2) is free.
    if (value === null || value === undefined || Number(ttl) === -2) return null;
    return { value: String(value), ttlMs: Number(ttl) };
  }

  /** Deletes `key` whatever it holds (`Redlock.forceRelease()` only). Resolves to whether it existed. */
  async forceDelete(key: string): Promise<boolean> {
    return Number(await this.#send(key, ["DEL", key])) > 0;
  }

  /** Closes the subscriber connection this store opened; the client it was given stays open. */
  close(): void {
    this.#subscriber?.close();
    this.#subscriber = undefined;
  }

  /** Scripts by SHA, NOSCRIPT handled (`callScript`). */
  #call<T>(
    name: StoreScript,
    args: ScriptArgs,
    parse: (reply: unknown) => T,
    resend?: () => boolean,
    again?: () => ScriptArgs,
  ): Promise<T> {
    return callScript(this.#send, SHAS[name], STORE_SCRIPTS[name], args, parse, resend, again);
  }
}
