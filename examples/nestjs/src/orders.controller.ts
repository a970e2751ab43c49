import { setTimeout as sleep } from "node:timers/promises";
import { Controller, HttpCode, Inject, Param, Post } from "@nestjs/common";
import { LockedRoute } from "@redlock-kit/nestjs";
import { PaymentService } from "./payment.service.js";
import { SETTINGS, type Settings } from "./settings.js";

@Controller()
export class OrdersController {
  constructor(
    @Inject(PaymentService) private readonly payments: PaymentService,
    @Inject(SETTINGS) private readonly settings: Settings,
  ) {}

  /** The seed's route: the whole request holds "resource_name" (1000 ms, renewed while it runs). */
  @Post("api/resource")
  @HttpCode(200)
  @LockedRoute("resource_name", { ttl: 1000 })
  async useResource(): Promise<{ status: "success" }> {
    await sleep(this.settings.workMs);
    return { status: "success" };
  }

  /** The lock is the service's: `PaymentService.pay` is `@Locked("order:{0}")`. */
  @Post("orders/:id/pay")
  @HttpCode(200)
  pay(@Param("id") id: string) {
    return this.payments.pay(id);
  }
}
