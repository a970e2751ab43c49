/**
 * onLocked / onUnavailable hooks that send no reply (they only log, or resolve without sending)
 * get the default 423 or 503 JSON instead of a request that hangs; a hook that sends, even later
 * (after an await, or from a callback once it returned the reply, as Fastify handlers do), or whose
 * reply Fastify writes only some turns after `send()` (an async onSend hook, a stream), keeps its
 * answer.
 */
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import Fastify, { type FastifyInstance } from "fastify";
import { afterAll, beforeAll, expect, it } from "vitest";
import { gate } from "#test-helpers/gate.js";
import {
  hookRoutes,
  itSendsTheDefaultForSilentHooks,
  REFUSAL_HOOKS,
  SILENT_HOOKS,
  useRefusingRedlocks,
} from "#test-helpers/refused-routes.js";
import redlockPlugin, { type FastifyLockHook } from "../src/index.js";

const { redlocks, refused } = useRefusingRedlocks();
const apps: FastifyInstance[] = [];
/** One app per hook: the onLocked routes lock on the live server, the onUnavailable ones on the dead one. */
const urls = { onLocked: "", onUnavailable: "" };
const { post, started } = hookRoutes(refused, (hook) => urls[hook]);
/** Opened by the test once it has the streaming hook's status: the hook's stream then ends. */
let streamEnd = gate();

const hooks: Record<string, FastifyLockHook> = {
  ...SILENT_HOOKS,
  // Fastify's "I send it later": the reply, returned, settles once sent
  "returns-reply-sends-later": (_request, reply) => {
    setImmediate(() => reply.code(429).send({ hook: true }));
    return reply;
  },
  "answers-later": async (_request, reply) => {
    await Promise.resolve();
    return reply.code(429).send({ hook: true });
  },
  // the route's onSend hook (below) delays the write past this hook's end
  "sends-through-async-onSend": (_request, reply) => {
    reply.code(429).send({ hook: true });
  },
  streams: (_request, reply) => {
    const body = new Readable({ read() {} });
    body.push("busy ");
    void streamEnd.opened.then(() => {
      body.push("over");
      body.push(null);
    });
    reply.code(429).send(body);
  },
  throws: () => {
    throw new Error("hook failed");
  },
};

beforeAll(async () => {
  for (const hook of REFUSAL_HOOKS) {
    const app = Fastify();
    apps.push(app);
    await app.register(redlockPlugin, { redlock: hook === "onLocked" ? redlocks.live : redlocks.down });
    for (const [name, fn] of Object.entries(hooks)) {
      app.route({
        method: "POST",
        url: `/${hook}/${name}`,
        config: { redlock: { key: `hooks:${name}`, [hook]: fn } },
        onSend: async (_request, _reply, payload) => {
          if (name === "sends-through-async-onSend") await new Promise((resolve) => setImmediate(resolve));
          return payload;
        },
        handler: async () => ({ ran: true }),
      });
    }
    await app.listen({ port: 0, host: "127.0.0.1" });
    urls[hook] = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  }
});

afterAll(async () => {
  await Promise.all(apps.map((app) => app.close()));
});

itSendsTheDefaultForSilentHooks(post, "no answer at all, a hang");

it.each(
  REFUSAL_HOOKS.flatMap((hook) => [[hook, "answers-later"] as const, [hook, "sends-through-async-onSend"] as const]),
)("an %s hook that sends (%s) keeps its answer", async (hook, name) => {
  const answer = await post(hook, name);
  expect(answer.status).toBe(429);
  expect(JSON.parse(answer.text)).toEqual({ hook: true });
});

it.each(REFUSAL_HOOKS)("an %s hook's streamed reply, started, is not written over", async (hook) => {
  streamEnd = gate();
  expect(await started(hook, "streams", streamEnd.open)).toEqual({ status: 429, body: "busy over" });
});

it.each(REFUSAL_HOOKS)("an %s hook that throws goes to Fastify's error handler (500)", async (hook) => {
  const answer = await post(hook, "throws");
  expect(answer.status).toBe(500);
  expect(JSON.parse(answer.text)).toMatchObject({ statusCode: 500, message: "hook failed" });
});
