import { createServer } from "node:http";
import { listen, onShutdown, startBackend } from "@redlock-kit/example-support";
import { buildApp } from "./app.js";
import { formatTable, raceCounter } from "./counter-race.js";

const REQUESTS = 50;
const GAP_MS = 5;

// `pnpm demo` must end on its own: if anything hangs, stop (the exit hook stops the redis-servers).
const deadline = setTimeout(() => {
  console.error("The demo did not finish within 50 s; stopping.");
  process.exit(1);
}, 50_000);
deadline.unref();

const backend = await startBackend();
const server = createServer(buildApp(backend.redlock, { counterGapMs: GAP_MS }));
const close = async () => {
  server.close();
  server.closeAllConnections();
  await backend.close();
};
onShutdown(close);

try {
  const url = await listen(server, 0);
  console.log(`redlock-kit demo: the Express example on ${url}`);
  console.log(backend.description);
  console.log(
    `\n${REQUESTS} concurrent requests per route; each one reads a counter, waits ${GAP_MS} ms, and writes the value + 1.\n`,
  );
  const unlocked = await raceCounter(url, "unlocked", "unsafe-increment", REQUESTS);
  const locked = await raceCounter(url, "locked", "increment", REQUESTS);
  console.log(formatTable([unlocked, locked]));
  console.log(
    [
      "",
      `Without a lock, requests read the same value and overwrite each other: ${unlocked.lost} of ${unlocked.expected} updates lost.`,
      `With redlock("counter:{params.name}", { wait: 10_000 }) they take turns: ${locked.lost} lost.`,
      "expected = number of 200s (each 200 is an update the server said it made); actual = the counter read back.",
    ].join("\n"),
  );
  if (locked.lost !== 0 || locked.ok === 0) {
    console.error("\nThe locked route should lose no update and let requests through: this is a bug.");
    process.exitCode = 1;
  }
} finally {
  clearTimeout(deadline);
  await close();
}
