export { type AcquireMessage, channels, type ExtendMessage, type ReleaseMessage } from "./diagnostics.js";
export {
  ErrorCodes,
  type InstanceFailure,
  LockConfigurationError,
  LockContentionError,
  LockKeyError,
  LockLostError,
  LockUnavailableError,
  RedlockError,
  type RedlockErrorCode,
} from "./errors.js";
export { type FencedValue, fencedGet, fencedSet } from "./fenced-write.js";
export { FetchResponseTracker } from "./fetch-response-tracker.js";
export { currentFence, currentLock, holdingLock, resourcesNotHeld, trackHeldLocks } from "./held-locks.js";
export {
  createHttpLockPolicy,
  errorResponse,
  type HttpKeySource,
  type HttpLockPolicy,
  type HttpResponse,
  RouteLock,
  type RouteLockOptions,
  type RouteOutcome,
} from "./http-policy.js";
export type {
  ForcedRelease,
  InspectOptions,
  InstanceInspection,
  LockInspection,
  QuorumState,
} from "./inspect.js";
export type { RedlockInstance } from "./instances.js";
export { compileKey, type KeyFunction, type KeyResolver, type KeySpec } from "./key-template.js";
export { Lock } from "./lock.js";
export { MemoryStore } from "./memory-store.js";
export { type AcquireOptions, checkLockOptions, type HoldOptions, type RedlockOptions } from "./options.js";
export { RedisStore } from "./redis-store.js";
export { Redlock, type UsingOptions } from "./redlock.js";
export type { TrackedResponse } from "./response-tracker.js";
export { type AcquireReply, canFence, isLockStore, type LockStore, type QueueTicket, type StoredKey } from "./store.js";
export type { NodeRedisClientLike } from "./stores/node-redis/client-shape.js";
export { NodeRedisStore } from "./stores/node-redis/node-redis-store.js";
export {
  type AcquireTraceContext,
  type ExtendTraceContext,
  type LockTraceContext,
  type ReleaseTraceContext,
  tracingChannels,
  type UsingTraceContext,
} from "./tracing.js";
