/**
 * The delays of the `setTimeout` calls made while recording, those `keep` selects: what a test
 * counts to see which timers the library armed (a retry's sleep, a lock's validity timer) without
 * timing anything. The timers still run as usual.
 */
import { vi } from "vitest";

export function recordTimeouts(keep: (ms: number) => boolean): { readonly delays: number[]; restore(): void } {
  const delays: number[] = [];
  const setTimeoutOf = globalThis.setTimeout;
  const spy = vi.spyOn(globalThis, "setTimeout").mockImplementation(((
    fn: (...args: unknown[]) => void,
    ms?: number,
    ...args: unknown[]
  ) => {
    if (ms !== undefined && keep(ms)) delays.push(ms);
    return setTimeoutOf(fn, ms, ...args);
  }) as typeof setTimeout);
  return { delays, restore: () => spy.mockRestore() };
}
