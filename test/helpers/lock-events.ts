/**
 * The lock events core publishes on diagnostics channels, awaited by tests: "the lock was released"
 * is seen where it happens, not guessed from a sleep.
 */
import diagnosticsChannel from "node:diagnostics_channel";
import type { AcquireMessage, ExtendMessage, Lock, ReleaseMessage } from "@redlock-kit/core";
import { expect } from "vitest";
import { aborted } from "./aborted.js";
import { sleep } from "./redis-servers.js";

/** Resolves with the first message on `channel` that matches; subscribe before the event. */
export function nextMessage<T>(channel: string, match: (message: T) => boolean): Promise<T> {
  return new Promise((resolve) => {
    const onMessage = (message: unknown) => {
      if (!match(message as T)) return;
      diagnosticsChannel.unsubscribe(channel, onMessage);
      resolve(message as T);
    };
    diagnosticsChannel.subscribe(channel, onMessage);
  });
}

/** The next release of a lock on `resource` (`released`: whether a quorum still held it). */
export const nextRelease = (resource: string) =>
  nextMessage<ReleaseMessage>("redlock-kit:release", (m) => m.resources.includes(resource));

/**
 * Whichever comes first from now on: a release of `resource` ("released", or "not held" when no
 * quorum held it any more), or the end of `lock`'s validity ("expired"). A lock whose client left
 * while the body's producer still runs must come to "expired".
 */
export const releasedOrExpired = (resource: string, lock: Lock) =>
  Promise.race([
    nextRelease(resource).then(({ released }) => (released ? "released" : "not held")),
    aborted(lock.signal).then(() => "expired"),
  ]);

/** The next acquisition of `resource` that stopped because its signal aborted (the client left). */
export const nextAbortedAcquire = (resource: string) =>
  nextMessage<AcquireMessage>("redlock-kit:acquire", (m) => m.resources.includes(resource) && m.outcome === "aborted");

/**
 * The next `count` extensions of `resource` (auto-extension's included), whatever their outcome or,
 * with `succeeded`, only those that extended it: a test that needs a lock kept past its ttl waits
 * for its renewals rather than sleeping past it. `stop()` unsubscribes before then (a race lost).
 */
export function nextExtensions(
  resource: string,
  count: number,
  { succeeded = false } = {},
): Promise<ExtendMessage[]> & { stop: () => void } {
  const seen: ExtendMessage[] = [];
  const onExtend = (message: unknown) => {
    const extension = message as ExtendMessage;
    if (!extension.resources.includes(resource) || (succeeded && !extension.extended)) return;
    if (seen.push(extension) < count) return;
    stop();
    done(seen);
  };
  const stop = () => diagnosticsChannel.unsubscribe("redlock-kit:extend", onExtend);
  let done: (messages: ExtendMessage[]) => void = () => {};
  const renewed = new Promise<ExtendMessage[]>((resolve) => {
    done = resolve;
  });
  diagnosticsChannel.subscribe("redlock-kit:extend", onExtend);
  return Object.assign(renewed, { stop });
}

/**
 * Counts the releases of `resource` from now on (`count`), and the release calls (`calls`: a repeated
 * call, which releases nothing, included); `stop()` unsubscribes.
 */
export function countReleases(resource: string) {
  const counter = {
    count: 0,
    calls: 0,
    stop: () => {
      diagnosticsChannel.unsubscribe("redlock-kit:release", onMessage);
      diagnosticsChannel.unsubscribe("tracing:redlock-kit:release:start", onCall);
    },
  };
  const onMessage = (message: unknown) => {
    if ((message as ReleaseMessage).resources.includes(resource)) counter.count++;
  };
  const onCall = (context: unknown) => {
    if ((context as { resources: readonly string[] }).resources.includes(resource)) counter.calls++;
  };
  diagnosticsChannel.subscribe("redlock-kit:release", onMessage);
  diagnosticsChannel.subscribe("tracing:redlock-kit:release:start", onCall);
  return counter;
}

/**
 * Lock events on resources whose first one `match` accepts, from now on: acquisitions, release calls
 * (a repeated call, which releases nothing, included), releases done, and those that found the lock
 * no longer held. A test waits for `released` to reach `acquired` rather than for time to pass;
 * `stop()` unsubscribes.
 */
