import { LockLostError } from "../errors.js";
import { extensionScope, inScope } from "../observe/tracing.js";
import { driftFor, type ResolvedHoldOptions } from "../options.js";
import { Deadline, deadlines } from "../speed/shared-timer.js";
import { type Lock, markLost, STATE } from "./lock.js";

interface Extender {
  extend(lock: Lock, ttl: number): Promise<Lock>;
}

/**
 * Keeps `lock` alive while its holder works: renews it to `ttl` whenever less than
 * `extendThreshold × ttl` (at least two per-instance timeouts, at most half the ttl) is left, and never
 * past `maxHoldMs` from now. An extension that finds
 * the lock lost stops (its signal aborts); one that could not reach enough instances is retried
 * while validity is left. Returns `stop`.
 */
export function autoExtend(owner: Extender, lock: Lock, ttl: number, hold: ResolvedHoldOptions): () => void {
  const renewal = new Renewal(owner, lock, ttl, hold);
  return renewal.stop;
}

/**
 * On the process's shared timer, not a Node timer per lock: a locked HTTP request that ends in
 * milliseconds would otherwise create and clear a timer (and its timer list) every time, which
 * cost more than the rest of the route's lock handling (bench/). Like that timer, a held lock
 * alone does not keep the process alive.
 */
class Renewal extends Deadline {
  readonly #owner: Extender;
  readonly #lock: Lock;
  readonly #ttl: number;
  readonly #holdEnd: number;
  readonly #margin: number;
  #stopped = false;
  /** An extension was cut short by the cap: it was the last. */
  #capped = false;
  /** The async context of the call that took the lock, while someone traces extensions (extensionScope). */
  readonly #scope = extensionScope();

  constructor(owner: Extender, lock: Lock, ttl: number, hold: ResolvedHoldOptions) {
    super();
    this.#owner = owner;
    this.#lock = lock;
    this.#ttl = ttl;
    this.#holdEnd = lock[STATE].clock() + hold.maxHoldMs;
    // An extension may take two per-instance timeouts: after a reconnect it first waits up to one
    // for the new connection to say which server it reaches (quorum/server-identity.ts), then up to
    // one for the votes. Started with less left, it would end after the validity it was meant to
    // prolong (extendThreshold 0.05 on a ttl whose timeout is 10%), a quorum's yes reported lost.
    // But never more than half of what an extension gives: with a per-instance timeout close to the
    // ttl, every extension would leave less than the margin, and the next would start at once.
    const half = Math.floor((ttl - driftFor(ttl, lock[STATE].driftFactor)) / 2);
    this.#margin = Math.min(Math.max(Math.floor(ttl * hold.extendThreshold), 2 * lock[STATE].instanceTimeout), half);
    const state = lock[STATE];
    // Every extension of the lock, its own or a manual `extend()`, times the next renewal: one to a
    // longer ttl than this renewal's must not end it, nor one to a shorter ttl leave it due too late.
    state.onValidityChange = this.#extended;
    this.#schedule();
  }

  readonly stop = (): void => {
    this.#stopped = true;
    deadlines.cancel(this);
    const state = this.#lock[STATE];
    if (state.onValidityChange === this.#extended) state.onValidityChange = undefined;
  };

  // An extension cut short by the cap was the last: the next would gain only the drift each
  // extension loses, and would start at once, again and again, until the cap.
  readonly #extended = (): void => {
    if (!this.#stopped && !this.#capped) this.#schedule();
  };

  #schedule(): void {
    const state = this.#lock[STATE];
    this.#runIn(Math.floor(state.validUntil - state.clock() - this.#margin));
  }

  #runIn(ms: number): void {
    deadlines.add(this, Math.max(0, ms));
  }

  expire(): void {
    void inScope(this.#scope, () => this.#run());
  }

  async #run(): Promise<void> {
    const lock = this.#lock;
    if (this.#stopped || !lock.valid) return;
    // Past the cap the lock is left to expire: its signal aborts when the validity ends.
    const next = Math.min(this.#ttl, Math.floor(this.#holdEnd - lock[STATE].clock()));
    if (next <= lock.remainingMs) return;
    if (next < this.#ttl) this.#capped = true;
    try {
      // once confirmed, it times the next renewal (#extended)
      await this.#owner.extend(lock, next);
    } catch (error) {
      // LockLostError: extend() marked the lock lost and aborted its signal. Anything else means too
      // few instances answered: try again while validity is left (the signal aborts when it ends).
      if (this.#stopped || !lock.valid || (error as Error).name === "LockLostError") return;
      // No retry could finish in time: report the loss now rather than when the validity timer fires.
      if (lock.remainingMs <= 2 * lock[STATE].instanceTimeout) {
        markLost(lock, new LockLostError(lock.resources, "Lock could not be extended before its validity ended"));
        return;
      }
      this.#runIn(Math.floor(lock.remainingMs / 4));
    }
  }
}
