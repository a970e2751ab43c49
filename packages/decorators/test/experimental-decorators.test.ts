import "reflect-metadata";
import { describe, expect, it } from "vitest";
import { LOCK_KEY_METADATA, LockKey } from "../src/index.js";
import { contentionOf, expectOneHolder, gate, useLockedContext } from "./helpers/locked-context.js";
import { describeLockedContract } from "./helpers/locked-contract.js";
import type { FixtureModule, Fixtures, Inside } from "./helpers/services.js";

interface StockService {
  reserve(sku: string, quantity: number, inside?: Inside): Promise<unknown>;
  place(bin: string, sku: string, slot: number, inside?: Inside): Promise<unknown>;
  swap(a: string, b: string, warehouse: string, inside?: Inside): Promise<unknown>;
}
interface ExperimentalFixtures extends Fixtures {
  StockService: { new (): StockService; readonly prototype: StockService };
}

const context = useLockedContext<{
  default: FixtureModule;
  defineRestKeyService(): unknown;
  defineDefaultKeyService(): unknown;
}>(new URL("./fixtures/experimental-services.ts", import.meta.url), "experimental");

describeLockedContract("experimental", context);

describe("@LockKey (experimentalDecorators)", () => {
  const stock = () => {
    const { StockService } = context.module.default.createFixtures(context.alt) as ExperimentalFixtures;
    return { StockService, service: new StockService() };
  };

  it("appends a @LockKey parameter to the key with a colon: stock:<sku>", async () => {
    const { service } = stock();
    let during: (string | null)[] = [];
    await service.reserve("sku-1", 3, async () => {
      during = await context.values("stock:sku-1");
    });
    expectOneHolder(during);
    await expect.poll(() => context.values("stock:sku-1")).toEqual([null, null, null]);
    await expect(service.reserve("sku-1", 3)).resolves.toBe(3);
  });

  it("locks per @LockKey value: another sku runs, the same sku contends", async () => {
    const { service } = stock();
    const holder = gate();
    const first = service.reserve("sku-1", 1, holder.inside);
    await holder.enteredBy(first);
    await expect(service.reserve("sku-2", 1)).resolves.toBe(1);
    const error = await contentionOf(service.reserve("sku-1", 1));
    expect(error.resources).toEqual(["stock:sku-1"]);
    holder.open();
    await first;
  });

  it("appends several @LockKey parameters in parameter order, and to every resource of a key function", async () => {
    const { service } = stock();
    let during: (string | null)[][] = [];
    await service.place("b7", "sku-1", 4, async () => {
      during = [await context.values("bin:b7:4")];
    });
    expectOneHolder(during[0] ?? []);
    await service.swap("a", "b", "w1", async () => {
      during = [await context.values("sku:a:w1"), await context.values("sku:b:w1")];
    });
    const value = expectOneHolder(during[0] ?? []);
    expect(during[1]).toEqual([value, value, value]);
  });

  it('takes a @LockKey string such as "NaN" or "undefined" as the value sent, behind a key function as behind a template', async () => {
    // a key function's own names are refused with such a word in them (a value it read was missing);
    // a @LockKey value is checked as a template value: a non-empty string is a value
    const { service } = stock();
    for (const word of ["NaN", "undefined"]) {
      let during: (string | null)[][] = [];
      await service.reserve(word, 1, async () => {
        during = [await context.values(`stock:${word}`)];
      });
      expectOneHolder(during[0] ?? []);
      await service.swap("a", "b", word, async () => {
        during = [await context.values(`sku:a:${word}`), await context.values(`sku:b:${word}`)];
      });
      const value = expectOneHolder(during[0] ?? []);
      expect(during[1]).toEqual([value, value, value]);
    }
    expect(await context.sizes()).toEqual([0, 0, 0]);
  });

  it("still refuses a joined name past the length cap or ending in a reserved suffix, writing nothing", async () => {
    const { service } = stock();
    let runs = 0;
    const inside = () => {
      runs++;
    };
    await expect(service.swap("a", "b", "w".repeat(1020), inside)).rejects.toMatchObject({
      name: "LockKeyError",
      message: expect.stringMatching(/longer than/),
    });
    await expect(service.swap("a", "b", "redlock-kit:waiters", inside)).rejects.toMatchObject({
      name: "LockKeyError",
      message: expect.stringMatching(/reserves/),
    });
    expect(runs).toBe(0);
    expect(await context.sizes()).toEqual([0, 0, 0]);
  });

  it("rejects a missing or unusable @LockKey value with LockKeyError naming its index, writing nothing", async () => {
    const { service } = stock();
    let runs = 0;
    const inside = () => {
      runs++;
    };
    const calls: [Promise<unknown>, string][] = [
      [service.reserve(undefined as never, 1, inside), "0"],
      [service.place("b7", "sku-1", Number.NaN, inside), "2"],
      [service.swap("a", "b", "", inside), "2"],
    ];
    for (const [call, path] of calls) {
      await expect(call).rejects.toMatchObject({ name: "LockKeyError", status: 400, path });
    }
    expect(runs).toBe(0);
    expect(await context.sizes()).toEqual([0, 0, 0]);
  });

  it("records its parameter indices under the namespaced metadata key, and keeps emitDecoratorMetadata's types", () => {
    const { StockService } = stock();
    expect(Reflect.getOwnMetadata(LOCK_KEY_METADATA, StockService.prototype, "place")).toEqual([0, 2]);
    expect(Reflect.getMetadata("design:paramtypes", StockService.prototype, "reserve")).toEqual([
      String,
      Number,
      Function,
    ]);
    expect(Reflect.getMetadata("design:returntype", StockService.prototype, "reserve")).toBe(Promise);
    expect(StockService.prototype.reserve.name).toBe("reserve");
    expect(StockService.prototype.reserve.length).toBe(3);
  });

  it("refuses a rest parameter, or one with a default value, when the class is defined", () => {
    // before: a rest parameter locked its first value alone (account:a of a batch of a and b), and
    // a default value was never in the key (a call leaving it out rejected with LockKeyError)
    expect(() => context.module.defineRestKeyService()).toThrow(
      new TypeError(
        "@LockKey() cannot mark parameter 1 of BatchService.settle: it is a rest parameter or has a default value (or follows one), and the key would hold a rest's first value alone, or the argument passed but never the default; name the values with a key function, @Locked((args) => [...])",
      ),
    );
    expect(() => context.module.defineDefaultKeyService()).toThrow(
      /^@LockKey\(\) cannot mark parameter 1 of ShippingService\.ship: it is a rest parameter or has a default value/,
    );
  });

  it("refuses to mark a constructor parameter", () => {
    class Holder {}
    expect(() => LockKey()(Holder, undefined, 0)).toThrow(/not of a constructor/);
  });
});
