import { redlockPlugin } from "./plugin.js";

export {
  type FastifyLockHook,
  type FastifyRedlockOptions,
  type FastifyRedlockRouteOptions,
  type RedlockRouteConfig,
  redlockPlugin,
} from "./plugin.js";
export default redlockPlugin;
