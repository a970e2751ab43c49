import { afterAll, beforeAll, expect, it } from "vitest";
import { startSentinel, type TestSentinel, until } from "../../../test/helpers/topologies.js";
import { Redlock } from "../src/index.js";

let sentinel: TestSentinel;

beforeAll(async () => {
  sentinel = await startSentinel();
}, 60_000);

afterAll(async () => {
  await sentinel?.stop();
});

it("locks through ioredis Sentinel options before and after a failover to the replica", async () => {
  const dlm = new Redlock([{ sentinels: [{ host: "127.0.0.1", port: sentinel.sentinelPort }], name: sentinel.name }], {
    retryDelay: 50,
    retryJitter: 50,
  });
  const before = await dlm.acquire("sentinel:a", 5000);
  expect(await sentinel.master.client().get("sentinel:a")).toBe(before.value);
  expect(await before.release()).toBe(true);

  await sentinel.master.kill();
  await until("the sentinel promotes the replica", async () => (await sentinel.masterPort()) === sentinel.replica.port);

  // ioredis asks the sentinel for the new master when it reconnects; `wait` covers that gap
  const after = await dlm.acquire("sentinel:b", 5000, { wait: 10_000 });
  expect(await sentinel.replica.client().get("sentinel:b")).toBe(after.value);
  expect(await after.release()).toBe(true);
  await dlm.quit();
}, 40_000);

it("accepts two Sentinel-managed masters as two distinct instances", () => {
  const sentinels = [{ host: "127.0.0.1", port: sentinel.sentinelPort }];
  const dlm = new Redlock([
    { sentinels, name: "one", lazyConnect: true },
    { sentinels, name: "two", lazyConnect: true },
    { sentinels, name: "three", lazyConnect: true },
  ]);
  expect(dlm.quorum).toBe(2);
  return dlm.quit();
});
