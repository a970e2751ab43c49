/**
 * M6, the holder crashes (docs/reliability.md §3): the process holding a lock is killed with SIGKILL,
 * so nothing releases it. A waiter in another process gets it once the keys expire, never while
 * the dead holder's validity lasted, with auto-extension off and on. No release means no
 * hand-over: the waiter learns of the expiry by polling (docs/waiting.md, "Fallbacks"); the test
 * prints how long after the expiry it got the lock, and asserts no time.
 */
import type { Redis } from "ioredis";
import { beforeAll, describe, expect, it } from "vitest";
import { useInvariants } from "../helpers/invariants.js";
import { queuedOnQuorum } from "../helpers/quorum.js";
import { type RedisServer, sleep, useRedisServers } from "../helpers/redis-servers.js";
import { type ForkedWorker, forkWorker, type LockResult, machineNow } from "../helpers/workers.js";

const TTL = 1000;
const DRIFT = Math.floor(TTL * 0.01) + 2;
/** The waiter's poll: the only way it can learn that the keys expired. */
const POLL = { retryDelay: 100, retryJitter: 50 };

const cluster = useRedisServers(4);
const invariants = useInvariants(cluster, { maxTtlMs: TTL, lockServers: (servers) => servers.slice(0, 3) });
let direct: Redis[] = [];
let witness: Redis;

beforeAll(() => {
  direct = cluster.servers.slice(0, 3).map((server) => server.client());
  witness = (cluster.servers[3] as RedisServer).client();
});

function start(rounds: object[]): ForkedWorker {
  const worker = forkWorker("one-lock-worker.mjs", {
    ports: cluster.servers.slice(0, 3).map((server) => server.port),
    witnessPort: (cluster.servers[3] as RedisServer).port,
    resource: "crash",
    ttl: TTL,
    rounds,
  });
  invariants.track({ close: () => worker.kill() });
  return worker;
}

/**
 * The waiter sits in the queue of a quorum of the instances: it waits, and only polling can tell it
 * of the expiry. Not every instance: the holder's keys last 1 s, and where one is gone when the
 * waiter's attempt lands (it expired there first, or an extension reached it too late) the waiter
 * takes it instead of queuing there.
 */
async function untilQueued(): Promise<void> {
  const queued = () => Promise.all(direct.map((client) => client.zcard("crash:redlock-kit:waiters")));
  for (let i = 0; i < 500 && !queuedOnQuorum(await queued(), 1); i++) await sleep(10);
  expect(queuedOnQuorum(await queued(), 1)).toBe(true);
}

describe("the holder's process is killed (SIGKILL)", () => {
  it.each([
    ["off", false],
    ["on", true],
  ])(
    "auto-extension %s: a waiter in another process gets the lock once the keys expire, never before the holder's validity ended",
    async (_, autoExtend) => {
      invariants.faultInjected();
      // both processes started and connected first: a cold start takes longer than the ttl here
      const holder = start([{ barrier: "go:holder", autoExtend, hold: "until-told" }]);
      const waiter = start([{ barrier: "go:waiter", options: { wait: 10_000, ...POLL }, hold: "until-told" }]);
      await Promise.all([holder.next("ready"), waiter.next("ready")]);
      await witness.rpush("go:holder", "go");
      const held = await holder.next<LockResult>("result");
      expect(held.outcome).toBe("acquired");
      let validUntil = held.validUntil;
      await witness.rpush("go:waiter", "go");
      await untilQueued();
      let extensions = 0;
      if (autoExtend) {
        // killed just after an extension: the keys then outlive the first ttl by far
        while (extensions < 2) {
          validUntil = (await holder.next<{ validUntil: number }>("extended")).validUntil;
          extensions++;
        }
      }
      const killedAt = machineNow();
      await holder.kill();
      // no extension outlived the process: what the keys have left is one ttl at most (-2: gone)
      for (const client of direct) expect(await client.pttl("crash")).toBeLessThanOrEqual(TTL);

      const got = await waiter.next<LockResult>("result");
      expect(got.outcome).toBe("acquired");
      // safety: not while the dead holder's validity (ttl − drift from its last acquire or extension) lasted
      expect(got.at).toBeGreaterThanOrEqual(validUntil);
      // liveness: it polled (the first attempt was refused, a later one found the keys gone) and got
      // the lock within its wait; a waiter that did not poll would have waited it out (contention).
      // The poll's interval is retries.test.ts's, read from the timers armed
      expect(got.attempts).toBeGreaterThan(1);
      // the keys expired about ttl after the holder's last attempt started, i.e. validUntil + drift
      const afterExpiry = Math.max(0, got.at - (validUntil + DRIFT));
      console.info(
        `M6 auto-extension ${autoExtend ? "on" : "off"}: lock free ${Math.round(validUntil + DRIFT - killedAt)} ms after the kill, ` +
          `the waiter had it ${Math.round(afterExpiry)} ms later (poll ${POLL.retryDelay} + 0–${POLL.retryJitter} ms, ${got.attempts} attempts)`,
      );

      waiter.send({ kind: "release" });
      expect((await waiter.next<{ released: boolean }>("released")).released).toBe(true);
      for (const client of direct) expect(await client.dbsize()).toBe(0);
    },
  );
});
