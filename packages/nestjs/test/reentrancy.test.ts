/**
 * A `@Locked` provider method called by a `@LockedRoute` handler, in real Nest apps on
 * platform-express and platform-fastify against real redis-servers: on the route's resource it
 * re-enters the route's lock (as under the Express, Koa and Fastify adapters) instead of answering
 * 423 to its own request; on another resource it locks on its own; and the route's lock does not
 * count as held for any other request.
 */

import { setTimeout as sleep } from "node:timers/promises";
import { Controller, HttpCode, Inject, Injectable, type MessageEvent, Module, Param, Post, Sse } from "@nestjs/common";
import { channels, currentLock, type Lock, Redlock, type ReleaseMessage } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { concat, defer, map, NEVER, type Observable } from "rxjs";
import request from "supertest";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { nextChunk, open, send } from "#test-helpers/http-client.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { Locked, LockedRoute, RedlockModule, RequestLock } from "../src/index.js";
import { platforms, type RunningNestApp, startNestApp } from "./helpers/nest-app.js";

const cluster = useRedisServers(3);
let clients: Redis[] = [];
/** The test's own Redlock: another owner, as far as the apps are concerned. */
let other: Redlock;
/**
 * Every lock here is one attempt at 1 s (or 3 s): 500 ms per instance, not the default 100 ms a
 * loaded machine's Redis misses (503 instead of the answer under test).
 */
const ONE_ATTEMPT = { retryCount: 0, instanceTimeout: 500 };

beforeAll(() => {
  clients = cluster.servers.map((server) => server.client());
  other = new Redlock(clients, ONE_ATTEMPT);
});

afterEach(async () => {
  await Promise.all(clients.map((client) => client.flushall()));
});

afterAll(async () => {
  await other?.quit();
});

/** The resources of every release made while the test runs (a route's, a `@Locked` method's, the test's own). */
const releases: string[][] = [];
function onRelease(message: unknown) {
  releases.push([...(message as ReleaseMessage).resources]);
}
beforeAll(() => channels.release.subscribe(onRelease));
afterAll(() => channels.release.unsubscribe(onRelease));

/** How many releases named exactly `resource`, once they have settled (the release lands after the response). */
async function releasesOf(resource: string): Promise<number> {
  const count = () => releases.filter((resources) => resources.length === 1 && resources[0] === resource).length;
  await expect.poll(count).toBeGreaterThanOrEqual(1);
  // a second release would follow the first closely
  await sleep(100);
  return count();
}

/** How many instances hold `key` (a quorum of 2 at least while it is locked; the third may lag). */
async function heldOn(key: string): Promise<number> {
  const values = await Promise.all(clients.map((client) => client.exists(key)));
  return values.reduce((sum, count) => sum + count, 0);
}

/** What each `@Locked` method saw while it ran: the lock it ran under, and how many instances held its key. */
const seen: Record<string, { lock: Lock | undefined; held: number }> = {};
/** A `pay` call on an order with a gate here waits for it before returning. */
const gates = new Map<string, Promise<void>>();

@Injectable()
class OrderService {
  @Locked("order:{0}", 1000)
  async pay(id: string) {
    seen[`order:${id}`] = { lock: currentLock(), held: await heldOn(`order:${id}`) };
    await gates.get(id);
    return { paid: id };
  }

  @Locked("invoice:{0}", 1000)
  async bill(id: string) {
    seen[`invoice:${id}`] = { lock: currentLock(), held: await heldOn(`invoice:${id}`) };
    return { billed: id };
  }
}

@Controller("orders")
class OrdersController {
  constructor(@Inject(OrderService) private readonly orders: OrderService) {}

  @Post(":id/pay")
  @HttpCode(200)
  @LockedRoute("order:{params.id}", { ttl: 1000 })
  async pay(@Param("id") id: string, @RequestLock() lock: Lock) {
    // a later tick of the request than the one the handler started in
    await sleep(5);
    const result = await this.orders.pay(id);
    return {
      ...result,
      sameLock: seen[`order:${id}`]?.lock === lock,
      // the re-entered call released nothing: the route still holds its lock
      stillHeld: lock.valid && (await heldOn(`order:${id}`)) >= 2,
    };
  }

  @Post(":id/bill")
  @HttpCode(200)
  @LockedRoute("order:{params.id}", { ttl: 1000 })
  async bill(@Param("id") id: string, @RequestLock() lock: Lock) {
    const result = await this.orders.bill(id);
    const nested = seen[`invoice:${id}`]?.lock;
    return {
      ...result,
      separateLock: nested !== undefined && nested !== lock,
      nestedResources: nested?.resources,
      // the nested lock was released when the method returned; the route's is still held
      nestedHeldAfter: await heldOn(`invoice:${id}`),
      routeHeldAfter: lock.valid && (await heldOn(`order:${id}`)) >= 2,
    };
  }

  @Post(":id/fail")
  @LockedRoute("order:{params.id}", { ttl: 1000 })
  async fail(@Param("id") id: string) {
    await this.orders.pay(id);
    throw new Error("failed after paying");
  }

  /** The nested call runs when Nest subscribes to the stream, after the handler has returned. */
  @Sse(":id/feed")
  @LockedRoute("order:{params.id}", { ttl: 1000 })
  feed(@Param("id") id: string, @RequestLock() lock: Lock): Observable<MessageEvent> {
    return defer(() => this.orders.pay(id)).pipe(
      map((paid) => ({ data: { ...paid, sameLock: seen[`order:${id}`]?.lock === lock } })),
    );
  }

