/**
 * On an ioredis Cluster, a release of a lock value is sent only once every acquire of that value
 * sent before it has been answered. A Cluster client does not keep a command in its place behind
 * the ones sent before it: ioredis sends a command again by itself, after a delay and to a random
 * node that redirects it, when it was answered TRYAGAIN (several keys of a slot being migrated),
 * CLUSTERDOWN, or lost with its connection (a failover). An acquire that outlived its attempt's
 * bound could then run after the give-back that followed it, and keep the keys for its whole ttl
 * with nobody to release them. (On one connection, the give-back runs behind the acquire.)
 */
export class AcquiresFirst {
  /** Lock value → settles once every acquire of it sent so far has been answered. */
  readonly #pending = new Map<string, Promise<unknown>>();

  /** Notes `reply`, an acquire of `value` just sent, and hands it back. */
  track<T>(value: string, reply: Promise<T>): Promise<T> {
    const earlier = this.#pending.get(value);
    const answered = reply.then(ignore, ignore);
    const all = earlier === undefined ? answered : Promise.all([earlier, answered]);
    this.#pending.set(value, all);
    void all.then(() => {
      if (this.#pending.get(value) === all) this.#pending.delete(value);
    });
    return reply;
  }

  /**
   * Sends a release of `value` with `send` once its acquires were answered: at once when none is in
   * flight. After waiting, not at all when `wanted()` says no (a give-back whose call sent another
   * attempt since, with the same value: what follows that attempt, its own give-back or the lock's
   * release, covers the keys).
   */
  release(value: string, send: () => Promise<number>, wanted?: () => boolean): Promise<number> {
    const pending = this.#pending.get(value);
    if (pending === undefined) return send();
    return pending.then(() => (wanted === undefined || wanted() ? send() : 0));
  }
}

const ignore = () => {};
