/**
 * Waiting between processes: each worker (fixtures/waiter-worker.mjs) is an OS process with its own
 * Redlock and connections, as users run them. The workers import the BUILT core.
 */
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type Lock, Redlock } from "../packages/core/src/index.js";
import { queuedChannel } from "./helpers/queues.js";
import { queueSizes } from "./helpers/quorum.js";
import { sleep, useRedisServers } from "./helpers/redis-servers.js";
import { type ForkedWorker, forkWorker, requireBuiltCore, scriptCalls } from "./helpers/workers.js";

const servers = useRedisServers(4);
/** Only a hand-over can wake these waiters within a test: their poll interval is a minute. */
const HAND_OVER_ONLY = { wait: 60_000, retryDelay: 60_000, retryJitter: 0 };

let lockClients: Redis[] = [];
let witness: Redis;
const children: ForkedWorker[] = [];
const redlocks: Redlock[] = [];

beforeAll(() => {
  requireBuiltCore();
  lockClients = servers.servers.slice(0, 3).map((server) => server.client());
  witness = (servers.servers[3] as (typeof servers.servers)[number]).client();
});

afterEach(async () => {
  await Promise.all(children.splice(0).map((worker) => worker.kill()));
  await Promise.all(redlocks.splice(0).map((dlm) => dlm.quit()));
  await Promise.all([...lockClients, witness].map((client) => client.flushall()));
});

afterAll(async () => {
  await Promise.all([...lockClients, witness].map((client) => client.quit()));
});

interface Done {
  kind: "done";
  acquired: number;
  overlaps: number;
  failed: number;
  failures: string[];
  heapBefore: number;
  heapAfter: number;
}

interface Worker {
  readonly child: ForkedWorker["child"];
  readonly done: Promise<Done>;
  /** Resolves once the worker has read what its sockets held when this was called (waiter-worker.mjs, "ping"). */
  caughtUp(): Promise<void>;
  quit(): Promise<string[]>;
}

function startWorker(config: Record<string, unknown>, instances = 3): Worker {
  const ports = servers.servers.slice(0, instances).map((server) => server.port);
  const witnessPort = (servers.servers[3] as (typeof servers.servers)[number]).port;
  const worker = forkWorker("waiter-worker.mjs", { ports, witnessPort, ...config }, ["--expose-gc"]);
  children.push(worker);
  const done = worker.next<Done>("done");
  // a worker killed on purpose never reports; only tests that await `done` care
  done.catch(() => {});
  return {
    child: worker.child,
    done,
    caughtUp: async () => {
      worker.send({ kind: "ping" });
      await worker.next("pong");
    },
    quit: async () => {
      worker.send({ kind: "quit" });
      return (await worker.next<{ handles: string[] }>("quit")).handles;
    },
  };
}

/** Resolves once `check` holds (polled; Redis learns of closed connections a moment later). */
async function until(check: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`never happened: ${what}`);
    await sleep(10);
  }
}

const queued = (key: string, instances = lockClients) => queueSizes(instances, key);
async function untilQueued(key: string, count: number, instances = lockClients): Promise<void> {
  let sizes: number[] = [];
  try {
    await until(async () => {
      sizes = await queued(key, instances);
      return sizes.every((size) => size === count);
    }, `${count} queued on ${key}`);
  } catch (error) {
    // which instance's line differs, and how: a flake's diagnosis
    throw new Error(`${(error as Error).message} (queues: ${JSON.stringify(sizes)})`);
  }
}
const handOverChannels = async (client: Redis) =>
  ((await client.pubsub("CHANNELS", "redlock-kit:hand-over:*")) as string[]).length;
function holderOn(instances: readonly Redis[]): Redlock {
  const dlm = new Redlock(instances);
  redlocks.push(dlm);
  return dlm;
}
/**
 * A holder of `key` for 30 s whose key is on every instance before a waiter starts: acquire
 * resolves at a quorum, and a waiter's attempt that reached the last instance first would take the
 * key there, give it back and never queue there.
 */
async function holdEverywhere(key: string): Promise<Lock> {
  const held = await holderOn(lockClients).acquire(key, 30_000);
  await until(
    async () =>
      (await Promise.all(lockClients.map((client) => client.get(key)))).every((value) => value === held.value),
    `${key} held on every instance`,
  );
  return held;
}

/**
 * Two waiters queued on `resource` in two processes, the first killed: the holder's release hands
 * the key to the second, never to the dead one, whose ttl outlasts the test (held for it, the key
 * would keep the second out).
 */
