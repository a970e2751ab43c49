import { Inject, Injectable, type OnApplicationShutdown } from "@nestjs/common";
import { Redis } from "ioredis";
import { SETTINGS, type Settings } from "./settings.js";

/**
 * Where the report job says it ran: one console line per run and, when `witnessUrl` is set, counts
 * in that Redis, which the end-to-end test reads: `report:ticks` (runs per tick), `report:overlaps`
 * (runs that found another run in progress), `report:inflight`.
 */
@Injectable()
export class ReportLog implements OnApplicationShutdown {
  readonly #witness: Redis | undefined;

  constructor(@Inject(SETTINGS) settings: Settings) {
    this.#witness = settings.witnessUrl === undefined ? undefined : new Redis(settings.witnessUrl);
    this.#witness?.on("error", () => {});
  }

  /** Counts a run of `tick` that has started; resolves to a function that counts its end. */
  async started(tick: number): Promise<() => Promise<void>> {
    console.log(`report for ${new Date(tick * 1000).toISOString()} written by process ${process.pid}`);
    const witness = this.#witness;
    if (witness === undefined) return async () => {};
    const inflight = await witness.incr("report:inflight");
    if (inflight > 1) await witness.incr("report:overlaps");
    await witness.hincrby("report:ticks", String(tick), 1);
    return async () => {
      await witness.decr("report:inflight");
    };
  }

  async onApplicationShutdown(): Promise<void> {
    await this.#witness?.quit().catch(() => {});
  }
}