export function countLockEvents(match: (resource: string) => boolean) {
  const counts = { acquired: 0, releaseCalls: 0, released: 0, notHeld: 0 };
  const ours = (resources: readonly string[]) => match(resources[0] ?? "");
  const onAcquire = (message: unknown) => {
    const { resources, outcome } = message as AcquireMessage;
    if (ours(resources) && outcome === "acquired") counts.acquired++;
  };
  const onReleaseCall = (context: unknown) => {
    if (ours((context as { resources: readonly string[] }).resources)) counts.releaseCalls++;
  };
  const onRelease = (message: unknown) => {
    const { resources, released } = message as ReleaseMessage;
    if (!ours(resources)) return;
    counts.released++;
    if (!released) counts.notHeld++;
  };
  diagnosticsChannel.subscribe("redlock-kit:acquire", onAcquire);
  diagnosticsChannel.subscribe("tracing:redlock-kit:release:start", onReleaseCall);
  diagnosticsChannel.subscribe("redlock-kit:release", onRelease);
  return Object.assign(counts, {
    stop() {
      diagnosticsChannel.unsubscribe("redlock-kit:acquire", onAcquire);
      diagnosticsChannel.unsubscribe("tracing:redlock-kit:release:start", onReleaseCall);
      diagnosticsChannel.unsubscribe("redlock-kit:release", onRelease);
    },
  });
}

/** Counts the acquisitions of `resource` asked for from now on (`asked`); `stop()` unsubscribes. */
export function countAcquisitions(resource: string) {
  const channel = "tracing:redlock-kit:acquire:start";
  const counter = { asked: 0, stop: () => diagnosticsChannel.unsubscribe(channel, onStart) };
  const onStart = (context: unknown) => {
    if ((context as { resources: readonly string[] }).resources.includes(resource)) counter.asked++;
  };
  diagnosticsChannel.subscribe(channel, onStart);
  return counter;
}

/** Resolves when an acquisition of `resource` starts (its first attempt is on its way). */
export function nextAcquireStart(resource: string): Promise<void> {
  const channel = "tracing:redlock-kit:acquire:start";
  return new Promise((resolve) => {
    const onStart = (context: unknown) => {
      if (!(context as { resources: readonly string[] }).resources.includes(resource)) return;
      diagnosticsChannel.unsubscribe(channel, onStart);
      resolve();
    };
    diagnosticsChannel.subscribe(channel, onStart);
  });
}

/**
 * What `event` resolves to, waited for as long as expect.poll waits for a state that must come (the
 * suite's 10 s, where the event takes a ttl at most): one that never comes (a lock left held, or
 * extended until its maxHoldMs) fails here as "<what> never came", not by the test's timeout.
 */
export async function arrival<T>(event: Promise<T>, what: string): Promise<T> {
  const seen: { outcome?: { value: T } | { error: unknown } } = {};
  event.then(
    (value) => {
      seen.outcome = { value };
    },
    (error: unknown) => {
      seen.outcome = { error };
    },
  );
  await expect.poll(() => seen.outcome !== undefined, { message: `${what} never came` }).toBe(true);
  const outcome = seen.outcome as { value: T } | { error: unknown };
  if ("error" in outcome) throw outcome.error;
  return outcome.value;
}

/** Attempts of each call on `resource` that ended with `outcome` while `run` ran, in the order they ended. */
export async function attemptsOf(
  resource: string,
  run: () => Promise<unknown>,
  outcome: AcquireMessage["outcome"] = "acquired",
): Promise<number[]> {
  const attempts: number[] = [];
  const record = (message: unknown) => {
    const { resources, outcome: ended, attempts: count } = message as AcquireMessage;
    if (resources[0] === resource && ended === outcome) attempts.push(count);
  };
  diagnosticsChannel.subscribe("redlock-kit:acquire", record);
  try {
    await run();
  } finally {
    diagnosticsChannel.unsubscribe("redlock-kit:acquire", record);
  }
  return attempts;
}

/**
 * Resolves once `lock` is no longer valid, by polling `lock.valid` (as a handler that ignores
 * `lock.signal` would see it), never reading the signal, which would arm its timer.
 */
export async function untilInvalid(lock: Lock): Promise<void> {
  while (lock.valid) await sleep(10);
}
