import { createServer } from "node:http";
import { serveExample, startBackend } from "@redlock-kit/example-support";
import { buildApp } from "./app.js";

const backend = await startBackend();
await serveExample("redlock-kit Koa example", createServer(buildApp(backend.redlock).callback()), backend);
