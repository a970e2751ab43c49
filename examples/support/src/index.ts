export {
  type BackendOptions,
  type ExampleBackend,
  type ExampleInstances,
  parseRedisUrls,
  redactUrl,
  startBackend,
  startInstances,
} from "./backend.js";
export { type CurlLine, curl, curlTwice, printBanner, seedCurlLines } from "./banner.js";
export { listen, portFromEnv } from "./listen.js";
export { probeRedis } from "./probe.js";
export { serveExample } from "./serve-example.js";
export { onShutdown } from "./shutdown.js";
export { startThrowawayRedis, type ThrowawayRedis, type ThrowawayServer } from "./throwaway-redis.js";
