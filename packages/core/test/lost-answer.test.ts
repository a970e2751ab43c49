/**
 * `HeldRoute.lostAnswer(status)`: what an adapter sends instead of the handler's answer when the
 * route's lock was lost under it. Decided on `lock.valid` (one clock read), never on `lock.signal`,
 * which arms a timer per lock.
 */
import { expect, it } from "vitest";
import { recordTimeouts } from "#test-helpers/armed-timers.js";
import { sleep } from "#test-helpers/redis.js";
import { createHttpLockPolicy, FetchResponseTracker, type HeldRoute } from "../src/index.js";
import { useRedlocks } from "./helpers/redlocks.js";

const { redlock } = useRedlocks(1);

async function held(key: string, ttl: number): Promise<HeldRoute> {
  const route = createHttpLockPolicy(redlock(), { ttl, autoExtend: false }).route(key);
  const outcome = await route.beginTracked(
    { params: {}, query: {}, body: {}, headers: {} },
    new FetchResponseTracker(),
  );
  if (outcome.kind !== "acquired") throw new Error(`not acquired: ${outcome.kind}`);
  return outcome.held;
}

it("answers nothing for an intact lock, arming no timer", async () => {
  const route = await held("intact", 60_000);
  const { delays: armed, restore } = recordTimeouts((ms) => ms > 30_000);
  try {
    expect([route.lostAnswer(200), route.lostError()]).toEqual([undefined, undefined]);
    expect(armed).toEqual([]);
  } finally {
    restore();
  }
  await route.lock.release();
});

it("answers 409 {error: 'Lock was lost'} for a success or redirect once the validity ended, keeps a 4xx or 5xx", async () => {
  const route = await held("outlived", 300);
  // core's own Lock (src), not the helpers' (dist): test/helpers/lock-events.ts untilInvalid does this
  while (route.lock.valid) await sleep(10);
  const lost = { status: 409, headers: { "Cache-Control": "no-store" }, body: { error: "Lock was lost" } };
  expect([route.lostAnswer(200), route.lostAnswer(302), route.lostAnswer(399)]).toEqual([lost, lost, lost]);
  expect([route.lostAnswer(400), route.lostAnswer(422), route.lostAnswer(500)]).toEqual([
    undefined,
    undefined,
    undefined,
  ]);
  expect(route.lostError()?.name).toBe("LockLostError");
});

it("answers nothing once the handler released the lock itself", async () => {
  const route = await held("released", 60_000);
  await route.lock.release();
  expect([route.lock.valid, route.lostAnswer(200)]).toEqual([false, undefined]);
});
