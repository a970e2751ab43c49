import "reflect-metadata";
import {
  type BeforeApplicationShutdown,
  Inject,
  Injectable,
  type OnApplicationShutdown,
  type OnModuleInit,
} from "@nestjs/common";
import { DiscoveryService, MetadataScanner } from "@nestjs/core";
import { STATIC_CONTEXT } from "@nestjs/core/injector/constants.js";
import { createHttpLockPolicy, type HeldRoute, type HttpLockPolicy, Redlock, type RouteLock } from "@redlock-kit/core";
import {
  appInitialised,
  appStarting,
  bindInstance,
  callsSettled,
  closedRedlock,
  type StartingApp,
  startRedlock,
  stopRedlock,
} from "./bound-redlocks.js";
import { LOCKED_ROUTE_METADATA, type LockedRouteDeclaration } from "./locked-route.js";

type Handler = (...args: unknown[]) => unknown;

/**
 * The metadata of `@OnEvent` (@nestjs/event-emitter) and of `@Cron`, `@Interval` and `@Timeout`
 * (@nestjs/schedule): Nest calls such a method itself, through no interceptor, so that a
 * `@LockedRoute` on it would never see its call, and it would run unlocked.
 */
const CALLED_DIRECTLY = ["EVENT_LISTENER_METADATA", "SCHEDULER_TYPE"];

/** A `@LockedRoute` on a method Nest calls without an execution context fails the start. */
function refuseCalledDirectly(method: unknown, where: string): void {
  if (typeof method !== "function" || !Reflect.hasMetadata(LOCKED_ROUTE_METADATA, method)) return;
  if (!CALLED_DIRECTLY.some((key) => Reflect.hasMetadata(key, method))) return;
  throw new TypeError(
    `@LockedRoute of ${where}: Nest calls this @OnEvent/@Cron/@Interval/@Timeout method through no interceptor, so the route lock would never be taken and it would run unlocked; lock it with @Locked`,
  );
}

/**
 * What one app's RedlockModule does at start and at shutdown: binds the app's providers and
 * controllers to its Redlock (for `@Locked`), checks every `@LockedRoute` declaration, and at
 * shutdown stops taking locks, waits for those held, and closes the Redlock, which closes the
 * clients it created and none it was handed.
 */
@Injectable()
export class RedlockAppBinding implements OnModuleInit, BeforeApplicationShutdown, OnApplicationShutdown, StartingApp {
  readonly #policy: HttpLockPolicy;
  /** Compiled route locks by handler; `null` for a handler without `@LockedRoute`. */
  readonly #routes = new WeakMap<Handler, RouteLock | null>();
  /** The releases of the `@LockedRoute` locks held now: shutdown waits for them. */
  readonly #heldRoutes = new Set<Promise<void>>();

  constructor(
    @Inject(Redlock) readonly redlock: Redlock,
    @Inject(DiscoveryService) private readonly discovery: DiscoveryService,
    @Inject(MetadataScanner) private readonly scanner: MetadataScanner,
  ) {
    this.#policy = createHttpLockPolicy(redlock);
    appStarting(this);
  }

  async onModuleInit(): Promise<void> {
    try {
      await this.#refuseOthers();
      // A bad key or option fails the app's start, naming the route, rather than its first request;
      // checked before the app counts as running, and the Redlock closed: the app will not run.
      try {
        this.#checkRoutes();
      } catch (error) {
        await this.redlock.quit();
        throw error;
      }
      startRedlock(this.redlock);
      this.bindInstances();
    } finally {
      appInitialised(this);
    }
  }

  /** Binds the app's provider and controller instances created so far (all of them by now) to its Redlock. */
  bindInstances(): void {
    for (const wrapper of [...this.discovery.getProviders(), ...this.discovery.getControllers()]) {
      if (!wrapper.isDependencyTreeStatic()) continue;
      // a transient provider's instances are one per consumer, none of them `wrapper.instance`
      const hosts = wrapper.isTransient
        ? wrapper.getStaticTransientInstances()
        : [wrapper.getInstanceByContextId(STATIC_CONTEXT)];
      for (const host of hosts) {
        // before it is resolved, an instance may be a stand-in its constructor's result replaces
        const instance: unknown = host?.isResolved ? host.instance : undefined;
        if (typeof instance === "object" && instance !== null) bindInstance(instance, this.redlock);
      }
    }
  }

