export { currentFence, currentLock } from "@redlock-kit/core";
export { setDefaultRedlock } from "./default-redlock.js";
export { LOCK_KEY_METADATA, LockKey } from "./lock-key.js";
export { Locked, type LockedDecorator } from "./locked.js";
export type { LockedOptions, OnContention, RedlockOf } from "./locked-options.js";
export type { LockedKey } from "./method-key.js";
