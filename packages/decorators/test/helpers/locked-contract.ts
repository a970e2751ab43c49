import { channels, type ExtendMessage, LockKeyError, LockLostError, LockUnavailableError } from "@redlock-kit/core";
import { describe, expect, it } from "vitest";
import { sleep } from "#test-helpers/redis.js";
import type { DecoratorMode } from "./compile-fixture.js";
import { contentionOf, expectOneHolder, gate, type LockedContext } from "./locked-context.js";
import type { FixtureModule, Fixtures, OrderService } from "./services.js";

/**
 * What `@Locked` promises under either decorator mode, run against a fixture compiled by tsc in
 * that mode. Everything runs against real Redis: values are read from every server.
 */
export function describeLockedContract(mode: DecoratorMode, context: LockedContext<{ default: FixtureModule }>) {
  let fixtures: Fixtures | undefined;
  const OrderService = () => {
    fixtures ??= context.module.default.createFixtures(context.alt);
    return fixtures.OrderService;
  };
  const service = (): OrderService => new (OrderService())();

  describe(`@Locked under ${mode} decorators`, () => {
    it(`runs a fixture that tsc compiled with ${mode} decorators`, () => {
      expect(context.emitted).not.toMatch(/^\s*@Locked/m);
      if (mode === "standard") {
        expect(context.emitted).toContain("__esDecorate(");
        expect(context.emitted).not.toContain("__decorate(");
      } else {
        expect(context.emitted).toContain("__decorate(");
        expect(context.emitted).toContain('__metadata("design:paramtypes"');
        expect(context.emitted).not.toContain("__esDecorate(");
      }
    });

    it("locks the templated key while the method runs, releases it after, and returns the method's own result", async () => {
      const result = { paid: true };
      let during: (string | null)[] = [];
      const returned = await service().pay("42", async () => {
        during = await context.values("order:42");
        return result;
      });
      expect(returned).toBe(result);
      expectOneHolder(during);
      await expect.poll(() => context.values("order:42")).toEqual([null, null, null]);
    });

    it("keeps the method's name, length and this, for instance and static methods", async () => {
      const Class = OrderService();
      expect(Class.prototype.pay.name).toBe("pay");
      expect(Class.prototype.pay.length).toBe(2);
      expect(Class.audit.name).toBe("audit");
      const instance = new Class();
      let self: unknown;
      await instance.pay("1", (that) => {
        self = that;
      });
      expect(self).toBe(instance);
      await Class.audit("2026-01-01", (that) => {
        self = that;
      });
      expect(self).toBe(Class);
    });

    it("rejects a call from another call chain with LockContentionError (423, Retry-After) and leaves the holder unaffected", async () => {
      const holder = gate();
      const first = service().pay("1", async () => {
        await holder.inside();
        return "first";
      });
      await holder.enteredBy(first);
      const value = expectOneHolder(await context.values("order:1"));

      const error = await contentionOf(service().pay("1"));
      expect(error.status).toBe(423);
      expect(error.resources).toEqual(["order:1"]);
      expect(error.retryAfterMs).toBeGreaterThan(0);
      expect(error.retryAfterMs).toBeLessThanOrEqual(5000);
      expect(Number(error.headers["Retry-After"])).toBeGreaterThanOrEqual(1);
      expect(Number(error.headers["Retry-After"])).toBeLessThanOrEqual(5);
      await expect.poll(() => context.values("order:1")).toEqual([value, value, value]);

      holder.open();
      await expect(first).resolves.toBe("first");
      await expect.poll(() => context.values("order:1")).toEqual([null, null, null]);
    });

    it("leaves none of its keys when it is refused: the instance it did lock is released before it rejects", async () => {
      // another owner holds a majority; the third instance is free and takes this call's SET
      await context.clients[0]?.set("order:9", "other", "PX", 10_000);
      await context.clients[1]?.set("order:9", "other", "PX", 10_000);
      let runs = 0;
      await contentionOf(
        service().pay("9", () => {
          runs++;
        }),
      );
      expect(runs).toBe(0);
      expect(await context.values("order:9")).toEqual(["other", "other", null]);
    });

    it("locks different keys independently", async () => {
      const holder = gate();
      const first = service().pay("1", holder.inside);
      await holder.enteredBy(first);
      await expect(service().pay("2")).resolves.toBe("2");
      holder.open();
      await first;
    });

    it("reads a nested property of an argument with account:{0.accountId}", async () => {
      let during: (string | null)[] = [];
      const returned = await service().transfer({ accountId: "a1", amount: 5 }, async () => {
        during = await context.values("account:a1");
        return "moved";
      });
      expect(returned).toBe("moved");
      expectOneHolder(during);
      await expect(service().transfer({ accountId: "a1", amount: 5 })).resolves.toBe(5);
    });

    it("locks every resource a key function returns with one lock, all or nothing", async () => {
      let during: (string | null)[][] = [];
      await service().move("a", "b", async () => {
        during = [await context.values("account:a"), await context.values("account:b")];
      });
      const value = expectOneHolder(during[0] ?? []);
      expect(during[1]).toEqual([value, value, value]);

      const other = await context.dlm.acquire("account:b", 5000);
      const error = await contentionOf(service().move("a", "b"));
      expect(error.resources).toEqual(["account:a", "account:b"]);
      await expect.poll(() => context.values("account:a")).toEqual([null, null, null]);
      await other.release();
      await expect(service().move("a", "b")).resolves.toBe("a->b");
    });

    it("releases the lock and rethrows exactly what the method threw", async () => {
      const error = new Error("card declined");
      await expect(service().fail("1", error)).rejects.toBe(error);
      await expect.poll(() => context.values("order:1")).toEqual([null, null, null]);
      await expect(service().fail("1", "not an Error")).rejects.toBe("not an Error");
      await expect(service().pay("1")).resolves.toBe("1");
    });

    it("rejects a missing or unusable key argument with LockKeyError (400), without running the method or writing to Redis", async () => {
      let runs = 0;
      const inside = () => {
        runs++;
      };
      const instance = service();
      const calls: [Promise<unknown>, string | undefined][] = [
        [(instance.pay as (...args: unknown[]) => Promise<unknown>)(), "0"],
        [instance.pay(undefined as never, inside), "0"],
        [instance.pay("", inside), "0"],
        [instance.pay({ id: "1" } as never, inside), "0"],
        [instance.transfer({ amount: 1 }, inside), "0.accountId"],
        [instance.settle(undefined as never, inside), undefined],
        [instance.settle([], inside), undefined],
      ];
      for (const [call, path] of calls) {
        const error = await call.catch((reason: unknown) => reason);
        expect(error).toBeInstanceOf(LockKeyError);
        expect((error as LockKeyError).status).toBe(400);
        expect((error as LockKeyError).path).toBe(path);
      }
      expect(runs).toBe(0);
      expect(await context.sizes()).toEqual([0, 0, 0]);
    });

    it("re-enters: a locked method calling another method locked on the same key does not wait for itself", async () => {
      const instance = service();
      let outer: string | undefined;
      const returned = await instance.payAgain("1", async () => {
        outer = expectOneHolder(await context.values("order:1"));
        return "nested";
      });
      expect(returned).toBe("nested");
      expect(outer).toBeDefined();
      await expect.poll(() => context.values("order:1")).toEqual([null, null, null]);
    });

    it("still makes a concurrent call from another call chain contend while the re-entered call runs", async () => {
      const holder = gate();
      const first = service().payAgain("1", holder.inside);
      await holder.enteredBy(first);
      await contentionOf(service().pay("1"));
      await contentionOf(service().payAgain("1"));
      holder.open();
      await first;
      await expect.poll(() => context.values("order:1")).toEqual([null, null, null]);
    });

    it("on partial overlap, locks only what its caller does not hold yet, and releases that when it returns", async () => {
      const seen: Record<string, (string | null)[]> = {};
      await service().pay("1", async (self) => {
        seen.outer = await context.values("order:1");
        await (self as OrderService).settle(["1", "2"], async () => {
          seen.nestedOne = await context.values("order:1");
          seen.nestedTwo = await context.values("order:2");
        });
        seen.afterOne = await context.values("order:1");
        // the nested lock is gone (its release resolves at a quorum; the third instance follows)
        await expect.poll(() => context.values("order:2")).toEqual([null, null, null]);
      });
      const outer = expectOneHolder(seen.outer ?? []);
      const nested = expectOneHolder(seen.nestedTwo ?? []);
      expect(nested).not.toBe(outer);
      expect(seen.nestedOne).toEqual([outer, outer, outer]);
      expect(seen.afterOne).toEqual([outer, outer, outer]);
      await expect.poll(() => context.sizes()).toEqual([0, 0, 0]);
    });

    it("does not re-enter across Redlocks: a nested call locked through another Redlock contends with its caller", async () => {
      await service().pay("1", async (self) => {
        const error = await contentionOf((self as OrderService).payElsewhere("1"));
        expect(error.resources).toEqual(["order:1"]);
      });
      await expect(service().payElsewhere("2")).resolves.toBe("2");
    });

    it("waits for a held lock when wait is set, and runs once the holder has released it", async () => {
      const events: string[] = [];
      const holder = gate();
      const first = service().pay("1", async () => {
        await holder.inside();
        events.push("holder done");
      });
      await holder.enteredBy(first);
      const waiting = service().payPatiently("1", async () => {
        events.push("waiter runs");
        return context.values("order:1");
      });
      holder.open();
      await first;
      expectOneHolder((await waiting) as (string | null)[]);
      expect(events).toEqual(["holder done", "waiter runs"]);
    });

    it("keeps the lock by auto-extension while the method outlives its ttl", async () => {
      let extensions = 0;
      let extendedTwice = () => {};
      const twice = new Promise<void>((resolve) => {
        extendedTwice = resolve;
      });
      const onExtend = (message: unknown) => {
        const { resources, extended } = message as ExtendMessage;
        if (extended && resources.includes("order:long") && ++extensions === 2) extendedTwice();
      };
      channels.extend.subscribe(onExtend);
      try {
        await service().payWithShortTtl("long", async () => {
          const before = expectOneHolder(await context.values("order:long"));
          await twice;
          expect(await context.values("order:long")).toEqual([before, before, before]);
          for (const client of context.clients) expect(await client.pttl("order:long")).toBeGreaterThan(0);
        });
      } finally {
        channels.extend.unsubscribe(onExtend);
      }
      expect(extensions).toBeGreaterThanOrEqual(2);
      await expect.poll(() => context.values("order:long")).toEqual([null, null, null]);
    });

    it("rejects with LockLostError (409) when the lock is lost before the method finishes", async () => {
      let finished = false;
      const error = await service()
        .payCapped("1", async () => {
          // maxHoldMs (100) is below the ttl (1000): the lock is never extended and expires while we wait
          while ((await context.sizes()).some((size) => size > 0)) await sleep(50);
          finished = true;
          return "done";
        })
        .catch((reason: unknown) => reason);
      expect(finished).toBe(true);
      expect(error).toBeInstanceOf(LockLostError);
      expect((error as LockLostError).status).toBe(409);
      expect((error as LockLostError).resources).toEqual(["order:1"]);
      // with expose: true Koa and Fastify send the message to the client: no class or method name
      expect((error as LockLostError).message).toBe("Lock was lost before the method finished");
    });

    it("returns a Promise from a decorated synchronous method, running its body only once the lock is held", async () => {
      const instance = service();
      const pending = instance.countSync("c1");
      expect(pending).toBeInstanceOf(Promise);
      expect(instance.syncRuns).toBe(0);
      await expect(pending).resolves.toBe("c1");
      expect(instance.syncRuns).toBe(1);

      const other = await context.dlm.acquire("counter:c1", 5000);
      await contentionOf(instance.countSync("c1") as Promise<unknown>);
      expect(instance.syncRuns).toBe(1);
      await other.release();
    });

    it("keeps the metadata another decorator put on the method", async () => {
      const { TAG, TAG_VALUE } = context.module.default;
      const tagged = OrderService().prototype.tagged;
      expect(Reflect.getMetadata(TAG, tagged)).toBe(TAG_VALUE);
      expect(Reflect.getOwnMetadata(TAG, tagged)).toBe(TAG_VALUE);
      await expect(service().tagged("7")).resolves.toBe("7");
    });

    it("rejects with LockUnavailableError (503), not contention, when no quorum answers, and runs nothing", async () => {
      let runs = 0;
      context.servers[0]?.pause();
      context.servers[1]?.pause();
      const error = await service()
        .pay("1", () => {
          runs++;
        })
        .catch((reason: unknown) => reason);
      expect(error).toBeInstanceOf(LockUnavailableError);
      expect((error as LockUnavailableError).status).toBe(503);
      expect(runs).toBe(0);
    });
  });
}
