/**
 * An onLocked or onUnavailable hook answering with res.sendFile() or res.download() of a file that cannot be sent (a
 * directory, a missing file): Express's own callback for those calls `req.next()` for a directory
 * (EISDIR: "let the next middleware serve it") and `req.next(err)` otherwise. A refused request
 * must never continue the chain: its handler would run without the lock.
 */
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import express from "express";
import { afterAll, beforeAll, expect, it } from "vitest";
import { send } from "#test-helpers/http-client.js";
import { listenOnLoopback, REFUSAL_HOOKS, useRefusingRedlocks } from "#test-helpers/refused-routes.js";
import { createRedlockMiddleware, type ExpressLockHook } from "../src/index.js";

const { redlocks, refused } = useRefusingRedlocks();
/** Holds `dir/`, a directory; `missing.txt` is not there. */
let files = "";
/** The handlers (and later layers) that ran, by path: none may, every request here is refused. */
const ran: string[] = [];
const servers: Record<string, Awaited<ReturnType<typeof listenOnLoopback>>> = {};

const hooks: Record<string, ExpressLockHook> = {
  "sends-dir": (_req, res) => res.status(429).sendFile(join(files, "dir")),
  "sends-missing": (_req, res) => res.status(429).sendFile(join(files, "missing.txt")),
  "downloads-missing": (_req, res) => res.status(429).download(join(files, "missing.txt")),
  "downloads-dir": (_req, res) => res.status(429).download(join(files, "dir")),
};
const MOUNTS = ["route", "guard"] as const;
const APPS = ["errorHandler", "default"] as const;

/**
 * One app: for each hook a route-level lock (`app.post(path, redlock(...), handler)`) and a guard
 * (`app.use(path, redlock(...))` before the route), each handler recording that it ran, and a last
 * middleware recording that a request reached it. With
 * `errorHandler`, error middleware after the routes answers 500 `{ fallback }`; without, Express's
 * own final handler answers.
 */
function appWith(errorHandler: boolean) {
  const redlockOf = {
    onLocked: createRedlockMiddleware(redlocks.live),
    onUnavailable: createRedlockMiddleware(redlocks.down),
  };
  const app = express();
  app.set("env", "test"); // Express logs the errors its final handler answers otherwise
  for (const refusal of REFUSAL_HOOKS) {
    const redlock = redlockOf[refusal];
    for (const [name, hook] of Object.entries(hooks)) {
      app.post(`/${refusal}/route/${name}`, redlock(`files:${name}`, { [refusal]: hook }), (req, res) => {
        ran.push(req.path);
        res.json({ ran: true });
      });
      app.use(`/${refusal}/guard/${name}`, redlock(`files:${name}`, { [refusal]: hook }));
      app.post(`/${refusal}/guard/${name}`, (req, res) => {
        ran.push(req.path);
        res.json({ ran: true });
      });
    }
  }
  // a later layer: a refused request that reaches it went on down the chain
  app.use((req, _res, next) => {
    ran.push(`after ${req.path}`);
    next();
  });
  if (errorHandler) {
    app.use(
      (error: NodeJS.ErrnoException, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
        res.status(500).json({ fallback: error.code });
      },
    );
  }
  return app;
}

beforeAll(async () => {
  files = await mkdtemp(join(tmpdir(), "redlock-express-hook-files-"));
  await mkdir(join(files, "dir"));
  for (const name of APPS) {
    servers[name] = await listenOnLoopback(http.createServer(appWith(name === "errorHandler")));
  }
});

afterAll(async () => {
  for (const server of Object.values(servers)) await server.close();
  if (files !== "") await rm(files, { recursive: true });
});

const cases = APPS.flatMap((app) =>
  REFUSAL_HOOKS.flatMap((refusal) =>
    MOUNTS.flatMap((mount) => Object.keys(hooks).map((name) => [app, mount, refusal, name] as const)),
  ),
);

it.each(cases)(
  "(%s error handling) a %s lock whose %s hook's %s fails: the error goes to the error handlers, the handler never runs",
  async (app, mount, refusal, name) => {
    ran.length = 0;
    const url = `${servers[app]?.url}/${refusal}/${mount}/${name}`;
    const answer = await refused(refusal, `files:${name}`, () => send(url, { method: "POST" }));
    const code = name.endsWith("dir") ? "EISDIR" : "ENOENT";
    expect({ ran, status: answer.status }).toEqual({
      ran: [],
      // Express's final handler answers the error's own status (send's 404 for a missing file), else the
      // error status the hook had set (its 429)
      status: app === "errorHandler" ? 500 : code === "ENOENT" ? 404 : 429,
    });
    if (app === "errorHandler") expect(JSON.parse(answer.text)).toEqual({ fallback: code });
  },
);
