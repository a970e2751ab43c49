/**
 * onLocked / onUnavailable hooks that leave the request unanswered (they only log, or resolve
 * without answering) get the default 423 or 503 JSON instead of a request that hangs; a hook that
 * answers, even later or with a stream it has only started, keeps its answer.
 */
import { readFile } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import express from "express";
import { afterAll, beforeAll, expect, it } from "vitest";
import { gate } from "#test-helpers/gate.js";
import {
  hookRoutes,
  itSendsTheDefaultForSilentHooks,
  listenOnLoopback,
  REFUSAL_HOOKS,
  SILENT_HOOKS,
  useRefusingRedlocks,
} from "#test-helpers/refused-routes.js";
import { createRedlockMiddleware, type ExpressLockHook } from "../src/index.js";

const { redlocks, refused } = useRefusingRedlocks();
let server: Awaited<ReturnType<typeof listenOnLoopback>> | undefined;
const { post, started } = hookRoutes(refused, () => server?.url ?? "");
/** Opened by the test once it has the streaming hook's status: the hook then ends its response. */
let streamEnd = gate();
/** Holds views/busy.txt and busy.txt, for the hooks that answer through Express's file and view methods. */
let files = "";

const hooks: Record<string, ExpressLockHook> = {
  ...SILENT_HOOKS,
  "answers-later": async (_req, res) => {
    await Promise.resolve();
    res.status(429).json({ hook: true });
  },
  streams: (_req, res) => {
    res.status(429).write("busy ");
    void streamEnd.opened.then(() => res.end("over"));
  },
  throws: () => {
    throw new Error("hook failed");
  },
  // Express sends these answers later, from a callback, after the hook has returned
  renders: (_req, res) => res.status(429).render("busy"),
  "renders-missing": (_req, res) => res.status(429).render("missing"),
  "renders-own": (_req, res) =>
    res.render("busy", (_error: Error, html: string) => res.status(429).send(html.toUpperCase())),
  // rendered to a string and not sent: the default JSON, not a hang
  "renders-silent": (_req, res) => res.render("busy", () => {}),
  "sends-file": (_req, res) => res.status(429).sendFile(join(files, "busy.txt")),
  downloads: (_req, res) => res.status(429).download(join(files, "busy.txt")),
};

/** Errors thrown where nothing catches them (a process without a handler for them exits). */
const uncaught: unknown[] = [];
const onUncaught = (error: unknown) => uncaught.push(error);

beforeAll(async () => {
  process.on("uncaughtException", onUncaught);
  files = await mkdtemp(join(tmpdir(), "redlock-express-hooks-"));
  await writeFile(join(files, "busy.txt"), "busy file");
  await mkdir(join(files, "views"));
  await writeFile(join(files, "views", "busy.txt"), "busy view");
  const app = express();
  app.set("env", "production");
  app.set("views", join(files, "views"));
  app.set("view engine", "txt");
  app.engine("txt", (path: string, _options: object, callback: (error: unknown, html?: string) => void) => {
    readFile(path, "utf8", callback);
  });
  const live = createRedlockMiddleware(redlocks.live);
  const down = createRedlockMiddleware(redlocks.down);
  for (const [name, hook] of Object.entries(hooks)) {
    app.post(`/onLocked/${name}`, live(`hooks:${name}`, { onLocked: hook }), (_req, res) => {
      res.json({ ran: true });
    });
    app.post(`/onUnavailable/${name}`, down(`hooks:${name}`, { onUnavailable: hook }), (_req, res) => {
      res.json({ ran: true });
    });
  }
  app.use((error: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    res.status(500).json({ fallback: error.message });
  });
  server = await listenOnLoopback(http.createServer(app));
});

afterAll(async () => {
  process.off("uncaughtException", onUncaught);
  await server?.close();
  if (files !== "") await rm(files, { recursive: true });
});

itSendsTheDefaultForSilentHooks(post, "no answer at all, a hang");

it.each(REFUSAL_HOOKS)("an %s hook that answers after an await keeps its answer", async (hook) => {
  const answer = await post(hook, "answers-later");
  expect(answer.status).toBe(429);
  expect(JSON.parse(answer.text)).toEqual({ hook: true });
});

it.each(REFUSAL_HOOKS)("an %s hook's streamed answer, started, is not written over", async (hook) => {
  streamEnd = gate();
  expect(await started(hook, "streams", streamEnd.open)).toEqual({ status: 429, body: "busy over" });
});

it.each(REFUSAL_HOOKS)("an %s hook that throws hands its error to next()", async (hook) => {
  const answer = await post(hook, "throws");
  expect(answer.status).toBe(500);
  expect(JSON.parse(answer.text)).toEqual({ fallback: "hook failed" });
});

it.each(REFUSAL_HOOKS)(
  "an %s hook that answers with res.render, res.sendFile or res.download (sent later, from a callback) keeps its answer: no default JSON first, nothing thrown",
  async (hook) => {
    uncaught.length = 0;
    const answers = [];
    for (const name of ["renders", "renders-own", "sends-file", "downloads"]) {
      const { status, text } = await post(hook, name);
      answers.push({ name, status, text });
    }
    expect(answers).toEqual([
      { name: "renders", status: 429, text: "busy view" },
      { name: "renders-own", status: 429, text: "BUSY VIEW" },
      { name: "sends-file", status: 429, text: "busy file" },
      { name: "downloads", status: 429, text: "busy file" },
    ]);
    expect(uncaught.map(String)).toEqual([]);
  },
);

it.each(REFUSAL_HOOKS)(
  "an %s hook whose res.render fails hands the error to next(), not the default JSON",
  async (hook) => {
    const answer = await post(hook, "renders-missing");
    expect(answer.status).toBe(500);
    expect(JSON.parse(answer.text).fallback).toMatch(/Failed to lookup view "missing"/);
    expect(uncaught.map(String)).toEqual([]);
  },
);

it.each(REFUSAL_HOOKS)("an %s hook that renders to a string and sends nothing gets the default JSON", async (hook) => {
  const answer = await post(hook, "renders-silent");
  expect(answer.status).toBe(hook === "onLocked" ? 423 : 503);
});
