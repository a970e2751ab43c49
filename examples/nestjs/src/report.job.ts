import { setTimeout as sleep } from "node:timers/promises";
import { Inject, Injectable } from "@nestjs/common";
import { Cron, CronExpression } from "@nestjs/schedule";
import { Locked } from "@redlock-kit/nestjs";
import { ReportLog } from "./report-log.js";
import { SETTINGS, type Settings } from "./settings.js";

/**
 * A scheduled job that every process schedules and one runs: each second, all processes fire; the
 * one that takes the "report" lock writes the report, the others skip that tick (a debug line,
 * no error). Run it in three terminals to watch.
 */
@Injectable()
export class ReportJob {
  constructor(
    @Inject(ReportLog) private readonly log: ReportLog,
    @Inject(SETTINGS) private readonly settings: Settings,
  ) {}

  @Cron(CronExpression.EVERY_SECOND, { name: "report" })
  @Locked("report", { ttl: 5000, onContention: "skip" })
  async writeReport(): Promise<void> {
    // the second this tick belongs to, whichever process's timer fired a little late
    const tick = Math.round(Date.now() / 1000);
    const done = await this.log.started(tick);
    try {
      await sleep(this.settings.reportMs);
    } finally {
      await done();
    }
  }
}
