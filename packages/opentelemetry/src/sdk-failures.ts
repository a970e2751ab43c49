import { diag } from "@opentelemetry/api";

/** What the instrumentation was doing when the SDK threw: each is reported once. */
export type SdkStep = "starting a span" | "annotating a span" | "ending a span" | "recording a metric";

/**
 * Runs the SDK calls of one instrumentation, never letting an error out: thrown from a
 * diagnostics_channel subscriber, it would come back as an uncaught exception and end the process.
 * As OpenTelemetry's own instrumentations do, the error goes to `diag.error` instead: once per
 * step, since a broken SDK fails on every call and one report per call floods the log under load.
 */
export class SdkFailures {
  readonly #reported = new Set<SdkStep>();
  readonly #scope: string;

  constructor(scope: string) {
    this.#scope = scope;
  }

  /** `fn`'s result, or `fallback` when it threw. */
  attempt<T>(step: SdkStep, fn: () => T, fallback: T): T;
  attempt(step: SdkStep, fn: () => void): void;
  attempt<T>(step: SdkStep, fn: () => T, fallback?: T): T | undefined {
    try {
      return fn();
    } catch (error) {
      this.#report(step, error);
      return fallback;
    }
  }

  #report(step: SdkStep, error: unknown): void {
    if (this.#reported.has(step)) return;
    this.#reported.add(step);
    try {
      diag.error(
        `${this.#scope}: ${step} threw; locks are unaffected, and later failures of this step are not reported`,
        error,
      );
    } catch {
      // a diag logger that throws has nowhere left to report to, and must not end the process either
    }
  }
}
