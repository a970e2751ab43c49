/**
 * Locks in real Nest apps on platform-express and platform-fastify, against real redis-servers:
 * `@LockedRoute` on a controller, `@Locked` on a service and on controller methods that also carry
 * a guard and a roles decorator; contention is 423 with Retry-After, Redis down is 503, both as
 * Nest HttpExceptions that an exception filter can catch.
 */

import type { Server } from "node:http";
import {
  type ArgumentsHost,
  applyDecorators,
  Body,
  type CanActivate,
  Catch,
  Controller,
  type ExceptionFilter,
  type ExecutionContext,
  Header,
  HttpCode,
  Inject,
  Injectable,
  Module,
  Param,
  Post,
  Res,
  SetMetadata,
  UseFilters,
  UseGuards,
} from "@nestjs/common";
import { ExternalContextCreator, Reflector } from "@nestjs/core";
import {
  type AcquireMessage,
  channels,
  type HttpKeySource,
  type Lock,
  LockConfigurationError,
  LockContentionError,
  Redlock,
} from "@redlock-kit/core";
import type { Redis } from "ioredis";
import request from "supertest";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type Answer, open, send } from "#test-helpers/http-client.js";
import { untilInvalid } from "#test-helpers/lock-events.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { OWN_ANSWER, SET_UP, setUpHeaders } from "#test-helpers/set-up-headers.js";
import { Locked, LockedException, LockedRoute, RedlockModule, RequestLock } from "../src/index.js";
import { captureLogs, platforms, type RunningNestApp, startNestApp } from "./helpers/nest-app.js";

const cluster = useRedisServers(3);
/** Killed by the "Redis is down" tests; kept apart so that no reconnecting client disturbs the others. */
const doomed = useRedisServers(3);
let clients: Redis[] = [];
/** The test's own Redlock: another owner, as far as the apps are concerned. */
let other: Redlock;

beforeAll(() => {
  clients = cluster.servers.map((server) => server.client());
  other = new Redlock(clients, { retryCount: 0 });
});

afterEach(async () => {
  await Promise.all(clients.map((client) => client.flushall()));
});

afterAll(async () => {
  await other?.quit();
});

/**
 * What each handler saw of its own lock in Redis: how many instances held the key while it ran (at
 * least a quorum of 2; the acquire resolves once a quorum answered, so the third may lag).
 */
const seen: Record<string, number> = {};
async function heldOn(key: string): Promise<number> {
  const values = await Promise.all(clients.map((client) => client.exists(key)));
  return values.reduce((sum, count) => sum + count, 0);
}

/** What a handler writing through `@Res()` calls on Express's response or Fastify's reply. */
interface RawReply {
  json?(body: unknown): void;
  send?(body: unknown): void;
}

/** What an app may set on every answer: a shared cache keeps such a 423 (RFC 9111) and serves it to everyone. */
const PUBLIC = "public, max-age=300";

/** What the routes set up for a CSV download set with `@Header()` (before the interceptors run). */
const SetUp = () => applyDecorators(...Object.entries(SET_UP).map(([name, value]) => Header(name, value)));

const ROLES = "roles";
const Roles = (...roles: string[]) => SetMetadata(ROLES, roles);

@Injectable()
class RolesGuard implements CanActivate {
  constructor(@Inject(Reflector) private readonly reflector: Reflector) {}
  canActivate(context: ExecutionContext): boolean {
    const roles = this.reflector.get<string[] | undefined>(ROLES, context.getHandler());
    if (roles === undefined) return true;
    const role = context.switchToHttp().getRequest<{ headers: Record<string, string> }>().headers["x-role"];
    return role !== undefined && roles.includes(role);
  }
}

@Injectable()
class OrderService {
  @Locked("order:{0}", 1000)
  async pay(id: string) {
    seen[`order:${id}`] = await heldOn(`order:${id}`);
    return { paid: id };
  }
}

