/**
 * Two apps in one process, and code that core runs on its own: a lock's renewal, on the process's
 * shared timer, found the lock lost and aborted its signal. The listener's @Locked call on an object
 * no app bound must not lock through the app whose request happened to arm that timer.
 */
import { Controller, Get, HttpCode, Module, Post } from "@nestjs/common";
import { currentLock, type Lock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { beforeAll, describe, expect, it } from "vitest";
import { send } from "#test-helpers/http-client.js";
import { useRedisServers } from "#test-helpers/redis.js";
import { Locked, LockedRoute, RedlockModule, RequestLock } from "../src/index.js";
import { startNestApp } from "./helpers/nest-app.js";

// app A locks on server 0, app B on server 1
const cluster = useRedisServers(2);
let redisA: Redis;
let redisB: Redis;
beforeAll(() => {
  redisA = cluster.servers[0]?.client() as Redis;
  redisB = cluster.servers[1]?.client() as Redis;
});

/** Made by hand, bound to no app: its @Locked call locks with the app handling the call, if any. */
class Compensator {
  @Locked("compensate", 5_000)
  async undo(): Promise<string> {
    const value = currentLock()?.value;
    if (value !== undefined && (await redisA.get("compensate")) === value) return "A";
    if (value !== undefined && (await redisB.get("compensate")) === value) return "B";
    return "neither";
  }
}
const compensator = new Compensator();

let started!: () => void;
let gate: Promise<void> = Promise.resolve();
let undone: Promise<string> | undefined;

@Controller("b")
class BController {
  @Post("work")
  @HttpCode(200)
  @LockedRoute("work", { ttl: 6_000 })
  async work(@RequestLock() lock: Lock) {
    // the lock lost: compensate through the hand-made object
    lock.signal.addEventListener("abort", () => {
      undone = compensator.undo().catch((error: Error) => error.name);
    });
    started();
    await gate;
    return { ok: true };
  }
}

@Controller("a")
class AController {
  @Get("touch")
  async touch() {
    // a lock taken while A handles this request: its bounds arm the shared timer here
    return { via: await compensator.undo() };
  }
}

// the servers' ports are known once they started
const on = (index: number) =>
  RedlockModule.forRootAsync({
    useFactory: () => ({ instances: [`redis://127.0.0.1:${cluster.servers[index]?.port}`] }),
  });

@Module({ imports: [on(0)], controllers: [AController] })
class AppA {}

@Module({ imports: [on(1)], controllers: [BController] })
class AppB {}

describe("code run from a lock's renewal, with two apps running", () => {
  it("is outside every app's call, not in the call of the app whose request last armed the shared timer", async () => {
    const a = await startNestApp(AppA, "express");
    const b = await startNestApp(AppB, "express");
    let open!: () => void;
    gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const running = new Promise<void>((resolve) => {
      started = resolve;
    });
    try {
      const working = send(`${b.url}/b/work`, { method: "POST" });
      await running;
      // B's key gone: its renewal, about 3 s on, finds the lock lost
      await redisB.del("work");
      const touched = await send(`${a.url}/a/touch`);
      expect({ status: touched.status, text: touched.text }).toEqual({
        status: 200,
        text: JSON.stringify({ via: "A" }),
      });
      await expect.poll(() => undone !== undefined, { timeout: 10_000 }).toBe(true);
      // two apps run and the call is neither's: it cannot tell which, and refuses (the module's
      // README); before: "A", locked on A's server
      expect(await undone).toBe("LockConfigurationError");
      open();
      // its lock lost while it ran: 409 (the HTTP policy)
      expect((await working).status).toBe(409);
    } finally {
      open();
      await Promise.all([a.close(), b.close()]);
    }
  });
});
