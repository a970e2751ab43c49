import type { InstanceFailure } from "./errors.js";
import type { LockStore } from "./store.js";

/** One instance's answer: its value, or the reason it gave none. */
export type Vote<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: unknown };

const TIMED_OUT: unique symbol = Symbol("timed out");

/**
 * Calls every store at once and waits at most `timeoutMs` for each (one timer for all).
 * A late answer is ignored here; the command may still land, which is why failure paths
 * release on instances that timed out too.
 */
export async function fanOut<T>(
  stores: readonly LockStore[],
  call: (store: LockStore) => Promise<T>,
  timeoutMs: number,
): Promise<Vote<T>[]> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<typeof TIMED_OUT>((resolve) => {
    timer = setTimeout(resolve, timeoutMs, TIMED_OUT);
  });
  try {
    return await Promise.all(stores.map((store) => ask(store, call, timeout, timeoutMs)));
  } finally {
    clearTimeout(timer);
  }
}

async function ask<T>(
  store: LockStore,
  call: (store: LockStore) => Promise<T>,
  timeout: Promise<typeof TIMED_OUT>,
  timeoutMs: number,
): Promise<Vote<T>> {
  try {
    const value = await Promise.race([call(store), timeout]);
    if (value === TIMED_OUT) return { ok: false, error: new Error(`No answer within ${timeoutMs} ms`) };
    return { ok: true, value };
  } catch (error) {
    return { ok: false, error };
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
