import "reflect-metadata";
import type { Redlock } from "@redlock-kit/core";
import { setDefaultRedlock } from "@redlock-kit/decorators";
import { redlockErrorHandler } from "@redlock-kit/express";
import express, { type Express } from "express";
import { PaymentService } from "./payment-service.js";

export interface AppOptions {
  /**
   * How long each service method works while holding its lock, in ms: long enough for a second
   * curl to arrive meanwhile and get 423.
   * @default 500
   */
  workMs?: number;
}

/**
 * The decorators example: an Express app whose routes call a service with `@Locked` methods;
 * `redlockErrorHandler()` turns the service's `LockContentionError` into 423 JSON.
 * Sets `dlm` as the default Redlock of every `@Locked` method in the process.
 *
 * @example
 * const app = buildApp(new Redlock(["redis://127.0.0.1:6379"]));
 * app.listen(3000);
 */
export function buildApp(dlm: Redlock, { workMs = 500 }: AppOptions = {}): Express {
  setDefaultRedlock(dlm);
  const payments = new PaymentService(workMs);
  const app = express();

  app.post("/api/resource", async (_req, res) => {
    res.json(await payments.useResource());
  });

  app.post("/orders/:id/pay", async (req, res) => {
    res.json(await payments.pay(req.params.id));
  });

  // Express 5 forwards a rejected handler to the error handlers: this one answers 423/503/400 JSON.
  app.use(redlockErrorHandler());
  return app;
}
