import { LockContentionError, Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import type ts from "typescript";
import { afterAll, afterEach, beforeAll, expect } from "vitest";
import { type RedisServer, useRedisServers } from "#test-helpers/redis.js";
import { setDefaultRedlock } from "../../src/index.js";
import { compileFixture, type DecoratorMode } from "./compile-fixture.js";

/** Everything a decorator test needs: three real Redis servers, a default Redlock, and a compiled fixture. */
export interface LockedContext<M> {
  servers: RedisServer[];
  clients: Redis[];
  /** The default Redlock (`setDefaultRedlock`). */
  dlm: Redlock;
  /** A second Redlock over the same servers. */
  alt: Redlock;
  module: M;
  /** The JavaScript tsc emitted for the fixture. */
  emitted: string;
  /** The value of `key` on each server. */
  values(key: string): Promise<(string | null)[]>;
  /** The number of keys on each server. */
  sizes(): Promise<number[]>;
}

/** Starts the servers, sets the default Redlock and compiles `fixture` under `mode` (for `target`); flushes Redis after each test. */
export function useLockedContext<M>(fixture: URL, mode: DecoratorMode, target?: ts.ScriptTarget): LockedContext<M> {
  const cluster = useRedisServers(3);
  const context = {
    values: (key: string) => Promise.all(context.clients.map((client) => client.get(key))),
    sizes: () => Promise.all(context.clients.map((client) => client.dbsize())),
  } as LockedContext<M>;
  let cleanup = () => {};

  beforeAll(async () => {
    context.servers = cluster.servers;
    context.clients = cluster.servers.map((server) => server.client());
    context.dlm = new Redlock(context.clients, { retryDelay: 50, retryJitter: 20 });
    context.alt = new Redlock(context.clients);
    setDefaultRedlock(context.dlm);
    const compiled = await compileFixture<M>(fixture, mode, target);
    context.module = compiled.module;
    context.emitted = compiled.emitted;
    cleanup = compiled.cleanup;
  }, 60_000);

  afterEach(async () => {
    for (const server of context.servers) server.resume();
    await Promise.all(context.clients.map((client) => client.flushall()));
  });

  afterAll(() => {
    setDefaultRedlock(undefined);
    cleanup();
  });

  return context;
}

/** A critical section that stays open until the test opens the gate. */
export function gate() {
  let enter = () => {};
  let open = () => {};
  const entered = new Promise<void>((resolve) => {
    enter = resolve;
  });
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return {
    open,
    /** Resolves once `call`'s body is running; rejects at once if `call` settles first (e.g. it could not lock). */
    async enteredBy(call: Promise<unknown>): Promise<void> {
      const settledFirst = call.then(() => {
        throw new Error("the call settled before its body ran");
      });
      await Promise.race([entered, settledFirst]);
    },
    /** Pass as `inside`: signals `entered`, then waits for `open()`. */
    inside: async () => {
      enter();
      await opened;
    },
  };
}

/** Every server holds the same lock value for `key`. */
export function expectOneHolder(values: (string | null)[]): string {
  const [first] = values;
  expect(first).toMatch(/^[0-9a-f]{32}$/);
  expect(values).toEqual(values.map(() => first));
  return first as string;
}

export async function contentionOf(promise: Promise<unknown>): Promise<LockContentionError> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(LockContentionError);
  return error as LockContentionError;
}
