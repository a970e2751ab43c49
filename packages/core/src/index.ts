export {
  ERROR_ANSWER_HEADERS,
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
export { type FencedValue, fencedGet, fencedSet } from "./fencing/fenced-write.js";
export { drainDroppedBody, isWebBody, sendsNoBody } from "./http/dropped-body.js";
export { FetchResponseTracker } from "./http/fetch-response-done.js";
export {
  answerRejected,
  createHttpLockPolicy,
  errorResponse,
  HeldRoute,
  type HttpKeySource,
  type HttpLockPolicy,
  type HttpResponse,
  type NestedRouteOutcome,
  REPLACED_ANSWER_HEADERS,
  type RejectedOutcome,
  RouteLock,
  type RouteLockOptions,
  type RouteOutcome,
} from "./http/http-policy.js";
export {
  checkKeyWith,
  checkPrefixedKeys,
  checkResourceName,
  compileKey,
  type KeyFunction,
  type KeyResolver,
  type KeySpec,
} from "./http/key-template.js";
export { guardLostAnswer } from "./http/lost-answer.js";
export { responseAnswered, type TrackedResponse } from "./http/response-done.js";
export { servedAgain } from "./http/whole-body.js";
export {
  checkDeclaredWith,
  DECLARED_LOCK_KEYS,
  type DeclaredLockOptions,
  type ResolvedDeclaredLock,
  resolveDeclaredLock,
} from "./lock/declared-lock.js";
export {
  currentFence,
  currentLock,
  holdingLock,
  locksHolding,
  resourcesNotHeld,
  trackHeldLocks,
} from "./lock/held-locks.js";
export { Lock } from "./lock/lock.js";
export { checkReenteredFencing, reenteringLocks } from "./lock/reentries.js";
export { type AcquireMessage, channels, type ExtendMessage, type ReleaseMessage } from "./observe/diagnostics.js";
export type {
  ForcedRelease,
  ForceReleaseOptions,
  InspectOptions,
  InstanceInspection,
  LockInspection,
  QuorumState,
} from "./observe/inspect.js";
export {
  type AcquireTraceContext,
  type ExtendTraceContext,
  type LockTraceContext,
  type ReleaseTraceContext,
  tracingChannels,
  type UsingTraceContext,
} from "./observe/tracing.js";
export { type AcquireOptions, checkLockOptions, type HoldOptions, type RedlockOptions } from "./options.js";
export type { RedlockInstance } from "./quorum/instances.js";
export { Redlock, type UsingOptions } from "./redlock.js";
export { MemoryStore } from "./stores/memory-store.js";
export type { NodeRedisClientLike } from "./stores/node-redis/client-shape.js";
export { NodeRedisStore } from "./stores/node-redis/node-redis-store.js";
export { RedisStore } from "./stores/redis-store.js";
export {
  type AcquireReply,
  canFence,
  isLockStore,
  type LockStore,
  type QueueTicket,
  type RaiseReply,
  type StoredKey,
} from "./stores/store.js";
