import { createServer } from "node:http";
import { curl, serveExample, startBackend } from "@redlock-kit/example-support";
import { buildApp } from "./app.js";

const backend = await startBackend();
await serveExample("redlock-kit Express example", createServer(buildApp(backend.redlock)), backend, (url) => [
  { say: "the demo's counter, locked per name", run: curl("POST", `${url}/counters/visits/increment`) },
]);
