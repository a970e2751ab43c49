import { setTimeout as sleep } from "node:timers/promises";
import { Inject, Injectable } from "@nestjs/common";
import { Locked } from "@redlock-kit/nestjs";
import { SETTINGS, type Settings } from "./settings.js";

/**
 * A provider whose method locks itself: every caller (the route here, a queue consumer or a job
 * elsewhere) gets the lock. Contention rejects with `LockContentionError`, which the module answers
 * with 423 and `Retry-After` when a route called it.
 */
@Injectable()
export class PaymentService {
  constructor(@Inject(SETTINGS) private readonly settings: Settings) {}

  /** One lock per order: `{0}` is the first argument. */
  @Locked("order:{0}", { ttl: 5000 })
  async pay(orderId: string): Promise<{ status: "paid"; order: string }> {
    await sleep(this.settings.workMs);
    return { status: "paid", order: orderId };
  }
}
