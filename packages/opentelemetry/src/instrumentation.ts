import { AsyncLocalStorage } from "node:async_hooks";
import diagnosticsChannel from "node:diagnostics_channel";
import { performance } from "node:perf_hooks";
import {
  type Attributes,
  type Context,
  type Exception,
  INVALID_SPAN_CONTEXT,
  type MeterProvider,
  metrics,
  context as otelContext,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  type TracerProvider,
  trace,
} from "@opentelemetry/api";
import type { AcquireTraceContext, ExtendTraceContext, LockTraceContext, ReleaseTraceContext } from "@redlock-kit/core";
import { createLockMetrics, type LockMetrics } from "./metrics.js";
import { SdkFailures } from "./sdk-failures.js";

/** Options of `instrumentRedlock()`. */
export interface RedlockTelemetryOptions {
  /**
   * Where spans go.
   * @default the global tracer provider (`trace.getTracerProvider()`)
   */
  tracerProvider?: TracerProvider;
  /**
   * Where metrics go.
   * @default the global meter provider (`metrics.getMeterProvider()`)
   */
  meterProvider?: MeterProvider;
  /**
   * Put the resource names on spans and metrics as `lock.resources`. Off by default: resources are
   * often per order or per user, and one time series per resource overwhelms a metrics backend.
   * @default false
   */
  resourceNames?: boolean;
}

/** The instrumentation scope's name, on every span and metric. */
export const INSTRUMENTATION_NAME = "@redlock-kit/opentelemetry";

/**
 * The function that removes the instrumentation installed in the process, by any copy of this
 * package: two installed would make every span and every count twice.
 */
const INSTALLED = Symbol.for("@redlock-kit/opentelemetry.installed");
const installed = globalThis as { [INSTALLED]?: () => void };

type Operation = "acquire" | "extend" | "release" | "using";
const OPERATIONS: readonly Operation[] = ["acquire", "extend", "release", "using"];

/** Outcomes that mean the lock service or the lock failed, not "someone else has it". */
const FAILED = new Set(["unavailable", "lost", "error"]);

/** The release outcomes that end a hold, the only ones `lock.held.duration` records. */
const HELD_UNTIL = new Set(["released", "lost"]);

/**
 * The `lock.outcome` of a call still in progress when the instrumentation was removed: its span
 * ends then, and what the call did afterwards is unknown.
 */
const UNOBSERVED = "unobserved";

/** A `using()` call in progress, as the calls made while it runs see it. */
interface UsingCall {
  /** The OTel context with its span. */
  readonly span: Context;
  /** The OTel context active where it was called (contexts are immutable: compared by identity). */
  readonly caller: Context;
}

interface Call {
  readonly operation: Operation;
  readonly span: Span;
  readonly start: number;
  /** Whether it was added to `lock.waiters`, and so is to be taken off. */
  readonly waiting: boolean;
}

/** The span of a call whose span could not be started: it records nothing. */
const NO_SPAN = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/**
 * Subscribes to redlock-kit's tracing channels (`redlock-kit:acquire`, `:extend`, `:release`,
 * `:using`) and turns every call into a span and metrics through `@opentelemetry/api`; your SDK
 * exports them. Works for every Redlock in the process, whichever copy of core made it. Returns
 * the function that unsubscribes. A second call replaces the instrumentation installed before.
 *
 * @example
 * import { instrumentRedlock } from "@redlock-kit/opentelemetry";
 * const uninstrument = instrumentRedlock(); // after the SDK has registered its providers
 */
export function instrumentRedlock(options: RedlockTelemetryOptions = {}): () => void {
  const tracer = (options.tracerProvider ?? trace.getTracerProvider()).getTracer(INSTRUMENTATION_NAME);
  const lockMetrics = createLockMetrics(
    (options.meterProvider ?? metrics.getMeterProvider()).getMeter(INSTRUMENTATION_NAME),
  );
  installed[INSTALLED]?.();
  const telemetry = new Telemetry(tracer, lockMetrics, options.resourceNames === true);
  const undo = OPERATIONS.map((operation) => telemetry.subscribe(operation));
  const uninstrument = () => {
    if (installed[INSTALLED] === uninstrument) installed[INSTALLED] = undefined;
    for (const unsubscribe of undo) unsubscribe();
    // their asyncEnd will not be heard any more
    telemetry.endOpenCalls();
  };
  installed[INSTALLED] = uninstrument;
  return uninstrument;
}

