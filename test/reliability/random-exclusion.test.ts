/**
 * Mutual exclusion and progress between processes under a randomized workload (docs/reliability.md
 * M8): worker processes (fixtures/random-worker.mjs), each with its own Redlock and connections on
 * 3 instances, loop over random overlapping sets of 1–3 of 5 resources in random orders, through
 * acquire with wait, lock() that may answer null, using(), calls aborted by their signal; short
 * holds, extensions, fenced calls, releases left out (a short ttl expires them) or sent after the
 * ttl by a holder that overran it. A witness Redis
 * outside the quorum records who is inside each resource and until when its lock is valid. The
 * run is bounded by a count of sections, the randomness seeded (RANDOM_EXCLUSION_SEED=n replays
 * or varies it); faults, in the second test, are injected as the sections go by, never on a clock.
 */
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type RedisServer, sleep, useRedisServers } from "../helpers/redis-servers.js";
import { type ForkedWorker, forkWorker, requireBuiltCore } from "../helpers/workers.js";

const RESOURCES = ["r0", "r1", "r2", "r3", "r4"];
const SEED = Number(process.env.RANDOM_EXCLUSION_SEED ?? 1);
/** A waiting call's `wait` in the worker: a queue whose entry was left (a killed connection) lives that long plus a hold. */
const WAIT = 30_000;
/** Fence counters never expire, by design (docs/fencing.md). */
const FENCE_COUNTER = /:redlock-kit:fence$/;
const servers = useRedisServers(4);
const node = (i: number) => servers.servers[i] as RedisServer;
let inspectors: Redis[] = [];
let witness: Redis;
const children: ForkedWorker[] = [];

beforeAll(() => {
  requireBuiltCore();
  inspectors = [0, 1, 2].map((i) => node(i).client());
  witness = node(3).client();
});

afterEach(async () => {
  await Promise.all(children.splice(0).map((worker) => worker.kill()));
  for (const i of [0, 1, 2]) node(i).resume();
  await Promise.all([...inspectors, witness].map((client) => client.flushall()));
});

afterAll(async () => {
  await Promise.all([...inspectors, witness].map((client) => client.quit()));
});

interface Done {
  kind: "done";
  attempts: number;
  acquired: number;
  refused: number;
  unavailable: number;
  aborted: number;
  skippedReleases: number;
  extended: number;
  lost: number;
  expiredInside: number;
  overlaps: number;
  staleOverlaps: number;
  violations: unknown[];
  failures: string[];
  kinds: Record<string, number>;
}

/** A seeded generator (mulberry32), as in the worker: the fault schedule replays with the seed. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sectionsDone = async () => Number((await witness.get("w:sections")) ?? 0);

/** Resolves once `check` holds (polled); throws naming `what` after `timeoutMs`. */
async function until(check: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`never happened: ${what}`);
    await sleep(10);
  }
}

/** Waits until `count` more sections were done, or the workers finished. */
async function sectionsGoBy(count: number, finished: () => boolean): Promise<void> {
  const target = (await sectionsDone()) + count;
  while (!finished() && (await sectionsDone()) < target) await sleep(10);
}

type Fault = "pause" | "script flush" | "kill clients" | "kill subscribers" | "freeze worker";
const FAULTS: Fault[] = ["pause", "script flush", "kill clients", "kill subscribers", "freeze worker"];

/**
 * One fault at a time on one instance (a quorum of two always answers), or a worker process
 * frozen (SIGSTOP: a holder past its validity, a waiter handed keys it cannot use), each after a
 * random number of sections; what is stopped resumes once some sections went by without it.
 */
async function injectFaults(
  seed: number,
  workers: readonly ForkedWorker[],
  done: readonly boolean[],
): Promise<string[]> {
  const rand = random(seed);
  const finished = () => done.every(Boolean);
  const injected: string[] = [];
  for (;;) {
    await sectionsGoBy(5 + Math.floor(rand() * 20), finished);
    if (finished()) return injected;
    const fault = FAULTS[Math.floor(rand() * FAULTS.length)] as Fault;
    const i = Math.floor(rand() * (fault === "freeze worker" ? workers.length : 3));
    injected.push(`${fault} ${i}`);
    const inspector = inspectors[i] as Redis;
    if (fault === "pause" || fault === "freeze worker") {
      const worker = workers[i] as ForkedWorker;
      const [stop, resume] =
        fault === "pause"
          ? [() => node(i).pause(), () => node(i).resume()]
          : [() => worker.child.kill("SIGSTOP"), () => worker.child.kill("SIGCONT")];
      stop();
      try {
        // a frozen worker cannot finish: it resumes once the others have
        const over = fault === "pause" ? finished : () => done.every((ended, w) => ended || w === i);
        await sectionsGoBy(5 + Math.floor(rand() * 15), over);
      } finally {
        resume();
      }
    } else if (fault === "script flush") await inspector.script("FLUSH");
    else if (fault === "kill clients") await inspector.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes");
    else await inspector.call("CLIENT", "KILL", "TYPE", "pubsub");
  }
}

interface Run {
  seed: number;
  workers: number;
  callers: number;
  sections: number;
  faults: boolean;
}