/** Answers every LockedException with 429 and its own body: exception filters see it like any HttpException. */
@Catch(LockedException)
class BusyFilter implements ExceptionFilter {
  catch(exception: LockedException, host: ArgumentsHost) {
    const response = host.switchToHttp().getResponse();
    const body = { busy: true, retryAfter: exception.retryAfter };
    // Express's response and Fastify's reply both have status(); send() / json() differ
    const replied = response.status(429);
    if (typeof replied.json === "function") replied.json(body);
    else replied.send(body);
  }
}

/** What the key function of POST /orders/junk/:kind returns, per kind: none of them names a resource. */
const JUNK_KEYS: Record<string, () => unknown> = {
  undefined: () => undefined,
  null: () => null,
  empty: () => "",
  number: () => 42,
  object: () => ({}),
  list: () => [],
  promise: async () => "order:1",
  "missing id": () => `order:${undefined}`,
  "missing tenant": () => `${undefined}_7`,
};
let junkRuns = 0;

/**
 * The late routes' lock: 500 ms, not renewed, taken in one attempt that waits 300 ms per instance,
 * not the default 50 ms a loaded machine's Redis can miss (503 instead of the loss under test).
 */
const LATE = { ttl: 500, instanceTimeout: 300, autoExtend: false };

@Controller("orders")
class OrdersController {
  constructor(@Inject(OrderService) private readonly orders: OrderService) {}

  @Post(":id/pay")
  pay(@Param("id") id: string) {
    return this.orders.pay(id);
  }

  @Post(":id/ship")
  @LockedRoute("ship:{params.id}", { ttl: 1000 })
  async ship(@Param("id") id: string, @RequestLock() lock: Lock) {
    seen[`ship:${id}`] = await heldOn(`ship:${id}`);
    return { resources: lock.resources, valid: lock.valid };
  }

  @Post(":id/pack")
  @LockedRoute("pack:{params.id}")
  @UseFilters(BusyFilter)
  pack(@Param("id") id: string) {
    return { packed: id };
  }

  @Post(":id/wait")
  @LockedRoute("wait:{params.id}", { wait: 5000 })
  waitFor(@Param("id") id: string) {
    seen[`wait:${id}`] = 1;
    return { waited: id };
  }

  @Post(":id/hold")
  hold() {
    throw new LockedException("Order is being paid", { retryAfter: 7 });
  }

  // routes whose answers the app makes storable (@Header is set before the interceptors run)
  @Post(":id/cached-ship")
  @Header("Cache-Control", PUBLIC)
  @LockedRoute("ship:{params.id}")
  cachedShip(@Param("id") id: string) {
    return { shipped: id };
  }

  @Post(":id/cached-pay")
  @Header("Cache-Control", PUBLIC)
  cachedPay(@Param("id") id: string) {
    return this.orders.pay(id);
  }

  @Post(":id/cached-hold")
  @Header("Cache-Control", PUBLIC)
  cachedHold() {
    throw new LockedException("Order is being paid");
  }

  @Post("junk/:kind")
  @LockedRoute((source: HttpKeySource) => (JUNK_KEYS[(source.params as { kind: string }).kind] as () => string)())
  junk() {
    junkRuns++;
    return "ran";
  }

  // routes set up for a CSV download (@Header is set before the interceptors run)
  @Post("report")
  @SetUp()
  @LockedRoute("report:{body.sku}")
  report() {
    return "a,b\n";
  }

  @Post(":id/report-pay")
  @SetUp()
  reportPay(@Param("id") id: string) {
    return this.orders.pay(id);
  }

  // handlers that ignore their lock's signal and answer once its validity ended (500 ms, not renewed)
  @Post(":id/late")
  @LockedRoute("late:{params.id}", LATE)
  async late(@RequestLock() lock: Lock) {
    await untilInvalid(lock);
    return { done: true };
  }

