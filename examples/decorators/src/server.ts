import { createServer } from "node:http";
import { serveExample, startBackend } from "@redlock-kit/example-support";
import { buildApp } from "./app.js";

const backend = await startBackend();
await serveExample(
  "redlock-kit decorators example (Express + @Locked)",
  createServer(buildApp(backend.redlock)),
  backend,
);