/** Runs the workers to their last section (injecting faults meanwhile if asked) and returns their reports. */
async function run({ seed, workers, callers, sections, faults }: Run) {
  await witness.flushall();
  const ports = [0, 1, 2].map((i) => node(i).port);
  const started = Array.from({ length: workers }, (_, w) =>
    forkWorker("random-worker.mjs", {
      ports,
      witnessPort: node(3).port,
      resources: RESOURCES,
      seed: seed * 100 + w,
      callers,
      sections,
      // one worker on node-redis (random-worker-start.test.ts: its start under CLIENT KILL); half
      // poll quickly, the others mostly wait for hand-overs
      library: w === 0 ? "node-redis" : "ioredis",
      options: w % 2 === 0 ? { retryDelay: 20, retryJitter: 30 } : { retryDelay: 500, retryJitter: 100 },
    }),
  );
  children.push(...started);
  const done = started.map(() => false);
  const reports = Promise.all(
    started.map(async (worker, w) => {
      try {
        return await worker.next<Done>("done");
      } finally {
        // a worker that exited before its report ends the faults too: the run fails on its report
        done[w] = true;
      }
    }),
  );
  // awaited below, once the faults are over
  reports.catch(() => {});
  const injected = faults ? await injectFaults(seed, started, done) : [];
  return { started, reports: await reports, injected };
}

const total = (reports: readonly Done[], field: keyof Done) =>
  reports.reduce((sum, report) => sum + (report[field] as number), 0);
const handOverChannels = async (client: Redis) => (await client.pubsub("CHANNELS", "redlock-kit:*")) as string[];

/** The checks of both tests: exclusion, progress, and (with the workers still running) nothing left. */
async function expectSafeAndLive(settings: Run) {
  const { started, reports, injected } = await run(settings);
  const summary = {
    seed: settings.seed,
    injected,
    acquired: total(reports, "acquired"),
    refused: total(reports, "refused"),
    unavailable: total(reports, "unavailable"),
    aborted: total(reports, "aborted"),
    skipped: total(reports, "skippedReleases"),
    extended: total(reports, "extended"),
    lost: total(reports, "lost"),
    expiredInside: total(reports, "expiredInside"),
    overlaps: total(reports, "overlaps"),
    staleOverlaps: total(reports, "staleOverlaps"),
  };
  if (process.env.RANDOM_EXCLUSION_SEED) console.info(JSON.stringify(summary));
  // exclusion: nobody entered a resource while another holder's lock on it was still valid
  expect(
    reports.flatMap((report) => report.violations),
    JSON.stringify(summary),
  ).toEqual([]);
  // progress: no call failed otherwise than the API allows (a waiting call gets its lock within
  // its wait), every section ran, and every worker held locks
  expect(
    reports.flatMap((report) => report.failures),
    JSON.stringify(summary),
  ).toEqual([]);
  expect(total(reports, "attempts")).toBe(settings.workers * settings.callers * settings.sections);
  for (const report of reports) expect(report.acquired).toBeGreaterThan(0);
  // the witness saw every section leave
  for (const resource of RESOURCES) {
    expect(Number((await witness.get(`w:in:${resource}`)) ?? 0)).toBe(0);
    expect(await witness.hlen(`w:holders:${resource}`)).toBe(0);
  }
  // nothing left while the workers still run: the locks left to expire do, the queues are empty
  // (after a fault, an entry whose ZREM a killed connection lost stays until its queue expires,
  // docs/waiting.md "Leaks": only a queue, with an expiry, may be left then), and the
  // subscriptions end once nobody waits
  const isQueue = (key: string) => key.endsWith(":redlock-kit:waiters");
  for (const inspector of inspectors) {
    const left = async () => (await inspector.keys("*")).filter((key) => !FENCE_COUNTER.test(key));
    await until(async () => (await left()).every(isQueue), "every lock key gone", 10_000);
    for (const key of await left()) {
      const pttl = await inspector.pttl(key);
      expect({ key, within: pttl > 0 && pttl <= WAIT + 1000 }).toEqual({ key, within: true });
    }
    if (!settings.faults) expect(await left()).toEqual([]);
    await until(async () => (await handOverChannels(inspector)).length === 0, "no hand-over channel");
  }
  const handles = await Promise.all(
    started.map(async (worker) => {
      worker.send({ kind: "quit" });
      return (await worker.next<{ handles: string[] }>("quit")).handles;
    }),
  );
  for (const left of handles) expect(left.filter((type) => type === "TCPSocketWrap" || type === "Timeout")).toEqual([]);
  // once they exited, the instances serve the inspectors alone
  await Promise.all(started.map((worker) => worker.exited));
  for (const inspector of inspectors) {
    await until(async () => ((await inspector.client("LIST")) as string).trim().split("\n").length === 1, "one client");
  }
}

describe("mutual exclusion between processes under a randomized workload", () => {
  it("5 processes × 2 callers, random sets of 1–3 of 5 resources: never two valid holders, every call served, nothing left", async () => {
    await expectSafeAndLive({ seed: SEED, workers: 5, callers: 2, sections: 20, faults: false });
  }, 120_000);

  it("the same while an instance is stopped (SIGSTOP), its scripts flushed, its clients or subscribers killed, a worker frozen", async () => {
    await expectSafeAndLive({ seed: SEED + 1, workers: 5, callers: 2, sections: 20, faults: true });
  }, 120_000);
});