  @Post(":id/late-refused")
  @LockedRoute("late:{params.id}", LATE)
  @HttpCode(422)
  async lateRefused(@RequestLock() lock: Lock) {
    await untilInvalid(lock);
    return { own: true };
  }

  // sets its own error status on the platform's response and lets Nest send what it returns
  @Post(":id/late-not-found")
  @LockedRoute("late:{params.id}", LATE)
  async lateNotFound(
    @RequestLock() lock: Lock,
    @Res({ passthrough: true }) response: { status(code: number): unknown },
  ) {
    await untilInvalid(lock);
    response.status(404);
    return { own: true };
  }

  // writes through the platform's own response (Express's res, Fastify's reply), past the interceptor
  @Post(":id/late-raw")
  @LockedRoute("late:{params.id}", LATE)
  async lateRaw(@RequestLock() lock: Lock, @Res() response: { status(code: number): RawReply }) {
    await untilInvalid(lock);
    const reply = response.status(200);
    if (typeof reply.json === "function") reply.json({ done: true });
    else reply.send?.({ done: true });
  }

  @Post("stock")
  @LockedRoute("sku:{body.sku}")
  reserve(@Body() body: { sku: string }) {
    return { reserved: body.sku };
  }

  // @Locked above the Nest decorators: it wraps a method that already carries their metadata
  @Locked("refund:{0}")
  @Post(":id/refund")
  @Roles("admin")
  @UseGuards(RolesGuard)
  async refund(@Param("id") id: string) {
    seen[`refund:${id}`] = await heldOn(`refund:${id}`);
    return { refunded: id };
  }

  // @Locked below them: the Nest decorators put their metadata on its wrapper
  @Post(":id/cancel")
  @Roles("admin")
  @UseGuards(RolesGuard)
  @Locked("cancel:{0}")
  async cancel(@Param("id") id: string) {
    seen[`cancel:${id}`] = await heldOn(`cancel:${id}`);
    return { cancelled: id };
  }
}

function appModule(instances: () => readonly Redis[]) {
  @Module({
    imports: [
      RedlockModule.forRootAsync({ useFactory: () => ({ instances: instances(), options: { retryCount: 0 } }) }),
    ],
    controllers: [OrdersController],
    providers: [OrderService, RolesGuard],
  })
  class AppModule {}
  return AppModule;
}

/** The same kind of controller in an app that forgot RedlockModule: nothing can take its route's lock. */
@Controller("forgotten")
class ForgottenController {
  ran = 0;

  @Post(":id")
  @Header("Cache-Control", PUBLIC)
  @LockedRoute("forgotten:{params.id}")
  pay() {
    this.ran++;
    return { paid: true };
  }

  @Post(":id/report")
  @SetUp()
  @LockedRoute("forgotten:{params.id}")
  report() {
    this.ran++;
    return "a,b\n";
  }
}

@Module({ controllers: [ForgottenController] })
class AppWithoutRedlockModule {}

/** A handler Nest calls outside HTTP: what a GraphQL resolver is, called through ExternalContextCreator. */
@Injectable()
class PaymentsResolver {
  ran = 0;

  @LockedRoute("resolver:{params.id}")
  pay() {
    this.ran++;
    return { paid: true };
  }
}

