import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { freePort, type RedisServer, startReplicaOf, useRedisServers } from "#test-helpers/redis.js";
import { connect } from "../src/connect.js";
import { runCli, start } from "./helpers/run-cli.js";

/**
 * A replica given as an instance answers GET and PTTL with its master's (possibly stale) copy: it
 * is no vote of a lock's quorum, which is counted over masters. Servers 0-2 are masters; `replica`
 * is a replica of server 0 from its start (`--replicaof`).
 */
const redis = useRedisServers(3);
let replica: RedisServer;
let admins: Redis[] = [];
/** An admin connection to the replica. */
let copy: Redis;

beforeAll(async () => {
  admins = redis.servers.map((server) => server.client());
  replica = await startReplicaOf(port(0));
  copy = replica.client();
  // "noinfo" may run neither INFO nor ROLE: the CLI cannot learn the role, and reads as it did
  await copy.acl("SETUSER", "noinfo", "on", ">pw", "~*", "&*", "+@all", "-info", "-role");
}, 30_000);

afterAll(() => replica?.stop());

afterEach(() => Promise.all(admins.map((admin) => admin.flushall())));

const PROCESS_TIMEOUT = { timeout: 90_000 };
const port = (index: number) => (redis.servers[index] as RedisServer).port;
const plain = (index: number) => `redis://127.0.0.1:${port(index)}`;
const replicaUrl = (user = "") => `redis://${user}127.0.0.1:${replica.port}`;
const replicaRow = (rest: string) => new RegExp(`^127\\.0\\.0\\.1:${replica.port}/0 +${rest}$`, "m");
const isReplica = () => `is a replica of 127.0.0.1:${port(0)} (role:slave): give its master's URL`;
const escaped = (text: string) => text.replace(/[()]/g, "\\$&");

/** Sets `job` on the masters `holders` and waits until the replica has server 0's copy. */
async function hold(holders: readonly number[]): Promise<void> {
  await Promise.all(holders.map((index) => admins[index]?.set("job", "holder-1", "PX", 60_000)));
  await expect.poll(() => copy.get("job")).toBe(holders.includes(0) ? "holder-1" : null);
}

