import { LockConfigurationError } from "../errors.js";
import { NodeRedisStore } from "../stores/node-redis/node-redis-store.js";
import { RedisStore } from "../stores/redis-store.js";
import type { LockStore } from "../stores/store.js";
import type { Vote } from "./ballot.js";
import type { ResolvedInstance } from "./instances.js";
import { infoField, masterOf, PASSING, serverInfo } from "./server-info.js";

/**
 * Two entries of the instance list that reach one Redis server (`localhost` and `127.0.0.1`, a DNS
 * alias, db 0 and db 1) would vote twice and fake a quorum. Host strings cannot tell, so each
 * server is asked who it is: `INFO server`'s `run_id`, drawn by the server at start-up and the same
 * on every db (for a Cluster, its nodes' ids). It is read once per connection: a reconnect may reach
 * another server (a restart, a failover, a DNS change), so a closed connection forgets it and the
 * next one is asked again.
 *
 * Until its connection has answered, an instance does not vote: its vote counts as unavailable.
 * A client connected when a Redlock is built is asked then, one still connecting at its 'ready'.
 * A call waits for the answer (at most the per-instance timeout) from a server that is connected
 * or connecting for the first time; a server that is down or reconnecting is not waited for, it
 * could not vote either. A server that refuses INFO (an ACL without `+info`, a proxy) cannot be
 * checked: one process warning says so, and its votes count unchecked.
 *
 * The same answer says whether the server is a replica (`INFO replication`'s `role:slave`): it holds
 * its master's keys, possibly behind, and takes no writes, so it is no instance of a Redlock, whose
 * quorum is counted over independent masters. Its votes (and its reads, in `inspect()`) are refused
 * with a reason naming its master, and one process warning says so. Read per connection, as the
 * run_id: a master demoted later is refused from its next connection on, and a replica promoted
 * later votes from its next one (REPLICAOF keeps connections open; nothing re-reads it between).
 */

/** Bumped whenever what any watched client says about itself may have changed. */
let generation = 0;
/** One warning per process is enough to tell an operator. */
let warned = false;
/** The same for a replica given as an instance. */
let warnedReplica = false;

/** What one client says about itself on its current connection. */
interface ServerFacts {
  /** Who is behind this client: one server's run_id, or the node ids of a Cluster. */
  readonly ids: readonly string[];
  /** `redis_mode` of INFO: standalone, cluster or sentinel. */
  readonly mode: string;
  /** For a replica (`role:slave`), its master's `host:port` as INFO names it. */
  readonly replicaOf?: string;
}

/** The parts of an ioredis client (any installed copy) that are used here. */
interface WatchedClient {
  readonly status: string;
  readonly isCluster?: boolean;
  info(...sections: string[]): Promise<string>;
  call(...args: string[]): Promise<unknown>;
  on(event: string, listener: () => void): unknown;
  off(event: string, listener: () => void): unknown;
}

/**
 * The identity of one client's current connection, shared by every Redlock that uses the client
 * (one set of listeners per client, however many Redlocks are built on it). The last of them to
 * quit takes its listeners off the client: a client the app handed to a Redlock per job or tenant
 * must not keep each closed one reachable, nor gather listeners past Node's warning at ten.
 */
class ClientIdentity {
  readonly client: WatchedClient;
  /** The Redlocks that watch the client through this identity. */
  users = 0;
  /** What this identity listens to on the client, for `detach`. */
  readonly #listeners: [string, () => void][] = [];
  /** Changes with each connection: an answer read on an older connection is dropped. */
  #epoch = 0;
  #facts: ServerFacts | undefined;
  /** The server answered INFO with an error: its identity cannot be known. */
  #unknowable = false;
  /** Why the last read on this connection, still up, got no answer (a subscriber-mode connection): its votes say it. */
  #unanswered: Error | undefined;
  #reading: Promise<void> | undefined;
  /**
   * A Cluster's wait for its 'ready' (`#afterReady`), kept across the connections that close
   * meanwhile: one listener however many calls an outage sees.
   */
  #readyWait: Promise<void> | undefined;
  /** A call already waited its bound for the read in flight: later calls do not wait for it again. */
  #waitedOut = false;
  /** Until its first connection was asked: a client still connecting then is worth waiting for. */
  #fresh = true;
  /** The generations its last two connections closed at. */
  #closedAt = -1;
  #closedBefore = -1;
  /** Who the last connection that closed had said it reached. */
  #closedFacts: ServerFacts | undefined;