const LOCKED_BODY = {
  statusCode: 423,
  message: "Resource is locked",
  error: "Locked",
  errorCode: "ERR_REDLOCK_CONTENTION",
};

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
  });

  it("@LockedRoute holds the route's lock on every instance while the handler runs, gives it to @RequestLock, and releases it once the response is sent", async () => {
    const response = await request(running.url).post("/orders/7/ship").expect(201);
    expect(response.body).toEqual({ resources: ["ship:7"], valid: true });
    expect(seen["ship:7"]).toBeGreaterThanOrEqual(2);
    await expect.poll(() => heldOn("ship:7")).toBe(0);
  });

  it("@LockedRoute answers 423 with Retry-After (the holder's remaining ttl in seconds) while another owner holds the key, and does not run the handler", async () => {
    const held = await other.acquire("ship:8", 4000);
    try {
      const response = await request(running.url).post("/orders/8/ship").expect(423);
      expect(response.body).toEqual(LOCKED_BODY);
      expect(Number(response.headers["retry-after"])).toBeGreaterThanOrEqual(1);
      expect(Number(response.headers["retry-after"])).toBeLessThanOrEqual(4);
      expect(seen["ship:8"]).toBeUndefined();
    } finally {
      await held.release();
    }
    await request(running.url).post("/orders/8/ship").expect(201);
  });

  it("@LockedRoute answers 409 (ConflictException), not 201, to a handler that ignores its signal and returns after its lock's validity ended; no key is left", async () => {
    const response = await request(running.url).post("/orders/1/late").expect(409);
    expect(response.body).toEqual({
      statusCode: 409,
      message: "Lock was lost",
      error: "Conflict",
      errorCode: "ERR_REDLOCK_LOST",
    });
    await expect.poll(() => heldOn("late:1")).toBe(0);
  });

  it("@LockedRoute keeps a route's own 4xx status (@HttpCode(422)) answered after the loss", async () => {
    await request(running.url).post("/orders/2/late-refused").expect(422, { own: true });
  });

  it("@LockedRoute keeps the 4xx status a handler set itself (@Res({ passthrough: true })) answered after the loss", async () => {
    await request(running.url).post("/orders/4/late-not-found").expect(404, { own: true });
  });

  it('@LockedRoute answers 409 {"error":"Lock was lost"}, not 200, to a handler writing through @Res() after its lock\'s validity ended', async () => {
    const response = await request(running.url).post("/orders/3/late-raw").expect(409);
    expect(response.text).toBe('{"error":"Lock was lost"}');
    expect(response.headers["content-type"]).toMatch(/^application\/json/);
    await expect.poll(() => heldOn("late:3")).toBe(0);
  });

  it("@LockedRoute answers 400 naming the missing part when the key cannot be resolved, and locks nothing", async () => {
    const response = await request(running.url).post("/orders/stock").send({}).expect(400);
    expect(response.body).toMatchObject({ statusCode: 400, error: "Bad Request", errorCode: "ERR_REDLOCK_KEY" });
    expect(response.body.message).toContain("body.sku");
    expect(await Promise.all(clients.map((client) => client.dbsize()))).toEqual([0, 0, 0]);
  });

  it('@LockedRoute answers 400 for a key function that returns no resource name (undefined, null, "order:undefined", …); the handler never runs, nothing is locked', async () => {
    for (const kind of Object.keys(JUNK_KEYS)) {
      const response = await request(running.url)
        .post(`/orders/junk/${encodeURIComponent(kind)}`)
        .send({});
      expect(response.status, kind).toBe(400);
      expect(response.body, kind).toMatchObject({ statusCode: 400, errorCode: "ERR_REDLOCK_KEY" });
    }
    expect(junkRuns).toBe(0);
    expect(await Promise.all(clients.map((client) => client.dbsize()))).toEqual([0, 0, 0]);
  });

  it("a @Locked service method called by a route locks per order; its LockContentionError is answered 423 with Retry-After", async () => {
    await request(running.url).post("/orders/1/pay").expect(201, { paid: "1" });
    expect(seen["order:1"]).toBeGreaterThanOrEqual(2);
    const held = await other.acquire("order:2", 3000);
    try {
      const response = await request(running.url).post("/orders/2/pay").expect(423);
      expect(response.body).toEqual(LOCKED_BODY);
      expect(Number(response.headers["retry-after"])).toBeGreaterThanOrEqual(1);
      expect(seen["order:2"]).toBeUndefined();
    } finally {
      await held.release();
    }
  });

  it.each(["refund", "cancel"])(
    "@Locked on a controller method keeps its route, guard and roles (%s): 403 without the role, 200 under the lock with it",
    async (action) => {
      await request(running.url).post(`/orders/5/${action}`).expect(403);
      expect(seen[`${action}:5`]).toBeUndefined();
      await request(running.url).post(`/orders/5/${action}`).set("x-role", "clerk").expect(403);
      const response = await request(running.url).post(`/orders/5/${action}`).set("x-role", "admin").expect(201);
      expect(Object.values(response.body)).toEqual(["5"]);
      expect(seen[`${action}:5`]).toBeGreaterThanOrEqual(2);
      const held = await other.acquire(`${action}:6`, 3000);
      try {
        await request(running.url).post(`/orders/6/${action}`).set("x-role", "admin").expect(423);
      } finally {
        await held.release();
      }
    },
  );

  it("@LockedRoute stops waiting for a held lock when the client disconnects, and never runs the handler", async () => {
    const holder = await other.acquire("wait:1", 10_000);
    const aborted = new Promise<AcquireMessage>((resolve) => {
      const onMessage = (message: unknown) => {
        const acquire = message as AcquireMessage;
        if (!acquire.resources.includes("wait:1") || acquire.outcome !== "aborted") return;
        channels.acquire.unsubscribe(onMessage);
        resolve(acquire);
      };
      channels.acquire.subscribe(onMessage);
    });
    const server = running.app.getHttpServer() as Server;
    const arrived = new Promise((resolve) => server.once("request", resolve));
    const { request: client } = open(`${running.url}/orders/1/wait`, { method: "POST" });
    client.on("error", () => {});
    await arrived;
    client.destroy();
    expect((await aborted).outcome).toBe("aborted");
    await holder.release();
    expect(seen["wait:1"]).toBeUndefined();
    expect(await heldOn("wait:1")).toBe(0);
  });

  it("sends Retry-After with a LockedException the app throws itself", async () => {
    const response = await request(running.url).post("/orders/1/hold").expect(423);
    expect(response.body).toEqual({ statusCode: 423, message: "Order is being paid", error: "Locked" });
    expect(response.headers["retry-after"]).toBe("7");
  });

  // Node joins repeated Cache-Control fields with ", ": "no-store" alone is one value
  it("answers 423 with Cache-Control: no-store alone over the route's @Header `public, max-age=300`: from @LockedRoute, from a @Locked method, for a LockedException the app throws", async () => {
    const held = await Promise.all([other.acquire("ship:9", 4000), other.acquire("order:9", 4000)]);
    try {
      for (const path of ["/orders/9/cached-ship", "/orders/9/cached-pay", "/orders/9/cached-hold"]) {
        const response = await request(running.url).post(path).expect(423);
        expect(response.headers["cache-control"], path).toBe("no-store");
      }
    } finally {
      await Promise.all(held.map((lock) => lock.release()));
    }
  });

  it("answers 423 and 400 as its own JSON, without the headers the route set up for its answer (text/csv, an attachment, gzip, public caching, validators, a length); the others stay: from @LockedRoute, from a @Locked method", async () => {
    const held = await Promise.all([other.acquire("report:A-1", 4000), other.acquire("order:10", 4000)]);
    let answers: Answer[];
    try {
      answers = [
        await send(`${running.url}/orders/report`, { method: "POST", body: { sku: "A-1" } }),
        await send(`${running.url}/orders/10/report-pay`, { method: "POST" }),
      ];
    } finally {
      await Promise.all(held.map((lock) => lock.release()));
    }
    answers.push(await send(`${running.url}/orders/report`, { method: "POST", body: {} }));
    expect(answers.map((answer) => [answer.status, JSON.parse(answer.text).errorCode])).toEqual([
      [423, "ERR_REDLOCK_CONTENTION"],
      [423, "ERR_REDLOCK_CONTENTION"],
      [400, "ERR_REDLOCK_KEY"],
    ]);
    for (const answer of answers) expect(setUpHeaders(answer), String(answer.status)).toEqual(OWN_ANSWER);
  });

  it("an exception filter catches LockedException like any HttpException and answers its own way", async () => {
    const held = await other.acquire("pack:1", 3000);
    try {
      const response = await request(running.url).post("/orders/1/pack").expect(429);
      expect(response.body).toEqual({ busy: true, retryAfter: expect.any(Number) });
      expect(response.body.retryAfter).toBeGreaterThanOrEqual(1);
    } finally {
      await held.release();
    }
  });

  it("@LockedRoute in an app without RedlockModule answers 500 naming the route, with Cache-Control: no-store over the route's @Header, and never runs the handler unlocked", async () => {
    const logs = captureLogs();
    const forgotten = await startNestApp(AppWithoutRedlockModule, platform, logs.logger);
    try {
      const response = await request(forgotten.url).post("/forgotten/1").expect(500);
      // core's configuration error: a fixed body for the client, the message (route and fix) in the log
      expect(response.body).toEqual({
        statusCode: 500,
        message: "Lock service misconfigured",
        error: "Internal Server Error",
        errorCode: "ERR_REDLOCK_CONFIG",
      });
      // a refusal like the others: a shared cache must not keep it over the route's @Header
      expect(response.headers["cache-control"]).toBe("no-store");
      expect(logs.error).toContain(
        "ForgottenController.pay is a @LockedRoute, but RedlockModule is not imported in this app: the route cannot be locked",
      );
      expect(forgotten.app.get(ForgottenController).ran).toBe(0);
    } finally {
      await forgotten.close();
    }
  });

  it("@LockedRoute in an app without RedlockModule answers its 500 without the headers the route set up for its answer; the others stay", async () => {
    const forgotten = await startNestApp(AppWithoutRedlockModule, platform, captureLogs().logger);
    try {
      const answer = await send(`${forgotten.url}/forgotten/1/report`, { method: "POST" });
      expect([answer.status, JSON.parse(answer.text).errorCode]).toEqual([500, "ERR_REDLOCK_CONFIG"]);
      expect(setUpHeaders(answer)).toEqual(OWN_ANSWER);
    } finally {
      await forgotten.close();
    }
  });

  it("answers 503 (a ServiceUnavailableException, no internals) when no Redis instance answers, from @LockedRoute and from @Locked", async () => {
    for (const server of doomed.servers) if (!server.running) await server.start();
    const doomedClients = doomed.servers.map((server) => server.client());
    await Promise.all(doomedClients.map((client) => client.ping()));
    const down = await startNestApp(
      appModule(() => doomedClients),
      platform,
    );
    try {
      await Promise.all(doomed.servers.map((server) => server.kill()));
      for (const path of ["/orders/1/ship", "/orders/1/pay"]) {
        const response = await request(down.url).post(path).expect(503);
        expect(response.body).toEqual({
          statusCode: 503,
          message: "Lock service unavailable",
          error: "Service Unavailable",
          errorCode: "ERR_REDLOCK_UNAVAILABLE",
        });
      }
    } finally {
      await down.close();
      for (const client of doomedClients) client.disconnect();
    }
  });
});

