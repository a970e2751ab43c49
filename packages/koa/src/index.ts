export {
  createRedlockMiddleware,
  type KoaLockHook,
  type KoaRedlockOptions,
  type RedlockRouteMiddleware,
} from "./middleware.js";
