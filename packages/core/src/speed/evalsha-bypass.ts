import type { Cluster, Redis } from "ioredis";
import { type ScriptArgs, SHAS } from "../stores/script-calls.js";
import type { StoreScript } from "../stores/scripts.js";

/**
 * The EVALSHA bypass, for speed only: once a script has been sent whole, it is called by a plain
 * `EVALSHA` rather than through the command ioredis's `defineCommand` added. What it buys: the
 * defined command wraps every call in a Command subclass and a retry promise, 1–2 µs of CPU per
 * command, 6 commands per lock+unlock on 3 instances. Measured in bench/ ("Sequential
 * lock+unlock, 3 instances", one A/B run): 1.11x the floor this way, 1.00x through the defined
 * command. Without this module every call goes through the defined command, with the same replies.
 */

/** The commands `defineCommand` adds, called with the key count first (numberOfKeys is left unset). */
type ScriptedClient = Record<StoreScript, (...args: ScriptArgs) => Promise<unknown>>;

/**
 * Calls the store's scripts on one client. The first call of each script, and any call Redis
 * answers NOSCRIPT (a restart, SCRIPT FLUSH, a failover), goes through the defined command, which
 * sends the script whole. A Cluster always uses it: its nodes load scripts one by one.
 */
export class ScriptCaller {
  readonly #client: Redis | Cluster;
  readonly #cluster: boolean;
  /** Scripts called once through the defined command, which sent them whole. */
  readonly #sent = new Set<StoreScript>();

  /** `client` must carry the defined commands already (`defineOnce`). */
  constructor(client: Redis | Cluster, cluster: boolean) {
    this.#client = client;
    this.#cluster = cluster;
  }

  call<T>(name: StoreScript, args: ScriptArgs, parse: (reply: unknown) => T): Promise<T> {
    if (this.#cluster || !this.#sent.has(name)) {
      this.#sent.add(name);
      return this.#defined(name, args, parse);
    }
    const bySha: Promise<unknown> = (this.#client as Redis).evalsha(SHAS[name], ...args);
    return bySha.then(parse, (error: unknown) => {
      if (!(error instanceof Error) || !error.message.includes("NOSCRIPT")) throw error;
      return this.#defined(name, args, parse);
    });
  }

  #defined<T>(name: StoreScript, args: ScriptArgs, parse: (reply: unknown) => T): Promise<T> {
    return (this.#client as unknown as ScriptedClient)[name](...args).then(parse);
  }
}
