import type { Cluster, Redis } from "ioredis";
import { ACQUIRE_SCRIPT, COMMANDS, EXTEND_SCRIPT, RELEASE_SCRIPT } from "./scripts.js";
import { ACQUIRED, type AcquireReply, type LockStore } from "./store.js";

type ScriptArgs = [numKeys: number, ...rest: (string | number)[]];

/** The commands `defineCommand` adds, called with the key count first (numberOfKeys is left unset). */
interface ScriptedClient {
  [COMMANDS.acquire](...args: ScriptArgs): Promise<[number, number]>;
  [COMMANDS.extend](...args: ScriptArgs): Promise<number>;
  [COMMANDS.release](...args: ScriptArgs): Promise<number>;
}

/**
 * One Redlock instance on an ioredis client: standalone, Sentinel or Cluster.
 * The scripts are defined once per client (ioredis then calls them by SHA and
 * recovers from NOSCRIPT by itself). On a Cluster, a multi-resource lock needs
 * its resources in one hash slot (share a `{tag}`), or Redis answers CROSSSLOT.
 */
export class RedisStore implements LockStore {
  readonly client: Redis | Cluster;
  readonly description: string;
  readonly #scripts: ScriptedClient;

  constructor(client: Redis | Cluster) {
    this.client = client;
    this.description = describeClient(client);
    defineOnce(client, COMMANDS.acquire, ACQUIRE_SCRIPT);
    defineOnce(client, COMMANDS.extend, EXTEND_SCRIPT);
    defineOnce(client, COMMANDS.release, RELEASE_SCRIPT);
    this.#scripts = client as unknown as ScriptedClient;
  }

  async acquire(keys: readonly string[], value: string, ttl: number): Promise<AcquireReply> {
    const [acquired, holderTtl] = await this.#scripts[COMMANDS.acquire](keys.length, ...keys, value, ttl);
    return acquired === 1 ? ACQUIRED : { acquired: false, holderTtl: Number(holderTtl) };
  }

  async extend(keys: readonly string[], value: string, ttl: number): Promise<boolean> {
    return (await this.#scripts[COMMANDS.extend](keys.length, ...keys, value, ttl)) === 1;
  }

  async release(keys: readonly string[], value: string): Promise<number> {
    return Number(await this.#scripts[COMMANDS.release](keys.length, ...keys, value));
  }
}

function defineOnce(client: Redis | Cluster, name: string, lua: string): void {
  // A shared client may already carry the command (another Redlock on the same client).
  if (typeof (client as unknown as Record<string, unknown>)[name] !== "function") {
    client.defineCommand(name, { lua });
  }
}

/** host:port/db or the socket path; never the password. */
export function describeClient(client: Redis | Cluster): string {
  if ("isCluster" in client && client.isCluster) return "cluster";
  const options = (client as Redis).options ?? {};
  const where = options.path ?? `${options.host ?? "localhost"}:${options.port ?? 6379}`;
  return `${where}/${options.db ?? 0}`;
}
