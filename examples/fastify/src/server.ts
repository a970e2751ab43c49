import { curl, curlTwice, onShutdown, portFromEnv, printBanner, startBackend } from "@redlock-kit/example-support";
import { buildApp } from "./app.js";

const backend = await startBackend();
const app = await buildApp(backend.redlock);
onShutdown(async () => {
  await app.close();
  await backend.close();
});
// loopback only: the example is not meant to be reachable from the network
const url = await app.listen({ port: portFromEnv(), host: "127.0.0.1" });
printBanner("redlock-kit Fastify example", url, backend, [
  { say: '200 {"status":"success"}', run: curl("POST", `${url}/api/resource`) },
  {
    say: 'two at once: one 200, one 423 {"error":"Resource is locked"}',
    run: curlTwice("POST", `${url}/api/resource`),
  },
  { say: "the same order twice at once: one 200, one 423", run: curlTwice("POST", `${url}/orders/42/pay`) },
]);
