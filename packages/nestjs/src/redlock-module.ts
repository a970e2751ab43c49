import { type DynamicModule, type FactoryProvider, type InjectionToken, Module } from "@nestjs/common";
import { APP_INTERCEPTOR, DiscoveryModule } from "@nestjs/core";
import { Redlock, type RedlockInstance, type RedlockOptions } from "@redlock-kit/core";
import { RedlockAppBinding } from "./app-binding.js";
import {
  type ASYNC_OPTIONS_TYPE,
  ConfigurableModuleClass,
  type InjectedInstance,
  type OPTIONS_TYPE,
  REDLOCK_MODULE_OPTIONS,
  type RedlockModuleOptions,
} from "./module-definition.js";
import { RedlockInterceptor } from "./redlock-interceptor.js";

function isInjected(instance: unknown): instance is InjectedInstance {
  return typeof instance === "object" && instance !== null && Object.hasOwn(instance, "inject");
}

/** Builds the module's Redlock, with `clients` (resolved by Nest from `{ inject }` entries) in their places. */
function createRedlock(options: RedlockModuleOptions, clients: readonly unknown[], method: string): Redlock {
  if (typeof options !== "object" || options === null || !Array.isArray(options.instances)) {
    throw new TypeError(`RedlockModule.${method}: instances must be an array of Redlock instances`);
  }
  let next = 0;
  const instances = options.instances.map((instance, index) => {
    if (!isInjected(instance)) return instance;
    if (next >= clients.length) {
      throw new TypeError(
        `RedlockModule.${method}: instances[${index}] is { inject }, which only forRoot resolves; in forRootAsync list the token in inject and return the client from useFactory`,
      );
    }
    return clients[next++] as RedlockInstance;
  });
  try {
    return new Redlock(instances, connectingLazily(options.options));
  } catch (error) {
    if (!(error instanceof Error)) throw error;
    const Kind = error instanceof RangeError ? RangeError : TypeError;
    throw new Kind(`RedlockModule.${method}: ${error.message}`, { cause: error });
  }
}

/**
 * The clients the module creates connect at the Redlock's first call: when NestFactory.create() or
 * createApplicationContext() rejects after the Redlock was built (another provider's factory, or in
 * a standalone context an onModuleInit, throws), Nest calls no hook and returns no app to close, so
 * clients connected at construction would be left open. The user's own `options.lazyConnect` wins;
 * anything but an object goes to Redlock as it is, to be refused there.
 */
function connectingLazily(options: unknown): RedlockOptions | undefined {
  if (options === undefined) return { lazyConnect: true };
  if (typeof options !== "object" || options === null || Array.isArray(options)) return options as never;
  return { lazyConnect: true, ...options };
}

function redlockProvider(tokens: readonly InjectionToken[], method: string): FactoryProvider<Redlock> {
  return {
    provide: Redlock,
    inject: [REDLOCK_MODULE_OPTIONS, ...tokens],
    useFactory: (options: RedlockModuleOptions, ...clients: unknown[]) => createRedlock(options, clients, method),
  };
}

function withProvider(definition: DynamicModule, provider: FactoryProvider<Redlock>): DynamicModule {
  return { ...definition, providers: [...(definition.providers ?? []), provider] };
}

/**
 * Provides an injectable `Redlock` built from `instances` (clients, ioredis options, URLs, or the
 * tokens of clients registered elsewhere), binds `@Locked` methods of the app's providers and
 * controllers to it, locks `@LockedRoute` routes, answers lock errors as Nest `HttpException`s
 * (423 with `Retry-After`, 503, 409, 400) through a global interceptor, and closes on shutdown the
 * clients it created, never those it was handed.
 *
 * @example
 * @Module({
 *   imports: [
 *     RedlockModule.forRoot({
 *       instances: ["redis://a:6379", "redis://b:6379", "redis://c:6379"],
 *       options: { retryCount: 0 },
 *       isGlobal: true,
 *     }),
 *   ],
 * })
 * export class AppModule {}
 */
@Module({
  imports: [DiscoveryModule],
  providers: [RedlockAppBinding, { provide: APP_INTERCEPTOR, useClass: RedlockInterceptor }],
  exports: [Redlock],
})
export class RedlockModule extends ConfigurableModuleClass {
  /** `instances` may name clients registered elsewhere as `{ inject: token }`; `isGlobal` defaults to false. */
  static forRoot(options: typeof OPTIONS_TYPE): DynamicModule {
    const instances: readonly unknown[] = Array.isArray(options?.instances) ? options.instances : [];
    const tokens = instances.filter(isInjected).map((instance) => instance.inject);
    // biome-ignore lint/complexity/noThisInStatic: super's definition says module: this, RedlockModule, whose @Module holds the interceptor
    return withProvider(super.forRoot(options), redlockProvider(tokens, "forRoot"));
  }

  /**
   * `useFactory` (with `imports` and `inject`), `useClass` or `useExisting` returns
   * `{ instances, options }`; clients it got from `inject` count as handed, and stay open.
   */
  static forRootAsync(options: typeof ASYNC_OPTIONS_TYPE): DynamicModule {
    // biome-ignore lint/complexity/noThisInStatic: as in forRoot
    return withProvider(super.forRootAsync(options), redlockProvider([], "forRootAsync"));
  }
}