async function skipsKilledWaiter(resource: string): Promise<void> {
  const holder = await holdEverywhere(resource);
  const doomed = startWorker({ resource, ttl: 120_000, options: HAND_OVER_ONLY });
  await untilQueued(resource, 1);
  const queue = `${resource}:redlock-kit:waiters`;
  const [entry] = await (lockClients[0] as Redis).zrange(queue, "0", "0");
  const doomedValue = (entry as string).split(":").slice(2).join(":");
  const next = startWorker({ resource, options: HAND_OVER_ONLY });
  await untilQueued(resource, 2);
  // each waiter's channel, from its entry (channel:hold:value). Both listen on every instance before
  // the kill: a waiter queues once a quorum listens, and its last SUBSCRIBE may land later
  // (docs/waiting.md): counted before it landed, the channels never fell to the count expected.
  // (each instance names a channel its own way: read on each)
  const listening = async (client: Redis) => (await client.pubsub("CHANNELS", "redlock-kit:hand-over:*")) as string[];
  const doomedChannels = new Map<Redis, string>();
  for (const client of lockClients) {
    const [doomedChannel, nextChannel] = [
      await queuedChannel(client, resource, 0),
      await queuedChannel(client, resource, 1),
    ];
    doomedChannels.set(client, doomedChannel);
    await until(async () => {
      const channels = await listening(client);
      return channels.includes(doomedChannel) && channels.includes(nextChannel);
    }, "both listening");
  }
  doomed.child.kill("SIGKILL");
  for (const client of lockClients)
    await until(async () => !(await listening(client)).includes(doomedChannels.get(client) as string), "gone");
  await holder.release();
  const values = () => Promise.all(lockClients.map((client) => client.get(resource)));
  await until(async () => !(await values()).includes(holder.value), "released on every instance");
  expect(await values()).not.toContain(doomedValue);
  const report = await next.done;
  expect({ acquired: report.acquired, failures: report.failures }).toEqual({ acquired: 1, failures: [] });
  await next.quit();
  for (const client of lockClients) expect(await client.dbsize()).toBe(0);
}

