import { type DynamicModule, Module } from "@nestjs/common";
import { ScheduleModule } from "@nestjs/schedule";
import { RedlockModule, type RedlockModuleInstance } from "@redlock-kit/nestjs";
import { OrdersController } from "./orders.controller.js";
import { PaymentService } from "./payment.service.js";
import { ReportJob } from "./report.job.js";
import { ReportLog } from "./report-log.js";
import { SETTINGS, type Settings } from "./settings.js";

export interface AppOptions extends Partial<Settings> {
  /** The Redlock instances: URLs, `{ host, port }`, clients or a MemoryStore. */
  instances: readonly RedlockModuleInstance[];
}

@Module({})
// biome-ignore lint/complexity/noStaticOnlyClass: a Nest dynamic module is a class with a static register()
export class AppModule {
  /**
   * The NestJS example: a route locked with `@LockedRoute`, a route whose service method is
   * `@Locked`, and a `@Cron` job that runs on one process at a time.
   *
   * @example
   * const app = await NestFactory.create(AppModule.register({ instances: ["redis://127.0.0.1:6379"] }));
   */
  static register({ instances, workMs = 500, reportMs = 700, witnessUrl }: AppOptions): DynamicModule {
    const settings: Settings = { workMs, reportMs, witnessUrl };
    return {
      module: AppModule,
      imports: [
        ScheduleModule.forRoot(),
        // retryCount 0: a held lock answers 423 at once rather than after the retries; instanceTimeout:
        // each Redis gets 300 ms to answer, where a 1 s lock's default (100 ms) can be missed on a
        // busy laptop or CI machine (a 503)
        RedlockModule.forRoot({ instances, options: { retryCount: 0, instanceTimeout: 300 }, isGlobal: true }),
      ],
      controllers: [OrdersController],
      providers: [{ provide: SETTINGS, useValue: settings }, PaymentService, ReportLog, ReportJob],
    };
  }
}
