/**
 * On a Cluster, a call's next attempt and any release of a lock value go out only once every
 * acquire of that value sent before them has been answered. A Cluster client does not keep a
 * command in its place behind the ones sent before it: ioredis sends a command again by itself,
 * after a delay and to a random node that redirects it, when it was answered TRYAGAIN (several keys
 * of a slot being migrated), CLUSTERDOWN, or lost with its connection (a failover); node-redis sends
 * one answered MOVED or ASK again once it read the slots again, to the slot's new owner, behind what
 * it sent there meanwhile (its map was stale, and the old owner slow to answer). An acquire that
 * outlived its attempt's bound could then run after the give-back that followed it, and keep the
 * keys for its whole ttl with nobody to release them; or after the call's next attempt took the
 * keys and the lock was extended, setting them back to the attempt's own ttl: they expired before
 * the validity the extension reported. A call whose acquisition counted on this Cluster had every
 * attempt answered here by then, so the extensions that follow need no wait. (On one connection,
 * each command runs behind those sent before it.)
 */
export class AcquiresFirst {
  /** Lock value → settles once every acquire of it sent so far has been answered. */
  readonly #pending = new Map<string, Promise<unknown>>();

  /** Sends an acquire of `value` with `send` once the acquires of it sent before were answered: at once when none is in flight. */
  acquire<T>(value: string, send: () => Promise<T>): Promise<T> {
    const earlier = this.#pending.get(value);
    const reply = earlier === undefined ? send() : earlier.then(send);
    const answered = reply.then(ignore, ignore);
    this.#pending.set(value, answered);
    void answered.then(() => {
      if (this.#pending.get(value) === answered) this.#pending.delete(value);
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