  /** The same, never ending: the client leaves. */
  @Sse(":id/endless")
  @LockedRoute("order:{params.id}", { ttl: 1000 })
  endless(@Param("id") id: string, @RequestLock() lock: Lock): Observable<MessageEvent> {
    return concat(
      defer(() => this.orders.pay(id)).pipe(
        map((paid) => ({ data: { ...paid, sameLock: seen[`order:${id}`]?.lock === lock } })),
      ),
      NEVER,
    );
  }

  /** No route lock: the service method locks the order itself. */
  @Post(":id/direct")
  @HttpCode(200)
  direct(@Param("id") id: string) {
    return this.orders.pay(id);
  }
}

function appModule(instances: () => readonly Redis[]) {
  @Module({
    imports: [RedlockModule.forRootAsync({ useFactory: () => ({ instances: instances(), options: ONE_ATTEMPT }) })],
    controllers: [OrdersController],
    providers: [OrderService],
  })
  class AppModule {}
  return AppModule;
}

describe.each(platforms)("on platform-%s", (platform) => {
  let running: RunningNestApp;

  beforeAll(async () => {
    running = await startNestApp(
      appModule(() => clients),
      platform,
    );
  });

  afterAll(async () => {
    await running?.close();
  });

  beforeEach(() => {
    for (const key of Object.keys(seen)) delete seen[key];
    gates.clear();
    releases.length = 0;
  });

  it("a @Locked provider method on the @LockedRoute's resource re-enters the route's lock: 200, not 423, and it ran holding that same lock", async () => {
    const response = await request(running.url).post("/orders/1/pay").expect(200);
    expect(response.body).toEqual({ paid: "1", sameLock: true, stillHeld: true });
    expect(seen["order:1"]?.lock?.resources).toEqual(["order:1"]);
    expect(seen["order:1"]?.held).toBeGreaterThanOrEqual(2);
    // released once the response is sent, by the route, and only by it
    await expect.poll(() => heldOn("order:1")).toBe(0);
    expect(await releasesOf("order:1")).toBe(1);
    // and again on the next request: nothing was left behind
    await request(running.url).post("/orders/1/pay").expect(200, { paid: "1", sameLock: true, stillHeld: true });
    await expect.poll(() => heldOn("order:1")).toBe(0);
  });

  it("a @Locked provider method on another resource still takes its own lock, and contends for it (423)", async () => {
    const response = await request(running.url).post("/orders/2/bill").expect(200);
    expect(response.body).toEqual({
      billed: "2",
      separateLock: true,
      nestedResources: ["invoice:2"],
      nestedHeldAfter: 0,
      routeHeldAfter: true,
    });
    expect(seen["invoice:2"]?.held).toBeGreaterThanOrEqual(2);
    await expect.poll(() => heldOn("order:2")).toBe(0);

    const held = await other.acquire("invoice:3", 3000);
    try {
      const refused = await request(running.url).post("/orders/3/bill").expect(423);
      expect(refused.body).toMatchObject({ statusCode: 423, errorCode: "ERR_REDLOCK_CONTENTION" });
      expect(seen["invoice:3"]).toBeUndefined();
    } finally {
      await held.release();
    }
    // the route's lock was released all the same
    await expect.poll(() => heldOn("order:3")).toBe(0);
  });

  it("the route's lock counts as held only for its own request: another request's @Locked call on the resource gets 423 meanwhile", async () => {
    let letThrough = () => {};
    gates.set(
      "4",
      new Promise<void>((resolve) => {
        letThrough = resolve;
      }),
    );
    const first = request(running.url)
      .post("/orders/4/pay")
      .then((response) => response);
    try {
      // the first request is inside the re-entered method, holding the route's lock
      await expect.poll(() => seen["order:4"], { timeout: 5000 }).toBeDefined();
      await request(running.url).post("/orders/4/direct").expect(423);
    } finally {
      letThrough();
    }
    const response = await first;
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ paid: "4", sameLock: true, stillHeld: true });
    await expect.poll(() => heldOn("order:4")).toBe(0);
    await request(running.url).post("/orders/4/direct").expect(200, { paid: "4" });
  });

  it("the route's lock is released once when the handler throws after the re-entered call", async () => {
    await request(running.url).post("/orders/5/fail").expect(500);
    expect(seen["order:5"]?.held).toBeGreaterThanOrEqual(2);
    await expect.poll(() => heldOn("order:5")).toBe(0);
    expect(await releasesOf("order:5")).toBe(1);
  });

  it("in a streamed (SSE) response, a @Locked call made when the stream is subscribed re-enters the route's lock, released once the stream ends", async () => {
    const response = await send(`${running.url}/orders/6/feed`);
    expect(response.status).toBe(200);
    expect(response.text).toContain(`data: ${JSON.stringify({ paid: "6", sameLock: true })}`);
    await expect.poll(() => heldOn("order:6")).toBe(0);
    expect(await releasesOf("order:6")).toBe(1);
  });

  it("an endless SSE stream whose client leaves after the re-entered call leaves the lock to lapse, releasing it at most once", async () => {
    const { request: client, response } = open(`${running.url}/orders/7/endless`);
    client.on("error", () => {});
    try {
      const incoming = await response;
      expect(incoming.statusCode).toBe(200);
      // the stream opens with a blank line, then the event
      let received = "";
      while (!received.includes("data:")) received += await nextChunk(incoming);
      expect(received).toContain(`data: ${JSON.stringify({ paid: "7", sameLock: true })}`);
    } finally {
      client.destroy();
    }
    // no longer extended once the client left: gone within about one ttl (1000 ms)
    await expect.poll(() => heldOn("order:7")).toBe(0);
    await sleep(100);
    expect(releases.filter((resources) => resources[0] === "order:7").length).toBeLessThanOrEqual(1);
  });
});
