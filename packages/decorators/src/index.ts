export { setDefaultRedlock } from "./default-redlock.js";
export { currentFence, currentLock } from "./held-locks.js";
export { LOCK_KEY_METADATA, LockKey } from "./lock-key.js";
export { Locked, type LockedDecorator } from "./locked.js";
export type { LockedOptions } from "./locked-options.js";
export type { LockedKey } from "./method-key.js";
