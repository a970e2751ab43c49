/**
 * The libraries under test, each behind the same two operations: one uncontended lock+unlock
 * cycle, and an acquisition that waits for a held lock. Every contender says which ioredis
 * clients it runs on, because auto-pipelining changes the numbers as much as the library does.
 */
import { randomBytes } from "node:crypto";
import { RedisStore, Redlock, type RedlockOptions } from "@redlock-kit/core";
import { Redlock as SesameRedlock } from "@sesamecare-oss/redlock";
import { Redis } from "ioredis";
import { Mutex, RedlockMutex } from "redis-semaphore";
import NodeRedlock from "redlock";
import { createLock, createRedlock, IoredisAdapter } from "redlock-universal";
import { FLOOR_RELEASE, FLOOR_RETAKE } from "./floor-script.js";

/** Lock ttl of every uncontended cycle: long enough that no lock expires while measured. */
export const TTL = 10_000;

/** Waiting for a held lock in the contention row: every library polls every `RETRY_MIN`..`RETRY_MAX` ms (mean 4 ms). */
export const RETRY_MIN = 2;
export const RETRY_MAX = 6;

/**
 * How a waiter polls: a delay drawn uniformly from `minMs`..`maxMs` before each retry (a fixed
 * delay when they are equal), mapped onto each library's own knobs; `"default"` passes none,
 * so the library's defaults apply.
 */
export type Poll = { readonly minMs: number; readonly maxMs: number } | "default";

/** The contention row's poll. */
export const CONTENTION_POLL: Poll = { minMs: RETRY_MIN, maxMs: RETRY_MAX };

function pollMean(poll: Exclude<Poll, "default">): number {
  return (poll.minMs + poll.maxMs) / 2;
}

/**
 * How long a waiting acquisition may wait before it counts as failed, the same for every library:
 * those that count retries get as many as fit in it at their mean delay, so a peer whose votes split
 * again and again on three instances fails its acquisitions instead of holding the run up for good.
 */
const WAIT_MS = 60_000;
const retriesWithin = (poll: Poll, defaultDelayMs: number) =>
  Math.ceil(WAIT_MS / (poll === "default" ? defaultDelayMs : pollMean(poll)));
/** The peers' default retry delays (node-redlock 5.0.0-beta.2, redlock-universal 0.8.5). */
const NODE_REDLOCK_RETRY_DELAY = 200;
const REDLOCK_UNIVERSAL_RETRY_DELAY = 100;

export type Release = () => Promise<unknown>;

export interface Contender {
  /** Row label. */
  readonly name: string;
  /** Which clients it runs on, stated in every table. */
  readonly clients: string;
  /** One uncontended lock+unlock on `key`; rejects if the lock was not taken. */
  cycle(key: string): Promise<void>;
  /** Takes `key`, waiting (polling as `poll` says, the contention row's by default) while someone else holds it. */
  acquireWaiting(key: string, poll?: Poll): Promise<Release>;
  /** The ioredis clients it sends its commands through (one per instance), to count commands. */
  readonly redisClients: readonly Redis[];
  close(): Promise<void>;
}

export interface ContenderFactory {
  readonly name: string;
  create(ports: readonly number[]): Contender;
}

const PLAIN = "handed plain ioredis clients";
const PIPELINED = "ioredis clients with enableAutoPipelining";

function plainClient(port: number, options: { enableAutoPipelining?: boolean } = {}): Redis {
  const client = new Redis({ host: "127.0.0.1", port, maxRetriesPerRequest: 1, ...options });
  client.on("error", () => {});
  return client;
}

async function closeAll(clients: readonly Redis[]): Promise<void> {
  await Promise.all(clients.map((client) => client.quit().catch(() => client.disconnect())));
}

