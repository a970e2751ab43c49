import type { Redis } from "ioredis";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { freePort, type RedisServer, useRedisServers } from "#test-helpers/redis.js";
import { runCli } from "./helpers/run-cli.js";

/**
 * An instance that answers with an error no outage gives (NOPERM: an ACL user without the command;
 * WRONGPASS: a wrong password; READONLY: a replica given as an instance) answered: the URL is to be
 * fixed, and waiting changes nothing. Servers 0-2 are the instances; server 3 is a master for
 * replicas.
 */
const redis = useRedisServers(4);
let admins: Redis[] = [];

beforeAll(async () => {
  admins = redis.servers.map((server) => server.client());
  // "reader" may do anything but GET, which inspect() reads the key with; "noinfo" anything but INFO
  // and ROLE, so that the CLI cannot tell a replica (replica.test.ts) and meets its READONLY
  await Promise.all(
    admins.flatMap((admin) => [
      admin.acl("SETUSER", "reader", "on", ">pw", "~*", "&*", "+@all", "-get"),
      admin.acl("SETUSER", "noinfo", "on", ">pw", "~*", "&*", "+@all", "-info", "-role"),
    ]),
  );
});

afterEach(async () => {
  await Promise.all(admins.map((admin) => admin.replicaof("NO", "ONE")));
  await Promise.all(admins.map((admin) => admin.flushall()));
});

const PROCESS_TIMEOUT = { timeout: 90_000 };
const port = (index: number) => (redis.servers[index] as RedisServer).port;
const plain = (index: number) => `redis://127.0.0.1:${port(index)}`;
const as = (user: string, index: number) => `redis://${user}@127.0.0.1:${port(index)}`;
const row = (index: number, rest: string) => new RegExp(`^127\\.0\\.0\\.1:${port(index)}/0 +${rest}$`, "m");
const NOPERM = "NOPERM this user has no permissions to run the 'get' command";
const WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled.";

