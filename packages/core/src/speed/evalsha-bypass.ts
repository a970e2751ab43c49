import type { Cluster, Redis } from "ioredis";
import { type ScriptArgs, SHAS } from "../stores/script-calls.js";
import { STORE_SCRIPTS, type StoreScript } from "../stores/scripts.js";

/**
 * The EVALSHA bypass, for speed only: once a script has been sent whole, it is called by a plain
 * `EVALSHA` rather than through a command added with ioredis's `defineCommand`. What it buys: a
 * defined command wraps every call in a Command subclass and a retry promise, 1–2 µs of CPU per
 * command, 6 commands per lock+unlock on 3 instances. Measured in bench/ ("Sequential
 * lock+unlock, 3 instances", one A/B run): 1.11x the floor this way, 1.00x through the defined
 * command. It also decides when a script is sent whole again (below), which a defined command
 * does on its own. Without this module every call would go through a defined command, with the
 * same replies.
 */

/**
 * Calls the store's scripts on one client (standalone, Sentinel or Cluster). Each script is sent
 * whole (`EVAL`, which also loads it) the first time on each connection, as ioredis's defined
 * commands do (a reconnect may have reached a restarted or promoted server, whose cache is empty);
 * later calls go by SHA. A call that Redis answers NOSCRIPT (a SCRIPT FLUSH, a Cluster node that
 * has not run it yet) is sent whole again, unless the caller's `resend()` says it is no longer
 * wanted: sent again, it would run after every command sent meanwhile on the connection; `again()`,
 * when given, says with which arguments.
 */
export class ScriptCaller {
  readonly #client: Redis | Cluster;
  readonly #cluster: boolean;
  /** The connection each script was last sent whole on (a Cluster: any, once). */
  readonly #sentOn = new Map<StoreScript, unknown>();

  constructor(client: Redis | Cluster, cluster: boolean) {
    this.#client = client;
    this.#cluster = cluster;
  }

  call<T>(
    name: StoreScript,
    args: ScriptArgs,
    parse: (reply: unknown) => T,
    resend?: () => boolean,
    again?: () => ScriptArgs,
  ): Promise<T> {
    const connection = this.#cluster ? this.#client : (this.#client as Redis).stream;
    if (connection === undefined || this.#sentOn.get(name) !== connection) {
      this.#sentOn.set(name, connection);
      return this.#whole(name, args, parse);
    }
    const bySha: Promise<unknown> = this.#client.evalsha(SHAS[name], ...args);
    return bySha.then(parse, (error: unknown) => {
      if (!(error instanceof Error) || !error.message.includes("NOSCRIPT")) throw error;
      if (resend !== undefined && !resend()) throw error;
      return this.#whole(name, again?.() ?? args, parse);
    });
  }

  #whole<T>(name: StoreScript, args: ScriptArgs, parse: (reply: unknown) => T): Promise<T> {
    const whole: Promise<unknown> = this.#client.eval(STORE_SCRIPTS[name], ...args);
    return whole.then(parse);
  }
}
