import type { Counter, Histogram, Meter, UpDownCounter } from "@opentelemetry/api";

/** Bucket boundaries in seconds: from a 1 ms acquisition on loopback to a lock held for minutes. */
const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/** The instruments, created once per `instrumentRedlock()`. */
export interface LockMetrics {
  readonly acquireDuration: Histogram;
  readonly heldDuration: Histogram;
  readonly lost: Counter;
  readonly waiters: UpDownCounter;
}

export function createLockMetrics(meter: Meter): LockMetrics {
  const advice = { explicitBucketBoundaries: DURATION_BUCKETS };
  return {
    acquireDuration: meter.createHistogram("lock.acquire.duration", {
      description: "Time from a lock()/acquire() call until it was acquired or given up, retries and waiting included",
      unit: "s",
      advice,
    }),
    heldDuration: meter.createHistogram("lock.held.duration", {
      description: "Time from acquiring a lock until its release",
      unit: "s",
      advice,
    }),
    lost: meter.createCounter("lock.lost", {
      description:
        "Locks whose release no quorum confirmed: expired, taken, found gone by an extension, or too few instances answered",
      unit: "{lock}",
    }),
    waiters: meter.createUpDownCounter("lock.waiters", {
      description: "lock()/acquire() calls in progress: waiting for a lock, from the call until acquired or given up",
      unit: "{call}",
    }),
  };
}
