export { INSTRUMENTATION_NAME, instrumentRedlock, type RedlockTelemetryOptions } from "./instrumentation.js";
