/** Requests whose `@LockedRoute` lock `RedlockInterceptor` took: what `@LockedRoute`'s own check looks for. */
const lockedRequests = new WeakSet<object>();

/** `RedlockInterceptor` took the `@LockedRoute` lock of `request`. */
export function markLocked(request: object): void {
  lockedRequests.add(request);
}

/** Whether `RedlockInterceptor` took the `@LockedRoute` lock of `request`. */
export const lockedByInterceptor = (request: object): boolean => lockedRequests.has(request);
