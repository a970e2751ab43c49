/**
 * The grant by message, for speed only: a waiter for one key (no fencing) asks, in its queue
 * entry, to be handed the key for its whole ttl rather than for a short hold; the hand-over
 * message then grants it the lock on that instance, and once a quorum of instances did, it holds
 * the lock without a claim. What it buys: a hand-over to another process costs the release, the
 * message and the waiter's wake-up, where the claim (one more round trip, sent by a process that
 * was asleep) would follow. Measured in bench/ ("Between processes, queue" and "Between
 * processes, contention"). Without this module every hand-over is claimed, with the same outcome
 * for every lock.
 *
 * Why it is safe (docs/waiting.md, "Grant by message"): the message only says that instance `i`
 * set the key to the waiter's value, with PX its ttl. The waiter's own value is new for each call,
 * and it is in no queue before the first attempt that carried its ticket, so that key was set after
 * that attempt's start, and expires no sooner than that start plus the ttl: the validity counts
 * from there, as from an attempt's start. Nothing but the waiter itself removes a key that holds
 * its value before it expires; the waiter does so only by giving a key back after a failed
 * attempt, and a hand-over message from an instance it gave a key back to might predate the
 * give-back: such an instance only hands over, and the waiter claims what it was handed there, as
 * without this module. A waiter that waited in line for more than half its ttl claims too
 * (quorum/acquire-loop.ts): the grant would leave it less than half its ttl.
 */
export class MessageGrant {
  /** Monotonic time of the first attempt that carried the waiter's ticket. */
  #queuedAt: number | undefined;
  /** Instances where the call gave a key back after a failed attempt. */
  readonly #gaveBack = new Set<number>();

  /** An attempt that carries the waiter's ticket starts at `at`. */
  queued(at: number): void {
    this.#queuedAt ??= at;
  }

  /** The call gave the key back on instance `index` (or may have: its attempt there timed out). */
  gaveBack(index: number): void {
    this.#gaveBack.add(index);
  }

  /**
   * Whether the call gave a key back on instance `index`: no grant there counts for the rest of the
   * call, by message or by a release of its own Redlock (waiting/hand-over.ts `granted`).
   */
  gaveBackOn(index: number): boolean {
    return this.#gaveBack.has(index);
  }

  /**
   * When a hand-over by instance `index` is a grant: the time its validity counts from; otherwise
   * undefined (a hand-over, which the waiter claims).
   */
  from(index: number): number | undefined {
    return this.gaveBackOn(index) ? undefined : this.#queuedAt;
  }
}
