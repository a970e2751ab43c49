import { AsyncLocalStorage } from "node:async_hooks";
import diagnosticsChannel, { type Channel } from "node:diagnostics_channel";
import { inspect } from "node:util";
import {
  context,
  diag,
  type Meter,
  type Span,
  SpanStatusCode,
  type Tracer,
  type TracerProvider,
  trace,
} from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import {
  AggregationTemporality,
  type DataPoint,
  DataPointType,
  type Histogram,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from "@opentelemetry/sdk-metrics";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import {
  type AcquireTraceContext,
  type Lock,
  LockContentionError,
  LockUnavailableError,
  Redlock,
  tracingChannels,
} from "@redlock-kit/core";
import { instrumentRedlock, type RedlockTelemetryOptions } from "@redlock-kit/opentelemetry";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { aborted } from "#test-helpers/aborted.js";
import { arrival, nextExtensions } from "#test-helpers/lock-events.js";
import { queuedOnQuorum, queueSizes } from "#test-helpers/quorum.js";
import { type RedisServer, sleep, useRedisServers } from "#test-helpers/redis.js";

const cluster = useRedisServers(3);
let clients: Redis[] = [];
const redlocks: Redlock[] = [];
const contextManager = new AsyncLocalStorageContextManager();

let spans: InMemorySpanExporter;
let metricExporter: InMemoryMetricExporter;
let reader: PeriodicExportingMetricReader;
let tracerProvider: BasicTracerProvider;
let meterProvider: MeterProvider;
let uninstrument: (() => void) | undefined;

beforeAll(() => {
  clients = cluster.servers.map((server) => server.client());
  context.setGlobalContextManager(contextManager.enable());
});

afterAll(() => {
  context.disable();
});

afterEach(async () => {
  uninstrument?.();
  uninstrument = undefined;
  for (const server of cluster.servers) server.resume();
  await Promise.all(redlocks.splice(0).map((dlm) => dlm.quit()));
  await Promise.all(clients.map((client) => client.flushall()));
  await Promise.all([tracerProvider?.shutdown(), meterProvider?.shutdown()]);
});

/** Fresh in-memory exporters and providers, and the instrumentation on them. */
function instrument(options: RedlockTelemetryOptions = {}): void {
  spans = new InMemorySpanExporter();
  tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });
  metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  // exported on forceFlush only: the interval is longer than any test
  reader = new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 3_600_000 });
  meterProvider = new MeterProvider({ readers: [reader] });
  uninstrument = instrumentRedlock({ tracerProvider, meterProvider, ...options });
}

/**
 * Each answer is awaited 500 ms, not the default tenth of the ttl (100 ms for the 1 s locks here),
 * which a loaded machine's Redis misses: every attempt then fails (LockUnavailableError) or retries,
 * and the spans and counts under test are not the ones expected.
 */
function redlock(options = {}): Redlock {
  const dlm = new Redlock(clients, { instanceTimeout: 500, ...options });
  redlocks.push(dlm);
  return dlm;
}

/** A tracer provider whose tracer starts spans with `startSpan`, given the tracer of `instrument()`. */
function tracerProviderWith(
  startSpan: (tracer: Tracer, ...args: Parameters<Tracer["startSpan"]>) => Span,
): TracerProvider {
  return {
    getTracer: (...args) => {
      const tracer = tracerProvider.getTracer(...args);
      return {
        startSpan: (...span: Parameters<Tracer["startSpan"]>) => startSpan(tracer, ...span),
        startActiveSpan: tracer.startActiveSpan.bind(tracer),
      } as Tracer;
    },
  };
}

/** A tracer provider whose spans throw `error` from their method `method`. */
const spansThrowing = (method: "end" | "setAttribute", error: Error): TracerProvider =>
  tracerProviderWith((tracer, ...args) => {
    const span = tracer.startSpan(...args);
    span[method] = () => {
      throw error;
    };
    return span;
  });

/**
 * Runs `run` with the uncaught exceptions captured instead of failing the test file, as
 * diagnostics_channel reports a subscriber that threw (on the next tick), and returns them.
 */
async function uncaught(run: () => Promise<void>): Promise<unknown[]> {
  const errors: unknown[] = [];
  process.setUncaughtExceptionCaptureCallback((error) => errors.push(error));
  try {
    await run();
    // every tick queued while `run` ran has run before an immediate scheduled now
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.setUncaughtExceptionCaptureCallback(null);
  }
  return errors;
}

/**
 * Runs `run` with a diag logger set and the uncaught exceptions captured, and returns both: what
 * escaped as an uncaught exception (`errors`) and what reached `diag.error` (`reports`).
 */
async function reported(run: () => Promise<void>): Promise<{ errors: unknown[]; reports: unknown[][] }> {
  const reports: unknown[][] = [];
  const ignore = () => {};
  diag.setLogger({
    error: (...args) => reports.push(args),
    warn: ignore,
    info: ignore,
    debug: ignore,
    verbose: ignore,
  });
  try {
    return { errors: await uncaught(run), reports };
  } finally {
    diag.disable();
  }
}

const finished = (name?: string): ReadableSpan[] =>
  spans.getFinishedSpans().filter((span) => name === undefined || span.name === name);

/** The data points of one metric, as exported now. */
async function points<T = number>(name: string): Promise<DataPoint<T>[]> {
  metricExporter.reset();
  await reader.forceFlush();
  const metrics = metricExporter.getMetrics().flatMap((resource) => resource.scopeMetrics.flatMap((s) => s.metrics));
  return (metrics.find((metric) => metric.descriptor.name === name)?.dataPoints ?? []) as DataPoint<T>[];
}

