/**
 * Resolves once `signal` has aborted, at once if it already has. An "abort" listener added after
 * the abort never fires: a test that awaited something slow (a restart, a few commands on a loaded
 * machine) before listening would otherwise wait for ever.
 */
export function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
}