  #checkRoutes(): void {
    for (const wrapper of this.discovery.getControllers()) {
      const prototype = (wrapper.metatype as { prototype?: object } | null)?.prototype;
      if (!prototype) continue;
      for (const name of this.scanner.getAllMethodNames(prototype)) {
        const handler = (prototype as Record<string, unknown>)[name];
        if (typeof handler === "function") this.routeFor(handler as Handler, `${wrapper.name}.${name}`);
      }
    }
    for (const wrapper of [...this.discovery.getProviders(), ...this.discovery.getControllers()]) {
      const prototype = (wrapper.metatype as { prototype?: object } | null)?.prototype;
      if (!prototype) continue;
      for (const name of this.scanner.getAllMethodNames(prototype)) {
        refuseCalledDirectly((prototype as Record<string, unknown>)[name], `${wrapper.name}.${name}`);
      }
    }
  }

  /**
   * Fails the start when the app has another RedlockModule: the app's providers would all be bound
   * to one module's Redlock while a `@LockedRoute` was locked by both modules' interceptors, each
   * through its own Redlock, so that every request contended with itself (423). The Redlocks the
   * modules made are closed first: the app will not run.
   */
  async #refuseOthers(): Promise<void> {
    const bindings = this.discovery
      .getProviders()
      .map((wrapper) => wrapper.instance as unknown)
      .filter((instance): instance is RedlockAppBinding => instance instanceof RedlockAppBinding);
    if (bindings.length <= 1) return;
    await Promise.all(bindings.map((binding) => binding.redlock.quit()));
    throw new TypeError(
      `RedlockModule is imported ${bindings.length} times in this app: import it once (isGlobal: true makes its Redlock injectable in every module)`,
    );
  }

  /**
   * The app takes no more locks: a `@Locked` call from here on that needs a lock is refused (its
   * instance stays bound to this Redlock; one that only re-enters its caller's locks runs), and
   * the calls and requests still waiting for their lock end now with `LockUnavailableError` (503),
   * their bodies not run. Before Nest closes the HTTP server, which waits for the requests in
   * progress: a `@LockedRoute` request waiting for its lock would hold it up for its whole `wait`.
   */
  async beforeApplicationShutdown(): Promise<void> {
    appInitialised(this);
    stopRedlock(this.redlock);
    await this.redlock.stopAcquiring();
  }

  async onApplicationShutdown(): Promise<void> {
    // nothing more after beforeApplicationShutdown, which Nest calls first (both steps happen once)
    await this.beforeApplicationShutdown();
    // A @Locked call still running (a job), or a @LockedRoute method a timeout answered for, renews
    // and releases its lock through this Redlock's clients: closed now, its lock would lapse while
    // its body goes on, and another owner take it.
    await Promise.all([callsSettled(this.redlock), ...this.#heldRoutes]);
    try {
      await this.redlock.quit();
    } finally {
      closedRedlock(this.redlock);
    }
  }

  /** Follows a `@LockedRoute` lock until it is released, for the shutdown to wait for. */
  followRoute(held: HeldRoute): void {
    const released = held.whenReleased();
    this.#heldRoutes.add(released);
    void released.then(() => this.#heldRoutes.delete(released));
  }

  /** The route lock declared on `handler` with `@LockedRoute`, compiled once; `null` if none. */
  routeFor(handler: Handler, where = handler.name): RouteLock | null {
    let route = this.#routes.get(handler);
    if (route !== undefined) return route;
    const declaration = Reflect.getMetadata(LOCKED_ROUTE_METADATA, handler) as LockedRouteDeclaration | undefined;
    route = declaration === undefined ? null : this.#compile(declaration, where);
    this.#routes.set(handler, route);
    return route;
  }

  #compile({ key, options }: LockedRouteDeclaration, where: string): RouteLock {
    try {
      return this.#policy.route(key, options);
    } catch (error) {
      if (!(error instanceof Error)) throw error;
      const Kind = error instanceof RangeError ? RangeError : TypeError;
      throw new Kind(`@LockedRoute of ${where}: ${error.message}`, { cause: error });
    }
  }
}