describe("@redlock-kit/opentelemetry", () => {
  it("makes a span and a duration per acquisition, with the outcome and no resource names by default", async () => {
    instrument();
    const dlm = redlock({ retryCount: 1, retryDelay: 10, retryJitter: 0 });
    const lock = await dlm.acquire("order:42", 5000);
    expect(await dlm.lock("order:42", 1000)).toBeNull();
    await lock.release();

    const [acquired, contention] = finished("lock.acquire");
    expect(acquired?.attributes).toEqual({
      "lock.instances": 3,
      "lock.resource_count": 1,
      "lock.ttl_ms": 5000,
      "lock.outcome": "acquired",
      "lock.attempts": 1,
    });
    expect(contention?.attributes).toMatchObject({ "lock.outcome": "contention", "lock.attempts": 2 });
    expect(contention?.status.code).toBe(SpanStatusCode.UNSET);
    expect(finished("lock.release")[0]?.attributes).toMatchObject({ "lock.outcome": "released" });

    const durations = await points<Histogram>("lock.acquire.duration");
    expect(durations.map((point) => [point.attributes, point.value.count])).toEqual([
      [{ "lock.outcome": "acquired" }, 1],
      [{ "lock.outcome": "contention" }, 1],
    ]);
    const held = await points<Histogram>("lock.held.duration");
    expect(held.map((point) => [point.attributes, point.value.count])).toEqual([[{ "lock.outcome": "released" }, 1]]);
  });

  it("puts the resource names on spans and metrics when asked", async () => {
    instrument({ resourceNames: true });
    const lock = await redlock().acquire(["account:1", "account:2"], 5000);
    await lock.release();
    expect(finished("lock.acquire")[0]?.attributes["lock.resources"]).toEqual(["account:1", "account:2"]);
    expect(finished("lock.release")[0]?.attributes["lock.resources"]).toEqual(["account:1", "account:2"]);
    const [point] = await points<Histogram>("lock.acquire.duration");
    expect(point?.attributes).toEqual({ "lock.outcome": "acquired", "lock.resources": ["account:1", "account:2"] });
  });

  it("marks an unavailable lock service as an error with the exception", async () => {
    instrument();
    const dlm = redlock({ retryCount: 0, instanceTimeout: 100 });
    (cluster.servers[0] as RedisServer).pause();
    (cluster.servers[1] as RedisServer).pause();
    await expect(dlm.acquire("down", 1000)).rejects.toThrow(LockUnavailableError);
    const [span] = finished("lock.acquire");
    expect(span?.status).toEqual({ code: SpanStatusCode.ERROR, message: "unavailable" });
    expect(span?.events.map((event) => event.name)).toEqual(["exception"]);
    expect(span?.events[0]?.attributes?.["exception.type"]).toBe("ERR_REDLOCK_UNAVAILABLE"); // OTel reports the error's code as its type
  });

  it("records no resource name in an exception unless resourceNames is on: a bad argument's message names it", async () => {
    // a lone surrogate (hostile input) is refused with a TypeError that shows the name
    const resource = "user:alice@example.com\ud800";
    const exceptionOf = async (options: RedlockTelemetryOptions) => {
      instrument(options);
      await expect(redlock().acquire(resource, 1000)).rejects.toThrow(TypeError);
      const [span] = finished("lock.acquire");
      expect(span?.status.code).toBe(SpanStatusCode.ERROR);
      const [event] = span?.events ?? [];
      uninstrument?.();
      uninstrument = undefined;
      return event?.attributes ?? {};
    };
    const withheld = await exceptionOf({});
    expect(withheld["exception.type"]).toBe("TypeError");
    expect(inspect(withheld)).not.toContain("alice");
    // asked for, the names are recorded, the exception's message included
    expect(String((await exceptionOf({ resourceNames: true }))["exception.message"])).toContain("alice");
  });

  it("nests the acquisition, extensions and release of using() under its span, itself under the caller's", async () => {
    instrument();
    const dlm = redlock();
    const tracer = tracerProvider.getTracer("app");
    await tracer.startActiveSpan("request", async (request) => {
      // 2 s, renewed at half of it (a renewal up to ~1 s late still comes in time): fn lasts until
      // that auto-extension came
      await dlm.using("job", 2000, () => arrival(nextExtensions("job", 1), "the lock's renewal"));
      request.end();
    });
    const [using] = finished("lock.using");
    const request = finished("request")[0];
    expect(using?.parentSpanContext?.spanId).toBe(request?.spanContext().spanId);
    expect(using?.attributes["lock.outcome"]).toBe("completed");
    const children = finished().filter((span) => span.name !== "lock.using" && span.name !== "request");
    expect(new Set(children.map((span) => span.name))).toEqual(
      new Set(["lock.acquire", "lock.extend", "lock.release"]),
    );
    for (const child of children) expect(child.parentSpanContext?.spanId).toBe(using?.spanContext().spanId);
    // outside using(), a call is a child of whatever is active
    await dlm.acquire("alone", 1000).then((lock) => lock.release());
    expect(finished("lock.acquire").at(-1)?.parentSpanContext).toBeUndefined();
  });

  it("parents a call made inside using()'s fn under a span of the app's to that span, not to lock.using", async () => {
    instrument({ resourceNames: true });
    const dlm = redlock();
    const tracer = tracerProvider.getTracer("app");
    await dlm.using("outer", 5000, () =>
      tracer.startActiveSpan("work", async (work) => {
        await (await dlm.acquire("inner", 1000)).release();
        await dlm.using("nested", 1000, () => {});
        work.end();
      }),
    );
    const span = (name: string, resource?: string) =>
      finished(name).find((one) => resource === undefined || String(one.attributes["lock.resources"]) === resource);
    const parentOf = (name: string, resource: string) => span(name, resource)?.parentSpanContext?.spanId;
    const id = (name: string, resource?: string) => span(name, resource)?.spanContext().spanId;
    // using()'s own acquisitions under their using span; the app's calls under its span
    expect([
      parentOf("lock.acquire", "outer"),
      parentOf("lock.acquire", "inner"),
      parentOf("lock.using", "nested"),
      parentOf("lock.acquire", "nested"),
    ]).toEqual([id("lock.using", "outer"), id("work"), id("work"), id("lock.using", "nested")]);
  });

  it("parents each using()'s auto-extensions to its own span when two run at once", async () => {
    instrument({ resourceNames: true });
    const dlm = redlock();
    // fn returns once its lock has been auto-extended
    const untilExtended = async (_: AbortSignal, lock: Lock) => {
      const first = lock.expiresAt;
      await expect.poll(() => lock.expiresAt).toBeGreaterThan(first);
    };
    // 2 s, renewed at half of it: a renewal up to ~1 s late still comes in time (300 ms ones were
    // lost when their renewal ran 150 ms late)
    await Promise.all([dlm.using("a", 2000, untilExtended), dlm.using("b", 2000, untilExtended)]);
    const parents = new Map(finished("lock.using").map((span) => [span.spanContext().spanId, span]));
    const extensions = finished("lock.extend");
    expect(new Set(extensions.map((span) => String(span.attributes["lock.resources"])))).toEqual(new Set(["a", "b"]));
    for (const extension of extensions) {
      const parent = parents.get(extension.parentSpanContext?.spanId ?? "");
      expect([extension.attributes["lock.resources"], parent?.attributes["lock.resources"]]).toEqual([
        extension.attributes["lock.resources"],
        extension.attributes["lock.resources"],
      ]);
    }
  });

  it("traces a lock taken back from its own release's reservation as a call of its own, under the active span, with no extension", async () => {
    instrument({ resourceNames: true });
    // a clock 100 times slower: however slow the machine, the loop below counts as a run of short
    // sections, so the release reserves the key for the next call (core's speed/retake.ts)
    const dlm = redlock({ clock: () => performance.now() / 100 });
    const other = redlock();
    // a Redlock retakes only while it listens for hand-overs: one of its calls waits
    const blocker = await other.acquire("blocker", 10_000);
    const listening = dlm.acquire("blocker", 10_000, { wait: 60_000 });
    listening.catch(() => {}); // ended by quit() after the test if it fails first
    await expect.poll(async () => queuedOnQuorum(await queueSizes(clients, "blocker"), 1)).toBe(true);
    const tracer = tracerProvider.getTracer("app");
    await tracer.startActiveSpan("loop", async (loop) => {
      await (await dlm.acquire("job", 10_000)).release();
      let lock = await dlm.acquire("job", 10_000);
      for (let i = 0; i < 3; i++) {
        await lock.release();
        lock = await dlm.acquire("job", 10_000);
        // reserved for the ttl: as valid as a lock acquired at the release's start
        expect(lock.remainingMs).toBeGreaterThan(9_000);
      }
      await lock.release();
      loop.end();
    });
    const loop = finished("loop")[0];
    const job = (name: string) => finished(name).filter((span) => String(span.attributes["lock.resources"]) === "job");
    expect([job("lock.acquire").length, job("lock.release").length, job("lock.extend").length]).toEqual([5, 5, 0]);
    for (const span of [...job("lock.acquire"), ...job("lock.release")]) {
      expect(span.parentSpanContext?.spanId).toBe(loop?.spanContext().spanId);
    }
    await blocker.release();
    await (await listening).release();
  });

  it("counts locks found lost at their release, and their time held", async () => {
    instrument();
    const dlm = redlock();
    const lock = await dlm.acquire("taken", 5000);
    const acquiredAt = performance.now();
    await Promise.all(clients.map((client) => client.del("taken")));
    await sleep(20);
    // a 20 ms timer may fire a few µs short of 20 ms on performance.now(): compare with what passed
    const heldAtLeastMs = performance.now() - acquiredAt;
    expect(await lock.release()).toBe(false);
    const lost = await points("lock.lost");
    expect(lost.map((point) => point.value)).toEqual([1]);
    const [held] = await points<Histogram>("lock.held.duration");
    expect(held?.attributes).toEqual({ "lock.outcome": "lost" });
    expect(held?.value.sum).toBeGreaterThanOrEqual(heldAtLeastMs / 1000);
    expect(finished("lock.release")[0]?.status.code).toBe(SpanStatusCode.ERROR);
  });

  it("records the time held of a lock found lost at its release while its Redlock holds 1,024 other locks", async () => {
    instrument();
    // one instance: the 1,024 locks take a few round trips
    const dlm = new Redlock([clients[0] as Redis], { instanceTimeout: 100 });
    redlocks.push(dlm);
    const lost = await dlm.acquire("lost", 1000);
    await aborted(lost.signal); // its validity ended; its key expires a few ms later
    // held until the test ends (quit() and flushall clear them): at the 1,024th lock it holds, the
    // Redlock sweeps the invalid ones out of its list of live locks
    for (let i = 0; i < 1024; i += 128) {
      await Promise.all(Array.from({ length: 128 }, (_, j) => dlm.acquire(`other:${i + j}`, 60_000)));
    }
    expect(await lost.release()).toBe(false);
    const [release] = finished("lock.release");
    expect(release?.attributes["lock.outcome"]).toBe("lost");
    expect(release?.attributes["lock.held_ms"]).toEqual(expect.any(Number));
    const held = await points<Histogram>("lock.held.duration");
    expect(held.map((point) => [point.attributes, point.value.count])).toEqual([[{ "lock.outcome": "lost" }, 1]]);
    expect((await points("lock.lost")).map((point) => point.value)).toEqual([1]);
  });

  it("traces the renewal of a using() begun before instrumentRedlock() as a call of its own, not under another call's span", async () => {
    const dlm = redlock();
    let extended!: () => void;
    const renewal = new Promise<void>((resolve) => {
      extended = resolve;
    });
    // 2 s, renewed at half of it, once the request below has made its call
    const early = dlm.using("early", 2000, async (_, lock) => {
      const first = lock.expiresAt;
      await renewal;
      expect(lock.expiresAt).toBeGreaterThan(first);
    });
    await expect.poll(() => dlm.isLocked("early")).toBe(true);
    instrument({ resourceNames: true });
    const renewed = nextExtensions("early", 1);
    renewed.then(() => extended());
    // a call whose per-instance bound is the earliest one waiting: it arms the process's shared
    // timer, on which that renewal waits too, in this request's context
    const tracer = tracerProviderWith((t, ...args) => t.startSpan(...args)).getTracer("app");
    await tracer.startActiveSpan("request", async (request) => {
      const lock = await redlock({ instanceTimeout: 50 })
        .lock("other", 1000)
        .catch(() => null);
      await lock?.release();
      request.end();
    });
    await early;
    const [extension] = finished("lock.extend");
    expect(extension?.attributes["lock.resources"]).toEqual(["early"]);
    // nothing was active where that using() was called: no parent, least of all the request's span
    const parent = finished().find((span) => span.spanContext().spanId === extension?.parentSpanContext?.spanId);
    expect([parent?.name, extension?.parentSpanContext]).toEqual([undefined, undefined]);
  });

  it("traces that renewal without a parent even when core was first loaded inside a request's context", async () => {
    // core loaded for the first time (a lazy import) while a request's span is active
    const request = trace.wrapSpanContext({ traceId: "1".repeat(32), spanId: "2".repeat(16), traceFlags: 1 });
    vi.resetModules();
    const lazy = await context.with(trace.setSpan(context.active(), request), () => import("@redlock-kit/core"));
    const dlm = new lazy.Redlock(clients, { instanceTimeout: 500 });
    redlocks.push(dlm as unknown as Redlock);
    let extended!: () => void;
    const renewal = new Promise<void>((resolve) => {
      extended = resolve;
    });
    // begun outside that request, before instrumentRedlock(); 2 s, renewed at half of it
    const early = dlm.using("early", 2000, async (_, lock) => {
      const first = lock.expiresAt;
      await renewal;
      expect(lock.expiresAt).toBeGreaterThan(first);
    });
    await expect.poll(() => dlm.isLocked("early")).toBe(true);
    instrument({ resourceNames: true });
    await nextExtensions("early", 1);
    extended();
    await early;
    const [extension] = finished("lock.extend");
    expect(extension?.attributes["lock.resources"]).toEqual(["early"]);
    // the request that happened to load core is long over: it is not the renewal's parent
    expect(extension?.parentSpanContext?.spanId).toBeUndefined();
  });

  it("counts the calls waiting for a lock while they wait", async () => {
    instrument();
    const holder = await redlock().acquire("busy", 10_000);
    const waiting = redlock().acquire("busy", 1000, { wait: 10_000 });
    await sleep(50);
    expect((await points("lock.waiters")).map((point) => point.value)).toEqual([1]);
    await holder.release();
    await (await waiting).release();
    expect((await points("lock.waiters")).map((point) => point.value)).toEqual([0]);
  });

  it("leaves the lock's value out of every span", async () => {
    instrument({ resourceNames: true });
    const dlm = redlock();
    const locks: Lock[] = [];
    // a ttl shorter than the Redlock's 500 ms bound: a bound of its own, below it
    await dlm.using(
      "secret",
      300,
      async (_, lock) => {
        locks.push(lock);
        await sleep(200);
      },
      { instanceTimeout: 200 },
    );
    const lock = await dlm.acquire("secret", 1000);
    locks.push(lock);
    await Promise.all(clients.map((client) => client.del("secret")));
    await lock.extend(1000).catch(() => {});
    await lock.release();
    const shown = finished().map((span) => inspect({ attributes: span.attributes, events: span.events }, { depth: 6 }));
    expect(shown.length).toBeGreaterThan(5);
    for (const { value } of locks) for (const text of shown) expect(text).not.toContain(value);
  });

  it("uninstrumenting while a call waits ends its span and takes it off lock.waiters", async () => {
    instrument();
    const holder = await redlock().acquire("busy", 10_000);
    const waiting = redlock().lock("busy", 1000, { wait: 10_000 });
    expect((await points("lock.waiters")).map((point) => point.value)).toEqual([1]);
    uninstrument?.();
    uninstrument = undefined;
    await holder.release();
    const lock = await waiting;
    expect(lock).not.toBeNull();
    await lock?.release();

    expect((await points("lock.waiters")).map((point) => point.value)).toEqual([0]);
    const [held, unobserved] = finished("lock.acquire");
    expect(held?.attributes["lock.outcome"]).toBe("acquired");
    expect(unobserved?.attributes["lock.outcome"]).toBe("unobserved");
    expect(unobserved?.attributes["lock.attempts"]).toBeUndefined();
    expect(unobserved?.status.code).toBe(SpanStatusCode.UNSET);
    // no duration for a call whose end nobody saw
    const durations = await points<Histogram>("lock.acquire.duration");
    expect(durations.map((point) => [point.attributes, point.value.count])).toEqual([
      [{ "lock.outcome": "acquired" }, 1],
    ]);
  });

  it("uninstrumenting while using() runs its fn ends the using span; its children ended on their own", async () => {
    instrument();
    const dlm = redlock();
    const result = await dlm.using("job", 5000, () => {
      uninstrument?.();
      uninstrument = undefined;
      return "done";
    });
    expect(result).toBe("done");
    expect(finished().map((span) => [span.name, span.attributes["lock.outcome"]])).toEqual([
      ["lock.acquire", "acquired"],
      ["lock.using", "unobserved"],
    ]);
    const [acquire, using] = finished();
    expect(acquire?.parentSpanContext?.spanId).toBe(using?.spanContext().spanId);
    expect((await points("lock.waiters")).map((point) => point.value)).toEqual([0]);
    expect(await dlm.isLocked("job")).toBe(false);
  });

  it("forgets each call when it settles: uninstrumenting afterwards ends no span a second time", async () => {
    let started = 0;
    let ended = 0;
    instrument({
      tracerProvider: tracerProviderWith((tracer, ...args) => {
        started++;
        const span = tracer.startSpan(...args);
        const end = span.end.bind(span);
        span.end = (time) => {
          ended++;
          end(time);
        };
        return span;
      }),
    });
    const dlm = redlock({ retryCount: 0 });
    const lock = await dlm.acquire("settled", 5000);
    await lock.extend(5000);
    expect(await dlm.lock("settled", 1000)).toBeNull();
    await lock.release();
    await dlm.using("settled", 5000, () => {});
    expect([started, ended]).toEqual([7, 7]);
    uninstrument?.();
    uninstrument = undefined;
    expect([started, ended]).toEqual([7, 7]);
    expect(finished().filter((span) => span.attributes["lock.outcome"] === "unobserved")).toEqual([]);
    expect((await points("lock.waiters")).map((point) => point.value)).toEqual([0]);
  });

  it("ends the span of a call that threw synchronously (no asyncEnd): nothing stays open", async () => {
    instrument();
    // what core's traced() publishes when its call throws before returning a promise
    const context = { resources: ["sync"], instances: 3, ttl: 1000, attempts: 0 } as unknown as AcquireTraceContext;
    const { start, end, error } = tracingChannels.acquire;
    start.runStores(context, () => {
      context.outcome = "error";
      context.error = new TypeError("thrown at once");
      error.publish(context);
      end.publish(context);
    });
    expect(finished("lock.acquire").map((span) => span.attributes["lock.outcome"])).toEqual(["error"]);
    expect((await points("lock.waiters")).map((point) => point.value)).toEqual([0]);
    uninstrument?.();
    uninstrument = undefined;
    expect(finished("lock.acquire")).toHaveLength(1);
  });

  it("a tracer that throws when starting a span costs no lock, crashes nothing, and is reported once through diag", async () => {
    const failure = new Error("tracer down");
    instrument({
      tracerProvider: tracerProviderWith(() => {
        throw failure;
      }),
    });
    const dlm = redlock();
    const results: unknown[] = [];
    const { errors, reports } = await reported(async () => {
      // three calls, each starting three spans (using, its acquisition, its release): one report
      for (let i = 0; i < 3; i++) results.push(await dlm.using("job", 5000, () => dlm.isLocked("job")));
    });
    expect(results).toEqual([true, true, true]); // fn ran, and the lock was held while it did
    expect(await dlm.isLocked("job")).toBe(false); // and released
    expect(errors).toEqual([]);
    expect(reports).toEqual([[expect.stringContaining("starting a span"), failure]]);
    expect(finished()).toEqual([]);
    // the calls were counted all the same
    const durations = await points<Histogram>("lock.acquire.duration");
    expect(durations.map((point) => [point.attributes, point.value.count])).toEqual([
      [{ "lock.outcome": "acquired" }, 3],
    ]);
    expect((await points("lock.waiters")).map((point) => point.value)).toEqual([0]);
  });

  it("a diag logger that throws as well crashes nothing", async () => {
    instrument({
      tracerProvider: tracerProviderWith(() => {
        throw new Error("tracer down");
      }),
    });
    const logger = new Error("logger down");
    const throwing = () => {
      throw logger;
    };
    diag.setLogger({ error: throwing, warn: throwing, info: throwing, debug: throwing, verbose: throwing });
    const dlm = redlock();
    let result: unknown;
    try {
      const errors = await uncaught(async () => {
        result = await dlm.using("job", 5000, () => "done");
      });
      expect(errors).toEqual([]);
    } finally {
      diag.disable();
    }
    expect(result).toBe("done");
    expect(await dlm.isLocked("job")).toBe(false);
  });

  it("a span that throws when it ends costs no lock, crashes nothing, and is reported once through diag", async () => {
    const failure = new Error("exporter down");
    instrument({
      tracerProvider: spansThrowing("end", failure),
    });
    const dlm = redlock();
    let result: unknown;
    let released: unknown;
    const { errors, reports } = await reported(async () => {
      result = await dlm.using("job", 5000, () => dlm.isLocked("job"));
      const lock = await dlm.acquire("job", 5000);
      released = await lock.release();
    });
    expect([result, released]).toEqual([true, true]);
    expect(await dlm.isLocked("job")).toBe(false);
    expect(errors).toEqual([]);
    expect(reports).toEqual([[expect.stringContaining("ending a span"), failure]]);
    expect((await points("lock.waiters")).map((point) => point.value)).toEqual([0]);
  });

  it("a span that throws while annotated is still ended, and a meter that throws costs no span: both reported once", async () => {
    const annotating = new Error("attributes refused");
    const recording = new Error("meter down");
    const throwing = () => {
      throw recording;
    };
    const brokenInstrument = { add: throwing, record: throwing };
    instrument({
      tracerProvider: spansThrowing("setAttribute", annotating),
      meterProvider: {
        getMeter: () =>
          ({
            createHistogram: () => brokenInstrument,
            createCounter: () => brokenInstrument,
            createUpDownCounter: () => brokenInstrument,
          }) as unknown as Meter,
      },
    });
    const dlm = redlock();
    let result: unknown;
    const { errors, reports } = await reported(async () => {
      result = await dlm.using("job", 5000, () => dlm.isLocked("job"));
      await (await dlm.acquire("job", 5000)).release();
    });
    expect(result).toBe(true);
    expect(await dlm.isLocked("job")).toBe(false);
    expect(errors).toEqual([]);
    expect(finished().map((span) => span.name)).toEqual([
      "lock.acquire",
      "lock.release",
      "lock.using",
      "lock.acquire",
      "lock.release",
    ]);
    expect(reports).toEqual([
      [expect.stringContaining("recording a metric"), recording],
      [expect.stringContaining("annotating a span"), annotating],
    ]);
  });

  it("unsubscribes: no spans afterwards, and core's channels are idle again", async () => {
    instrument();
    expect(tracingChannels.acquire.hasSubscribers).toBe(true);
    uninstrument?.();
    uninstrument = undefined;
    for (const name of ["acquire", "extend", "release", "using"] as const) {
      expect(tracingChannels[name].hasSubscribers).toBe(false);
    }
    await redlock().using("quiet", 1000, () => 1);
    expect(finished()).toEqual([]);
    expect(trace.getActiveSpan()).toBeUndefined();
  });

  it("a second instrumentRedlock() replaces the first: one span and one count per call", async () => {
    instrument();
    const first = uninstrument;
    uninstrument = instrumentRedlock({ tracerProvider, meterProvider });
    const dlm = redlock();
    await (await dlm.acquire("twice", 1000)).release();
    const durations = await points<Histogram>("lock.acquire.duration");
    expect([finished().map((span) => span.name), durations.map((point) => point.value.count)]).toEqual([
      ["lock.acquire", "lock.release"],
      [1],
    ]);
    // the first one's function, called now, leaves the second installed
    first?.();
    await (await dlm.acquire("twice", 1000)).release();
    expect(finished()).toHaveLength(4);
  });

  it("uninstrumenting disables the AsyncLocalStorage it bound to core's channels, which would slow every promise of the process", async () => {
    // on Node 20 every enabled AsyncLocalStorage is copied onto each new promise and resource, for
    // good: one more per install/uninstall cycle left enabled
    const bound = new Set<unknown>();
    const disabled = new Set<unknown>();
    const { bindStore } = diagnosticsChannel.Channel.prototype;
    const { disable } = AsyncLocalStorage.prototype;
    diagnosticsChannel.Channel.prototype.bindStore = function (this: Channel, store, transform) {
      bound.add(store);
      return bindStore.call(this, store, transform);
    } as typeof bindStore;
    AsyncLocalStorage.prototype.disable = function (this: AsyncLocalStorage<unknown>) {
      disabled.add(this);
      return disable.call(this);
    };
    try {
      instrument();
      await redlock().using("job", 1000, () => {}); // its store is entered, so enabled
      uninstrument?.();
      uninstrument = undefined;
    } finally {
      diagnosticsChannel.Channel.prototype.bindStore = bindStore;
      AsyncLocalStorage.prototype.disable = disable;
    }
    expect(bound.size).toBe(1);
    expect([...bound].filter((store) => !disabled.has(store))).toEqual([]);
  });
});

