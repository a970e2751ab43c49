/**
 * Network partitions with nftables in a private network namespace (docs/reliability.md, "Network
 * partitions"; F12 and H3 at the network level). Needs root, `ip netns` and `nft`; on a machine
 * without them each test skips itself with the reason, decided at run time, except under CI
 * (`CI=true`, which .ci/run sets): there a skip would hide that the partitions were never tested,
 * so the tests fail with the reason instead. Everything, client included, runs inside the
 * namespace: see test/fixtures/partition-scenarios.mjs.
 */
import { execFile, execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it, type TestContext } from "vitest";
import { useInvariants } from "../helpers/invariants.js";

const run = promisify(execFile);
const fixture = fileURLToPath(new URL("../fixtures/partition-scenarios.mjs", import.meta.url));
const namespace = `redlock-kit-${process.pid}`;
let missing: string | undefined;

/** Why the partition tests cannot run here, or undefined when they can. */
function probe(): string | undefined {
  try {
    execFileSync("nft", ["--version"], { stdio: "pipe" });
  } catch {
    return "nft is not installed (apt-get install -y nftables)";
  }
  try {
    execFileSync("ip", ["netns", "add", namespace], { stdio: "pipe" });
    execFileSync("ip", ["netns", "exec", namespace, "ip", "link", "set", "lo", "up"], { stdio: "pipe" });
  } catch (error) {
    return `ip netns add failed (root and CAP_SYS_ADMIN are needed): ${(error as Error).message.split("\n")[0]}`;
  }
  if (!existsSync(new URL("../../packages/core/dist/index.js", import.meta.url))) {
    return "packages/core/dist is missing: run `pnpm --filter @redlock-kit/core build`";
  }
  return undefined;
}

/** CI=true or CI=1, as CI services and .ci/run set it. */
const inCi = /^(true|1)$/i.test(process.env.CI ?? "");

beforeAll(() => {
  missing = probe();
});

/** Skips the test where partitions cannot be made, with the reason; under CI, fails it instead. */
function requirePartitions(context: TestContext): void {
  if (missing === undefined) return;
  if (inCi) throw new Error(`partition tests cannot run under CI=${process.env.CI}: ${missing}`);
  context.skip(missing);
}

afterAll(() => {
  if (missing === undefined) execFileSync("ip", ["netns", "del", namespace], { stdio: "pipe" });
});

useInvariants({ servers: [] }, { maxTtlMs: 0 });

interface Report {
  outcome: string;
  /** The per-instance bound the scenario's Redlock used. */
  instanceTimeout: number;
  released?: boolean;
  afterHeal?: string;
  valuesAfter: (string | null)[];
  unhandled: string[];
  /** Per-instance causes of an "unavailable" outcome: [instance, message]. */
  causes?: [number, string][];
  /** Whether a PING sent to each cut node before the call had been answered when the call returned. */
  cutAnswered?: boolean[];
  /** The lock's signal's reason, "name: message", when it aborted. */
  reason?: string;
}

async function scenario(name: string): Promise<Report> {
  const cwd = fileURLToPath(new URL("..", import.meta.url));
  const { stdout } = await run("ip", ["netns", "exec", namespace, process.execPath, fixture, name], {
    cwd,
    timeout: 30_000,
  });
  return JSON.parse(stdout) as Report;
}

describe("partitions inside a network namespace (nftables)", () => {
  it("replies lost one way from two nodes: unavailable, and what they applied is deleted by the release, not left to expire", async (context) => {
    requirePartitions(context);
    const report = await scenario("one-way");
    expect(report.outcome).toBe("unavailable");
    expect(report.valuesAfter).toEqual([null, null, null]);
    expect(report.unhandled).toEqual([]);
  });

  it("a silently dropped minority: acquired within the per-instance timeout; the late SET is released after healing", async (context) => {
    requirePartitions(context);
    const report = await scenario("minority-drop");
    expect(report.outcome).toBe("acquired");
    // acquired and released while the dropped node had answered nothing: neither call waited on
    // TCP's retransmission, which lasts until the partition heals after the call (a call that
    // waits never returns: the scenario's and the test's timeouts)
    expect(report.cutAnswered).toEqual([false]);
    expect(report.released).toBe(true);
    expect(report.valuesAfter).toEqual([null, null, null]);
    expect(report.unhandled).toEqual([]);
  });

  it("a silently dropped majority: unavailable (503, not 423), nothing left after healing", async (context) => {
    requirePartitions(context);
    const report = await scenario("majority-drop");
    expect(report.outcome).toBe("unavailable");
    // refused by the per-instance deadline, and the call (a round of SETs, a round of releases)
    // ended while the dropped nodes had answered nothing: it did not wait on TCP's retransmission
    // until the partition heals
    const deadline = `No answer within ${report.instanceTimeout} ms`;
    expect(report.causes?.filter(([instance]) => instance !== 0)).toEqual([
      [1, deadline],
      [2, deadline],
    ]);
    expect(report.cutAnswered).toEqual([false, false]);
    expect(report.valuesAfter).toEqual([null, null, null]);
    expect(report.unhandled).toEqual([]);
  });

  it("a holder cut off from a majority (silent drop) while it holds the lock: its renewal reports the loss before the validity ends; nothing is left after healing", async (context) => {
    requirePartitions(context);
    const report = await scenario("majority-drop-held");
    expect(report.outcome).toBe("lost");
    // the failed renewal (at half the ttl, its retry too) reported it while validity was left: not
    // the validity timer ("Lock validity ended before it was extended or released")
    expect(report.reason).toBe("LockLostError: Lock could not be extended before its validity ended");
    // using()'s release reached node 0 alone while the partition lasted
    expect(report.released).toBe(false);
    expect(report.cutAnswered).toEqual([false, false]);
    // the renewal and the release behind it land once TCP retransmits them: a key the renewal
    // extended is deleted at once (if it lands after the first ttl, there is nothing to extend)
    expect(report.valuesAfter).toEqual([null, null, null]);
    expect(report.unhandled).toEqual([]);
  }, 40_000);

  it("a majority answering with TCP resets: unavailable at once, and the lock works again after healing", async (context) => {
    requirePartitions(context);
    const report = await scenario("majority-reject");
    expect(report.outcome).toBe("unavailable");
    // refused by the connections' errors, not by waiting out the per-instance deadline
    expect(report.causes?.map(([instance]) => instance)).toEqual([1, 2]);
    for (const [, message] of report.causes ?? []) expect(message).not.toMatch(/^No answer within/);
    expect(report.afterHeal).toBe("acquired");
    expect(report.valuesAfter).toEqual([null, null, null]);
    expect(report.unhandled).toEqual([]);
  });
});
