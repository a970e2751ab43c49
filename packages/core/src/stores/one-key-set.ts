import { InFlightAcquires } from "./in-flight-acquires.js";
import { ACQUIRED, type AcquireReply } from "./store.js";

/** The commands of a one-key acquire, on whichever client library the store speaks: one object per store. */
export interface OneKeyCommands {
  /** `SET key value NX PX ttl GET`: resolves to the old value (null when the key was free). */
  setGet(key: string, value: string, ttl: number): Promise<unknown>;
  /** The extend script on the key: resolves to whether the key still held our value. */
  extend(key: string, value: string, ttl: number): Promise<boolean>;
  /** `PTTL key`. */
  pttl(key: string): Promise<unknown>;
  /** The acquire script on the key, for servers that refuse NX with GET. */
  script(key: string, value: string, ttl: number): Promise<AcquireReply>;
}

/**
 * One key, nobody queued: `SET key value NX PX ttl GET`, one command instead of the acquire
 * script (Redis runs it in about half the time; the sequential bench rows show it). GET tells a
 * free key (nil) from another owner's (PTTL then asks how long it has left, if it answers within
 * Redlock's per-instance timeout: `withinBudget`) and from our own
 * value (a SET re-sent after a reconnect, or a key handed to us with a short hold), which gets our
 * ttl by the extend script: a compare-and-PEXPIRE, so that if the lock was released meanwhile
 * (Redlock had its quorum without this answer) this second command cannot set the key again.
 * Redis 6 refuses NX with GET: the acquire script is used from then on. An acquire refused so
 * whose value was released meanwhile (`released`) sends nothing more (the script would land after
 * that release and set the key again): it answers "not acquired". A release is never deferred, so
 * commands keep their order. One per store.
 */
export class OneKeySet {
  /** `SET NX GET` works here (Redis >= 7); false once the server refused its syntax. */
  #works = true;
  /** Set by the first `SET NX GET` answer: until then a refusal of its syntax can still come. */
  #known = false;
  /** While #known is false: the one-key acquires in flight, whose SET may still be refused. */
  readonly #unknown = new InFlightAcquires();

  /** Whether a one-key acquire should use `acquire` rather than the script. */
  get usable(): boolean {
    return this.#works;
  }

  /** `budgetMs`: how long Redlock waits for the answer (LockStore.acquire); a refusal is answered within it. */
  acquire(key: string, value: string, ttl: number, commands: OneKeyCommands, budgetMs?: number): Promise<AcquireReply> {
    const by = budgetMs === undefined ? undefined : performance.now() + budgetMs - budgetMargin(budgetMs);
    // once a SET NX GET has worked, the server's syntax is known: nothing to follow
    if (this.#known) return this.#attempt(key, value, ttl, commands, always, by);
    return this.#unknown.send(value, (wanted) => this.#attempt(key, value, ttl, commands, wanted, by));
  }

  /** `wanted()`, at a refusal of the syntax: whether the acquire script should still be sent. */
  #attempt(
    key: string,
    value: string,
    ttl: number,
    commands: OneKeyCommands,
    wanted: () => boolean,
    by: number | undefined,
  ): Promise<AcquireReply> {
    return commands.setGet(key, value, ttl).then(
      (old) => {
        this.#known = true;
        if (old === null || old === undefined) return ACQUIRED;
        if (String(old) === value) {
          return commands
            .extend(key, value, ttl)
            .then((extended) => (extended ? ACQUIRED : { acquired: false as const, holderTtl: 0 }));
        }
        const refused = commands.pttl(key).then((reply) => {
          const left = Number(reply);
          // -1: the holder's key has no expiry; -2: it went (released, expired) since the SET
          return { acquired: false as const, holderTtl: left === -1 || left === -2 ? left : Math.max(0, left) };
        });
        return by === undefined ? refused : withinBudget(refused, by, ttl);
      },
      (error: unknown) => {
        if (!(error instanceof Error) || !/syntax error/i.test(error.message)) throw error;
        this.#works = false;
        this.#known = true;
        if (!wanted()) return { acquired: false as const, holderTtl: 0 };
        return commands.script(key, value, ttl);
      },
    );
  }

  /** `value` is being released: a one-key acquire of it whose SET is refused later must not send the script. */
  released(value: string): void {
    this.#unknown.released(value);
  }
}

const always = () => true;

/** Room left before Redlock's own bound on the answer, for its timer and ours to fire in order. */
const budgetMargin = (budgetMs: number) => Math.max(1, Math.floor(budgetMs / 10));

/**
 * The refusal with the holder's ttl from PTTL, or, if that does not answer by `by` (a link whose
 * round trip is over half the per-instance timeout, a slow instance), the refusal alone, with the
 * caller's own `ttl` for how long to wait: Redlock counts a vote that comes past its bound as no
 * answer, and a refused attempt would read as unavailable (503) rather than contention (423).
 */
function withinBudget(refused: Promise<AcquireReply>, by: number, ttl: number): Promise<AcquireReply> {
  const left = by - performance.now();
  const unknown: AcquireReply = { acquired: false, holderTtl: ttl };
  if (left <= 0) {
    refused.catch(() => {});
    return Promise.resolve(unknown);
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve(unknown), left);
    refused.then(
      (reply) => {
        clearTimeout(timer);
        resolve(reply);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
