import type { Express } from "express";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { useLockedContext } from "./helpers/locked-context.js";

interface PaymentService {
  pay(orderId: string): Promise<unknown>;
}
interface ExpressFixture {
  PaymentService: new (charge?: (orderId: string) => Promise<void>) => PaymentService;
  createApp(payments: PaymentService): Express;
}

const context = useLockedContext<ExpressFixture>(new URL("./fixtures/express-app.ts", import.meta.url), "experimental");

describe("an Express app calling a @Locked service, with redlockErrorHandler()", () => {
  it("answers a conflicting request with 423, the JSON body and Retry-After, while the first request completes", async () => {
    const { PaymentService, createApp } = context.module;
    let enter = () => {};
    let finish = () => {};
    const entered = new Promise<void>((resolve) => {
      enter = resolve;
    });
    const finished = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const app = createApp(
      new PaymentService(async () => {
        enter();
        await finished;
      }),
    );

    const first = request(app)
      .post("/orders/7/pay")
      .then((response) => response);
    await Promise.race([entered, first.then(() => Promise.reject(new Error("the first request ended early")))]);

    const conflict = await request(app).post("/orders/7/pay");
    expect(conflict.status).toBe(423);
    expect(conflict.headers["content-type"]).toMatch(/^application\/json/);
    expect(conflict.body).toEqual({ error: "Resource is locked" });
    const retryAfter = Number(conflict.headers["retry-after"]);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(5);

    finish();
    const done = await first;
    expect(done.status).toBe(200);
    expect(done.body).toEqual({ orderId: "7", status: "paid" });
    await expect.poll(() => context.values("order:7")).toEqual([null, null, null]);

    const again = await request(app).post("/orders/7/pay");
    expect(again.status).toBe(200);
  });

  it("answers 400 naming the missing key part, and locks nothing", async () => {
    const { PaymentService, createApp } = context.module;
    const app = createApp(new PaymentService());
    const response = await request(app).post("/deposits").send({ amount: 5 });
    expect(response.status).toBe(400);
    expect(response.body).toEqual({ error: 'Lock key part "0.accountId" is missing' });
    expect(await context.sizes()).toEqual([0, 0, 0]);

    const ok = await request(app).post("/deposits").send({ accountId: "a1", amount: 5 });
    expect(ok.status).toBe(201);
    expect(ok.body).toEqual({ accountId: "a1", amount: 5 });
  });
});
