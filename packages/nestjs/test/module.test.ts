/**
 * RedlockModule's wiring in real Nest application contexts against real redis-servers: forRoot and
 * forRootAsync, instances given as URLs, options, clients or injection tokens, isGlobal, the Redlock
 * each app's @Locked methods use, and what shutdown closes (only what the module opened).
 */
import {
  Controller,
  type DynamicModule,
  Global,
  Inject,
  Injectable,
  Module,
  Param,
  Post,
  Scope,
  type Type,
} from "@nestjs/common";
import { NestFactory } from "@nestjs/core";
import { LockConfigurationError, LockUnavailableError, type RedisStore, Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { send } from "#test-helpers/http-client.js";
import { excess, settledResources } from "#test-helpers/invariants.js";
import { nextExtensions } from "#test-helpers/lock-events.js";
import { type RedisServer, useRedisServers } from "#test-helpers/redis.js";
import { warmUp } from "#test-helpers/warm-up.js";
import { Locked, LockedRoute, RedlockModule } from "../src/index.js";
import { ShutdownProbe, ShutdownProbeModule, startNestApp } from "./helpers/nest-app.js";

const cluster = useRedisServers(4);
/** One inspecting client per server; handed clients are made per test. */
let inspectors: Redis[] = [];
const trio = () => cluster.servers.slice(0, 3) as [RedisServer, RedisServer, RedisServer];
const url = (server: RedisServer) => `redis://127.0.0.1:${server.port}`;

beforeAll(() => {
  inspectors = cluster.servers.map((server) => server.client());
});

afterEach(async () => {
  await Promise.all(inspectors.map((client) => client.flushall()));
});

/** Connections each server has now, minus the inspector's own. */
async function connections(): Promise<number[]> {
  const infos = await Promise.all(inspectors.map((client) => client.info("clients")));
  return infos.map((info) => Number(/connected_clients:(\d+)/.exec(info)?.[1]) - 1);
}

/**
 * Which Redlock held `key`: "trio" when a quorum of the first three servers holds it (the acquire
 * resolves once a quorum answered, so the third may lag) and the fourth does not, "fourth" for the
 * reverse.
 */
async function holders(key: string): Promise<string> {
  const [a, b, c, d] = await Promise.all(inspectors.map((client) => client.exists(key)));
  const trio = (a ?? 0) + (b ?? 0) + (c ?? 0);
  if (trio >= 2 && d === 0) return "trio";
  return trio === 0 && d === 1 ? "fourth" : `neither (${[a, b, c, d].join(",")})`;
}

/** A provider with a locked method that reports which Redlock held its key while it ran. */
@Injectable()
class Ledger {
  static seen: string[] = [];
  @Locked("ledger:{0}", { wait: 3000 })
  async post(id: string) {
    Ledger.seen.push(await holders(`ledger:${id}`));
    return id;
  }
}

@Injectable()
class NeedsRedlock {
  constructor(@Inject(Redlock) readonly redlock: Redlock) {}
}

async function start(module: Type<unknown>) {
  const context = await NestFactory.createApplicationContext(module, { logger: false, abortOnError: false });
  await context.init();
  return context;
}

/** What failed the start of `module`, or "started" (the app is then closed). */
function startFailure(module: Type<unknown>): Promise<unknown> {
  return start(module).then(
    async (context) => {
      await context.close();
      return "started";
    },
    (error: unknown) => error,
  );
}

function withRedlock(redlockModule: ReturnType<typeof RedlockModule.forRoot>, extra: Type<unknown>[] = []) {
  @Module({ imports: [redlockModule, ...extra], providers: [Ledger, NeedsRedlock] })
  class AppModule {}
  return AppModule;
}

describe("RedlockModule.forRoot", () => {
  it("builds an injectable Redlock from URLs and ioredis options, closes the clients it created on shutdown, and leaves no handle", async () => {
    Ledger.seen = [];
    const before = await connections();
    const baseline = await settledResources();
    const [a, b, c] = trio();
    const context = await start(
      withRedlock(RedlockModule.forRoot({ instances: [url(a), { host: "127.0.0.1", port: b.port }, url(c)] })),
    );
    expect(context.get(NeedsRedlock).redlock).toBeInstanceOf(Redlock);
    expect(context.get(Redlock)).toBe(context.get(NeedsRedlock).redlock);
    // another owner holds the key first, so that the call waits (and subscribes for the release)
    const other = new Redlock([url(a), url(b), url(c)]);
    const held = await other.acquire("ledger:1", 5000);
    // that acquire resolves at a quorum: the call starts once every server holds the key, and the key
    // is released once the call is queued on every server (else it could find the key free at once)
    const trioInspectors = inspectors.slice(0, 3);
    await expect.poll(() => Promise.all(trioInspectors.map((c) => c.exists("ledger:1")))).toEqual([1, 1, 1]);
    const posted = context.get(Ledger).post("1");
    await expect
      .poll(() => Promise.all(trioInspectors.map((c) => c.zcard("ledger:1:redlock-kit:waiters"))))
      .toEqual([1, 1, 1]);
    await held.release();
    await expect(posted).resolves.toBe("1");
    await other.quit();
    expect(Ledger.seen).toEqual(["trio"]);
    expect((await connections()).slice(0, 3).every((count, i) => count > (before[i] ?? 0))).toBe(true);
    await context.close();
    await expect.poll(connections).toEqual(before);
    expect(excess(await settledResources(), baseline)).toEqual({});
  });

  it("takes clients handed to it, directly or as { inject: token } of a provider registered elsewhere, and leaves them open on shutdown", async () => {
    Ledger.seen = [];
    const [a, b, c] = trio().map((server) => server.client());
    @Global()
    @Module({
      providers: [
        { provide: "REDIS_A", useValue: a },
        { provide: "REDIS_B", useValue: b },
      ],
      exports: ["REDIS_A", "REDIS_B"],
    })
    class ClientsModule {}
    const context = await start(
      withRedlock(RedlockModule.forRoot({ instances: [{ inject: "REDIS_A" }, { inject: "REDIS_B" }, c as Redis] }), [
        ClientsModule,
      ]),
    );
    await context.get(Ledger).post("2");
    expect(Ledger.seen).toEqual(["trio"]);
    await context.close();
    for (const client of [a, b, c] as Redis[]) {
      expect(client.status).toBe("ready");
      expect(await client.ping()).toBe("PONG");
    }
  });

  it("connects the clients it creates at the first lock, not when the app starts (a start that fails leaves none open); options.lazyConnect: false connects them at once", async () => {
    Ledger.seen = [];
    const before = await connections();
    const statuses = (redlock: Redlock) => redlock.stores.map((store) => (store as RedisStore).client.status);
    const [a, b, c] = trio();
    const lazy = await start(
      withRedlock(RedlockModule.forRoot({ instances: [url(a), { host: "127.0.0.1", port: b.port }, url(c)] })),
    );
    try {
      expect(statuses(lazy.get(Redlock))).toEqual(["wait", "wait", "wait"]);
      await lazy.get(Ledger).post("lazy");
      expect(Ledger.seen).toEqual(["trio"]);
    } finally {
      await lazy.close();
    }
    await expect.poll(connections).toEqual(before);
    const eager = await start(
      withRedlock(RedlockModule.forRoot({ instances: [url(a), url(b), url(c)], options: { lazyConnect: false } })),
    );
    try {
      await expect.poll(connections).toEqual([1, 1, 1, 0].map((opened, i) => (before[i] ?? 0) + opened));
    } finally {
      await eager.close();
    }
    await expect.poll(connections).toEqual(before);
  });

  it("refuses instances that are not an array, and a bad instance, naming the method", async () => {
    await expect(start(withRedlock(RedlockModule.forRoot({ instances: url(trio()[0]) as never })))).rejects.toThrow(
      new TypeError("RedlockModule.forRoot: instances must be an array of Redlock instances"),
    );
    await expect(start(withRedlock(RedlockModule.forRoot({ instances: [42 as never] })))).rejects.toThrow(
      /^RedlockModule\.forRoot: instances\[0\] must be/,
    );
  });
});

describe("RedlockModule.forRootAsync", () => {
  it("builds the Redlock from what useFactory returns, with imports and inject, and closes what it created", async () => {
    Ledger.seen = [];
    const before = await connections();
    const urls = trio().map(url);
    @Module({ providers: [{ provide: "SETTINGS", useValue: { urls } }], exports: ["SETTINGS"] })
    class SettingsModule {}
    const context = await start(
      withRedlock(
        RedlockModule.forRootAsync({
          imports: [SettingsModule],
          inject: ["SETTINGS"],
          useFactory: (settings: { urls: string[] }) => ({ instances: settings.urls, options: { retryCount: 0 } }),
        }),
      ),
    );
    await context.get(Ledger).post("3");
    expect(Ledger.seen).toEqual(["trio"]);
    await context.close();
    await expect.poll(connections).toEqual(before);
  });

  it("refuses { inject } entries, which only forRoot resolves, saying what to do instead", async () => {
    const module = RedlockModule.forRootAsync({ useFactory: () => ({ instances: [{ inject: "REDIS_A" }] }) });
    await expect(start(withRedlock(module))).rejects.toThrow(
      "RedlockModule.forRootAsync: instances[0] is { inject }, which only forRoot resolves; in forRootAsync list the token in inject and return the client from useFactory",
    );
  });
});

describe("isGlobal", () => {
  @Module({ providers: [NeedsRedlock], exports: [NeedsRedlock] })
  class FeatureModule {}

  it("makes Redlock injectable in a module that does not import RedlockModule; without it, Nest refuses", async () => {
    const instances = trio().map(url);
    @Module({ imports: [RedlockModule.forRoot({ instances, isGlobal: true }), FeatureModule] })
    class GlobalApp {}
    const context = await start(GlobalApp);
    expect(context.get(NeedsRedlock).redlock).toBeInstanceOf(Redlock);
    await context.close();

    // handed clients: a Redlock built before Nest gives up on the app is never shut down
    const handed = trio().map((server) => server.client());
    @Module({ imports: [RedlockModule.forRoot({ instances: handed }), FeatureModule] })
    class LocalApp {}
    await expect(start(LocalApp)).rejects.toThrow(/can't resolve dependencies of the NeedsRedlock/);
  });
});

describe("the Redlock a @Locked method uses", () => {
  it("is the one of the app its instance belongs to, with two apps running at once", async () => {
    Ledger.seen = [];
    const three = await start(withRedlock(RedlockModule.forRoot({ instances: trio().map(url) })));
    const one = await start(
      withRedlock(RedlockModule.forRoot({ instances: [url(cluster.servers[3] as RedisServer)] })),
    );
    try {
      await three.get(Ledger).post("4");
      await one.get(Ledger).post("5");
      expect(Ledger.seen).toEqual(["trio", "fourth"]);
      // an object no app created, with two apps running, outside any request: no way to tell which one it belongs to
      const untold = await new Ledger().post("6").catch((error: unknown) => error);
      expect(untold).toBeInstanceOf(LockConfigurationError);
      expect(String(untold)).toMatch(/none of the 2 running apps/);
    } finally {
      await Promise.all([three.close(), one.close()]);
    }
    await expect(new Ledger().post("7")).rejects.toThrow(/found no running RedlockModule/);
  });
});

/** A request-scoped provider: one instance per request, which no app binds at its start. */
@Injectable({ scope: Scope.REQUEST })
class Till {
  @Locked("till:{0}", { wait: 3000 })
  async ring(id: string) {
    return holders(`till:${id}`);
  }
}

@Controller("tills")
class TillController {
  constructor(@Inject(Till) private readonly till: Till) {}
  @Post(":id")
  ring(@Param("id") id: string) {
    return this.till.ring(id);
  }
}

describe("a request-scoped provider's @Locked method, called while handling a request", () => {
  it("locks with the Redlock of the app handling the request, with two apps running at once", async () => {
    const app = (redlockModule: ReturnType<typeof RedlockModule.forRoot>) => {
      @Module({ imports: [redlockModule], controllers: [TillController], providers: [Till] })
      class TillApp {}
      return TillApp;
    };
    const three = await startNestApp(app(RedlockModule.forRoot({ instances: trio().map(url) })), "express");
    const one = await startNestApp(
      app(RedlockModule.forRoot({ instances: [url(cluster.servers[3] as RedisServer)] })),
      "express",
    );
    try {
      const answer = async (running: typeof three, id: string) => {
        const { status, text } = await send(`${running.url}/tills/${id}`, { method: "POST" });
        return { status, text };
      };
      // before: 500 {"statusCode":500,"message":"Internal server error"}, from a plain Error ("none of the 2 running apps")
      expect(await answer(three, "1")).toEqual({ status: 201, text: "trio" });
      expect(await answer(one, "2")).toEqual({ status: 201, text: "fourth" });
    } finally {
      await Promise.all([three.close(), one.close()]);
    }
  });
});

/** Takes a lock as it is initialised, as a one-off start-up job does: which Redlock held its key. */
@Injectable()
class WarmUp {
  static seen: string[] = [];
  @Locked("warm-up:{0}")
  async run(id: string) {
    return holders(`warm-up:${id}`);
  }
  async onModuleInit() {
    WarmUp.seen.push(await this.run("1"));
  }
}

@Module({ providers: [WarmUp] })
class WarmUpModule {}

/** Imports WarmUpModule: one level deeper than a RedlockModule its app imports, so initialised before it. */
@Module({ imports: [WarmUpModule] })
class DeeperModule {}

describe("a @Locked call from the onModuleInit of a provider Nest initialises before RedlockModule", () => {
  it("locks with its app's Redlock, from a module imported deeper or listed before RedlockModule, also beside another running app", async () => {
    WarmUp.seen = [];
    const startWarmUp = async (imports: (Type<unknown> | DynamicModule)[]) => {
      @Module({ imports })
      class WarmUpApp {}
      await (await start(WarmUpApp)).close();
    };
    const trioModule = () => RedlockModule.forRoot({ instances: trio().map(url) });
    // before: 'found no running RedlockModule: import RedlockModule.forRoot(...)', though it is imported
    await startWarmUp([trioModule(), DeeperModule]);
    await startWarmUp([WarmUpModule, trioModule()]);
    const one = await start(
      withRedlock(RedlockModule.forRoot({ instances: [url(cluster.servers[3] as RedisServer)] })),
    );
    try {
      // before: the call locked with the other app's Redlock, the one running then ('fourth')
      await startWarmUp([trioModule(), DeeperModule]);
    } finally {
      await one.close();
    }
    expect(WarmUp.seen).toEqual(["trio", "trio", "trio"]);
  });

  it("made from a constructor, which runs before any app has its instance, rejects saying where to make it", async () => {
    const attempts: Promise<unknown>[] = [];
    @Injectable()
    class EagerWarmUp extends WarmUp {
      constructor() {
        super();
        attempts.push(this.run("2").catch((error: unknown) => error));
      }
    }
    @Module({ imports: [RedlockModule.forRoot({ instances: trio().map(url) })], providers: [EagerWarmUp] })
    class EagerApp {}
    const context = await start(EagerApp);
    await context.close();
    expect(await Promise.all(attempts)).toEqual([
      new LockConfigurationError(
        "@Locked from @redlock-kit/nestjs found no running RedlockModule for this call: one made from a constructor comes before its app has the instance (make it in onModuleInit or later); else import RedlockModule.forRoot(...) in the app, or pass { redlock } to @Locked",
        [],
      ),
    ]);
  });
});

describe("a transient provider's @Locked method", () => {
  it("locks with the Redlock of the app that created the instance, with two apps running at once", async () => {
    @Injectable()
    class Office {
      constructor(@Inject(Ledger) readonly ledger: Ledger) {}
    }
    const app = (redlockModule: ReturnType<typeof RedlockModule.forRoot>) => {
      @Module({
        imports: [redlockModule],
        providers: [{ provide: Ledger, useClass: Ledger, scope: Scope.TRANSIENT }, Office],
      })
      class TransientApp {}
      return TransientApp;
    };
    Ledger.seen = [];
    const three = await start(app(RedlockModule.forRoot({ instances: trio().map(url) })));
    const one = await start(app(RedlockModule.forRoot({ instances: [url(cluster.servers[3] as RedisServer)] })));
    try {
      const post = (context: typeof three, id: string) =>
        context
          .get(Office)
          .ledger.post(id)
          .catch((error: unknown) => String(error));
      expect(await post(three, "11")).toBe("11");
      expect(await post(one, "12")).toBe("12");
      expect(Ledger.seen).toEqual(["trio", "fourth"]);
    } finally {
      await Promise.all([three.close(), one.close()]);
    }
  });
});

describe("a @Locked call on a provider of an app that has shut down", () => {
  it("rejects with LockUnavailableError (503), never locking with another running app's Redlock", async () => {
    Ledger.seen = [];
    const three = await start(withRedlock(RedlockModule.forRoot({ instances: trio().map(url) })));
    const one = await start(
      withRedlock(RedlockModule.forRoot({ instances: [url(cluster.servers[3] as RedisServer)] })),
    );
    // a job of the first app that is still running while, and after, that app closes
    const ledger = three.get(Ledger);
    try {
      await three.close();
      const error = await ledger.post("8").catch((e: unknown) => e);
      expect(error).toBeInstanceOf(LockUnavailableError);
      expect((error as LockUnavailableError).status).toBe(503);
      expect(Ledger.seen).toEqual([]);
      expect(await holders("ledger:8")).toBe("neither (0,0,0,0)");
    } finally {
      await one.close();
    }
    await expect(ledger.post("9")).rejects.toBeInstanceOf(LockUnavailableError);
  });
});

/** A provider whose locked job runs until the test lets it finish. */
@Injectable()
class LongJob {
  static entered = () => {};
  static finish: Promise<void> = Promise.resolve();
  /** Called as the locked section ends, before its lock is released. */
  static leaving = () => {};
  @Locked("long-job", { ttl: 1000 })
  async run() {
    LongJob.entered();
    await LongJob.finish;
    LongJob.leaving();
    return "finished";
  }
}

describe("shutdown while a @Locked call of the app is still running", () => {
  it("waits for the call to finish under its lock, released, before closing the clients it created", async () => {
    @Module({ imports: [RedlockModule.forRoot({ instances: trio().map(url) })], providers: [LongJob] })
    class JobApp {}
    const context = await start(JobApp);
    // its clients are new: the job's first call (one attempt) waits only so long for them to say who they are
    await warmUp(context.get(Redlock));
    const entered = new Promise<void>((resolve) => {
      LongJob.entered = resolve;
    });
    let finish = () => {};
    LongJob.finish = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const order: string[] = [];
    // the section's end, not the call's result: the release that ends the section hands the key to
    // the other owner, whose acquisition may resolve before the job's call does
    LongJob.leaving = () => order.push("job's section ended");
    const job = context.get(LongJob).run();
    const jobOutcome = job.then(
      (value) => {
        order.push(`job ${value}`);
        return value;
      },
      (error: unknown) => {
        order.push(`job rejected with ${(error as Error).name}`);
        return error;
      },
    );
    await entered;
    // the extensions of the job's lock (ttl 1000) that succeed while the app closes
    const twice = nextExtensions("long-job", 2, { succeeded: true });
    const closed = context.close().then(() => order.push("closed"));
    // another owner waits for the key: it may take it only once the job released it
    const other = new Redlock(inspectors.slice(0, 3));
    const taken = other.acquire("long-job", 1000, { wait: 20_000 }).then((lock) => {
      order.push("other owner acquired");
      return lock;
    });
    try {
      // the job's lock outlives two extensions while the app closes (before: its clients were closed, it
      // lapsed and the other owner took the key while the job still ran)
      await Promise.race([twice, taken]);
      order.push("job still holds its lock");
      finish();
      expect(await jobOutcome).toBe("finished");
      await closed;
      await (await taken).release();
    } finally {
      twice.stop();
      finish();
      await other.quit();
    }
    expect(order.slice(0, 2)).toEqual(["job still holds its lock", "job's section ended"]);
    expect(order).toContain("closed");
    expect(order.indexOf("other owner acquired")).toBeGreaterThan(order.indexOf("job's section ended"));
  });
});

/** A job that, once the app's shutdown has begun, calls a nested @Locked method on its own key and one on another key. */
@Injectable()
class NestingJob {
  static entered = () => {};
  static go: Promise<void> = Promise.resolve();
  @Locked("nesting:{0}", { ttl: 5000 })
  async run(id: string): Promise<string[]> {
    NestingJob.entered();
    await NestingJob.go;
    const outcome = (call: Promise<string>) => call.catch((error: unknown) => (error as Error).name);
    return [await outcome(this.again(id)), await outcome(this.elsewhere(id))];
  }
  @Locked("nesting:{0}")
  async again(_id: string) {
    return "re-entered";
  }
  @Locked("elsewhere:{0}")
  async elsewhere(_id: string) {
    return "locked elsewhere";
  }
}

describe("shutdown while a @Locked job of the app runs and calls nested @Locked methods", () => {
  it("lets a nested call that only re-enters the job's own lock run, and refuses one that needs another lock (503)", async () => {
    @Module({
      imports: [RedlockModule.forRoot({ instances: trio().map(url) }), ShutdownProbeModule],
      providers: [NestingJob],
    })
    class NestingApp {}
    const context = await start(NestingApp);
    const entered = new Promise<void>((resolve) => {
      NestingJob.entered = resolve;
    });
    const began = new Promise<void>((resolve) => {
      ShutdownProbe.began = resolve;
    });
    let go = () => {};
    NestingJob.go = new Promise<void>((resolve) => {
      go = resolve;
    });
    const job = context.get(NestingJob).run("1");
    await entered;
    const closed = context.close();
    try {
      // the module has stopped taking locks: the job's nested calls come after that
      await began;
    } finally {
      go();
    }
    // before: [ 'LockUnavailableError', 'LockUnavailableError' ] (the re-entering call was refused too, failing the job)
    expect(await job).toEqual(["re-entered", "LockUnavailableError"]);
    await closed;
    expect(await holders("nesting:1")).toBe("neither (0,0,0,0)");
    expect(await holders("elsewhere:1")).toBe("neither (0,0,0,0)");
  });
});

describe("RedlockModule imported twice in one app", () => {
  it("fails the app's start, saying to import it once: its two Redlocks would contend with each other (a @LockedRoute answered 423 to every request)", async () => {
    @Module({ imports: [RedlockModule.forRoot({ instances: trio().map(url) })], providers: [NeedsRedlock] })
    class FeatureModule {}
    @Module({ imports: [RedlockModule.forRoot({ instances: trio().map(url) }), FeatureModule], providers: [Ledger] })
    class TwiceApp {}
    const before = await connections();
    const outcome = await startFailure(TwiceApp);
    expect(outcome).toEqual(
      new TypeError(
        "RedlockModule is imported 2 times in this app: import it once (isGlobal: true makes its Redlock injectable in every module)",
      ),
    );
    // the clients the two modules created are closed
    await expect.poll(connections).toEqual(before);
  });
});

/** An app whose controller declares a @LockedRoute with a bad ttl. */
function badRouteApp(): Type<unknown> {
  @Controller()
  class BadController {
    @Post("go")
    @LockedRoute("go", { ttl: 0 })
    go() {}
  }
  @Module({ imports: [RedlockModule.forRoot({ instances: trio().map(url) })], controllers: [BadController] })
  class BadApp {}
  return BadApp;
}

describe("@LockedRoute declarations", () => {
  it("are checked when the app starts: a bad option fails it, naming the controller and method", async () => {
    const BadApp = badRouteApp();
    await expect(start(BadApp)).rejects.toThrow(
      /^@LockedRoute of BadController\.go: options\.ttl must be a positive integer/,
    );
  });

  it("are checked against the module's Redlock: options that cannot work with its own fail the start, not each request (500)", async () => {
    @Controller()
    class ShortController {
      @Post("go")
      @LockedRoute("go", { ttl: 500 })
      go() {}
    }
    @Module({
      imports: [RedlockModule.forRoot({ instances: trio().map(url), options: { instanceTimeout: 1000 } })],
      controllers: [ShortController],
    })
    class ShortApp {}
    const failed = await startFailure(ShortApp);
    expect(failed).toBeInstanceOf(RangeError);
    expect((failed as Error).message).toMatch(
      /^@LockedRoute of ShortController\.go: options cannot be used with this Redlock: instanceTimeout must be shorter than the ttl/,
    );
  });
});

describe("@LockedRoute keys", () => {
  it("a template no request could make a key of is a TypeError where it is declared", () => {
    expect(() => LockedRoute("order:{params.id}:redlock-kit:fence")).toThrow(
      new TypeError(
        'key template "order:{params.id}:redlock-kit:fence" can only make keys that end in ":redlock-kit:fence", the library\'s own keys beside each lock',
      ),
    );
  });

  it("a second @LockedRoute on one method is a TypeError where it is declared, not a lock dropped without a word", () => {
    const declare = () => {
      class TwiceController {
        @Post(":id")
        @LockedRoute("order:{params.id}")
        @LockedRoute("stock:{params.id}")
        go() {}
      }
      return TwiceController;
    };
    expect(declare).toThrow(
      new TypeError(
        "@LockedRoute of TwiceController.go: one @LockedRoute per route; lock several resources with one key function returning an array",
      ),
    );
  });

  it("a constant key the module's keyPrefix makes one of the library's own keys fails the start, not each request (400)", async () => {
    @Controller()
    class FenceController {
      @Post("go")
      @LockedRoute("fence")
      go() {}
    }
    @Module({
      imports: [RedlockModule.forRoot({ instances: trio().map(url), options: { keyPrefix: "job:redlock-kit:" } })],
      controllers: [FenceController],
    })
    class FenceApp {}
    const failed = await startFailure(FenceApp);
    expect(failed).toBeInstanceOf(TypeError);
    expect((failed as Error).message).toMatch(
      /^@LockedRoute of FenceController\.go: key template "fence" cannot be used with this Redlock: /,
    );
  });
});

describe("an app whose start fails on a bad @LockedRoute declaration", () => {
  it("leaves no running RedlockModule behind: a hand-made object's @Locked call uses the one app that does run", async () => {
    const BadApp = badRouteApp();
    const failed = await startFailure(BadApp);
    expect(failed).toBeInstanceOf(RangeError);

    Ledger.seen = [];
    const one = await start(
      withRedlock(RedlockModule.forRoot({ instances: [url(cluster.servers[3] as RedisServer)] })),
    );
    try {
      // its client is new: the call (one attempt) waits only so long for it to say who it is
      await warmUp(one.get(Redlock));
      const outcome = await new Ledger().post("10").catch((error: unknown) => String(error));
      expect(outcome).toBe("10");
      expect(Ledger.seen).toEqual(["fourth"]);
    } finally {
      await one.close();
    }
  });
});
