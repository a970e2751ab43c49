import type { onSendHookHandler } from "fastify";
import { expect, it } from "vitest";
import { untilInvalid } from "#test-helpers/lock-events.js";
import redlockPlugin from "../src/index.js";
import { useFastifyRedlock } from "./bed.js";

const bed = useFastifyRedlock();

it.each(["app", "route"] as const)(
  "%s-level onSend that makes a 503 a 200 after the lock was lost: 409",
  async (where) => {
    const app = bed.app();
    await app.register(redlockPlugin, { redlock: bed.dlm, ttl: 300, autoExtend: false });
    const envelope: onSendHookHandler = async (_request, reply, payload) => {
      if (reply.statusCode < 500) return payload;
      reply.code(200);
      return JSON.stringify({ ok: false, error: JSON.parse(payload as string) });
    };
    if (where === "app") app.addHook("onSend", envelope);
    app.post(
      "/orders/:id/pay",
      { config: { redlock: "fastify-envelope:{params.id}" }, ...(where === "route" ? { onSend: envelope } : {}) },
      async (request, reply) => {
        await untilInvalid(request.lock as NonNullable<typeof request.lock>);
        return reply.code(503).send({ error: "payment provider unavailable" });
      },
    );
    const answer = await app.inject({ method: "POST", url: "/orders/1/pay" });
    expect([answer.statusCode, answer.json()]).toEqual([409, { error: "Lock was lost" }]);
  },
);

it("a route's own onSend hook sees the 409 of a lost lock, not the handler's success", async () => {
  const app = bed.app();
  await app.register(redlockPlugin, { redlock: bed.dlm, ttl: 300, autoExtend: false });
  const seen: number[] = [];
  app.post(
    "/orders/:id/pay",
    {
      config: { redlock: "fastify-envelope:{params.id}" },
      onSend: async (_request, reply, payload) => {
        seen.push(reply.statusCode);
        return payload;
      },
    },
    async (request) => {
      await untilInvalid(request.lock as NonNullable<typeof request.lock>);
      return { paid: true };
    },
  );
  const answer = await app.inject({ method: "POST", url: "/orders/1/pay" });
  expect([answer.statusCode, seen]).toEqual([409, [409]]);
});