  constructor(client: WatchedClient) {
    this.client = client;
    const replaced = () => {
      this.#epoch++;
      this.#facts = undefined;
      this.#unknowable = false;
      this.#unanswered = undefined;
      this.#reading = undefined;
      this.#waitedOut = false;
      generation++;
    };
    this.#on("close", () => {
      this.#fresh = false;
      this.#closedFacts = this.#facts;
      replaced();
      this.#closedBefore = this.#closedAt;
      this.#closedAt = generation;
    });
    // A new connection may reach another server: ask it now, unless a call's read already waits for
    // this 'ready' (`#afterReady`) or a question asked while first connecting is already queued.
    this.#on("ready", () => {
      generation++;
      void this.read();
    });
    if (client.isCluster) {
      // A Cluster gaining or losing a node is still the same Cluster: it keeps voting with what it
      // said before while its masters are asked again (a dead master would otherwise stall it).
      const changed = () => {
        this.#epoch++;
        this.#reading = this.#ask();
      };
      this.#on("+node", changed);
      this.#on("-node", changed);
    }
  }

  #on(event: string, listener: () => void): void {
    this.client.on(event, listener);
    this.#listeners.push([event, listener]);
  }

  #off(event: string, listener: () => void): void {
    this.client.off(event, listener);
    const at = this.#listeners.findIndex(([e, l]) => e === event && l === listener);
    if (at >= 0) this.#listeners.splice(at, 1);
  }

  /** Takes every listener of this identity off the client. */
  detach(): void {
    for (const [event, listener] of this.#listeners.splice(0)) this.client.off(event, listener);
  }

  get facts(): ServerFacts | undefined {
    return this.#facts;
  }

  /** Why this connection has not said who it is, when it was asked and refused for its state. */
  get unanswered(): Error | undefined {
    return this.#unanswered;
  }

  /** Whether a connection closed after generation `stamp`. */
  closedSince(stamp: number): boolean {
    return this.#closedAt > stamp;
  }

  /**
   * After `closedSince(stamp)`: whether the one connection opened since `stamp` said it reaches
   * the server the closed one did (a re-sent command then ran there), waiting at most `timeoutMs`.
   */
  async reachesSameServer(stamp: number, timeoutMs: number): Promise<boolean> {
    const closedAt = this.#closedAt;
    const before = this.#closedFacts;
    if (this.#closedBefore > stamp || before === undefined) return false;
    if (!(await withinMs(this.read(), timeoutMs)) || this.#closedAt !== closedAt) return false;
    const now = this.#facts;
    return now !== undefined && now.ids.join(",") === before.ids.join(",") && now.mode === before.mode;
  }

  /** True once this connection's identity is known or known to be unknowable: it may vote. */
  get settled(): boolean {
    return this.#facts !== undefined || this.#unknowable;
  }

  /**
   * A call may wait for the answer (at most its per-instance timeout): a client connecting for the
   * first time (every call waits, as a vote queued behind the connection would have), or a connected
   * one until a call has waited for this read in vain (then later calls do not wait for it again).
   */
  get worthWaiting(): boolean {
    const status = this.client.status;
    if (this.#fresh) return status === "ready" || status === "wait" || status === "connecting" || status === "connect";
    return !this.#waitedOut && status === "ready";
  }

  /** A call waited its bound and the answer had not come. */
  waitedOut(): void {
    if (!this.settled) this.#waitedOut = true;
  }

  /**
   * Reads the identity unless known or being read. On a client connecting for the first time the
   * command waits in its offline queue (and connects a lazy client). A Cluster has no node list
   * before it is ready, and a client that lost its connection may keep every queued command until
   * it is back (ioredis with `maxRetriesPerRequest: null`, node-redis): each reconnect attempt drops
   * the read under way, so a question queued per attempt would pile up for the whole outage. Their
   * read starts at 'ready', one per connection.
   */
  read(): Promise<void> {
    if (this.settled) return Promise.resolve();
    const notReady = this.client.status !== "ready" && (this.client.isCluster || !this.#fresh);
    this.#reading ??= notReady ? this.#afterReady() : this.#ask();
    return this.#reading;
  }

  #afterReady(): Promise<void> {
    // Our own 'ready' listener runs first and finds this wait as the read under way: once ready,
    // the wait is over and a read is started in its place (returning it from here as the read
    // would resolve this promise with itself, a rejection, and the client would never vote). An
    // ioredis Cluster hid this: its '+node' events replace the wait with a read before 'ready'.
    // A connection that closes meanwhile (each reconnect attempt of a server that is down) drops
    // the read under way, not this wait: the next call waits on it again. A wait of its own per
    // close put one 'ready' listener more on the client each time, past Node's warning at ten.
    if (this.#readyWait !== undefined) return this.#readyWait;
    const waiting: Promise<void> = new Promise<void>((resolve) => {
      const ready = () => {
        this.#off("ready", ready);
        resolve();
      };
      this.#on("ready", ready);
    }).then(() => {
      this.#readyWait = undefined;
      if (this.#reading === waiting) this.#reading = undefined;
      return this.read();
    });
    this.#readyWait = waiting;
    return waiting;
  }

  #ask(): Promise<void> {
    const epoch = this.#epoch;
    // An answer from an older connection (or before the Cluster changed) is dropped, and whoever
    // waits for it waits for the read that replaced it.
    return readFacts(this.client).then(
      (facts) => {
        if (epoch !== this.#epoch) return this.#reading;
        this.#facts = facts;
        this.#unanswered = undefined;
        this.#fresh = false;
        generation++;
      },
      (error: unknown) => {
        if (epoch !== this.#epoch) return this.#reading;
        this.#reading = undefined;
        // no answer (the connection closed, or it is in subscriber mode), or a refusal that passes (a
        // script spinning past busy-reply-threshold, a dataset loading): asked again by the next
        // call, and a connection still up says why in its votes
        if ((error as Error | undefined)?.name !== "ReplyError" || PASSING.test((error as Error).message)) {
          if (error instanceof Error && this.client.status === "ready") this.#unanswered = error;
          return;
        }
        this.#unknowable = true;
        generation++;
        warnUnknowable();
      },
    );
  }
}

const identities = new WeakMap<object, ClientIdentity>();

/** The identity of `client`, shared with the other Redlocks on it; `release` it at `quit()`. */
function identityOf(client: WatchedClient): ClientIdentity {
  let identity = identities.get(client);
  if (identity === undefined) {
    identity = new ClientIdentity(client);
    identities.set(client, identity);
  }
  identity.users++;
  return identity;
}

/** One Redlock quit: the last one on the client takes the identity's listeners off it. */
function release(identity: ClientIdentity): void {
  if (--identity.users > 0) return;
  identity.detach();
  if (identities.get(identity.client) === identity) identities.delete(identity.client);
}

async function readFacts(client: WatchedClient): Promise<ServerFacts> {
  if (!client.isCluster) return parseInfo(await serverInfo(client));
  // A Cluster is told apart by its nodes' ids: one CLUSTER NODES to any node lists them all, where
  // asking every master for its run_id would open a connection to each before the first lock.
  const nodes = String(await client.call("CLUSTER", "NODES"));
  const ids = nodes
    .split("\n")
    .map((line) => line.split(" ")[0] ?? "")
    .filter((id) => id !== "");
  if (ids.length === 0) throw new Error("CLUSTER NODES listed no node");
  return { ids: ids, mode: "cluster" };
}

function parseInfo(info: string): ServerFacts {
  const runId = infoField(info, "run_id");
  // a server that hides its run_id cannot be told apart: the same as one that refuses INFO
  if (!runId) throw Object.assign(new Error("INFO server has no run_id"), { name: "ReplyError" });
  const facts = { ids: [runId], mode: infoField(info, "redis_mode") ?? "standalone" };
  const replicaOf = masterOf(info);
  return replicaOf === undefined ? facts : { ...facts, replicaOf };
}

function warnUnknowable(): void {
  if (warned) return;
  warned = true;
  process.emitWarning(
    "redlock-kit: a Redis server refused INFO, so it cannot be checked for being listed twice; grant +info to the lock user",
    { code: "REDLOCK_KIT_NO_SERVER_ID" },
  );
}

const NOT_ASKED = "Not asked: this server has not yet said who it is on its current connection";
const notAsked = () => Promise.reject(new Error(NOT_ASKED));

const RECONNECTED = new Error(
  "Not counted: the connection closed while the command was in flight, and may now reach another server",
);

/**
 * After `quit()` the connections are no longer watched: a reconnect to another server would go
 * unseen, so a lock held past `quit()` extends (and `inspect()` reads) on no Redis instance.
 */
const QUIT = new Error(
  "Not counted: this Redlock quit(), so it no longer watches this connection for reaching another server",
);

/** Stands for an instance whose identity is not known yet: its vote fails at once (a fenced one too). */
const UNCHECKED: LockStore = Object.freeze({
  acquire: notAsked,
  extend: notAsked,
  release: notAsked,
  acquireFenced: notAsked,
  raiseFences: notAsked,
});

/** Stands for an instance that may not vote (a replica, an unanswered one): every vote fails with `reason`. */
function refusing(reason: Error): LockStore {
  const refused = () => Promise.reject(reason);
  return { acquire: refused, extend: refused, release: refused, acquireFenced: refused, raiseFences: refused };
}

/** UNCHECKED, its votes saying why the connection did not answer INFO (such as a RESP2 connection in subscriber mode). */
function uncheckedBy(cause: Error): LockStore {
  return refusing(new Error(`${NOT_ASKED} (INFO: ${cause.message})`));
}

interface Entry {
  readonly index: number;
  readonly description: string;
  readonly identity: ClientIdentity;
  readonly cluster: boolean;
}

/**
 * What one Redlock checks before votes count: no two of its instances are one server, and no plain
 * client points at a Cluster node or a Sentinel. Once every instance has answered, `current` stays
 * true (one comparison per call) until some watched connection changes.
 */
export class ServerIdentityCheck {
  readonly #entries: readonly Entry[];
  /** The entry of each instance index (undefined: not a Redis server this check watches). */
  readonly #byIndex: (Entry | undefined)[] = [];
  #checkedAt = -1;
  #voters: readonly LockStore[] = [];
  #votersAt = -1;
  /** Set by `close()`: every instance it watched refuses to vote (`QUIT`). */
  #closedVoters: readonly LockStore[] | undefined;

  constructor(instances: readonly ResolvedInstance[]) {
    const entries: Entry[] = [];
    instances.forEach(({ store }, index) => {
      // stores that are not Redis servers (MemoryStore, your own) have no server identity to compare
      let client: WatchedClient;
      if (store instanceof RedisStore) client = store.client as unknown as WatchedClient;
      else if (store instanceof NodeRedisStore) client = store.watched;
      else return;
      const identity = identityOf(client);
      entries.push({ index, description: store.description, identity, cluster: !!client.isCluster });
      // Connected already: asked now, not by the first call, whose per-instance bound (50 ms for a
      // 500 ms lock) a slow answer would miss. The read that call would start, kept for it; it never
      // rejects. A client still connecting is asked at its 'ready'; a lazy one is not woken.
      if (client.status === "ready") void identity.read();
    });
    this.#entries = entries;
    for (const entry of entries) this.#byIndex[entry.index] = entry;
    if (entries.length === 0) this.#checkedAt = Number.POSITIVE_INFINITY;
  }

  /** True when every instance answered and nothing changed since they were found distinct. */
  get current(): boolean {
    if (this.#closedVoters !== undefined) return false;
    if (this.#checkedAt === generation || this.#checkedAt === Number.POSITIVE_INFINITY) return true;
    // Something changed, or this Redlock is new on clients that already answered: when every
    // instance is known and distinct, say so now rather than through an await (which would let
    // the event loop run between the call and its votes).
    // a replica listed keeps every call on `voters`, which stands in for it
    if (!this.#entries.every(({ identity }) => identity.settled) || this.#problem() !== undefined) return false;
    if (this.#entries.some(isReplica)) return false;
    this.#checkedAt = generation;
    return true;
  }

  /**
   * Whether a hand-over message that instance `index`'s subscriber connection heard from the server
   * with run_id `server` may count as that instance's grant (speed/message-grant.ts): the subscriber
   * reaches the server its data connection does, and every entry is a distinct known server. A
   * subscriber that moved onto another entry's server (a failover, a DNS change) would otherwise hear
   * that server's one message twice: two grants from one server. Otherwise the waiter claims, and its
   * claim meets `voters`. Synchronous, no round trip: one comparison while nothing changed.
   */
  grantsFrom(index: number, server: string | undefined): boolean {
    const entry = this.#byIndex[index];
    // not a Redis server (MemoryStore, a store of your own): nothing to compare, as for its votes
    if (entry === undefined) return true;
    const ids = entry.identity.facts?.ids;
    return server !== undefined && ids?.length === 1 && ids[0] === server && this.current;
  }

  /** Taken before a call picks its voters: `voided` then drops the votes that cannot be trusted. */
  get stamp(): number {
    return generation;
  }

  /**
   * `votes`, with the answer of each instance whose connection closed since `stamp` replaced by a
   * failure. ioredis sends a command that was in flight again on the next connection, which may
   * reach another server (a failover, a DNS change), one that already votes under another entry,
   * before that connection says who it is: its answer would be a second vote of that server.
   * An answer is kept when the new connection says it reaches the server the closed one did.
   */
  async voided<T>(votes: Vote<T>[], stamp: number, timeoutMs: number): Promise<Vote<T>[]> {
    if (this.#closedVoters !== undefined) {
      for (const { index } of this.#entries) if (votes[index]?.ok) votes[index] = { ok: false, error: QUIT };
      return votes;
    }
    await Promise.all(
      this.#entries.map(async ({ index, identity }) => {
        if (!identity.closedSince(stamp) || !votes[index]?.ok) return;
        // a reconnect to the same server (a blip): its answer is that server's, as before
        if (!(await identity.reachesSameServer(stamp, timeoutMs))) votes[index] = { ok: false, error: RECONNECTED };
      }),
    );
    return votes;
  }

  /** Whether `voided` may have votes to drop: some connection changed since `stamp`. */
  changedSince(stamp: number): boolean {
    return generation !== stamp || this.#closedVoters !== undefined;
  }

  /**
   * The stores that may vote now, index for index: `stores`, with an always-failing stand-in for each
   * instance whose connection has not said who it is. Waits at most `timeoutMs` for those worth
   * waiting for. Rejects with `LockConfigurationError` naming both entries when two are one server.
   */
  async voters(stores: readonly LockStore[], timeoutMs: number): Promise<readonly LockStore[]> {
    if (this.#closedVoters !== undefined) return this.#closedVoters;
    const waits: Promise<void>[] = [];
    for (const { identity } of this.#entries) {
      if (identity.settled) continue;
      const reading = identity.read();
      if (identity.worthWaiting) waits.push(reading);
    }
    if (waits.length > 0 && !(await withinMs(Promise.all(waits), timeoutMs))) {
      for (const { identity } of this.#entries) identity.waitedOut();
    }
    const at = generation;
    this.#compare();
    if (this.#entries.every((entry) => entry.identity.settled && !isReplica(entry))) {
      this.#checkedAt = at;
      return stores;
    }
    if (this.#votersAt !== at) {
      const voters = [...stores];
      for (const entry of this.#entries) {
        const { index, identity } = entry;
        if (!identity.settled) voters[index] = identity.unanswered ? uncheckedBy(identity.unanswered) : UNCHECKED;
        else if (isReplica(entry)) voters[index] = refusing(replicaRefusal(entry));
      }
      this.#voters = voters;
      this.#votersAt = at;
    }
    return this.#voters;
  }

  /**
   * At `quit()`: this Redlock stops watching its clients (the last one on a client takes the
   * listeners off it), and every Redis instance refuses its votes from now on (`QUIT`).
   */
  close(stores: readonly LockStore[]): void {
    if (this.#closedVoters !== undefined || this.#entries.length === 0) return;
    const closed = [...stores];
    const refused = refusing(QUIT);
    for (const { index, identity } of this.#entries) {
      closed[index] = refused;
      release(identity);
    }
    this.#closedVoters = closed;
  }

  /**
   * `votes` of a read that went to every store (`inspect()`), with each replica's replaced by its
   * refusal: its copy of its master's key is no vote. Call it once `voters` has resolved.
   */
  withoutReplicas<T>(votes: Vote<T>[]): Vote<T>[] {
    for (const entry of this.#entries) {
      if (isReplica(entry)) votes[entry.index] = { ok: false, error: replicaRefusal(entry) };
    }
    return votes;
  }

  #compare(): void {
    const problem = this.#problem();
    if (problem !== undefined) throw problem;
  }

  /** What is wrong with the identities known so far, if anything. */
  #problem(): LockConfigurationError | undefined {
    const owners = new Map<string, Entry>();
    for (const entry of this.#entries) {
      const facts = entry.identity.facts;
      if (facts === undefined) continue;
      if (!entry.cluster && facts.mode !== "standalone") return wrongMode(entry, facts.mode);
      for (const id of facts.ids) {
        const first = owners.get(id);
        if (first !== undefined && first !== entry) return sameServer(entry, first);
        owners.set(id, entry);
      }
    }
    return undefined;
  }
}

const named = (entry: Entry) => `instances[${entry.index}] (${entry.description})`;

function sameServer(entry: Entry, first: Entry): LockConfigurationError {
  const what = entry.cluster || first.cluster ? "shares a Redis server with" : "is the same Redis server as";
  return new LockConfigurationError(`${named(entry)} ${what} ${named(first)}: it would vote twice`, [
    first.index,
    entry.index,
  ]);
}

/** A plain client's server that says it is a replica (a Cluster client reads its own nodes' roles). */
const isReplica = (entry: Entry) => !entry.cluster && entry.identity.facts?.replicaOf !== undefined;

/** Why a replica's votes are refused; the first one of the process is also a warning. */
function replicaRefusal(entry: Entry): Error {
  const reason = `${named(entry)} is a replica of ${entry.identity.facts?.replicaOf} (role:slave): its keys are its master's copy and it takes no writes; give Redlock masters only`;
  if (!warnedReplica) {
    warnedReplica = true;
    process.emitWarning(`redlock-kit: ${reason}`, { code: "REDLOCK_KIT_REPLICA" });
  }
  return new Error(reason);
}

function wrongMode(entry: Entry, mode: string): LockConfigurationError {
  const advice =
    mode === "cluster"
      ? "a Redis Cluster node: give Redlock an ioredis Cluster for it (a plain client would get MOVED answers)"
      : `a ${mode} (redis_mode:${mode}), not a Redis server: give Redlock { sentinels, name } for a Sentinel`;
  return new LockConfigurationError(`${named(entry)} is ${advice}`, [entry.index]);
}

/**
 * Resolves to true when `promise` settles within `ms`, false otherwise, leaving no timer behind.
 * Like the fan-out's deadlines, it gives up only after the socket reads already due have run: after
 * a busy stretch the timer and the answer can both be due at once, and timers run first.
 */
function withinMs(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => setImmediate(resolve, false), ms);
    const settled = () => {
      clearTimeout(timer);
      resolve(true);
    };
    promise.then(settled, settled);
  });
}