describe("redlock-kit with a replica given as an instance: named, and no vote", PROCESS_TIMEOUT, () => {
  it("inspect does not count the replica's copy of its master's key toward the quorum", async () => {
    // held on one master of three: no lock, whatever the replica of that master reads
    await hold([0]);
    const urls = [plain(0), replicaUrl(), plain(1)].join(",");
    const run = await runCli(["inspect", "job", "--redis", urls]);
    // it was "job is held by … on 2 of 3 instances (quorum 2) for 60s." and exit 0: the replica voted
    expect({ code: run.code, verdict: run.stdout.split("\n")[0] }).toEqual({
      code: 2,
      verdict:
        "job: no verdict (quorum 2): 1 of 3 instances refused the CLI, a configuration to fix (below), not an outage.",
    });
    expect(run.stdout).toMatch(replicaRow(`refused +- +- +${escaped(isReplica())}`));

    const json = await runCli(["inspect", "job", "--redis", urls, "--json"]);
    const view = JSON.parse(json.stdout);
    expect({ code: json.code, state: view.state, held: view.held, verdict: view.verdict }).toEqual({
      code: 2,
      state: "unknown",
      held: 1,
      verdict: "misconfigured",
    });
    expect(view.instances[1]).toEqual({
      instance: 1,
      description: `127.0.0.1:${replica.port}/0`,
      state: "unknown",
      error: `replica of 127.0.0.1:${port(0)} (role:slave)`,
      problem: "replica",
    });
  });

  it("inspect gives the masters' verdict when they alone decide, naming the replica", async () => {
    await hold([1, 2]);
    const run = await runCli(["inspect", "job", "--redis", [plain(1), plain(2), replicaUrl()].join(",")]);
    // the replica's row was "free", as if it were a master without the key
    expect({ code: run.code, verdict: run.stdout.split("\n")[0] }).toEqual({
      code: 0,
      verdict: expect.stringMatching(
        /^job is held by \w{8} on 2 of 3 instances \(quorum 2\) for \d+s more\. 1 of 3 instances refused the CLI, a configuration to fix \(below\)\.$/,
      ),
    });
    expect(run.stdout).toMatch(replicaRow(`refused +- +- +${escaped(isReplica())}`));
  });

  it("list shows the replica as x, and does not count its SCAN toward the quorum scanned", async () => {
    await hold([0]);
    const listed = await runCli(["list", "--redis", [plain(0), replicaUrl(), plain(1)].join(",")]);
    // it was "job  held 2/3 …", the replica's copy counted as a second holder
    const lines = listed.stdout.trimEnd().split("\n");
    expect({ code: listed.code, rows: lines.slice(1) }).toEqual({
      code: 0,
      rows: [
        expect.stringMatching(/^job +no verdict \(1\/3 refused\) +- +\w{8} +\d+s +x +-$/),
        "x refused the CLI, a configuration to fix: inspect the resource to see why",
      ],
    });
    expect(listed.stderr).toBe(`redlock-kit: 127.0.0.1:${replica.port}/0 ${isReplica()}; not scanned.\n`);

    // server 0 alone scanned: fewer than a quorum, though the replica answered SCAN with its copy
    const down = `redis://127.0.0.1:${await freePort()}`;
    const json = await runCli(["list", "--json", "--redis", [plain(0), replicaUrl(), down].join(",")]);
    const listing = JSON.parse(json.stdout);
    // it was exit 0, the lock "held" by server 0 and its replica, and only the stopped server unavailable
    expect({
      code: json.code,
      unavailable: listing.unavailable.map(({ problem }: { problem?: string }) => problem),
      verdicts: listing.locks.map(({ verdict }: { verdict: string }) => verdict),
    }).toEqual({ code: 3, unavailable: ["replica", undefined], verdicts: ["unknown"] });
  });

  it("release --force deletes nothing where the replica leaves no verdict, and shows which instance it is", async () => {
    await hold([0]);
    const urls = [plain(0), replicaUrl(), plain(1)].join(",");
    const run = await runCli(["release", "--force", "job", "--yes", "--redis", urls]);
    // it was "Deleted job on 1 of 3 instances." and exit 0, after the replica's copy made it held 2/3
    expect({ code: run.code, verdict: run.stdout.split("\n")[0] }).toEqual({
      code: 2,
      verdict:
        "job: no verdict (quorum 2): 1 of 3 instances refused the CLI, a configuration to fix (below), not an outage. Nothing deleted.",
    });
    // "(below)": the rows say which instance, and why
    expect(run.stdout).toMatch(replicaRow(`refused +- +- +${escaped(isReplica())}`));
    expect(await admins[0]?.get("job")).toBe("holder-1");
  });

  it("reads the replica as before when its user may run neither INFO nor ROLE", async () => {
    await hold([0]);
    const run = await runCli(["inspect", "job", "--redis", [plain(0), replicaUrl("noinfo:pw@"), plain(1)].join(",")]);
    // its role unknown: its copy counts, as a replica's did before the CLI asked (ioredis and core
    // each warn on stderr that the user may not run INFO)
    expect({ code: run.code, verdict: run.stdout.split("\n")[0] }).toEqual({
      code: 0,
      verdict: expect.stringMatching(/^job is held by \w{8} on 2 of 3 instances \(quorum 2\)/),
    });
    expect(run.stdout).toMatch(new RegExp(`^127\\.0\\.0\\.1:${replica.port}/0 +held `, "m"));
  });
});

/** What a frame of `watch --json` says of the roles: the instances not scanned, and each lock's verdict and rows. */
function roles(frame: {
  unavailable: { instance: string; problem?: string }[];
  locks: { resource: string; verdict: string; instances: { state: string; problem?: string }[] }[];
}) {
  return {
    unavailable: frame.unavailable.map(({ instance, problem }) => `${instance} ${problem}`),
    locks: frame.locks.map(({ resource, verdict, instances }) =>
      [resource, verdict, ...instances.map(({ state, problem }) => problem ?? state)].join(" "),
    ),
  };
}

