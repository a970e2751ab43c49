/**
 * The leak invariants, in one module. Those of docs/reliability.md §2, checked after every
 * reliability test by `useInvariants`:
 * I1 no immortal keys, I2 no leaked locks, I3 no leaked handles, I4 no unhandled
 * rejections or uncaught exceptions. Register after `useRedisServers()` so the
 * servers exist when the baseline is taken.
 */
import { createHook } from "node:async_hooks";
import type { Redis, RedisOptions } from "ioredis";
import { afterAll, afterEach, beforeAll, beforeEach, expect } from "vitest";
import { type RedisServer, sleep } from "./redis-servers.js";

/** Anything a test opens and must close before I3 is checked. */
export type Closable = { quit(): Promise<unknown> } | { close(): Promise<unknown> };

export interface InvariantOptions {
  /** The servers that hold locks (a witness outside the quorum is left out). @default every server */
  lockServers?: (servers: readonly RedisServer[]) => readonly RedisServer[];
  /** The largest ttl a test uses: after an injected fault, keys get this long (plus slack) to expire. */
  maxTtlMs: number;
}

export interface Invariants {
  /** Marks the running test as fault-injected: I2 then waits up to maxTtlMs + slack for keys to expire. */
  faultInjected(): void;
  /** Closes `thing` after the test (before I3 is checked) and returns it. */
  track<T extends Closable | Redis>(thing: T): T;
  /** A client of `server` (the harness's pinned options, overridable) that is closed after the test. */
  client(server: RedisServer, options?: RedisOptions): Redis;
  /** Events seen by the process traps since the test started (I4). */
  readonly trapped: readonly unknown[];
}

const SLACK_MS = 500;
/** Fence counters never expire and outlive every lock, by design (docs/fencing.md): neither I1 nor I2 counts them. */
const DURABLE_KEY = /:redlock-kit:fence$/;
/**
 * How long a release that resolved at a quorum may take to reach the remaining instances, for a
 * connection the test did not track: tracked ones are closed before I2 (QUIT is answered after
 * every command sent before it), so their releases have landed when I2 looks.
 */
const RELEASE_LAG_MS = 200;

function countByType(resources: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const type of resources) counts.set(type, (counts.get(type) ?? 0) + 1);
  return counts;
}

function sameCounts(a: Map<string, number>, b: Map<string, number>): boolean {
  if (a.size !== b.size) return false;
  for (const [type, count] of a) if (b.get(type) !== count) return false;
  return true;
}

/** What `now` holds beyond `baseline`: a test's leak. (vitest's own timers may make the baseline a little larger.) */
export function excess(now: Map<string, number>, baseline: Map<string, number>): Record<string, number> {
  const extra: Record<string, number> = {};
  for (const [type, count] of now) {
    const more = count - (baseline.get(type) ?? 0);
    if (more > 0) extra[type] = more;
  }
  return extra;
}

/** Open handles by type (refed timers, sockets, servers…), as `process.getActiveResourcesInfo()` lists them. */
export const activeResources = (): Map<string, number> => countByType(process.getActiveResourcesInfo());

/**
 * How many readings (20 ms apart at least) the resource checks take before they give up: 10 s or
 * more, as long as expect.poll waits for a state that must come (vitest.config.ts).
 */
const READINGS = 500;

/**
 * Timers created while enabled and neither fired nor cleared: unref'd ones too, which
 * getActiveResourcesInfo() omits (auto-extension timers are unref'd).
 */
export function trackTimers() {
  const alive = new Map<number, string>();
  let ignoring = false;
  const hook = createHook({
    init(asyncId, type) {
      if (type === "Timeout" && !ignoring) alive.set(asyncId, new Error().stack ?? "");
    },
    destroy(asyncId) {
      alive.delete(asyncId);
    },
  }).enable();
  return {
    alive: () => [...alive.values()],
    /** A pause that is not itself tracked. */
    sleep(ms: number) {
      ignoring = true;
      const done = sleep(ms);
      ignoring = false;
      return done;
    },
    stop: () => hook.disable(),
  };
}

const describeCounts = (counts: Map<string, number>) =>
  [...counts].map(([type, count]) => `${type}: ${count}`).join(", ");

/**
 * The active resources once two readings a pause apart agree: a socket just destroyed closes in
 * the close phase of the loop's next turn, which the pause spans however loaded the machine. Counts
 * that never agree fail loudly, rather than being returned still moving: as a baseline, one that
 * caught a handle on its way out would hide a leak of that type.
 */
export async function settledResources(): Promise<Map<string, number>> {
  let previous = activeResources();
  for (let i = 0; i < READINGS; i++) {
    await sleep(20);
    const current = activeResources();
    if (sameCounts(previous, current)) return current;
    previous = current;
  }
  throw new Error(`active resources never settled in ${READINGS} readings: last ${describeCounts(previous)}`);
}

/**
 * What the active resources hold beyond `baseline`, read until that is nothing (a handle closes
 * once its peer has answered, as late as a loaded machine makes it) or for READINGS settled
 * readings: what is left then is a leak.
 */
export async function leakedResources(baseline: Map<string, number>): Promise<Record<string, number>> {
  let leaked = excess(await settledResources(), baseline);
  for (let i = 0; i < READINGS && Object.keys(leaked).length > 0; i++) {
    leaked = excess(await settledResources(), baseline);
  }
  return leaked;
}

