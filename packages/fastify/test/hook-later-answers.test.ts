/**
 * onLocked / onUnavailable hooks answering with the reply methods of @fastify/static
 * (`reply.sendFile`, `reply.download`) and @fastify/view (`reply.view`), which call `reply.send()`
 * only later, once the file was found or the view rendered: the hook's answer goes out, whether the
 * hook returns the reply or not, and nothing else (no default JSON before it, no second send).
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fastifyStatic from "@fastify/static";
import fastifyView from "@fastify/view";
import ejs from "ejs";
import Fastify, { type FastifyInstance, type FastifyReply } from "fastify";
import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from "vitest";
import { type Answer, send } from "#test-helpers/http-client.js";
import { REFUSAL_HOOKS, type RefusalHook, useRefusingRedlocks } from "#test-helpers/refused-routes.js";
import redlockPlugin, { type FastifyLockHook } from "../src/index.js";

const { redlocks } = useRefusingRedlocks();
const apps: FastifyInstance[] = [];
const urls = { onLocked: "", onUnavailable: "" };
let root = "";
/** The routes whose handler ran: none may. */
const ran: string[] = [];
/** Fastify's warnings and errors (a second send is a warning: "Reply was already sent"), by request id. */
const logged: { level: number; msg: string; reqId: string }[] = [];
const loggedFor = (id: string) => logged.filter(({ reqId }) => reqId === id);
const unhandled: unknown[] = [];
const onUnhandled = (error: unknown) => unhandled.push(error);

/** Each plugin method the hook answers with, as a hook that sets 429 first would call it. */
const answers = {
  sendFile: (reply: FastifyReply, file = "busy.txt") => reply.code(429).sendFile(file),
  download: (reply: FastifyReply, file = "busy.txt") => reply.code(429).download(file, "busy-copy.txt"),
  view: (reply: FastifyReply, file = "busy.ejs") => reply.code(429).view(file, { who: "holder" }),
};
type Method = keyof typeof answers;

/** How the hook calls it: returning what the method returns (the reply, or view's promise of it) or nothing. */
const styles = {
  "sync, returns nothing": (answer: (reply: FastifyReply) => unknown): FastifyLockHook => {
    return (_request, reply) => {
      answer(reply);
    };
  },
  "sync, returns the reply": (answer: (reply: FastifyReply) => unknown): FastifyLockHook => {
    return (_request, reply) => answer(reply);
  },
  "async, returns nothing": (answer: (reply: FastifyReply) => unknown): FastifyLockHook => {
    return async (_request, reply) => {
      answer(reply);
    };
  },
  "async, returns the reply": (answer: (reply: FastifyReply) => unknown): FastifyLockHook => {
    return async (_request, reply) => answer(reply);
  },
};
type Style = keyof typeof styles;

const routeName = (method: Method, style: Style, missing: boolean) =>
  `${method}-${missing ? "missing-" : ""}${style.replaceAll(/[ ,]+/g, "-")}`;

beforeAll(async () => {
  process.on("unhandledRejection", onUnhandled);
  process.on("uncaughtException", onUnhandled);
  root = await mkdtemp(join(tmpdir(), "fastify-hook-answers-"));
  await writeFile(join(root, "busy.txt"), "busy file\n");
  await writeFile(join(root, "busy.ejs"), "busy view <%= who %>\n");
  for (const hook of REFUSAL_HOOKS) {
    const app = Fastify({
      // a late second send, after the test that caused it, is told apart by its request's id
      requestIdHeader: "x-request-id",
      logger: { level: "warn", stream: { write: (line: string) => void logged.push(JSON.parse(line)) } },
    });
    apps.push(app);
    await app.register(fastifyStatic, { root, serve: false });
    await app.register(fastifyView, { engine: { ejs }, root });
    await app.register(redlockPlugin, { redlock: hook === "onLocked" ? redlocks.live : redlocks.down });
    // an app-wide async preHandler, which the not-found handler runs too: reply.callNotFound() sends later
    app.addHook("preHandler", () => new Promise((resolve) => setImmediate(resolve)));
    for (const method of Object.keys(answers) as Method[]) {
      for (const style of Object.keys(styles) as Style[]) {
        for (const missing of [false, true]) {
          const name = routeName(method, style, missing);
          const answer = (reply: FastifyReply) => answers[method](reply, missing ? "missing.file" : undefined);
          app.post(
            `/${hook}/${name}`,
            { config: { redlock: { key: `hook-answers:${name}`, [hook]: styles[style](answer) } } },
            async () => {
              ran.push(`${hook}/${name}`);
              return { ran: true };
            },
          );
        }
      }
    }
    for (const style of Object.keys(styles) as Style[]) {
      const name = `callNotFound-${routeName("view", style, false).slice("view-".length)}`;
      const hookFn = styles[style]((reply) => reply.code(429).callNotFound());
      app.post(
        `/${hook}/${name}`,
        { config: { redlock: { key: `hook-answers:${name}`, [hook]: hookFn } } },
        async () => {
          ran.push(`${hook}/${name}`);
          return { ran: true };
        },
      );
    }
    await app.listen({ port: 0, host: "127.0.0.1" });
    urls[hook] = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  }
});

