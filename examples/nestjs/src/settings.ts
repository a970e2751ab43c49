/** The example's knobs, provided under this token. */
export const SETTINGS = Symbol("settings");

export interface Settings {
  /**
   * How long each locked route and service method works while holding its lock, in ms: long enough
   * for a second curl to arrive meanwhile and get 423.
   * @default 500
   */
  readonly workMs: number;
  /**
   * How long the report job works while holding its lock, in ms. A job much shorter than the
   * spread between the processes' timers could run again on a late process once the first has
   * released; most of the one-second period keeps each tick to one run.
   * @default 700
   */
  readonly reportMs: number;
  /** A Redis URL where each report run is counted (the end-to-end test's witness); unset: only logged. */
  readonly witnessUrl: string | undefined;
}
