import { createServer } from "node:http";
import {
  curl,
  curlTwice,
  listen,
  onShutdown,
  portFromEnv,
  printBanner,
  startBackend,
} from "@redlock-kit/example-support";
import { buildApp } from "./app.js";

const backend = await startBackend();
const server = createServer(buildApp(backend.redlock).callback());
onShutdown(async () => {
  server.close();
  server.closeAllConnections();
  await backend.close();
});
const url = await listen(server, portFromEnv());
printBanner("redlock-kit Koa example", url, backend, [
  { say: '200 {"status":"success"}', run: curl("POST", `${url}/api/resource`) },
  {
    say: 'two at once: one 200, one 423 {"error":"Resource is locked"}',
    run: curlTwice("POST", `${url}/api/resource`),
  },
  { say: "the same order twice at once: one 200, one 423", run: curlTwice("POST", `${url}/orders/42/pay`) },
]);
