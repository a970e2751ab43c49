import type { Server } from "node:http";
import { createAdaptorServer } from "@hono/node-server";
import { serveExample, startBackend } from "@redlock-kit/example-support";
import { buildApp } from "./app.js";

const backend = await startBackend();
// @hono/node-server's plain Node server, so that the example listens like the others (127.0.0.1, PORT)
const server = createAdaptorServer({ fetch: buildApp(backend.redlock).fetch }) as Server;
await serveExample("redlock-kit Hono example", server, backend);
