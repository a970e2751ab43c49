/**
 * Runs `close` once on SIGINT or SIGTERM, then exits (0, or 1 if `close` failed). A second signal
 * while closing gets Node's default behaviour: exit at once.
 *
 * @example
 * onShutdown(async () => {
 *   server.close();
 *   await backend.close();
 * });
 */
export function onShutdown(close: () => Promise<void>): void {
  const handler = (signal: NodeJS.Signals) => {
    process.removeListener("SIGINT", handler);
    process.removeListener("SIGTERM", handler);
    console.log(`\n${signal}: shutting down`);
    close().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(error);
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
}
