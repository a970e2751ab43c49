import { deadlines } from "./deadlines.js";
import type { InstanceFailure } from "./errors.js";
import type { LockStore } from "./store.js";

/** One instance's answer: its value, or the reason it gave none. */
export type Vote<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: unknown };

/**
 * Calls every store at once and waits at most `timeoutMs` for each (one shared deadline), or
 * until `quorum` is reached.
 * A late answer is ignored here; the command may still land, which is why failure paths
 * release on instances that timed out too.
 */
/** Stop waiting once `need` instances answered `yes`: the speed of the fastest quorum, not the slowest instance. */
export interface Quorum<T> {
  readonly need: number;
  readonly yes: (value: T) => boolean;
}

/** Stands for an instance that had not answered when a quorum already had. */
const PENDING: Vote<never> = Object.freeze({ ok: false, error: new Error("Not awaited: a quorum had answered") });

export function fanOut<T>(
  stores: readonly LockStore[],
  call: (store: LockStore) => Promise<T>,
  timeoutMs: number,
  quorum?: Quorum<T>,
): Promise<Vote<T>[]> {
  // Plain callbacks rather than Promise.race and an async helper per store: this runs twice per
  // lock+unlock, and each extra promise hop is measurable there (bench/).
  return new Promise((resolve) => {
    const votes = new Array<Vote<T> | undefined>(stores.length);
    let left = stores.length;
    let yes = 0;
    let deadline: ReturnType<typeof deadlines.add> | undefined;
    const settle = (index: number, vote: Vote<T>) => {
      if (votes[index] !== undefined || left === 0) return;
      votes[index] = vote;
      left--;
      if (quorum !== undefined && vote.ok && quorum.yes(vote.value) && ++yes >= quorum.need && left > 0) {
        // The rest may still answer (a late yes holds our value; unlock goes to every instance).
        for (let i = 0; i < votes.length; i++) votes[i] ??= PENDING;
        left = 0;
      }
      if (left > 0) return;
      if (deadline !== undefined) deadlines.cancel(deadline);
      resolve(votes as Vote<T>[]);
    };
    stores.forEach((store, index) => {
      try {
        call(store).then(
          (value) => settle(index, { ok: true, value }),
          (error: unknown) => settle(index, { ok: false, error }),
        );
      } catch (error) {
        settle(index, { ok: false, error });
      }
    });
    if (left === 0) return;
    deadline = deadlines.add(timeoutMs, () => {
      const error = new Error(`No answer within ${timeoutMs} ms`);
      for (let index = 0; index < votes.length; index++) {
        if (votes[index] === undefined) settle(index, { ok: false, error });
      }
    });
  });
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