class Telemetry {
  readonly #tracer: Tracer;
  readonly #metrics: LockMetrics;
  readonly #resourceNames: boolean;
  readonly #sdk = new SdkFailures(INSTRUMENTATION_NAME);
  /** The calls in progress, by their trace context; each is removed when it settles. */
  readonly #calls = new Map<LockTraceContext, Call>();
  /**
   * The `using` call in progress: the OTel context of its span, and the context that was active
   * where it was called. Bound to the channel's `start` (`runStores`), since OTel's own context
   * manager cannot be entered from a subscriber. Its acquisition, extensions and release run in the
   * caller's context, and are its span's children; a call made inside `fn` under a context the app
   * entered there (its own span) is a child of that.
   */
  readonly #parent = new AsyncLocalStorage<UsingCall>();

  constructor(tracer: Tracer, lockMetrics: LockMetrics, resourceNames: boolean) {
    this.#tracer = tracer;
    this.#metrics = lockMetrics;
    this.#resourceNames = resourceNames;
  }

  subscribe(operation: Operation): () => void {
    const channel = diagnosticsChannel.tracingChannel<unknown, LockTraceContext>(`redlock-kit:${operation}`);
    const handlers = {
      start: (context: LockTraceContext): void => {
        this.#start(operation, context);
      },
      // a call that threw synchronously publishes `end` with its outcome and no `asyncEnd`
      end: (context: LockTraceContext) => {
        if (context.outcome !== undefined) this.#end(context);
      },
      asyncStart: () => {},
      asyncEnd: (context: LockTraceContext) => this.#end(context),
      error: () => {},
    };
    if (operation === "using") {
      // Started while entering the store, so that the calls inside using() see it as their parent.
      channel.start.bindStore(this.#parent as AsyncLocalStorage<unknown>, (context): UsingCall | undefined => {
        const span = this.#start(operation, context as LockTraceContext);
        // without a store, the calls inside using() are children of the caller's span
        return this.#sdk.attempt(
          "starting a span",
          () => ({ span: trace.setSpan(this.#activeContext(), span), caller: otelContext.active() }),
          undefined,
        );
      });
      handlers.start = () => {};
    }
    channel.subscribe(handlers);
    return () => {
      channel.unsubscribe(handlers);
      if (operation === "using") {
        channel.start.unbindStore(this.#parent as AsyncLocalStorage<unknown>);
        // an enabled store costs every promise of the process on Node 20, even unbound
        this.#parent.disable();
      }
    };
  }

  /** The parent of a span starting now: the `using()` call's span, unless the app entered a context of its own inside it. */
  #activeContext(): Context {
    const using = this.#parent.getStore();
    const active = otelContext.active();
    return using !== undefined && active === using.caller ? using.span : active;
  }

  #start(operation: Operation, context: LockTraceContext): Span {
    const attributes: Attributes = {
      "lock.instances": context.instances,
      "lock.resource_count": context.resources.length,
      ...this.#resourceAttributes(context),
    };
    const ttl = (context as Partial<AcquireTraceContext>).ttl;
    if (ttl !== undefined) attributes["lock.ttl_ms"] = ttl;
    // a renewal of a lock taken before the instrumentation: the context active here is only the one
    // core was loaded in, another request's if that was a lazy import() inside it
    const parent = (context as ExtendTraceContext).detached === true ? ROOT_CONTEXT : this.#activeContext();
    const span = this.#sdk.attempt(
      "starting a span",
      () => this.#tracer.startSpan(`lock.${operation}`, { kind: SpanKind.INTERNAL, attributes }, parent),
      NO_SPAN,
    );
    const waiting =
      operation === "acquire" &&
      this.#sdk.attempt(
        "recording a metric",
        () => {
          this.#metrics.waiters.add(1, this.#resourceAttributes(context));
          return true;
        },
        false,
      );
    this.#calls.set(context, { operation, span, start: performance.now(), waiting });
    return span;
  }

  #end(context: LockTraceContext): void {
    const call = this.#calls.get(context);
    if (call === undefined) return;
    this.#calls.delete(context);
    const outcome = context.outcome ?? "error";
    // each step apart, so that a failing one leaves the others done: the count balanced, the span ended
    this.#sdk.attempt("recording a metric", () => this.#record(call, context, outcome));
    this.#sdk.attempt("annotating a span", () => this.#annotate(call, context, outcome));
    this.#sdk.attempt("ending a span", () => call.span.end());
  }

  #record(call: Call, context: LockTraceContext, outcome: string): void {
    const resources = this.#resourceAttributes(context);
    if (call.waiting) this.#metrics.waiters.add(-1, resources);
    if (call.operation === "acquire") {
      const seconds = (performance.now() - call.start) / 1000;
      this.#metrics.acquireDuration.record(seconds, { "lock.outcome": outcome, ...resources });
    } else if (call.operation === "release") {
      const { heldMs } = context as ReleaseTraceContext;
      // only a release that ended the hold: a refused one (a lock of another Redlock) leaves it held
      if (heldMs !== undefined && HELD_UNTIL.has(outcome)) {
        this.#metrics.heldDuration.record(heldMs / 1000, { "lock.outcome": outcome, ...resources });
      }
      if (outcome === "lost") this.#metrics.lost.add(1, resources);
    }
  }

  #annotate({ operation, span }: Call, context: LockTraceContext, outcome: string): void {
    span.setAttribute("lock.outcome", outcome);
    if (FAILED.has(outcome)) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: outcome });
      if (context.error instanceof Error) span.recordException(this.#exception(context.error, context));
    }
    if (operation === "acquire") {
      span.setAttribute("lock.attempts", (context as AcquireTraceContext).attempts);
    } else if (operation === "release") {
      const { heldMs } = context as ReleaseTraceContext;
      if (heldMs !== undefined) span.setAttribute("lock.held_ms", heldMs);
    } else if (operation === "using" && outcome === "lost") {
      span.addEvent("lock lost while fn ran");
    }
  }

  /**
   * Ends the span of every call still in progress with `lock.outcome` "unobserved", and takes the
   * acquisitions among them off `lock.waiters`. No duration is recorded: the call has not ended.
   */
  endOpenCalls(): void {
    for (const [context, { span, waiting }] of this.#calls) {
      this.#calls.delete(context);
      if (waiting)
        this.#sdk.attempt("recording a metric", () => this.#metrics.waiters.add(-1, this.#resourceAttributes(context)));
      this.#sdk.attempt("annotating a span", () => span.setAttribute("lock.outcome", UNOBSERVED));
      this.#sdk.attempt("ending a span", () => span.end());
    }
  }

  /**
   * The error as the span records it. Without `resourceNames`, one whose message names a resource
   * (a bad argument is shown in the TypeError or RangeError that refuses it) is recorded by its type
   * alone: its message and stack would put the name on the span.
   */
  #exception(error: Error, context: LockTraceContext): Exception {
    if (this.#resourceNames || !context.resources.some((name) => namesIn(error.message, name))) return error;
    const { code } = error as { code?: unknown };
    return {
      name: error.name,
      ...(typeof code === "string" || typeof code === "number" ? { code } : {}),
      message: "(withheld: it names a resource; instrumentRedlock({ resourceNames: true }) records it)",
    };
  }

  #resourceAttributes(context: LockTraceContext): Attributes {
    return this.#resourceNames ? { "lock.resources": [...context.resources] } : {};
  }
}

/**
 * Whether `text` shows `name`: as it is, JSON-escaped (core quotes a bad value with
 * JSON.stringify), or by its first 40 characters (how core shows a long one).
 */
function namesIn(text: string, name: unknown): boolean {
  if (typeof name !== "string" || name === "") return false;
  return [name, name.slice(0, 40)].some(
    (shown) => text.includes(shown) || text.includes(JSON.stringify(shown).slice(1, -1)),
  );
}
