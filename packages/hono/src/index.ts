export {
  createRedlockMiddleware,
  type HonoLockHook,
  type HonoRedlockOptions,
  type RedlockEnv,
  type RedlockRouteMiddleware,
} from "./middleware.js";