/** Waits for `promise` at most `ms`, leaving no timer behind (I3 counts timers). */
async function atMost(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  try {
    await Promise.race([promise.catch(() => {}), bound]);
  } finally {
    clearTimeout(timer);
  }
}

async function close(thing: Closable | Redis): Promise<void> {
  if ("status" in thing && "disconnect" in thing) {
    const client = thing as Redis;
    if (client.status === "end") return;
    const ended = new Promise((resolve) => client.once("end", resolve));
    // QUIT waits for pending replies; a server that never answers must not hang the hook,
    // and a client that is not connected (refused, reconnecting) has nobody to say goodbye to.
    if (client.status === "ready") await atMost(client.quit(), 1000);
    // (read again: quit() changed it, which TypeScript's narrowing cannot see)
    if ((client.status as Redis["status"]) === "end") return;
    // Between reconnection attempts there is no stream left to end, and ioredis emits no "end";
    // it still arms its 2 s disconnect timer on the old stream, which the I3 poll outlasts.
    const reconnecting = client.status === "reconnecting";
    client.disconnect();
    if (!reconnecting) await atMost(ended, 1000);
    return;
  }
  if ("quit" in thing) await thing.quit();
  else await thing.close();
}

/** Resumes paused servers and restarts killed ones, so a failed test cannot poison the next. */
export async function heal(servers: readonly RedisServer[]): Promise<void> {
  for (const server of servers) {
    if (!server.running) await server.start();
    else server.resume();
  }
}

/** Every key with its PTTL (SCAN, so a big keyspace does not block the server). */
export async function keysOf(client: Redis): Promise<Map<string, number>> {
  const result = new Map<string, number>();
  let cursor = "0";
  do {
    const [next, keys] = await client.scan(cursor, "COUNT", 1000);
    cursor = next;
    for (const key of keys) result.set(key, await client.pttl(key));
  } while (cursor !== "0");
  return result;
}

export function useInvariants(cluster: { servers: RedisServer[] }, options: InvariantOptions): Invariants {
  const trapped: unknown[] = [];
  const tracked: (Closable | Redis)[] = [];
  const inspectors = new Map<RedisServer, Redis>();
  let fault = false;
  let baseline = new Map<string, number>();
  const trap = (event: unknown) => {
    trapped.push(event);
  };
  const lockServers = () => (options.lockServers ? options.lockServers(cluster.servers) : cluster.servers);
  const inspector = (server: RedisServer) => {
    let client = inspectors.get(server);
    if (!client) {
      client = server.client({ maxRetriesPerRequest: 20 });
      inspectors.set(server, client);
    }
    return client;
  };

  beforeAll(async () => {
    process.on("unhandledRejection", trap);
    process.on("uncaughtException", trap);
    await Promise.all(lockServers().map((server) => inspector(server).ping()));
  });

  afterAll(() => {
    process.off("unhandledRejection", trap);
    process.off("uncaughtException", trap);
  });

  beforeEach(async () => {
    fault = false;
    trapped.length = 0;
    baseline = await settledResources();
  });

  afterEach(async (context) => {
    await heal(cluster.servers);
    const servers = lockServers();
    // Closed first (last opened, first closed: a client goes before the proxy it talks through):
    // a release resolves at a quorum, and QUIT waits for the last instance's command to land.
    for (const thing of tracked.splice(0).reverse()) await close(thing);
    // Soft assertions: every invariant is reported, and the cleanup below always runs.
    try {
      // I1: every key the library (or a test's foreign holder) wrote expires by itself.
      const immortal: string[] = [];
      for (const server of servers) {
        for (const [key, ttl] of await keysOf(inspector(server)))
          if (ttl === -1 && !DURABLE_KEY.test(key)) immortal.push(`${key}@${server.port}`);
      }
      expect.soft(immortal, "I1 no immortal keys").toEqual([]);
      // I2: nothing stays locked; after a fault, late landings get until maxTtl to expire. Without
      // one, a moment for the releases a quorum already confirmed to reach the other instances.
      const deadline = performance.now() + (fault ? options.maxTtlMs + SLACK_MS : RELEASE_LAG_MS);
      let left: string[];
      for (;;) {
        left = [];
        for (const server of servers) {
          for (const key of (await keysOf(inspector(server))).keys())
            if (!DURABLE_KEY.test(key)) left.push(`${key}@${server.port}`);
        }
        if (left.length === 0 || performance.now() >= deadline) break;
        await sleep(50);
      }
      expect.soft(left, "I2 no leaked locks").toEqual([]);
    } finally {
      // a leak must fail this test only, not the next one
      await Promise.all(servers.map((server) => inspector(server).flushall()));
    }
    // I3: every handle the test opened is gone once its clients and proxies are closed (above).
    expect.soft(await leakedResources(baseline), "I3 no leaked handles").toEqual({});
    // I4: nothing escaped as an unhandled rejection or an uncaught exception.
    expect.soft(trapped.map(String), `I4 no unhandled rejections (${context.task.name})`).toEqual([]);
  });

  return {
    faultInjected() {
      fault = true;
    },
    track(thing) {
      tracked.push(thing);
      return thing;
    },
    client(server, clientOptions) {
      const client = server.client(clientOptions);
      tracked.push(client);
      return client;
    },
    get trapped() {
      return trapped;
    },
  };
}