describe("every path ends its span and leaves lock.waiters at 0", () => {
  /** Instruments with a tracer that counts the spans it started and those ended. */
  function counting(options: RedlockTelemetryOptions = {}) {
    const open = new Set<Span>();
    instrument({
      ...options,
      tracerProvider: tracerProviderWith((tracer, ...args) => {
        const span = tracer.startSpan(...args);
        open.add(span);
        const end = span.end.bind(span);
        span.end = (time) => {
          open.delete(span);
          end(time);
        };
        return span;
      }),
    });
    return open;
  }
  const outcomes = (name: string) => finished(name).map((span) => span.attributes["lock.outcome"]);
  const waiters = async () => (await points("lock.waiters")).map((point) => point.value);

  it("refused: null, LockContentionError, a bad argument, multi-key", async () => {
    const open = counting();
    const dlm = redlock({ retryCount: 0 });
    const holder = await dlm.acquire(["a", "b"], 5000);
    expect(await dlm.lock(["b", "c"], 1000)).toBeNull();
    await expect(dlm.acquire("a", 1000)).rejects.toThrow(LockContentionError);
    await expect(dlm.acquire("x", -1)).rejects.toThrow(RangeError);
    await expect(dlm.acquire(42 as unknown as string, 1000)).rejects.toThrow(TypeError);
    await expect(dlm.using("x", 1000, 42 as unknown as () => void)).rejects.toThrow(TypeError);
    await expect(dlm.using("a", 1000, () => {})).rejects.toThrow(LockContentionError);
    await holder.release();
    expect(await holder.release()).toBe(false);
    await expect(dlm.extend(holder, 1000)).rejects.toThrow();
    expect(open.size).toBe(0);
    expect(await waiters()).toEqual([0]);
    expect(outcomes("lock.acquire")).toEqual(["acquired", "contention", "contention", "error", "error", "contention"]);
    expect(outcomes("lock.using")).toEqual(["error", "contention"]);
    expect(outcomes("lock.release")).toEqual(["released", "already-released"]);
    const held = await points<Histogram>("lock.held.duration");
    expect(held.map((point) => point.attributes["lock.outcome"])).toEqual(["released"]);
  });

  it("a waiting call aborted, timed out, or whose Redlock quits", async () => {
    const open = counting();
    const holder = await redlock().acquire("busy", 10_000);
    const controller = new AbortController();
    const dlm = redlock();
    const abortedCall = dlm.acquire("busy", 1000, { wait: 10_000, signal: controller.signal });
    const abortedUsing = dlm.using("busy", 1000, () => {}, { wait: 10_000, signal: controller.signal });
    const timedOut = dlm.lock("busy", 1000, { wait: 50 });
    const quitting = redlock();
    const quitCall = quitting.acquire("busy", 1000, { wait: 10_000 });
    quitCall.catch(() => {});
    expect(await waiters()).toEqual([4]);
    controller.abort(new Error("client left"));
    await expect(abortedCall).rejects.toThrow("client left");
    await expect(abortedUsing).rejects.toThrow("client left");
    expect(await timedOut).toBeNull();
    await quitting.quit();
    await expect(quitCall).rejects.toThrow();
    await holder.release();
    expect(open.size).toBe(0);
    expect(await waiters()).toEqual([0]);
    expect(outcomes("lock.using")).toEqual(["aborted"]);
  });

  it("a lock lost while using() ran: lost on the using span, the extension and the release, counted once", async () => {
    const open = counting();
    const dlm = redlock();
    await dlm.using("lost", 1000, async (signal) => {
      await Promise.all(clients.map((client) => client.del("lost")));
      await aborted(signal);
    });
    expect(open.size).toBe(0);
    expect(outcomes("lock.using")).toEqual(["lost"]);
    expect(outcomes("lock.extend")).toEqual(["lost"]);
    expect(outcomes("lock.release")).toEqual(["lost"]);
    expect((await points("lock.lost")).map((point) => point.value)).toEqual([1]);
  });

  /**
   * Holds every instance's writes back (CLIENT PAUSE WRITE, on connections of the test's own) until
   * the returned function is called; `blocked` resolves once a command waits on every instance.
   */
  async function pauseWrites() {
    const admins = cluster.servers.map((server) => server.client());
    await Promise.all(admins.map((admin) => admin.call("CLIENT", "PAUSE", 60_000, "WRITE")));
    const blocked = () =>
      expect
        .poll(async () =>
          (await Promise.all(admins.map((admin) => admin.info("clients")))).every((info) =>
            /blocked_clients:1\b/.test(info),
          ),
        )
        .toBe(true);
    // again after the test, whatever failed
    const unpause = async () => {
      await Promise.all(admins.map((admin) => admin.call("CLIENT", "UNPAUSE")));
      for (const admin of admins.splice(0)) admin.disconnect();
    };
    return { blocked, unpause };
  }
  const keysLeft = async (key: string) => (await Promise.all(clients.map((client) => client.exists(key)))).join();

  it("a lock won just as the caller's signal aborted is given back untraced: the acquisition's failure only, no held duration", async () => {
    const open = counting();
    const controller = new AbortController();
    // the signal aborts once the call has won, before its caller is handed the lock: armed once the
    // call began its attempt, the clock's next reading is when the win is answered, and the signal
    // aborts in the microtask after it
    let armed = false;
    const clock = () => {
      if (armed) {
        armed = false;
        queueMicrotask(() => controller.abort(new Error("client left")));
      }
      return performance.now();
    };
    const dlm = redlock({ clock });
    const acquiring = dlm.acquire("raced", 5000, { signal: controller.signal });
    armed = true;
    await expect(acquiring).rejects.toThrow("client left");
    await expect.poll(() => keysLeft("raced")).toBe("0,0,0"); // given back
    expect(open.size).toBe(0);
    expect(outcomes("lock.acquire")).toEqual(["aborted"]);
    expect(outcomes("lock.release")).toEqual([]);
    expect(await points<Histogram>("lock.held.duration")).toEqual([]);
  });

  it.each(["an aborted signal", "quit()"] as const)(
    "a winning attempt answered after %s is given back untraced: the acquisition's failure only",
    async (stop) => {
      const open = counting();
      // the attempt waits for its paused replies rather than time out
      const dlm = redlock({ instanceTimeout: 10_000 });
      await (await dlm.acquire("warm-up", 30_000)).release(); // connected: the attempt is all it sends
      spans.reset();
      const controller = new AbortController();
      const paused = await pauseWrites();
      let quitting: Promise<void> | undefined;
      try {
        const call = dlm.acquire("in-flight", 30_000, { signal: controller.signal }).catch((error: unknown) => error);
        await paused.blocked();
        if (stop === "quit()") quitting = dlm.quit();
        else controller.abort(new Error("client left"));
        await paused.unpause();
        expect(await call).toBeInstanceOf(Error);
        await quitting;
      } finally {
        await paused.unpause();
      }
      await expect.poll(() => keysLeft("in-flight")).toBe("0,0,0"); // given back
      expect(open.size).toBe(0);
      expect(outcomes("lock.acquire")).toEqual([stop === "quit()" ? "unavailable" : "aborted"]);
      expect(outcomes("lock.release")).toEqual([]);
    },
  );

  it("a using() whose renewals went unanswered is lost on its span, though a quorum still held its keys: released, not counted lost", async () => {
    const open = counting();
    // 4 s, renewed 2 s before its validity ends; a renewal waits 1 s per instance
    const dlm = redlock({ instanceTimeout: 1000 });
    const [, second, third] = cluster.servers as RedisServer[];
    await dlm.using("unanswered", 4000, async (signal, lock) => {
      // the renewal reaches one instance of three: too few answers to tell, and too little validity
      // left to try again, so auto-extension gives the lock up (its keys stay held everywhere)
      second?.pause();
      third?.pause();
      await aborted(signal);
      expect(lock.valid).toBe(false);
      second?.resume();
      third?.resume();
    });
    expect(open.size).toBe(0);
    expect(outcomes("lock.extend")).toEqual(["unavailable"]);
    expect(outcomes("lock.using")).toEqual(["lost"]);
    expect(outcomes("lock.release")).toEqual(["released"]); // a quorum still held it: unlock() was true
    expect(await points("lock.lost")).toEqual([]);
    const held = await points<Histogram>("lock.held.duration");
    expect(held.map((point) => point.attributes["lock.outcome"])).toEqual(["released"]);
  });

  it("a release that too few instances answered is lost, though a quorum may still hold the keys", async () => {
    const open = counting();
    const dlm = redlock({ instanceTimeout: 200 });
    const lock = await dlm.acquire("unconfirmed", 10_000);
    // two of three instances take no writes: the release reaches one, and times out on the others
    const admins = cluster.servers.slice(1).map((server) => server.client());
    try {
      await Promise.all(admins.map((admin) => admin.call("CLIENT", "PAUSE", 60_000, "WRITE")));
      expect(await lock.release()).toBe(false);
      // the two hold the key still (reads answer): a quorum, until the ttl or the held-back release
      expect(await Promise.all(admins.map((admin) => admin.exists("unconfirmed")))).toEqual([1, 1]);
    } finally {
      await Promise.all(admins.map((admin) => admin.call("CLIENT", "UNPAUSE")));
      for (const admin of admins) admin.disconnect();
    }
    expect(open.size).toBe(0);
    expect(outcomes("lock.release")).toEqual(["lost"]);
    expect(finished("lock.release")[0]?.status.code).toBe(SpanStatusCode.ERROR);
    expect((await points("lock.lost")).map((point) => point.value)).toEqual([1]);
  });

  it("a release refused (a lock of another Redlock) records no held duration: the lock is still held", async () => {
    const open = counting();
    const owner = redlock();
    const lock = await owner.acquire("mine", 5000);
    await expect(redlock().unlock(lock)).rejects.toThrow(TypeError);
    expect(await owner.isLocked("mine")).toBe(true);
    await lock.release();
    expect(open.size).toBe(0);
    expect(outcomes("lock.release")).toEqual(["error", "released"]);
    const held = await points<Histogram>("lock.held.duration");
    expect(held.map((point) => [point.attributes, point.value.count])).toEqual([[{ "lock.outcome": "released" }, 1]]);
  });

  it("a call outside using() is a child of the caller's active span", async () => {
    counting();
    const dlm = redlock();
    const tracer = tracerProviderWith((t, ...args) => t.startSpan(...args)).getTracer("app");
    const request = await tracer.startActiveSpan("request", async (span) => {
      const lock = await dlm.acquire("job", 5000);
      await lock.extend(5000);
      await lock.release();
      span.end();
      return span.spanContext().spanId;
    });
    const parents = finished()
      .filter((span) => span.name.startsWith("lock."))
      .map((span) => [span.name, span.parentSpanContext?.spanId]);
    expect(parents).toEqual([
      ["lock.acquire", request],
      ["lock.extend", request],
      ["lock.release", request],
    ]);
  });

  it("a call made before instrumentRedlock() and settled after is not seen, and counts nothing", async () => {
    const holder = await redlock().acquire("busy", 10_000);
    const waiting = redlock().acquire("busy", 1000, { wait: 10_000 });
    const open = counting();
    await holder.release();
    await (await waiting).release();
    expect(open.size).toBe(0);
    expect(await waiters()).toEqual([]);
  });

  it("names its instruments, their kinds and units as the README's metrics table does", async () => {
    counting();
    const dlm = redlock();
    const lock = await dlm.acquire("job", 5000);
    await Promise.all(clients.map((client) => client.del("job")));
    await lock.release();
    metricExporter.reset();
    await reader.forceFlush();
    const descriptors = metricExporter
      .getMetrics()
      .flatMap((resource) => resource.scopeMetrics.flatMap((scope) => scope.metrics))
      .map((metric) => [
        metric.descriptor.name,
        metric.dataPointType === DataPointType.SUM
          ? `${metric.isMonotonic ? "" : "up-down "}counter`
          : DataPointType[metric.dataPointType].toLowerCase(),
        metric.descriptor.unit,
      ]);
    expect(descriptors).toEqual([
      ["lock.acquire.duration", "histogram", "s"],
      ["lock.held.duration", "histogram", "s"],
      ["lock.lost", "counter", "{lock}"],
      ["lock.waiters", "up-down counter", "{call}"],
    ]);
  });
});
