import { MemoryStore, Redlock, type RedlockInstance, type RedlockOptions } from "@redlock-kit/core";
import { probeRedis } from "./probe.js";
import { startThrowawayRedis, type ThrowawayServer } from "./throwaway-redis.js";

/** Where the example's locks live, as chosen by {@link startBackend}. */
export interface ExampleBackend {
  /** `"redis-url"`: the instances in REDIS_URL; `"redis-server"`: throwaway processes; `"memory"`: MemoryStore. */
  readonly kind: "redis-url" | "redis-server" | "memory";
  readonly redlock: Redlock;
  /** One line for the console: where the locks live. */
  readonly description: string;
  /** The redis-server processes started for this run (empty unless `kind` is `"redis-server"`). */
  readonly servers: readonly ThrowawayServer[];
  /** Closes the Redlock's clients and stops the servers it started; safe to call twice. */
  close(): Promise<void>;
}

export interface BackendOptions {
  /**
   * Environment to read `REDIS_URL` and `PATH` from.
   * @default process.env
   */
  env?: NodeJS.ProcessEnv;
  /**
   * How many redis-server processes to start when REDIS_URL is not set.
   * @default 3
   */
  servers?: number;
  /** Options for the Redlock. */
  redlock?: RedlockOptions;
}

/** `redis://user:secret@host:6379/0` -> `redis://host:6379/0`: never print a password. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname === "/" ? "" : parsed.pathname}`;
  } catch {
    return "(unparsable URL)";
  }
}

/** Splits REDIS_URL on commas: one Redlock instance per URL. */
export function parseRedisUrls(value: string): string[] {
  const urls = value
    .split(",")
    .map((url) => url.trim())
    .filter((url) => url !== "");
  for (const url of urls) {
    if (!/^rediss?:\/\//.test(url)) throw new TypeError(`REDIS_URL entries must be redis:// or rediss:// URLs`);
  }
  return urls;
}

function once(close: () => Promise<void>): () => Promise<void> {
  let closing: Promise<void> | undefined;
  return () => {
    closing ??= close();
    return closing;
  };
}

/** Where an example's locks live, as chosen by {@link startInstances}: the instances, not yet a Redlock. */
export interface ExampleInstances extends Omit<ExampleBackend, "redlock"> {
  /** What `new Redlock()` (or `RedlockModule.forRoot`) takes: URLs, `{ host, port }`, or a MemoryStore. */
  readonly instances: readonly RedlockInstance[];
  /** Stops the servers started for this run (not the clients of a Redlock built on `instances`); safe to call twice. */
  close(): Promise<void>;
}

/**
 * Chooses where an example's locks live, the same way for every example:
 * 1. `REDIS_URL` set: one Redlock instance per comma-separated URL;
 * 2. else `redis-server` on PATH: start throwaway servers (no persistence) on free loopback ports,
 *    stopped by `close()` or, failing that, when this process exits;
 * 3. else the in-process `MemoryStore`: locks hold only within this process.
 * Resolves to the instances, for an app that builds its Redlock itself (the NestJS example).
 *
 * @example
 * const where = await startInstances();
 * const dlm = new Redlock(where.instances);
 * // on shutdown:
 * await dlm.quit();
 * await where.close();
 */
export async function startInstances(options: Omit<BackendOptions, "redlock"> = {}): Promise<ExampleInstances> {
  const { env = process.env, servers: count = 3 } = options;
  const redisUrl = env.REDIS_URL?.trim();
  if (redisUrl) {
    const urls = parseRedisUrls(redisUrl);
    if (urls.length === 0) throw new TypeError("REDIS_URL is set but names no URL");
    const reachable = await Promise.all(urls.map((url) => probeRedis(url)));
    const down = urls.filter((_, i) => !reachable[i]).map(redactUrl);
    const warning = down.length > 0 ? ` (not answering now: ${down.join(", ")})` : "";
    return {
      kind: "redis-url",
      instances: urls,
      description: `Locks: ${urls.length} Redis instance${urls.length === 1 ? "" : "s"} from REDIS_URL: ${urls.map(redactUrl).join(", ")}${warning}`,
      servers: [],
      close: async () => {},
    };
  }

  try {
    const redis = await startThrowawayRedis(count, env);
    const ports = redis.servers.map(({ port }) => port).join(", ");
    return {
      kind: "redis-server",
      instances: redis.servers.map(({ port }) => ({ host: "127.0.0.1", port })),
      description: `Locks: ${count} throwaway redis-server processes on 127.0.0.1 ports ${ports} (stopped on exit)`,
      servers: redis.servers,
      close: once(() => redis.stop()),
    };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }

  return {
    kind: "memory",
    instances: [new MemoryStore()],
    description:
      "Locks: in-process MemoryStore (REDIS_URL is not set and redis-server is not on PATH); they hold within this process only",
    servers: [],
    close: async () => {},
  };
}

/**
 * {@link startInstances}, then a Redlock on them: what the Express, Koa, Fastify and decorators
 * examples run on.
 *
 * @example
 * const backend = await startBackend();
 * console.log(backend.description);
 * const app = buildApp(backend.redlock);
 * // on shutdown:
 * await backend.close();
 */
export async function startBackend(options: BackendOptions = {}): Promise<ExampleBackend> {
  const { instances, close, ...where } = await startInstances(options);
  const redlock = new Redlock(instances, options.redlock);
  return {
    ...where,
    redlock,
    close: once(async () => {
      await redlock.quit();
      await close();
    }),
  };
}