describe("waiting between processes", () => {
  it("hands the key along 3 processes on 3 instances: no overlap, every wait served by a hand-over or a retake (no poll), bounded script calls", async () => {
    const before = await Promise.all(lockClients.map(scriptCalls));
    const iterations = 25;
    const workers = [0, 1, 2].map(() => startWorker({ resource: "relay", iterations, options: HAND_OVER_ONLY }));
    const reports = await Promise.all(workers.map((worker) => worker.done));
    const sections = 3 * iterations;
    expect(reports.map((r) => r.failures)).toEqual([[], [], []]);
    expect(reports.reduce((sum, r) => sum + r.acquired, 0)).toBe(sections);
    expect(reports.reduce((sum, r) => sum + r.overlaps, 0)).toBe(0);
    // per section: a refused attempt that queues and the release, plus a claim where a hand-over
    // is not a grant (src/speed/message-grant.ts), and one unqueued first attempt per process; a
    // herd or split votes would need many more
    const after = await Promise.all(lockClients.map(scriptCalls));
    for (const [i, count] of after.entries()) expect(count - (before[i] ?? 0)).toBeLessThanOrEqual(3 * sections + 3);
    await Promise.all(workers.map((worker) => worker.quit()));
    for (const client of lockClients) expect(await client.dbsize()).toBe(0);
  }, 60_000);

  it("hands the key along processes that lock through node-redis and ioredis, and their subscribers let them exit", async () => {
    const iterations = 20;
    const libraries = ["node-redis", "node-redis", "ioredis"];
    // every worker queued before the first release: from then on each wait is served by a hand-over
    const holder = await holdEverywhere("relay-nr");
    const workers = libraries.map((library) =>
      startWorker({ resource: "relay-nr", iterations, library, options: HAND_OVER_ONLY }),
    );
    await untilQueued("relay-nr", libraries.length);
    await holder.release();
    const reports = await Promise.all(workers.map((worker) => worker.done));
    expect(reports.map((r) => r.failures)).toEqual([[], [], []]);
    expect(reports.reduce((sum, r) => sum + r.acquired, 0)).toBe(libraries.length * iterations);
    expect(reports.reduce((sum, r) => sum + r.overlaps, 0)).toBe(0);
    // with every process still running: no queue, and the subscriptions end once nobody waits (a
    // worker's last release may have reserved the key for a next call, let go at the end of its turn)
    for (const client of lockClients) await until(async () => (await client.dbsize()) === 0, "keys gone");
    for (const client of lockClients) await until(async () => (await handOverChannels(client)) === 0, "unsubscribed");
    const handles = await Promise.all(workers.map((worker) => worker.quit()));
    for (const left of handles)
      expect(left.filter((type) => type === "TCPSocketWrap" || type === "Timeout")).toEqual([]);
  }, 60_000);

  it("serves 1,000 waiters spread over 4 processes, the holder in a fifth, and leaves nothing behind", async () => {
    const holder = await holdEverywhere("hot");
    const workers = [0, 1, 2, 3].map(() =>
      startWorker({ resource: "hot", waiters: 250, options: HAND_OVER_ONLY, ttl: 5000 }),
    );
    await untilQueued("hot", 1000);
    await holder.release();
    const reports = await Promise.all(workers.map((worker) => worker.done));
    expect(reports.map((r) => r.failures)).toEqual([[], [], [], []]);
    expect(reports.map((r) => r.acquired)).toEqual([250, 250, 250, 250]);
    expect(reports.reduce((sum, r) => sum + r.overlaps, 0)).toBe(0);
    // with every process still running: no queue, and the subscriptions end once nobody waits
    for (const client of lockClients) expect(await client.dbsize()).toBe(0);
    for (const client of lockClients) await until(async () => (await handOverChannels(client)) === 0, "unsubscribed");
    // 250 finished waits leave the heap where it was (measured after a full GC, before quit())
    for (const report of reports) expect(report.heapAfter - report.heapBefore).toBeLessThan(4 * 1024 * 1024);
    const handles = await Promise.all(workers.map((worker) => worker.quit()));
    for (const left of handles)
      expect(left.filter((type) => type === "TCPSocketWrap" || type === "Timeout")).toEqual([]);
  }, 120_000);

  it("a waiter in another process holds the key from the hand-over: no claim on any instance", async () => {
    const holder = await holdEverywhere("granted");
    // a grant's validity counts from the waiter's first queued attempt: with the worker's 1 s ttl, a
    // loaded machine spent it before the release below, and the waiter then claimed (a third call)
    const waiter = startWorker({ resource: "granted", ttl: 30_000, options: HAND_OVER_ONLY });
    await untilQueued("granted", 1);
    // it queues once a quorum listens: a SUBSCRIBE whose answer it reads after a hand-over has it try
    // once (docs/waiting.md, late SUBSCRIBE), a third script call on each instance. So every instance
    // has it listening, and the worker has read those answers (not only Redis sent them: a process
    // that reads a hand-over message on one socket before the answer on another tries once)
    await until(
      async () => (await Promise.all(lockClients.map(handOverChannels))).every((channels) => channels === 1),
      "the waiter listening on every instance",
    );
    await waiter.caughtUp();
    const before = await Promise.all(lockClients.map(scriptCalls));
    await holder.release();
    const report = await waiter.done;
    expect({ acquired: report.acquired, overlaps: report.overlaps, failures: report.failures }).toEqual({
      acquired: 1,
      overlaps: 0,
      failures: [],
    });
    // the holder's release and the waiter's own release on each instance (a release resolves at a
    // quorum, so the last one may land a moment later); a claim would add one more
    let since: number[] = [];
    await until(async () => {
      since = (await Promise.all(lockClients.map(scriptCalls))).map((n, i) => n - (before[i] ?? 0));
      return since.every((n) => n >= 2);
    }, "both releases on every instance");
    expect(since).toEqual([2, 2, 2]);
    await waiter.quit();
    for (const client of lockClients) expect(await client.dbsize()).toBe(0);
  }, 60_000);

  it("skips a queued waiter whose process was killed: the next one is handed the key", async () => {
    await skipsKilledWaiter("killed");
  }, 60_000);

  it("skips a killed waiter while a client listens on a pattern (a monitoring tool's PSUBSCRIBE *), which PUBLISH counts too", async () => {
    const watchers = lockClients.map((client) => client.duplicate());
    try {
      await Promise.all(watchers.map((watcher) => watcher.psubscribe("*")));
      await skipsKilledWaiter("watched");
    } finally {
      for (const watcher of watchers) watcher.disconnect();
    }
  }, 60_000);

  it("a frozen waiter is handed the key for its ttl (a grant: src/speed/message-grant.ts); the others take it once that lapses", async () => {
    const holder = await holdEverywhere("frozen");
    const frozen = startWorker({ resource: "frozen", options: HAND_OVER_ONLY });
    await untilQueued("frozen", 1);
    // polls every 50–100 ms: it learns that the frozen waiter's ttl (1 s) lapsed by polling
    const next = startWorker({ resource: "frozen", options: { wait: 60_000, retryDelay: 50, retryJitter: 50 } });
    await untilQueued("frozen", 2);
    frozen.child.kill("SIGSTOP");
    try {
      await holder.release();
      const report = await next.done;
      expect({ acquired: report.acquired, failures: report.failures }).toEqual({ acquired: 1, failures: [] });
      await next.quit();
    } finally {
      frozen.child.kill("SIGKILL");
    }
  }, 60_000);
});
