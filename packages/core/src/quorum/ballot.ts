import type { InstanceFailure } from "../errors.js";
import { Deadline, deadlines } from "../speed/shared-timer.js";
import type { LockStore } from "../stores/store.js";

/** One instance's answer: its value, or the reason it gave none. */
export type Vote<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: unknown };

/** Stop waiting once `need` instances answered `yes`: the speed of the fastest quorum, not the slowest instance. */
export interface Quorum<T> {
  readonly need: number;
  readonly yes: (value: T) => boolean;
}

/** Stands for an instance that had not answered when a quorum already had. */
const PENDING: Vote<never> = Object.freeze({ ok: false, error: new Error("Not awaited: a quorum had answered") });

/**
 * Calls `call(store, arg, index)` for every store at once (a shared function and its argument rather
 * than a closure per call) and waits at most `timeoutMs` for each (one shared deadline), or
 * until `quorum` is reached.
 * A late answer is ignored here; the command may still land, which is why failure paths
 * release on instances that timed out too.
 */
export function fanOut<T, A>(
  stores: readonly LockStore[],
  call: (store: LockStore, arg: A, index: number) => Promise<T>,
  arg: A,
  timeoutMs: number,
  quorum?: Quorum<T>,
): Promise<Vote<T>[]> {
  return new Promise((resolve) => {
    const ballot = new Ballot(stores.length, timeoutMs, quorum, resolve);
    for (let index = 0; index < stores.length; index++) {
      try {
        call(stores[index] as LockStore, arg, index).then(
          (value) => ballot.settle(index, { ok: true, value }),
          (error: unknown) => ballot.settle(index, { ok: false, error }),
        );
      } catch (error) {
        ballot.settle(index, { ok: false, error });
      }
    }
    ballot.bound();
  });
}

/**
 * The votes of one fan-out, and its deadline. One object and plain callbacks rather than
 * Promise.race and an async helper per store: this runs twice per lock+unlock, and each extra
 * promise and closure is measurable there, in CPU and in garbage (bench/).
 */
class Ballot<T> extends Deadline {
  readonly #votes: (Vote<T> | undefined)[];
  readonly #quorum: Quorum<T> | undefined;
  readonly #timeoutMs: number;
  readonly #resolve: (votes: Vote<T>[]) => void;
  #left: number;
  #yes = 0;

  constructor(count: number, timeoutMs: number, quorum: Quorum<T> | undefined, resolve: (votes: Vote<T>[]) => void) {
    super();
    this.#votes = new Array<Vote<T> | undefined>(count);
    this.#left = count;
    this.#quorum = quorum;
    this.#timeoutMs = timeoutMs;
    this.#resolve = resolve;
  }

  /** Starts the clock for the instances that have not answered yet. */
  bound(): void {
    if (this.#left > 0) deadlines.add(this, this.#timeoutMs);
  }

  settle(index: number, vote: Vote<T>): void {
    const votes = this.#votes;
    if (votes[index] !== undefined || this.#left === 0) return;
    votes[index] = vote;
    this.#left--;
    const quorum = this.#quorum;
    if (quorum !== undefined && vote.ok && quorum.yes(vote.value) && ++this.#yes >= quorum.need && this.#left > 0) {
      // The rest may still answer (a late yes holds our value; unlock goes to every instance).
      for (let i = 0; i < votes.length; i++) votes[i] ??= PENDING;
      this.#left = 0;
    }
    if (this.#left > 0) return;
    deadlines.cancel(this);
    this.#resolve(votes as Vote<T>[]);
  }

  expire(): void {
    const error = new Error(`No answer within ${this.#timeoutMs} ms`);
    for (let index = 0; index < this.#votes.length; index++) {
      if (this.#votes[index] === undefined) this.settle(index, { ok: false, error });
    }
  }
}

/**
 * The per-instance causes of failed votes, redacted: a fresh Error with the original
 * name and message only. ioredis errors carry the command and its arguments, lock
 * value included, which must never leave the library.
 */
export function failuresOf(votes: readonly Vote<unknown>[], value: string): InstanceFailure[] {
  const failures: InstanceFailure[] = [];
  votes.forEach((vote, instance) => {
    if (!vote.ok) failures.push({ instance, error: redact(vote.error, value) });
  });
  return failures;
}

export function redact(error: unknown, value: string): Error {
  const source = error instanceof Error ? error : new Error(String(error));
  const clean = new Error(source.message.split(value).join("[redacted]"));
  clean.name = source.name;
  return clean;
}
