/**
 * Requests a route refuses the lock, for the adapters' onLocked / onUnavailable tests: contention
 * on a live server (the key held by another owner), unavailability on a server killed before the
 * tests, the default JSON answer of each, and requests to routes `/<hook>/<name>` whose hook is
 * `hooks[name]`, keyed `hooks:<name>`.
 */
import { once } from "node:events";
import type http from "node:http";
import type { AddressInfo } from "node:net";
import { text } from "node:stream/consumers";
import { Redlock } from "@redlock-kit/core";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type Answer, open, send } from "./http-client.js";
import { useRedisServers } from "./redis-servers.js";

export type RefusalHook = "onLocked" | "onUnavailable";
export const REFUSAL_HOOKS = ["onLocked", "onUnavailable"] as const;

const DEFAULT_ANSWERS = {
  onLocked: { status: 423, body: { error: "Resource is locked" } },
  onUnavailable: { status: 503, body: { error: "Lock service unavailable" } },
} as const;

/**
 * `redlocks.live` locks on a running server, `redlocks.down` on one killed before the tests (every
 * acquisition is a `LockUnavailableError`); `refused` runs a request where a hook is called.
 */
export function useRefusingRedlocks() {
  const cluster = useRedisServers(2);
  const redlocks = { live: undefined as unknown as Redlock, down: undefined as unknown as Redlock };
  beforeAll(async () => {
    const [live, down] = cluster.servers.map((server) => server.client());
    await down?.ping();
    redlocks.live = new Redlock([live as NonNullable<typeof live>]);
    redlocks.down = new Redlock([down as NonNullable<typeof down>]);
    await cluster.servers[1]?.kill();
  });
  // the clients are disconnected with their servers, the killed one's included
  afterAll(() => redlocks.live?.quit());
  return {
    redlocks,
    /** Runs `request` where `hook` is called for `resource`: held by another owner, or on the dead server. */
    async refused<T>(hook: RefusalHook, resource: string, request: () => Promise<T>): Promise<T> {
      if (hook === "onUnavailable") return request();
      const holder = await redlocks.live.acquire(resource, 10_000);
      try {
        return await request();
      } finally {
        await holder.release();
      }
    },
  };
}

type Refused = ReturnType<typeof useRefusingRedlocks>["refused"];

/** `server` on a free loopback port: its URL, and `close()` that drops its connections too. */
export async function listenOnLoopback(server: http.Server) {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Requests to the routes `/<hook>/<name>` on the server `baseOf(hook)`, each while its hook is called. */
export function hookRoutes(refused: Refused, baseOf: (hook: RefusalHook) => string) {
  const url = (hook: RefusalHook, name: string) => `${baseOf(hook)}/${hook}/${name}`;
  return {
    post: (hook: RefusalHook, name: string): Promise<Answer> =>
      refused(hook, `hooks:${name}`, () => send(url(hook, name), { method: "POST" })),
    /** The status (read first) and whole body of a route whose hook starts its answer and ends it once `end()` is called. */
    started: (hook: RefusalHook, name: string, end: () => void) =>
      refused(hook, `hooks:${name}`, async () => {
        const response = await open(url(hook, name), { method: "POST" }).response;
        const status = response.statusCode;
        end();
        return { status, body: await text(response) };
      }),
  };
}

/** Hooks that answer nothing: one returns at once (it only logs), one's promise resolves. */
export const SILENT_HOOKS = {
  silent: () => {},
  "resolves-silent": async () => {
    await Promise.resolve();
  },
};

/**
 * The test each adapter shares: a route whose hook answers nothing (`SILENT_HOOKS`, and `more`)
 * gets the default JSON, for both hooks. `before` says what the adapter answered before the
 * default was sent.
 */
export function itSendsTheDefaultForSilentHooks(
  post: ReturnType<typeof hookRoutes>["post"],
  before: string,
  more: readonly string[] = [],
): void {
  const names = [...Object.keys(SILENT_HOOKS), ...more];
  const cases = REFUSAL_HOOKS.flatMap((hook) => names.map((name) => [hook, name] as const));
  it.each(cases)(
    `an %s hook that answers nothing (%s) gets the default JSON (before: ${before})`,
    async (hook, name) => {
      expectDefaultAnswer(hook, await post(hook, name));
    },
  );
}

/** The answer the route gives when `hook` is not set: 423 JSON with Retry-After, or 503 JSON. */
export function expectDefaultAnswer(hook: RefusalHook, answer: Answer): void {
  expect(answer.status).toBe(DEFAULT_ANSWERS[hook].status);
  expect(answer.headers["content-type"]).toMatch(/^application\/json/);
  expect(JSON.parse(answer.text)).toEqual(DEFAULT_ANSWERS[hook].body);
  if (hook === "onLocked") expect(Number(answer.headers["retry-after"])).toBeGreaterThanOrEqual(1);
  else expect(answer.headers["retry-after"]).toBeUndefined();
}
