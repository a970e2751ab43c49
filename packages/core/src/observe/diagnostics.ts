import diagnosticsChannel from "node:diagnostics_channel";

/**
 * Channels on `node:diagnostics_channel` for tracing and metrics. Messages carry the
 * resources and outcome, never the lock value.
 *
 * @example
 * import diagnosticsChannel from "node:diagnostics_channel";
 * diagnosticsChannel.subscribe("redlock-kit:acquire", (message) => console.log(message));
 */
export const channels = {
  acquire: diagnosticsChannel.channel("redlock-kit:acquire"),
  extend: diagnosticsChannel.channel("redlock-kit:extend"),
  release: diagnosticsChannel.channel("redlock-kit:release"),
} as const;

export interface AcquireMessage {
  readonly resources: readonly string[];
  readonly outcome: "acquired" | "contention" | "unavailable" | "aborted";
  readonly attempts: number;
  readonly elapsedMs: number;
}

export interface ExtendMessage {
  readonly resources: readonly string[];
  readonly extended: boolean;
  readonly elapsedMs: number;
}

export interface ReleaseMessage {
  readonly resources: readonly string[];
  readonly released: boolean;
  readonly elapsedMs: number;
}