describe(
  "redlock-kit on an instance that refuses the CLI: a configuration to fix, not an outage",
  PROCESS_TIMEOUT,
  () => {
    it("inspect names the refusal, and exits 2 when the refusals alone leave no verdict", async () => {
      const urls = [as("reader:pw", 0), as("reader:wrong", 1), plain(2)].join(",");
      const run = await runCli(["inspect", "job", "--redis", urls]);
      // it was "job: unknown, 2 of 3 instances did not answer (quorum 2)." and exit 3, an outage's
      expect({ code: run.code, verdict: run.stdout.split("\n")[0] }).toEqual({
        code: 2,
        verdict:
          "job: no verdict (quorum 2): 2 of 3 instances refused the CLI, a configuration to fix (below), not an outage.",
      });
      expect(run.stdout).toMatch(row(0, `refused +- +- +refused: ${NOPERM}`));
      expect(run.stdout).toMatch(row(1, `refused +- +- +refused: ${WRONGPASS}`));
      expect(run.stdout).not.toMatch(/unknown|did not answer/);

      const json = await runCli(["inspect", "job", "--redis", urls, "--json"]);
      const view = JSON.parse(json.stdout);
      expect({ code: json.code, state: view.state, verdict: view.verdict }).toEqual({
        code: 2,
        state: "unknown",
        verdict: "misconfigured",
      });
      expect(
        view.instances.map(({ problem, error }: { problem?: string; error?: string }) => [problem, error]),
      ).toEqual([
        ["refused", NOPERM],
        ["refused", WRONGPASS],
        [undefined, undefined],
      ]);
    });

    it("inspect still exits 3 when the instances that did not answer could hold the lock", async () => {
      await admins[2]?.set("job", "holder-1", "PX", 60_000);
      const down = `redis://127.0.0.1:${await freePort()}`;
      const run = await runCli(["inspect", "job", "--redis", [as("reader:pw", 0), down, plain(2)].join(",")]);
      expect({ code: run.code, verdict: run.stdout.split("\n")[0] }).toEqual({
        code: 3,
        verdict:
          "job: unknown, 1 of 3 instances did not answer (quorum 2). 1 of 3 instances refused the CLI, a configuration to fix (below).",
      });
      expect(run.stdout).toMatch(row(0, `refused +- +- +refused: ${NOPERM}`));
    });

    it("list marks an instance that refused the CLI (x), and exits 2 when refusals leave fewer than a quorum scanned", async () => {
      await Promise.all([1, 2].map((index) => admins[index]?.set("job", "holder-1", "PX", 60_000)));
      const listed = await runCli(["list", "--redis", [as("reader:pw", 0), plain(1), plain(2)].join(",")]);
      // the refusing instance was "?", one that did not answer
      expect({ code: listed.code, stderr: listed.stderr }).toEqual({ code: 0, stderr: "" });
      const lines = listed.stdout.trimEnd().split("\n");
      expect(lines.slice(1)).toEqual([
        expect.stringMatching(/^job +held 2\/3 +\d+s +\w{8} +x +\d+s +\d+s$/),
        "x refused the CLI, a configuration to fix: inspect the resource to see why",
      ]);

      const urls = [as("reader:wrong", 0), as("reader:wrong", 1), plain(2)].join(",");
      const scanned = await runCli(["list", "--redis", urls]);
      // it was exit 3, each "could not be scanned", as for an outage
      expect({ code: scanned.code, stderr: scanned.stderr }).toEqual({
        code: 2,
        stderr: [0, 1]
          .map(
            (index) =>
              `redlock-kit: 127.0.0.1:${port(index)}/0 refused the CLI's SCAN, a configuration to fix: ${WRONGPASS}\n`,
          )
          .join(""),
      });
    });

    it("release --force names a replica given as an instance whose role it could not read, and exits 2 when it keeps the delete from a quorum", async () => {
      const master = admins[3] as Redis;
      await master.set("lock:job", "holder-1", "PX", 60_000);
      await admins[0]?.set("lock:job", "holder-1", "PX", 60_000);
      await Promise.all([1, 2].map((index) => admins[index]?.replicaof("127.0.0.1", String(port(3)))));
      // a replica reads what its master holds: the key shows there once replicated
      await expect
        .poll(() => Promise.all([1, 2].map((index) => admins[index]?.get("lock:job"))))
        .toEqual(["holder-1", "holder-1"]);
      const urls = [plain(0), as("noinfo:pw", 1), as("noinfo:pw", 2)].join(",");
      const run = await runCli(["release", "--force", "job", "--prefix", "lock:", "--yes", "--redis", urls]);
      // it was exit 3, each replica shown as one that "did not answer (READONLY You can't write against a read only replica.)"
      expect({ code: run.code, stdout: run.stdout }).toEqual({
        code: 2,
        stdout: "Deleted lock:job on 1 of 3 instances.\n",
      });
      // ioredis and core also warn that "noinfo" may not run INFO
      expect(run.stderr.split("\n").filter((line) => line.startsWith("redlock-kit: "))).toEqual(
        [1, 2].map(
          (index) =>
            `redlock-kit: 127.0.0.1:${port(index)}/0 is a replica (READONLY): give its master's URL; the key may remain there.`,
        ),
      );
      expect(await master.get("lock:job")).toBe("holder-1");
    });

    it("release --force refuses, deleting nothing, when refusals leave no verdict", async () => {
      await Promise.all(admins.slice(0, 3).map((admin) => admin.set("lock:job", "holder-1", "PX", 60_000)));
      const urls = [as("reader:pw", 0), as("reader:pw", 1), plain(2)].join(",");
      const run = await runCli(["release", "--force", "job", "--prefix", "lock:", "--yes", "--redis", urls, "--json"]);
      const refusal = JSON.parse(run.stdout);
      expect({ code: run.code, deleted: refusal.deleted, verdict: refusal.verdict }).toEqual({
        code: 2,
        deleted: 0,
        verdict: "misconfigured",
      });
      expect(refusal.reason).toMatch(
        /^job \(key lock:job\): no verdict \(quorum 2\): 2 of 3 instances refused the CLI/,
      );
      expect(await Promise.all(admins.slice(0, 3).map((admin) => admin.get("lock:job")))).toEqual([
        "holder-1",
        "holder-1",
        "holder-1",
      ]);
    });
  },
);
