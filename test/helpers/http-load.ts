/**
 * The HTTP load shape of docs/reliability.md (L1, L2): locked routes over many keys, one hot key
 * and a few keys that requests wait on, whose handlers count themselves in and out of their key on a witness Redis outside the
 * quorum, and a keep-alive client loop that fires GETs at a fixed concurrency.
 */
import http from "node:http";
import { setImmediate as endOfTurn } from "node:timers/promises";
import type { Redis } from "ioredis";
import type { RouteSpec } from "./http-apps.js";

export interface Tally {
  statuses: Map<number, number>;
  /** Sections the handler ran, and those in which the witness saw a second holder of the key. */
  sections: number;
  overlaps: number;
}

export const newTally = (): Tally => ({ statuses: new Map(), sections: 0, overlaps: 0 });

/**
 * GET /items/:id, GET /hot and GET /queue/:id (which waits up to 30 s for its turn instead of
 * answering 423), locked with `lock`; each handler counts itself in and out of its key on the witness.
 */
export function lockedRoutes(
  witness: Redis,
  tally: Tally,
  lock: { ttl: number; instanceTimeout?: number },
): RouteSpec[] {
  const handler = async (held: { resources: readonly string[] } | undefined) => {
    const name = `w:${held?.resources[0] ?? ""}`;
    tally.sections++;
    if ((await witness.incr(name)) !== 1) tally.overlaps++;
    await witness.decr(name);
    return { json: { ok: true } };
  };
  return [
    { method: "get", path: "/items/:id", key: "item:{params.id}", options: lock, handler },
    { method: "get", path: "/hot", key: "hot", options: lock, handler },
    // waits for its turn instead of answering 423: waiting (and release hand-overs) under load
    { method: "get", path: "/queue/:id", key: "queue:{params.id}", options: { ...lock, wait: 30_000 }, handler },
  ];
}

/**
 * How long a load may go without one request completing before it fails as stalled. Its bound
 * follows progress, not total time: a machine that is only slow (both cores shared) still completes
 * requests every few ms at concurrency 100, and a request waits its turn 30 s at most.
 */
export const STALL_MS = 30_000;

/**
 * `total` GETs (or until `stop()`) at `concurrency`, each a fresh path from `path(i)`, over a
 * keep-alive pool. Rejects, with the counts so far, once no request has completed for `STALL_MS`.
 */
export async function load(
  url: string,
  total: number,
  concurrency: number,
  path: (i: number) => string,
  tally: Tally,
  stop: () => boolean = () => false,
): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  let next = 0;
  let done = 0;
  let lastDone = performance.now();
  let watch: NodeJS.Timeout | undefined;
  const stalled = new Promise<never>((_, reject) => {
    watch = setInterval(() => {
      if (performance.now() - lastDone < STALL_MS) return;
      const statuses = JSON.stringify([...tally.statuses]);
      reject(new Error(`no request completed for ${STALL_MS} ms: ${done} of ${total} done, statuses ${statuses}`));
    }, 1000);
  });
  const one = (i: number) =>
    new Promise<number>((resolve, reject) => {
      const request = http.get(`${url}${path(i)}`, { agent }, (response) => {
        response.resume();
        response.once("error", reject);
        response.once("end", () => resolve(response.statusCode ?? 0));
      });
      request.once("error", reject);
    });
  try {
    await Promise.race([
      stalled,
      Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (next < total && !stop()) {
            const status = await one(next++);
            done++;
            lastDone = performance.now();
            tally.statuses.set(status, (tally.statuses.get(status) ?? 0) + 1);
          }
        }),
      ),
    ]);
  } finally {
    clearInterval(watch);
    // also ends the requests still open after a stall
    agent.destroy();
  }
}

/**
 * The keys on the lock servers (`key@instance`), read through `clients`, the connections the
 * Redlock sends on. Redis answers a connection's commands in order, so a command is answered after
 * every one sent before it has run (as QUIT is): once every release has resolved (at a quorum, the
 * other instances' commands already sent), no time is needed for them to land. A release's answer
 * may still send one more, and so may the end of its turn: the let-go of a key it reserved for a
 * retake (speed/retake.ts). The keys are read behind those, after a PING's answer and that turn.
 */
export async function keysLeft(clients: readonly Redis[]): Promise<string[]> {
  await Promise.all(clients.map((client) => client.ping()));
  await endOfTurn();
  const keys = await Promise.all(clients.map((client) => client.keys("*")));
  return keys.flatMap((names, i) => names.map((name) => `${name}@${i}`));
}

/** Statuses outside `allowed`, for an assertion that prints what was seen. */
export const unexpectedStatuses = (tally: Tally, allowed: readonly number[]): number[] =>
  [...tally.statuses.keys()].filter((status) => !allowed.includes(status));