describe("@LockedRoute outside HTTP", () => {
  it("on a handler Nest calls in a GraphQL context (ExternalContextCreator, as @nestjs/graphql does) fails with the configuration error and never runs unlocked", async () => {
    @Module({
      imports: [RedlockModule.forRoot({ instances: clients, options: { retryCount: 0 } })],
      providers: [PaymentsResolver],
    })
    class ResolverModule {}
    const logs = captureLogs();
    const nest = await startNestApp(ResolverModule, "express", logs.logger);
    try {
      const resolver = nest.app.get(PaymentsResolver);
      // the global RedlockInterceptor and the route's own interceptors apply, as for a resolver
      const call = nest.app
        .get(ExternalContextCreator)
        .create(
          resolver,
          resolver.pay,
          "pay",
          undefined,
          undefined,
          undefined,
          undefined,
          { interceptors: true },
          "graphql",
        );
      await expect(call({}, { id: "1" })).rejects.toBeInstanceOf(LockConfigurationError);
      expect(resolver.ran).toBe(0);
      expect(logs.error).toContain(
        "PaymentsResolver.pay is a @LockedRoute, but it runs in a graphql context, and @LockedRoute locks HTTP routes only (use @Locked): the route cannot be locked",
      );
    } finally {
      await nest.close();
    }
  });

  it.each([
    ["no arguments at all", [], true],
    ["a message and its context, no request or response", [{ id: "1" }, { pattern: "pay" }], true],
    ["a message and its context, in an app without RedlockModule", [{ id: "1" }, { pattern: "pay" }], false],
  ])(
    "on a handler a custom transport calls through ExternalContextCreator with the default http type and %s fails with the configuration error and never runs unlocked",
    async (_what, args, withModule) => {
      @Module({
        imports: withModule ? [RedlockModule.forRoot({ instances: clients, options: { retryCount: 0 } })] : [],
        providers: [PaymentsResolver],
      })
      class TransportModule {}
      const logs = captureLogs();
      const nest = await startNestApp(TransportModule, "express", logs.logger);
      try {
        const resolver = nest.app.get(PaymentsResolver);
        // the context type left as ExternalContextCreator's default, "http"
        const call = nest.app
          .get(ExternalContextCreator)
          .create(resolver, resolver.pay, "pay", undefined, undefined, undefined, undefined, { interceptors: true });
        const error = await call(...args).then(
          () => "ran",
          (e: unknown) => e,
        );
        // before: TypeError: Cannot read properties of undefined (reading 'params'), or res.on is not a
        // function; without RedlockModule an HttpException (500) saying the module is not imported
        expect(error).toBeInstanceOf(LockConfigurationError);
        expect(resolver.ran).toBe(0);
        expect(logs.error).toContain(
          "PaymentsResolver.pay is a @LockedRoute, but it runs in an http context without an HTTP request and response, and @LockedRoute locks HTTP routes only (use @Locked): the route cannot be locked",
        );
        expect(await Promise.all(clients.map((client) => client.keys("*")))).toEqual([[], [], []]);
      } finally {
        await nest.close();
      }
    },
  );
});

