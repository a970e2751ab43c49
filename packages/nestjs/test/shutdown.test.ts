/**
 * The app's shutdown (app.close(), or a signal with enableShutdownHooks()) while a @LockedRoute
 * method is still running, on platform-express and platform-fastify, against real redis-servers.
 * Nest closes the HTTP server (waiting for the responses in progress) before the shutdown hooks;
 * a method an inner TimeoutInterceptor answered for has its response sent but still runs then,
 * under its route's lock, which is renewed and released through the module's clients. A @Locked
 * call or a @LockedRoute request still waiting for its lock (held by another owner) ends at once
 * with LockUnavailableError (503) instead of holding the shutdown up for its whole wait.
 */
import { text } from "node:stream/consumers";
import {
  Controller,
  Get,
  Inject,
  Injectable,
  Module,
  Param,
  Post,
  Scope,
  StreamableFile,
  UseInterceptors,
} from "@nestjs/common";
import { currentLock, type Lock, LockUnavailableError, Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { gate, gatedProducer } from "#test-helpers/gate.js";
import { nextChunk, open, send } from "#test-helpers/http-client.js";
import { arrival, nextExtensions, nextRelease } from "#test-helpers/lock-events.js";
import { until, useRedisServers } from "#test-helpers/redis.js";
import { Locked, LockedRoute, RedlockModule } from "../src/index.js";
import { platforms, ShutdownProbe, ShutdownProbeModule, startNestApp, TimeoutInterceptor } from "./helpers/nest-app.js";

const cluster = useRedisServers(3);
let clients: Redis[] = [];
/** Another owner, waiting for the route's key. */
let other: Redlock;

beforeAll(() => {
  clients = cluster.servers.map((server) => server.client());
  other = new Redlock(clients);
});

afterEach(async () => {
  await Promise.all(clients.map((client) => client.flushall()));
});

afterAll(async () => {
  await other?.quit();
});

/** The method's critical section: it runs until the test opens `release`. */
let finished = () => {};
let release = gate();

@Controller("stock")
@UseInterceptors(new TimeoutInterceptor(100))
class StockController {
  @Post(":sku/count")
  @LockedRoute("stock:{params.sku}", { ttl: 1000 })
  async count(@Param("sku") sku: string) {
    await release.opened;
    finished();
    return { counted: sku };
  }
}

describe.each(platforms)(
  "shutdown while a @LockedRoute method answered for by a timeout still runs (%s)",
  (platform) => {
    it("keeps the route's lock, renewed, until the method settles, releases it, and only then closes the clients", async () => {
      const resource = `stock:${platform}`;
      @Module({
        imports: [RedlockModule.forRoot({ instances: cluster.servers.map((s) => `redis://127.0.0.1:${s.port}`) })],
        controllers: [StockController],
      })
      class AppModule {}
      const running = await startNestApp(AppModule, platform);
      release = gate();
      const order: string[] = [];
      let releasedByMethod: boolean | undefined;
      const methodDone = new Promise<void>((resolve) => {
        finished = () => {
          order.push("method finished");
          resolve();
        };
      });
      // the timeout answered; the method still runs, holding the key
      expect((await send(`${running.url}/stock/${platform}/count`, { method: "POST" })).status).toBe(408);
      const twice = nextExtensions(resource, 2, { succeeded: true });
      const closed = running.close().then(() => order.push("closed"));
      // another owner waits for the key: it may take it only once the request released it
      const taken = other.acquire(resource, 1000, { wait: 20_000 }).then((lock) => {
        order.push("other owner acquired");
        return lock;
      });
      try {
        // before: the module closed its clients at once, the lock lapsed and the other owner took
        // the key while the method still ran
        await Promise.race([twice, taken]);
        order.push("method still holds its lock");
        const released = nextRelease(resource);
        release.open();
        await methodDone;
        releasedByMethod = (await released).released;
        await closed;
        await (await taken).release();
      } finally {
        twice.stop();
        release.open();
      }
      expect(order.slice(0, 2)).toEqual(["method still holds its lock", "method finished"]);
      expect(order).toContain("closed");
      expect(order.indexOf("other owner acquired")).toBeGreaterThan(order.indexOf("method finished"));
      // released at the method's end while the clients were open (the key still ours), not left to expire
      expect(releasedByMethod).toBe(true);
    });
  },
);

/** The module, on the test's redis-servers through URLs: clients it creates and closes. */
const redlockModule = () =>
  RedlockModule.forRoot({ instances: cluster.servers.map((s) => `redis://127.0.0.1:${s.port}`) });

/** Calls whose method body ran: none may, for a call still waiting for its lock at shutdown. */
let bodiesRun: string[] = [];

@Injectable()
class ReportJob {
  @Locked("report:{0}", { ttl: 5000, wait: 60_000 })
  async run(name: string) {
    bodiesRun.push(`job ${name}`);
  }
}

@Controller("reports")
class ReportController {
  @Post(":name")
  @LockedRoute("report:{params.name}", { ttl: 5000, wait: 60_000 })
  async make(@Param("name") name: string) {
    bodiesRun.push(`route ${name}`);
    return { made: name };
  }
}

/** The other owner takes `key` and holds it (ttl 60 s) on every server, where a waiter must find it. */
async function holdElsewhere(key: string): Promise<Lock> {
  const held = await other.acquire(key, 60_000);
  await expect.poll(() => Promise.all(clients.map((client) => client.get(key)))).toEqual(clients.map(() => held.value));
  return held;
}

/** Resolves once a call waits in `key`'s queue on every server. */
const queuedEverywhere = (key: string) =>
  until(`a call is queued for ${key} everywhere`, async () =>
    (await Promise.all(clients.map((client) => client.zcard(`${key}:redlock-kit:waiters`)))).every((n) => n === 1),
  );

/** The closed app left nothing: each server has the other owner's key alone (no queue entry), with its value. */
async function expectOnlyHeld(held: Lock): Promise<void> {
  const key = held.resources[0] as string;
  expect(await Promise.all(clients.map((client) => client.keys("*")))).toEqual(clients.map(() => [key]));
  expect(await Promise.all(clients.map((client) => client.get(key)))).toEqual(clients.map(() => held.value));
}

describe("shutdown while a @Locked call waits for its lock, held by another owner", () => {
  it("ends the call at once with LockUnavailableError, its body not run, and closes without waiting for the holder", async () => {
    bodiesRun = [];
    const held = await holdElsewhere("report:daily");
    @Module({ imports: [redlockModule()], providers: [ReportJob] })
    class JobApp {}
    const running = await startNestApp(JobApp, "express");
    const call = running.app
      .get(ReportJob)
      .run("daily")
      .catch((error: unknown) => error);
    try {
      await queuedEverywhere("report:daily");
      // before: close() waited for the call, which waited for the holder (60 s)
      await arrival(running.close(), "the app's close, the holder still holding the key");
      const error = await call;
      expect(error).toBeInstanceOf(LockUnavailableError);
      expect((error as LockUnavailableError).status).toBe(503);
      expect(bodiesRun).toEqual([]);
      await expectOnlyHeld(held);
    } finally {
      await held.release();
    }
    // the call is over: the released key does not make its body run
    expect(await call).toBeInstanceOf(LockUnavailableError);
    expect(bodiesRun).toEqual([]);
  });
});

describe.each(platforms)("shutdown while a @LockedRoute request waits for its lock (%s)", (platform) => {
  it("answers the request 503 at once, its handler not run, and closes without waiting for the holder", async () => {
    bodiesRun = [];
    const key = `report:${platform}`;
    const held = await holdElsewhere(key);
    @Module({ imports: [redlockModule()], controllers: [ReportController] })
    class RouteApp {}
    const running = await startNestApp(RouteApp, platform);
    const answered = open(`${running.url}/reports/${platform}`, { method: "POST" }).response;
    try {
      await queuedEverywhere(key);
      // before: Nest closed the HTTP server first, which waited for the request, which waited for the holder
      await arrival(running.close(), "the app's close, the holder still holding the key");
      const response = await answered;
      // the route's own answer, not the framework's refusal of a request that came while closing
      expect({ status: response.statusCode, body: JSON.parse(await text(response)) }).toMatchObject({
        status: 503,
        body: { statusCode: 503, errorCode: "ERR_REDLOCK_UNAVAILABLE" },
      });
      expect(bodiesRun).toEqual([]);
      await expectOnlyHeld(held);
    } finally {
      await held.release();
    }
  });
});

/** A request-scoped provider: one instance per request, which no app binds at its start. */
@Injectable({ scope: Scope.REQUEST })
class Receipts {
  @Locked("receipt:{0}", { ttl: 5000 })
  async print(id: string) {
    bodiesRun.push(`receipt ${id}`);
    return { printed: id };
  }
}

/** The handler waits for `receipts.opened` before its locked call: the test opens it once the shutdown began. */
let receipts = gate();
let handlerEntered = gate();

@Controller("receipts")
class ReceiptsController {
  constructor(@Inject(Receipts) private readonly receipts: Receipts) {}
  @Post(":id")
  async print(@Param("id") id: string) {
    handlerEntered.open();
    await receipts.opened;
    return this.receipts.print(id);
  }
}

describe.each(platforms)(
  "shutdown while a request calls a request-scoped provider's @Locked method (%s)",
  (platform) => {
    it("answers 503 as for any provider of the app, the method not run", async () => {
      bodiesRun = [];
      receipts = gate();
      const began = new Promise<void>((resolve) => {
        ShutdownProbe.began = resolve;
      });
      @Module({
        imports: [redlockModule(), ShutdownProbeModule],
        controllers: [ReceiptsController],
        providers: [Receipts],
      })
      class ReceiptsApp {}
      const running = await startNestApp(ReceiptsApp, platform);
      let closed: Promise<void> | undefined;
      try {
        receipts.open();
        expect((await send(`${running.url}/receipts/1`, { method: "POST" })).status).toBe(201);
        receipts = gate();
        handlerEntered = gate();
        const answered = send(`${running.url}/receipts/2`, { method: "POST" });
        await handlerEntered.opened;
        closed = running.close();
        await began;
        receipts.open();
        const answer = await answered;
        // before: 500 (the call found no running RedlockModule: "import RedlockModule.forRoot(...)")
        expect({ status: answer.status, body: JSON.parse(answer.text) }).toMatchObject({
          status: 503,
          body: { statusCode: 503, errorCode: "ERR_REDLOCK_UNAVAILABLE" },
        });
        expect(bodiesRun).toEqual(["receipt 1"]);
      } finally {
        receipts.open();
        await (closed ?? running.close());
      }
    });
  },
);

/** The producer of the exports' streamed bodies, and the lock of the last export. */
let exporting = gatedProducer();
let exportLock: Lock | undefined;

@Controller("exports")
class ExportController {
  @Get(":id")
  @LockedRoute("export:{params.id}", { ttl: 1000 })
  export() {
    exportLock = currentLock();
    return new StreamableFile(exporting.produce());
  }
}

describe.each(platforms)("shutdown after the client of a @LockedRoute streamed body left mid-body (%s)", (platform) => {
  it("waits for the lock to lapse, not for a response the platform never ends", async () => {
    exporting = gatedProducer();
    @Module({ imports: [redlockModule()], controllers: [ExportController] })
    class ExportApp {}
    const running = await startNestApp(ExportApp, platform);
    try {
      const { request, response } = open(`${running.url}/exports/${platform}`);
      request.on("error", () => {});
      expect(await nextChunk(await response)).toBe("first\n");
      const lock = exportLock as Lock;
      request.destroy();
      // before: close() never returned, the shutdown waiting for a release that could not come
      await arrival(running.close(), "the app's close");
      // it waited for the lock, no longer extended once its client left, to lapse (ttl 1 s); the
      // producer still runs
      expect(lock.valid).toBe(false);
      expect(exporting.state.inside).toBe(1);
      // Redis drops the key a little after the lock's own validity ends (the clock drift allowance,
      // and the time its acquisition took, are counted off the validity): before, an EXISTS right
      // at close() found it still there on a loaded machine
      await expect
        .poll(() => Promise.all(clients.map((client) => client.exists(`export:${platform}`))))
        .toEqual([0, 0, 0]);
    } finally {
      exporting.open();
    }
  });
});
