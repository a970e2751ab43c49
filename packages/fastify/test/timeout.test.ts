import type { AcquireMessage } from "@redlock-kit/core";
import { expect, it } from "vitest";
import { gate } from "#test-helpers/gate.js";
import { arrival, nextMessage, nextRelease } from "#test-helpers/lock-events.js";
import redlockPlugin from "../src/index.js";
import { useFastifyRedlock } from "./bed.js";

const bed = useFastifyRedlock();

it("keeps the lock while a handler that handlerTimeout answered for still runs, and releases it once the handler settles", async () => {
  // 1 s: the lock is taken well before it on a loaded machine (a timeout before the lock is H9: the handler never runs)
  const app = bed.app({ handlerTimeout: 1000 });
  await app.register(redlockPlugin, { redlock: bed.dlm, ttl: 60_000 });
  const { open: release, opened } = gate();
  const state = { runs: 0, inside: 0, maxInside: 0 };
  app.post("/x/:id", { config: { redlock: "fastify-timeout:{params.id}" } }, async () => {
    state.runs++;
    state.maxInside = Math.max(state.maxInside, ++state.inside);
    await opened;
    state.inside--;
    return { ran: true };
  });
  await app.ready();
  try {
    expect((await app.inject({ method: "POST", url: "/x/1" })).statusCode).toBe(503);
    // the timed-out handler still runs: the key is held and the next request does not enter
    expect(state.inside).toBe(1);
    expect((await app.inject({ method: "POST", url: "/x/1" })).statusCode).toBe(423);
    expect(await bed.redis.exists("fastify-timeout:1")).toBe(1);
    const released = nextRelease("fastify-timeout:1");
    release();
    // released by the handler's end, not expired: the release found the key still ours (the ttl,
    // 60 s, outlasts the test) and deleted it
    expect((await arrival(released, "the lock's release")).released).toBe(true);
    expect(await bed.redis.exists("fastify-timeout:1")).toBe(0);
    expect(state).toEqual({ runs: 1, inside: 0, maxInside: 1 });
  } finally {
    release();
  }
});

it("writes nothing over the 503 of a handlerTimeout that fired while the route waited for a lock it then did not get", async () => {
  const logged: string[] = [];
  // the timeout fires long before the route's wait (2 s) ends in contention
  const app = bed.app({
    handlerTimeout: 100,
    logger: { level: "warn", stream: { write: (line) => logged.push(line) } },
  });
  await app.register(redlockPlugin, { redlock: bed.dlm, ttl: 10_000, wait: 2000 });
  let runs = 0;
  app.post("/x/:id", { config: { redlock: "fastify-waited:{params.id}" } }, async () => {
    runs++;
    return { ran: true };
  });
  await app.ready();
  const holder = await bed.dlm.acquire("fastify-waited:1", 10_000);
  try {
    const ended = nextMessage<AcquireMessage>("redlock-kit:acquire", (m) => m.resources.includes("fastify-waited:1"));
    const answered = await app.inject({ method: "POST", url: "/x/1" });
    expect(answered.statusCode).toBe(503);
    expect((await arrival(ended, "the wait's end")).outcome).toBe("contention");
    // the route's answer runs a few promise turns after the acquisition's end
    await new Promise((resolve) => setImmediate(resolve));
    // before: FST_ERR_REP_ALREADY_SENT, from sending the 423 over the timeout's 503
    expect(logged.filter((line) => line.includes("FST_ERR_REP_ALREADY_SENT"))).toEqual([]);
    expect(runs).toBe(0);
  } finally {
    await holder.release();
  }
});
