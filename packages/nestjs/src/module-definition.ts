import { ConfigurableModuleBuilder, type InjectionToken } from "@nestjs/common";
import type { RedlockInstance, RedlockOptions } from "@redlock-kit/core";

/**
 * A client registered elsewhere in the app (for example by `@nestjs-modules/ioredis`), named by its
 * injection token. The module never closes it.
 *
 * @example
 * RedlockModule.forRoot({ instances: [{ inject: getRedisConnectionToken("a") }, "redis://b:6379", "redis://c:6379"] })
 */
export interface InjectedInstance {
  /** The injection token of an ioredis client, Cluster or LockStore provider. */
  readonly inject: InjectionToken;
}

/** One Redlock instance: what `new Redlock()` takes, or `{ inject: token }` in `forRoot`. */
export type RedlockModuleInstance = RedlockInstance | InjectedInstance;

/** What `forRoot` takes (besides `isGlobal`) and what `forRootAsync`'s `useFactory` returns. */
export interface RedlockModuleOptions {
  /**
   * The Redlock instances: ioredis clients or Clusters, ioredis options, `redis://` URLs, LockStores,
   * or (in `forRoot` only) `{ inject: token }` for a client provided elsewhere. The clients the
   * module creates from options and URLs connect at the Redlock's first call, and close on
   * shutdown; those it was handed are never closed.
   */
  instances: readonly RedlockModuleInstance[];
  /**
   * Redlock options (`retryCount`, `wait`, `keyPrefix`, `fencing`…), as `new Redlock(instances, options)`
   * takes them; `lazyConnect` defaults to `true` here.
   */
  options?: RedlockOptions;
}

/** Extras of `forRoot` and `forRootAsync`. */
export interface RedlockModuleExtras {
  /**
   * Register the module globally: `Redlock` is then injectable in every module without importing it.
   * @default false
   */
  isGlobal?: boolean;
}

export const {
  ConfigurableModuleClass,
  MODULE_OPTIONS_TOKEN: REDLOCK_MODULE_OPTIONS,
  OPTIONS_TYPE,
  ASYNC_OPTIONS_TYPE,
} = new ConfigurableModuleBuilder<RedlockModuleOptions>({ moduleName: "Redlock" })
  .setClassMethodName("forRoot")
  .setExtras<RedlockModuleExtras>({ isGlobal: false }, (definition, extras) => ({
    ...definition,
    global: extras.isGlobal,
  }))
  .build();
