export { LockKey } from "@redlock-kit/decorators";
export { Locked } from "./locked.js";
export { httpExceptionFor, LockedException, type LockedExceptionOptions } from "./locked-exception.js";
export {
  LOCKED_ROUTE_METADATA,
  LockedRoute,
  type LockedRouteDeclaration,
  type LockedRouteOptions,
  RequestLock,
} from "./locked-route.js";
export {
  type InjectedInstance,
  REDLOCK_MODULE_OPTIONS,
  type RedlockModuleExtras,
  type RedlockModuleInstance,
  type RedlockModuleOptions,
} from "./module-definition.js";
export { RedlockInterceptor } from "./redlock-interceptor.js";
export { RedlockModule } from "./redlock-module.js";