/** `watch --json` on `urls`, and the first frame read wholly after a call (the one under way may have read before). */
function watchJson(urls: string) {
  const run = start(["watch", "--json", "--interval", "50", "--redis", urls]);
  const frames = () =>
    run.stdout
      .trimEnd()
      .split("\n")
      .map((line) => JSON.parse(line));
  return {
    run,
    first: async () => {
      await run.waitFor("\n");
      return roles(frames()[0]);
    },
    next: async () => {
      const seen = run.stdout.split("\n").length - 1;
      await run.waitFor("\n", seen + 2);
      return roles(frames()[seen + 1]);
    },
    stop: async () => {
      run.child.kill("SIGINT");
      return run.exited;
    },
  };
}

describe("redlock-kit watch through a failover: each refresh with the roles of the moment", PROCESS_TIMEOUT, () => {
  it("a master demoted while it runs is no vote from the next refresh, and votes again once promoted", async () => {
    await Promise.all([0, 1].map((index) => admins[index]?.set("job", "holder-1", "PX", 60_000)));
    const demoted = admins[1] as Redis;
    const watching = watchJson([plain(0), plain(1), plain(2)].join(","));
    const asMasters = { unavailable: [], locks: ["job held held held free"] };
    try {
      expect(await watching.first()).toEqual(asMasters);

      // a failover: server 1 becomes a replica of server 0, whose copy of the key it then has
      await demoted.replicaof("127.0.0.1", String(port(0)));
      await expect.poll(() => demoted.info("replication")).toContain("master_link_status:up");
      // it was still "job held held held free": the demoted master counted as a vote
      expect(await watching.next()).toEqual({
        unavailable: [`127.0.0.1:${port(1)}/0 replica`],
        locks: ["job misconfigured held replica free"],
      });

      await demoted.replicaof("NO", "ONE");
      expect(await watching.next()).toEqual(asMasters);
      expect(await watching.stop()).toBe(0);
    } finally {
      await watching.stop();
      await demoted.replicaof("NO", "ONE");
    }
  });

  it("a replica promoted while it runs votes from the next refresh", async () => {
    await hold([0]);
    const watching = watchJson([plain(0), replicaUrl(), plain(2)].join(","));
    try {
      expect(await watching.first()).toEqual({
        unavailable: [`127.0.0.1:${replica.port}/0 replica`],
        locks: ["job misconfigured held replica free"],
      });
      // promoted (a Sentinel's failover): its copy of server 0's key is now its own
      await copy.replicaof("NO", "ONE");
      // it was still "job misconfigured held replica free": the new master never voted
      expect(await watching.next()).toEqual({ unavailable: [], locks: ["job held held held free"] });
    } finally {
      await watching.stop();
      // a replica of server 0 again, as the other tests of this file have it
      await copy.replicaof("127.0.0.1", String(port(0)));
      await expect.poll(() => copy.info("replication")).toContain("master_link_status:up");
    }
  });
});

describe("connect(): a role change builds a new Redlock over the same clients", () => {
  /** Every event each client has listeners for, with their number. */
  const listeners = (clients: readonly Redis[]) =>
    clients.map((client) => Object.fromEntries(client.eventNames().map((name) => [name, client.listenerCount(name)])));
  const urls = () => [plain(0), plain(1), plain(2)];

  it("quits the one it replaces: after two role flips, the clients hold one Redlock's listeners, none once it quits", async () => {
    // what the CLI's own clients listen to, its Redlock quit
    const alone = await connect(urls(), "", 1000, true);
    await alone.dlm.quit();
    const baseline = listeners(alone.clients as Redis[]);
    alone.close();

    const instances = await connect(urls(), "", 1000, true);
    const demoted = admins[1] as Redis;
    try {
      const first = instances.dlm;
      await demoted.replicaof("127.0.0.1", String(port(0)));
      await instances.rereadRoles();
      const second = instances.dlm;
      await demoted.replicaof("NO", "ONE");
      await instances.rereadRoles();
      expect(new Set([first, second, instances.dlm]).size).toBe(3);
      await instances.dlm.quit();
      expect(listeners(instances.clients as Redis[])).toEqual(baseline);
      // the replaced Redlocks' quit() left the CLI's clients open
      expect(instances.clients.map((client) => client.status)).toEqual(["ready", "ready", "ready"]);
    } finally {
      instances.close();
      await demoted.replicaof("NO", "ONE");
    }
  });
});
