/**
 * An onLocked or onUnavailable hook answering with res.sendFile(), res.download() or res.render() of
 * a file that cannot be sent or rendered (a directory, a missing file or view, a view that fails):
 * Express's own callbacks for those call `req.next()` for a directory (EISDIR: "let the next
 * middleware serve it") and `req.next(err)` otherwise, the router's next, which skips the error
 * handlers of the route the lock is on. A refused request must never continue the chain (its
 * handler would run without the lock), and its error reaches the app's error handlers, the
 * route's own included.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import express from "express";
import { afterAll, beforeAll, expect, it } from "vitest";
import { send } from "#test-helpers/http-client.js";
import { listenOnLoopback, REFUSAL_HOOKS, useRefusingRedlocks } from "#test-helpers/refused-routes.js";
import { createRedlockMiddleware, type ExpressLockHook } from "../src/index.js";

const { redlocks, refused } = useRefusingRedlocks();
/** Holds `dir/`, a directory, and `views/broken.txt`, a view its engine fails to render; `missing.txt` and `views/missing.txt` are not there. */
let files = "";
/** The handlers (and later layers) that ran, by path: none may, every request here is refused. */
const ran: string[] = [];
const servers: Record<string, Awaited<ReturnType<typeof listenOnLoopback>>> = {};

/** Each hook; the error its answer fails with (its `code`, else its message); the error's own status, if any. */
const hooks: Record<string, { hook: ExpressLockHook; error: string | RegExp; status?: number }> = {
  "sends-dir": { hook: (_req, res) => res.status(429).sendFile(join(files, "dir")), error: "EISDIR" },
  "sends-missing": {
    hook: (_req, res) => res.status(429).sendFile(join(files, "missing.txt")),
    error: "ENOENT",
    status: 404,
  },
  "downloads-missing": {
    hook: (_req, res) => res.status(429).download(join(files, "missing.txt")),
    error: "ENOENT",
    status: 404,
  },
  "downloads-dir": { hook: (_req, res) => res.status(429).download(join(files, "dir")), error: "EISDIR" },
  "renders-missing": {
    hook: (_req, res) => res.status(429).render("missing"),
    error: /^Failed to lookup view "missing"/,
  },
  "renders-broken": { hook: (_req, res) => res.status(429).render("broken"), error: "EVIEW" },
};
const MOUNTS = ["route", "guard"] as const;
/** Error middleware after the routes; that and error middleware inside each route-level lock's route; none. */
const APPS = ["errorHandler", "routeErrorHandler", "default"] as const;

type ErrorHandler = (
  error: NodeJS.ErrnoException,
  req: express.Request,
  res: express.Response,
  next: express.NextFunction,
) => void;
/** Error middleware (four parameters, which is how Express tells it) answering 500 `{ [by]: the error's code, else its message }`. */
const answersError =
  (by: string): ErrorHandler =>
  (error, _req, res, _next) => {
    res.status(500).json({ [by]: error.code ?? error.message });
  };

/**
 * One app: for each hook a route-level lock (`app.post(path, redlock(...), handler)`, followed by
 * error middleware of the route's own in `routeErrorHandler`) and a guard (`app.use(path,
 * redlock(...))` before the route), each handler recording that it ran, and a last middleware
 * recording that a request reached it. With `errorHandler` and `routeErrorHandler`, error
 * middleware after the routes answers 500 `{ fallback }`; without, Express's own final handler answers.
 */
function appWith(kind: (typeof APPS)[number]) {
  const redlockOf = {
    onLocked: createRedlockMiddleware(redlocks.live),
    onUnavailable: createRedlockMiddleware(redlocks.down),
  };
  const app = express();
  app.set("env", "test"); // Express logs the errors its final handler answers otherwise
  app.set("views", join(files, "views"));
  app.set("view engine", "txt");
  // the one view there, broken.txt, fails to render
  app.engine("txt", (_path: string, _options: object, callback: (error: unknown) => void) => {
    callback(Object.assign(new Error("the view failed"), { code: "EVIEW" }));
  });
  const routeErrors = kind === "routeErrorHandler" ? [answersError("route")] : [];
  /** A handler: it records that it ran. */
  const handler: express.RequestHandler = (req, res) => {
    ran.push(req.path);
    res.json({ ran: true });
  };
  for (const refusal of REFUSAL_HOOKS) {
    const redlock = redlockOf[refusal];
    for (const [name, { hook }] of Object.entries(hooks)) {
      app.post(`/${refusal}/route/${name}`, redlock(`files:${name}`, { [refusal]: hook }), handler, ...routeErrors);
      app.use(`/${refusal}/guard/${name}`, redlock(`files:${name}`, { [refusal]: hook }));
      app.post(`/${refusal}/guard/${name}`, handler);
    }
  }
  // a later layer: a refused request that reaches it went on down the chain
  app.use((req, _res, next) => {
    ran.push(`after ${req.path}`);
    next();
  });
  if (kind !== "default") app.use(answersError("fallback"));
  return app;
}

beforeAll(async () => {
  files = await mkdtemp(join(tmpdir(), "redlock-express-hook-files-"));
  await mkdir(join(files, "dir"));
  await mkdir(join(files, "views"));
  await writeFile(join(files, "views", "broken.txt"), "never rendered");
  for (const name of APPS) servers[name] = await listenOnLoopback(http.createServer(appWith(name)));
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
  "(%s) a %s lock whose %s hook's %s fails: the error goes to the error handlers, the route's first, the handler never runs",
  async (app, mount, refusal, name) => {
    ran.length = 0;
    const url = `${servers[app]?.url}/${refusal}/${mount}/${name}`;
    const answer = await refused(refusal, `files:${name}`, () => send(url, { method: "POST" }));
    const { error, status } = hooks[name] ?? { error: "" };
    // Express's final handler answers the error's own status (send's 404 for a missing file), else the
    // error status the hook had set (its 429)
    expect({ ran, status: answer.status }).toEqual({ ran: [], status: app === "default" ? (status ?? 429) : 500 });
    // a guard's error skips the routes (Express matches no route while an error is pending), the route's handler with them
    const by = app === "routeErrorHandler" && mount === "route" ? "route" : "fallback";
    if (app !== "default")
      expect(JSON.parse(answer.text)).toEqual({
        [by]: typeof error === "string" ? error : expect.stringMatching(error),
      });
  },
);
