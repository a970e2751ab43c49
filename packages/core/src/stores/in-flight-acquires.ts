/**
 * The script acquires of one store that Redis has not answered yet, by lock value, and whether each
 * value was released since. A script call that Redis answers NOSCRIPT (after a restart, a SCRIPT
 * FLUSH, a failover) is sent whole again, so it runs after every command sent on that connection in
 * the meantime. An acquire whose value was released meanwhile (its attempt timed out and its
 * give-back went out) must not be sent again: it would take the keys after that give-back and keep
 * them for the ttl, with a value nobody releases. Nor one whose waiting call left the queues (it won,
 * or gave up): sent again behind that ZREM, it would queue the call again where another owner holds
 * the key, and that owner's release would hold the key for a call that is over. One per store, and
 * one in its `OneKeySet`, whose `SET NX GET` a Redis 6 refuses (then the acquire script would be
 * sent the same way). A store keeps one more for the give-backs that queue their waiter again, by
 * the same rule, marked only when the call leaves the queues: sent again after that, such a
 * give-back goes without queueing it (script-calls.ts `releaseAgain`).
 */
export class InFlightAcquires {
  /**
   * Lock value → its acquires in flight. A call's attempts share its value, so an attempt may be sent
   * while the one before is still unanswered: each is numbered, and a release marks the ones sent
   * before it, not the attempts after it (one flag per value was reset by the next attempt's send).
   */
  readonly #values = new Map<string, { sent: number; releasedThrough: number; pending: number }>();

  /** Sends an acquire of `value`; `wanted()` answers, at a NOSCRIPT, whether to send the script again. */
  send<T>(value: string, send: (wanted: () => boolean) => Promise<T>): Promise<T> {
    let entry = this.#values.get(value);
    if (entry === undefined) {
      entry = { sent: 0, releasedThrough: 0, pending: 0 };
      this.#values.set(value, entry);
    }
    const attempt = ++entry.sent;
    entry.pending++;
    const sent = entry;
    const reply = send(() => attempt > sent.releasedThrough);
    const settled = () => {
      if (--sent.pending === 0 && this.#values.get(value) === sent) this.#values.delete(value);
    };
    reply.then(settled, settled);
    return reply;
  }

  /**
   * `value` is being released, or its call left the queues: an acquire of it sent before, that Redis
   * answers NOSCRIPT later, is not sent again.
   */
  released(value: string): void {
    const entry = this.#values.get(value);
    if (entry !== undefined) entry.releasedThrough = entry.sent;
  }
}
