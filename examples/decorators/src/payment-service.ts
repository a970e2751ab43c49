import { setTimeout as sleep } from "node:timers/promises";
import { Locked } from "@redlock-kit/decorators";

/**
 * A service whose methods lock themselves: callers (an Express route here, a queue consumer or
 * a cron job elsewhere) cannot forget the lock. Contention rejects with `LockContentionError`.
 */
export class PaymentService {
  readonly #workMs: number;

  /** @param workMs how long each method works while holding its lock, in ms */
  constructor(workMs = 500) {
    this.#workMs = workMs;
  }

  /**
   * Holds "resource_name" for 1000 ms (auto-extended while it runs). instanceTimeout: each Redis gets
   * 300 ms to answer, where a 1 s lock's default (100 ms) can be missed on a busy laptop or CI
   * machine: the one attempt then fails unavailable (a 503).
   */
  @Locked("resource_name", { ttl: 1000, instanceTimeout: 300 })
  async useResource(): Promise<{ status: "success" }> {
    await sleep(this.#workMs);
    return { status: "success" };
  }

  /** One lock per order: `{0}` is the first argument. */
  @Locked("order:{0}", { ttl: 5000 })
  async pay(orderId: string): Promise<{ status: "paid"; order: string }> {
    await sleep(this.#workMs);
    return { status: "paid", order: orderId };
  }
}
