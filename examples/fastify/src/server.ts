import { onShutdown, portFromEnv, printBanner, seedCurlLines, startBackend } from "@redlock-kit/example-support";
import { buildApp } from "./app.js";

const backend = await startBackend();
const app = await buildApp(backend.redlock);
onShutdown(async () => {
  await app.close();
  await backend.close();
});
// loopback only: the example is not meant to be reachable from the network
const url = await app.listen({ port: portFromEnv(), host: "127.0.0.1" });
printBanner("redlock-kit Fastify example", url, backend, seedCurlLines(url));
