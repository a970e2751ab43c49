export { redlockErrorHandler } from "./error-handler.js";
export {
  createRedlockMiddleware,
  type ExpressLockHook,
  type ExpressRedlockOptions,
  type RedlockRouteMiddleware,
} from "./middleware.js";