beforeEach(() => {
  unhandled.length = 0;
});

afterEach(() => {
  expect(ran).toEqual([]);
  expect(unhandled).toEqual([]);
});

afterAll(async () => {
  process.off("unhandledRejection", onUnhandled);
  process.off("uncaughtException", onUnhandled);
  await Promise.all(apps.map((app) => app.close()));
  await rm(root, { recursive: true, force: true });
});

/**
 * POSTs to the route while its hook is called: on contention, the holder's lock is checked to be
 * still its own afterwards (its release finds it held).
 */
async function refused(hook: RefusalHook, name: string): Promise<Answer> {
  const url = `${urls[hook]}/${hook}/${name}`;
  const init = { method: "POST", headers: { "x-request-id": `${hook}/${name}` } } as const;
  if (hook === "onUnavailable") return send(url, init);
  const holder = await redlocks.live.acquire(`hook-answers:${name}`, 10_000);
  let answer: Answer;
  try {
    answer = await send(url, init);
  } finally {
    expect(await holder.release()).toBe(true);
  }
  return answer;
}

const cases = REFUSAL_HOOKS.flatMap((hook) =>
  (Object.keys(answers) as Method[]).flatMap((method) =>
    (Object.keys(styles) as Style[]).map((style) => [hook, method, style] as const),
  ),
);

it.each(cases)("an %s hook answering with reply.%s (%s) keeps its answer, sent once", async (hook, method, style) => {
  const name = routeName(method, style, false);
  const answer = await refused(hook, name);
  expect({ status: answer.status, text: answer.text }).toEqual({
    status: 429,
    text: method === "view" ? "busy view holder\n" : "busy file\n",
  });
  expect(answer.headers["content-type"]).toMatch(method === "view" ? /^text\/html/ : /^text\/plain/);
  if (method === "download") {
    expect(answer.headers["content-disposition"]).toBe("attachment; filename=busy-copy.txt");
  } else {
    expect(answer.headers["content-disposition"]).toBeUndefined();
  }
  expect(answer.headers["retry-after"]).toBeUndefined();
  expect(loggedFor(`${hook}/${name}`)).toEqual([]);
});

it.each(cases)(
  "an %s hook answering with reply.%s of a missing file (%s) gets Fastify's answer for it, sent once",
  async (hook, method, style) => {
    const name = routeName(method, style, true);
    const answer = await refused(hook, name);
    if (method === "view") {
      // the view's error goes to Fastify's error handler, which keeps the 4xx the hook set
      expect(answer.status).toBe(429);
      expect(JSON.parse(answer.text)).toMatchObject({ statusCode: 429, message: expect.stringContaining("ENOENT") });
    } else {
      // @fastify/static hands a missing file to Fastify's not-found handler
      expect(answer.status).toBe(404);
      expect(JSON.parse(answer.text)).toMatchObject({ statusCode: 404, error: "Not Found" });
    }
    expect(loggedFor(`${hook}/${name}`)).toEqual([]);
  },
);

it.each(REFUSAL_HOOKS.flatMap((hook) => (Object.keys(styles) as Style[]).map((style) => [hook, style] as const)))(
  "an %s hook answering with reply.callNotFound() (%s), past an async preHandler, gets Fastify's 404, sent once",
  async (hook, style) => {
    const name = `callNotFound-${routeName("view", style, false).slice("view-".length)}`;
    const answer = await refused(hook, name);
    expect(answer.status).toBe(404);
    expect(JSON.parse(answer.text)).toMatchObject({ statusCode: 404, error: "Not Found" });
    expect(loggedFor(`${hook}/${name}`)).toEqual([]);
  },
);
