/**
 * L2, the soak under faults (docs/reliability.md): the HTTP load shape of helpers/http-load.ts on
 * Express, Koa and Fastify at once (one Redlock each, the same keys, one witness), while a fault
 * loop, every 5 s, kills one node (SIGKILL) and restarts it empty only after the ttl, then stops
 * another (SIGSTOP) for 1 s. A sampler checks all along that every key on the lock servers has a
 * TTL (INFO keyspace: keys = expires). Run by reliability/soak.test.ts: 8 s in `pnpm test`, 60 s
 * (or SOAK_SECONDS) with `pnpm soak`.
 */
import { Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { buildApp, type Framework, type RunningApp } from "./http-apps.js";
import { keysLeft, load, lockedRoutes, newTally, type Tally } from "./http-load.js";
import { pastOnWallClock, type RedisServer, sleep } from "./redis-servers.js";

export interface SoakOptions {
  /** Three lock servers: the fault loop kills and stops them in turn. */
  servers: readonly RedisServer[];
  witness: Redis;
  seconds: number;
  ttl: number;
  frameworks: readonly Framework[];
  /** Requests in flight per app. @default 30 */
  concurrency?: number;
}

export interface SoakReport {
  seconds: number;
  /** Fault cycles started (a kill and a stop each). */
  cycles: number;
  tallies: Record<string, Tally>;
  /** INFO keyspace samples taken of running servers, and the most keys seen without a TTL in one. */
  samples: number;
  keysWithoutTtl: number;
  maxKeys: number;
  /** Keys on the lock servers one ttl after every command sent during load and faults had landed. */
  keysLeft: number;
}

/** Every 5 s: kill a node and restart it empty after ttl + 100 ms (a delayed restart), then stop another for 1 s. */
async function faultLoop(servers: readonly RedisServer[], ttl: number, faulted: Set<RedisServer>, over: () => boolean) {
  let cycles = 0;
  while (!over()) {
    const start = performance.now();
    const killed = servers[cycles % servers.length] as RedisServer;
    const stopped = servers[(cycles + 1) % servers.length] as RedisServer;
    cycles++;
    faulted.add(killed);
    await killed.kill();
    await sleep(ttl + 100);
    await killed.start();
    faulted.delete(killed);
    await sleep(Math.max(0, start + 2000 - performance.now()));
    faulted.add(stopped);
    stopped.pause();
    await sleep(1000);
    stopped.resume();
    faulted.delete(stopped);
    while (!over() && performance.now() < start + 5000) await sleep(50);
  }
  return cycles;
}

/** keys − expires of db0 (0 when empty), from INFO keyspace. */
function withoutTtl(info: string): { keys: number; untimed: number } {
  const match = /db0:keys=(\d+),expires=(\d+)/.exec(info);
  if (!match) return { keys: 0, untimed: 0 };
  return { keys: Number(match[1]), untimed: Number(match[1]) - Number(match[2]) };
}

export async function soak(options: SoakOptions): Promise<SoakReport> {
  const { servers, witness, seconds, ttl, frameworks, concurrency = 30 } = options;
  await witness.flushall();
  // fail fast on a server that is down or stopped: the sampler skips it
  const inspectors = servers.map((server) =>
    server.client({ commandTimeout: 500, maxRetriesPerRequest: 0, enableOfflineQueue: false }),
  );
  const direct = servers.map((server) => server.client());
  const redlocks = frameworks.map(() => new Redlock(direct));
  const tallies: Record<string, Tally> = {};
  const apps: RunningApp[] = [];
  const faulted = new Set<RedisServer>();
  const report = { samples: 0, keysWithoutTtl: 0, maxKeys: 0 };
  let over = false;
  const started = performance.now();
  try {
    for (const [i, framework] of frameworks.entries()) {
      const tally = newTally();
      tallies[framework] = tally;
      apps.push(await buildApp[framework](redlocks[i] as Redlock, lockedRoutes(witness, tally, { ttl })));
    }
    const faults = faultLoop(servers, ttl, faulted, () => over);
    const sampler = (async () => {
      while (!over) {
        for (const [i, server] of servers.entries()) {
          if (faulted.has(server)) continue;
          try {
            const { keys, untimed } = withoutTtl(await (inspectors[i] as Redis).info("keyspace"));
            report.samples++;
            report.maxKeys = Math.max(report.maxKeys, keys);
            report.keysWithoutTtl = Math.max(report.keysWithoutTtl, untimed);
          } catch {
            // faulted between the check and the call: skip this sample
          }
        }
        await sleep(200);
      }
    })();
    // a quarter on the hot key, an eighth waiting on 10 keys (queues under faults), the rest spread
    const path = (i: number) => (i % 4 === 0 ? "/hot" : i % 8 === 1 ? `/queue/${i % 10}` : `/items/${i % 200}`);
    const deadline = started + seconds * 1000;
    await Promise.all(
      apps.map((app, i) =>
        load(app.url, Number.POSITIVE_INFINITY, concurrency, path, tallies[frameworks[i] as Framework] as Tally, () => {
          over ||= performance.now() >= deadline;
          return over;
        }),
      ),
    );
    over = true;
    const cycles = await faults;
    await sampler;
    const elapsed = (performance.now() - started) / 1000;
    // Every command the Redlocks sent (a late landing on a resumed node, one queued while a node
    // was down) has run once a PING behind it on the same connection is answered. A key set by
    // then has expired a ttl later on the clock Redis expires keys by (a timer may fire early),
    // and KEYS leaves out an expired key Redis has not removed yet: no slack for its expiry cycle.
    await Promise.all(direct.map((client) => client.ping()));
    await pastOnWallClock(ttl);
    const left = await keysLeft(direct);
    return { seconds: elapsed, cycles, tallies, ...report, keysLeft: left.length };
  } finally {
    over = true;
    for (const server of servers) {
      if (!server.running) await server.start();
      else server.resume();
    }
    await Promise.all(apps.map((app) => app.close()));
    await Promise.all(redlocks.map((dlm) => dlm.quit()));
    for (const client of [...inspectors, ...direct]) client.disconnect();
  }
}

/** A few lines for a person: statuses per adapter, witness, TTL samples, what was left. */
export function formatSoakReport(report: SoakReport): string {
  const lines = [
    `soak: ${report.seconds.toFixed(1)} s, ${report.cycles} fault cycles (kill + delayed restart, 1 s stop)`,
  ];
  for (const [framework, tally] of Object.entries(report.tallies)) {
    const statuses = [...tally.statuses].sort(([a], [b]) => a - b).map(([status, count]) => `${status}: ${count}`);
    lines.push(
      `  ${framework.padEnd(8)} ${statuses.join(", ")}; sections ${tally.sections}, overlaps ${tally.overlaps}`,
    );
  }
  lines.push(
    `  TTL samples ${report.samples}: at most ${report.keysWithoutTtl} key(s) without a TTL, at most ${report.maxKeys} keys on a server`,
    `  keys left one ttl after the end: ${report.keysLeft}`,
  );
  return lines.join("\n");
}
