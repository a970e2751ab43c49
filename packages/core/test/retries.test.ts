/**
 * How often and how far apart an acquisition that meets another owner tries again: the default
 * retryCount (3), retryDelay (200 ms) and retryJitter (100 ms), and `wait: 0` as one attempt.
 * Counted (attempts from the diagnostics channel, the delays the sleeps were armed with), never timed.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { recordTimeouts } from "#test-helpers/armed-timers.js";
import { attemptsOf } from "#test-helpers/lock-events.js";
import { useRedlocks } from "./helpers/redlocks.js";

const { clients, redlock } = useRedlocks(3);

afterEach(() => {
  vi.restoreAllMocks();
});

/** Another owner holds `key` on every instance for a minute. */
const holdElsewhere = (key: string) => Promise.all(clients().map((client) => client.set(key, "other", "PX", 60_000)));

describe("an acquisition that meets another owner", () => {
  it("by default tries 4 times (retryCount 3), 200 ms plus 0 to 100 ms of jitter apart", async () => {
    await holdElsewhere("retried");
    // the sleeps between attempts: no other timer of the call is in that range (its per-instance
    // timeout is 500 ms, not the default 100 ms a loaded machine's Redis misses: unavailable, not contention)
    const { delays } = recordTimeouts((ms) => ms >= 200 && ms <= 300);
    const random = vi.spyOn(Math, "random").mockReturnValue(0);
    const dlm = redlock({ instanceTimeout: 500 });
    const refused = () => expect(dlm.lock("retried", 1000)).resolves.toBeNull();
    expect(await attemptsOf("retried", refused, "contention")).toEqual([4]);
    expect(delays).toEqual([200, 200, 200]);
    delays.length = 0;
    random.mockReturnValue(0.999_999);
    expect(await attemptsOf("retried", refused, "contention")).toEqual([4]);
    expect(delays).toEqual([300, 300, 300]);
  });

  it("with wait: 0 tries once, whatever retryCount says", async () => {
    await holdElsewhere("once");
    // 500 ms per instance, not the default 100 ms a loaded machine's Redis misses
    const dlm = redlock({ retryCount: 5, retryDelay: 10, instanceTimeout: 500 });
    const perCall = () => expect(dlm.lock("once", 1000, { wait: 0 })).resolves.toBeNull();
    expect(await attemptsOf("once", perCall, "contention")).toEqual([1]);
    const waitZero = redlock({ wait: 0, retryCount: 5, retryDelay: 10, instanceTimeout: 500 });
    const byDefault = () => expect(waitZero.lock("once", 1000)).resolves.toBeNull();
    expect(await attemptsOf("once", byDefault, "contention")).toEqual([1]);
  });
});
