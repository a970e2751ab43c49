import "reflect-metadata";
import { describe, expect, it } from "vitest";
import { contentionOf, expectOneHolder, gate, useLockedContext } from "./helpers/locked-context.js";
import { describeLockedContract } from "./helpers/locked-contract.js";
import type { FixtureModule, Inside, OrderService } from "./helpers/services.js";

const context = useLockedContext<{ default: FixtureModule }>(
  new URL("./fixtures/standard-services.ts", import.meta.url),
  "standard",
);

describeLockedContract("standard", context);

describe("@Locked on a private method (standard decorators only)", () => {
  interface WithPrivate extends OrderService {
    payPrivately(orderId: string, inside?: Inside): Promise<unknown>;
  }
  const service = () => {
    const { OrderService } = context.module.default.createFixtures(context.alt);
    return new OrderService() as WithPrivate;
  };

  it("locks a #private method like any other", async () => {
    let during: (string | null)[] = [];
    await expect(
      service().payPrivately("9", async () => {
        during = await context.values("order:9");
        return "private";
      }),
    ).resolves.toBe("private");
    expectOneHolder(during);

    const holder = gate();
    const first = service().payPrivately("9", holder.inside);
    await holder.enteredBy(first);
    await contentionOf(service().pay("9"));
    holder.open();
    await first;
  });
});