/** The floor has no defaults of its own: `"default"` is the contention row's poll. */
function floorDelay(poll: Poll): number {
  const { minMs, maxMs } = poll === "default" ? { minMs: RETRY_MIN, maxMs: RETRY_MAX } : poll;
  return minMs + Math.random() * (maxMs - minMs);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface FloorClient extends Redis {
  benchFloorRelease(key: string, value: string): Promise<number>;
  benchFloorRetake(key: string, value: string, next: string, holdMs: number): Promise<number>;
}

/**
 * The floor: what any Redlock must send at least. `SET key value NX PX ttl`, then a
 * compare-and-delete script by SHA, one round trip each, on every instance in parallel,
 * with a quorum check and nothing else: no timeouts, no validity arithmetic, no error
 * classification. Values are a random prefix plus a counter (unique, but cheaper than a
 * random value per lock, so the floor stays a floor).
 */
function floor(pipelined: boolean): ContenderFactory {
  return {
    name: pipelined ? "floor + auto-pipelining" : "floor (raw ioredis)",
    create(ports) {
      const clients = floorClients(ports, pipelined);
      const { take, release } = floorSteps(clients);
      return floorStyle(this.name, pipelined ? PIPELINED : PLAIN, clients, take, release);
    },
  };
}

function floorClients(ports: readonly number[], pipelined: boolean): FloorClient[] {
  return ports.map((port) => {
    const client = plainClient(port, { enableAutoPipelining: pipelined });
    client.defineCommand("benchFloorRelease", { numberOfKeys: 1, lua: FLOOR_RELEASE });
    client.defineCommand("benchFloorRetake", { numberOfKeys: 1, lua: FLOOR_RETAKE });
    return client as FloorClient;
  });
}

/** The floor's two steps on its clients: `SET NX PX` on a quorum, and compare-and-delete. */
function floorSteps(clients: readonly FloorClient[]) {
  const quorum = Math.floor(clients.length / 2) + 1;
  const single = clients.length === 1 ? clients[0] : undefined;
  const release = async (key: string, value: string): Promise<void> => {
    if (single) await single.benchFloorRelease(key, value);
    else await Promise.all(clients.map((client) => client.benchFloorRelease(key, value)));
  };
  const take = async (key: string, value: string): Promise<boolean> => {
    if (single) return (await single.set(key, value, "PX", TTL, "NX")) === "OK";
    const replies = await Promise.all(clients.map((client) => client.set(key, value, "PX", TTL, "NX")));
    let yes = 0;
    for (const reply of replies) if (reply === "OK") yes++;
    if (yes >= quorum) return true;
    await release(key, value);
    return false;
  };
  return { quorum, take, release };
}

/** A run of retakes of the floor with retake ends once it is this old, as redlock-kit's does. */
const RETAKE_RUN_MS = 50;

/**
 * A reference for the between-process contention rows, not a peer: the floor, plus the retake
 * protocol without any library around it. A process that releases a key within 50 ms of taking
 * it with `SET NX` sets the key to its next value for the lock's ttl in the release's script (on a
 * quorum), as redlock-kit's release does, and its next acquisition of that key, if it comes before
 * the end of the event-loop turn, sends nothing; otherwise the reserved value is deleted. It never hands the key to a waiter (waiters
 * poll), so its fairness is whatever polling gives. The gap from here to redlock-kit is the
 * library's own work per section, not the protocol's.
 */
function floorRetake(): ContenderFactory {
  return {
    name: "floor + retake (raw ioredis)",
    create(ports) {
      const clients = floorClients(ports, false);
      const { quorum, take, release } = floorSteps(clients);
      const prefix = randomBytes(8).toString("hex");
      let counter = 0;
      const nextValue = () => prefix + (counter++).toString(36);
      /** Per key: the value the last release reserved for this process's next lock, and when its run began. */
      const reserved = new Map<string, string>();
      const runStart = new Map<string, number>();
      const releaseOrRetake = async (key: string, value: string): Promise<void> => {
        const began = runStart.get(key);
        if (began === undefined || performance.now() - began >= RETAKE_RUN_MS) {
          await release(key, value);
          return;
        }
        const next = nextValue();
        const replies = await Promise.all(clients.map((c) => c.benchFloorRetake(key, value, next, TTL)));
        if (replies.filter((reply) => reply === 1).length < quorum) {
          await release(key, next);
          return;
        }
        reserved.set(key, next);
        setImmediate(() => {
          if (reserved.get(key) !== next) return;
          reserved.delete(key);
          void release(key, next);
        });
      };
      return {
        name: this.name,
        clients: PLAIN,
        redisClients: clients,
        async cycle(key) {
          const value = nextValue();
          if (!(await take(key, value))) throw new Error(`${this.name}: ${key} was not free`);
          await release(key, value);
        },
        async acquireWaiting(key, poll = CONTENTION_POLL) {
          let value = reserved.get(key);
          if (value !== undefined) reserved.delete(key);
          else {
            value = nextValue();
            while (!(await take(key, value))) await sleep(floorDelay(poll));
            runStart.set(key, performance.now());
          }
          const held = value;
          return () => releaseOrRetake(key, held);
        },
        close: () => closeAll(clients),
      };
    },
  };
}

/**
 * The floor's logic on redlock-kit's own `RedisStore`: its acquire and release scripts and its
 * write batching, without the Redlock layer (no validity, timeouts, retries or error
 * classification). DESIGN makes acquire one Lua script per instance; this row shows what that
 * script costs by itself against the floor's plain `SET NX PX`, so that the gap from here to the
 * redlock-kit row is the algorithm's client-side work.
 */
function floorOnScripts(): ContenderFactory {
  return {
    name: "floor on redlock-kit's scripts",
    create(ports) {
      const clients = ports.map((port) => plainClient(port));
      const stores = clients.map((client) => new RedisStore(client));
      const quorum = Math.floor(stores.length / 2) + 1;
      const release = (key: string, value: string) => Promise.all(stores.map((store) => store.release([key], value)));
      const take = async (key: string, value: string): Promise<boolean> => {
        const replies = await Promise.all(stores.map((store) => store.acquire([key], value, TTL)));
        if (replies.filter((reply) => reply.acquired).length >= quorum) return true;
        await release(key, value);
        return false;
      };
      return floorStyle(this.name, `${PLAIN}, through redlock-kit's RedisStore`, clients, take, release);
    },
  };
}

/**
 * A floor-like contender from its two steps; values are a random prefix plus a counter. `close`
 * closes its clients (by default `redisClients`, for contenders on other clients than ioredis).
 */
export function floorStyle(
  name: string,
  clients: string,
  redisClients: readonly Redis[],
  take: (key: string, value: string) => Promise<boolean>,
  release: (key: string, value: string) => Promise<unknown>,
  close: () => Promise<unknown> = () => closeAll(redisClients),
): Contender {
  const prefix = randomBytes(8).toString("hex");
  let counter = 0;
  const nextValue = () => prefix + (counter++).toString(36);
  return {
    name,
    clients,
    redisClients,
    async cycle(key) {
      const value = nextValue();
      if (!(await take(key, value))) throw new Error(`${name}: ${key} was not free`);
      await release(key, value);
    },
    async acquireWaiting(key, poll = CONTENTION_POLL) {
      const value = nextValue();
      while (!(await take(key, value))) await sleep(floorDelay(poll));
      return () => release(key, value);
    },
    close: async () => {
      await close();
    },
  };
}

/** `{ fencing: true }` as `fencing: true`, for the tables. */
const optionsText = (options: RedlockOptions) =>
  Object.entries(options)
    .map(([name, value]) => `${name}: ${String(value)}`)
    .join(", ");

/**
 * redlock-kit, either creating its own clients from options (auto-pipelined) or handed plain ones;
 * `variant` names a row that prices one of its options (e.g. `fencing: true`).
 */
function redlockKit(owned: boolean, variant?: { name: string; options: RedlockOptions }): ContenderFactory {
  return {
    name: variant?.name ?? (owned ? "redlock-kit" : "redlock-kit (handed clients)"),
    create(ports) {
      const handed = owned ? [] : ports.map((port) => plainClient(port));
      const instances = owned ? ports.map((port) => ({ host: "127.0.0.1", port })) : handed;
      const dlm = new Redlock(instances, variant?.options);
      const redisClients = dlm.stores.map((store) => (store as unknown as { client: Redis }).client);
      const owner = owned ? "Redlock's own clients, created from { host, port }" : PLAIN;
      return {
        name: this.name,
        clients: variant ? `${owner}; ${optionsText(variant.options)}` : owner,
        redisClients,
        async cycle(key) {
          await dlm.unlock(await dlm.acquire(key, TTL));
        },
        async acquireWaiting(key, poll = CONTENTION_POLL) {
          // redlock-kit's jitter adds 0..retryJitter ms to retryDelay
          const knobs = poll === "default" ? {} : { retryDelay: poll.minMs, retryJitter: poll.maxMs - poll.minMs };
          const lock = await dlm.acquire(key, TTL, { wait: WAIT_MS, ...knobs });
          return () => dlm.unlock(lock);
        },
        async close() {
          await dlm.quit();
          await closeAll(handed);
        },
      };
    },
  };
}

/** node-redlock v5 and its maintained fork share one API. */
function nodeRedlockLike(name: string, RedlockClass: typeof NodeRedlock | typeof SesameRedlock): ContenderFactory {
  return {
    name,
    create(ports) {
      const clients = ports.map((port) => plainClient(port));
      // biome-ignore lint/suspicious/noExplicitAny: the two copies type their clients against different ioredis versions
      const redlock = new (RedlockClass as any)(clients, {}) as NodeRedlock;
      redlock.on("error", () => {});
      return {
        name,
        clients: PLAIN,
        redisClients: clients,
        async cycle(key) {
          await (await redlock.acquire([key], TTL)).release();
        },
        async acquireWaiting(key, poll = CONTENTION_POLL) {
          // node-redlock's jitter is ±retryJitter around retryDelay
          const knobs =
            poll === "default" ? {} : { retryDelay: pollMean(poll), retryJitter: (poll.maxMs - poll.minMs) / 2 };
          const retryCount = retriesWithin(poll, NODE_REDLOCK_RETRY_DELAY);
          const lock = await redlock.acquire([key], TTL, { retryCount, ...knobs });
          return () => lock.release();
        },
        close: () => closeAll(clients),
      };
    },
  };
}

function redisSemaphore(): ContenderFactory {
  return {
    name: "redis-semaphore",
    create(ports) {
      const clients = ports.map((port) => plainClient(port));
      const single = clients.length === 1 ? clients[0] : undefined;
      const mutex = (key: string, options: Record<string, number>) =>
        single ? new Mutex(single, key, options) : new RedlockMutex(clients, key, options);
      return {
        name: this.name,
        clients: PLAIN,
        redisClients: clients,
        async cycle(key) {
          // its defaults otherwise, auto-refresh timer included
          const lock = mutex(key, { lockTimeout: TTL });
          await lock.acquire();
          await lock.release();
        },
        async acquireWaiting(key, poll = CONTENTION_POLL) {
          // no jitter option: a fixed interval at the same mean
          const knobs: Record<string, number> = poll === "default" ? {} : { retryInterval: pollMean(poll) };
          const lock = mutex(key, { lockTimeout: TTL, acquireTimeout: WAIT_MS, ...knobs });
          await lock.acquire();
          return () => lock.release();
        },
        close: () => closeAll(clients),
      };
    },
  };
}

function redlockUniversal(): ContenderFactory {
  return {
    name: "redlock-universal",
    create(ports) {
      const clients = ports.map((port) => plainClient(port));
      // biome-ignore lint/suspicious/noExplicitAny: its adapter types ioredis against another version
      const adapters = clients.map((client) => new IoredisAdapter(client as any));
      const [single] = adapters.length === 1 ? adapters : [];
      const lockFor = (key: string, retry?: { retryAttempts: number; retryDelay?: number }) =>
        single
          ? createLock({ adapter: single, key, ttl: TTL, ...retry })
          : createRedlock({ adapters, key, ttl: TTL, ...retry });
      return {
        name: this.name,
        clients: PLAIN,
        redisClients: clients,
        async cycle(key) {
          const lock = lockFor(key);
          await lock.release(await lock.acquire());
        },
        async acquireWaiting(key, poll = CONTENTION_POLL) {
          // no jitter option: a fixed delay at the same mean
          const knobs = poll === "default" ? {} : { retryDelay: pollMean(poll) };
          const retryAttempts = retriesWithin(poll, REDLOCK_UNIVERSAL_RETRY_DELAY);
          const lock = lockFor(key, { retryAttempts, ...knobs });
          const handle = await lock.acquire();
          return () => lock.release(handle);
        },
        close: () => closeAll(clients),
      };
    },
  };
}

export const FLOOR = floor(false);
export const FLOOR_PIPELINED = floor(true);
export const FLOOR_RETAKE_REFERENCE = floorRetake();
export const FLOOR_ON_SCRIPTS = floorOnScripts();
export const REDLOCK_KIT = redlockKit(true);
export const REDLOCK_KIT_HANDED = redlockKit(false);
export const REDLOCK_KIT_FENCED = redlockKit(true, { name: "redlock-kit (fencing)", options: { fencing: true } });
export const PEERS: readonly ContenderFactory[] = [
  nodeRedlockLike("node-redlock 5.0.0-beta.2", NodeRedlock),
  nodeRedlockLike("@sesamecare-oss/redlock", SesameRedlock),
  redisSemaphore(),
  redlockUniversal(),
];