/** A handler that is no @LockedRoute, calling a @Locked method: what a custom transport's handler is. */
@Injectable()
class RefundsHandler {
  ran = 0;

  @Locked("refund:{0}")
  async refund(id: string) {
    this.ran++;
    return { refunded: id };
  }

  handle(message?: unknown) {
    return this.refund((message as { id?: string } | undefined)?.id ?? "1");
  }
}

describe("@Locked in a handler called as http with no HTTP request", () => {
  it.each([
    ["no arguments at all", []],
    ["a message and its context, no request or response", [{ id: "1" }, { pattern: "refund" }]],
  ])("with %s rejects with the RedlockError itself, left as it is outside HTTP", async (_what, args) => {
    @Module({
      imports: [RedlockModule.forRoot({ instances: clients, options: { retryCount: 0 } })],
      providers: [RefundsHandler],
    })
    class RefundsModule {}
    const nest = await startNestApp(RefundsModule, "express");
    const held = await other.acquire("refund:1", 10_000);
    try {
      const handler = nest.app.get(RefundsHandler);
      // the context type left as ExternalContextCreator's default, "http"
      const call = nest.app
        .get(ExternalContextCreator)
        .create(handler, handler.handle, "handle", undefined, undefined, undefined, undefined, { interceptors: true });
      const error = await call(...args).then(
        () => "ran",
        (e: unknown) => e,
      );
      // before: TypeError: Cannot read properties of undefined (reading 'headersSent'), or a
      // LockedException (an HTTP 423) for a caller that is no HTTP request
      expect(error).toBeInstanceOf(LockContentionError);
      expect(handler.ran).toBe(0);
    } finally {
      await other.unlock(held);
      await nest.close();
    }
  });
});
