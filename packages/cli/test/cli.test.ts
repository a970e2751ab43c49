import { createHash } from "node:crypto";
import { type Lock, Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { startDelayProxy } from "#test-helpers/delay-proxy.js";
import { freePort, type RedisServer, useRedisServers } from "#test-helpers/redis.js";
import { runCli, start, startOnTty } from "./helpers/run-cli.js";

const cluster = useRedisServers(3);
let clients: Redis[] = [];
let dlm: Redlock;
let env: { REDIS_URL: string };

beforeAll(() => {
  clients = cluster.servers.map((server) => server.client());
  dlm = new Redlock(clients, { keyPrefix: "lock:" });
  env = { REDIS_URL: cluster.servers.map((server) => `redis://127.0.0.1:${server.port}`).join(",") };
});

afterEach(async () => {
  for (const server of cluster.servers) server.resume();
  await Promise.all(clients.map((client) => client.flushall()));
});

/** Every test starts the binary, a whole Node process each time: slow on a busy machine, never a hang. */
const PROCESS_TIMEOUT = { timeout: 90_000 };

const server = (index: number) => cluster.servers[index] as RedisServer;
const fingerprint = (lock: Lock) => createHash("sha256").update(lock.value).digest("hex").slice(0, 8);
const exists = (key: string) => Promise.all(clients.map((client) => client.exists(key)));
const values = (key: string) => Promise.all(clients.map((client) => client.get(key)));
/** `dlm`'s acquire resolves at a quorum: a CLI run (another process) that reads every instance waits for the last SET. */
const heldEverywhere = (key: string) => expect.poll(() => exists(key)).toEqual([1, 1, 1]);

describe("redlock-kit usage", PROCESS_TIMEOUT, () => {
  it("prints help with the commands and exit codes", async () => {
    const runs = await Promise.all([["--help"], ["help"], [], ["list", "-h"]].map((args) => runCli(args)));
    for (const { code, stdout, stderr } of runs) {
      expect(code).toBe(0);
      expect(stdout).toContain("Usage: redlock-kit <command> [options]");
      expect(stdout).toContain("release --force <resource>");
      expect(stdout).toContain("3  unavailable");
      expect(stderr).toBe("");
    }
  });

  it("refuses a bad command line with exit 2 and says what to do", async () => {
    const cases: [string[], string][] = [
      [["frob"], 'unknown command "frob": expected list, inspect, release or watch'],
      [["inspect"], "inspect needs a resource: redlock-kit inspect <resource>"],
      [["release", "x"], "Add --force to do it anyway"],
      [["list", "--force"], "--force applies to release only"],
      [["list", "--frob"], "Unknown option '--frob'"],
      [["list", "--timeout", "soon"], '--timeout must be a positive whole number of milliseconds, got "soon"'],
      [["list", "a", "b"], 'list takes one argument, got also "b"'],
      [["list", "--redis", "localhost:6379"], "--redis: entry 1 is not a redis:// or rediss:// URL"],
      [["inspect", ""], "resource must be a non-empty string"],
      // given twice, the last one silently won: a lock read under a prefix the operator did not mean
      [["list", "--prefix", "lock:", "--prefix", "app:"], "--prefix is given more than once"],
    ];
    // at once: each run is a process start, slow on a busy machine
    const runs = await Promise.all(cases.map(([args]) => runCli(args, env)));
    runs.forEach(({ code, stdout, stderr }, index) => {
      const [args, message] = cases[index] as [string[], string];
      expect({ args, code, stdout }).toEqual({ args, code: 2, stdout: "" });
      expect(stderr).toContain(message);
      expect(stderr).toContain('Run "redlock-kit --help" for usage.');
    });
  });

  it("asks for instances when neither --redis nor REDIS_URL names any, without echoing URLs", async () => {
    const missing = await runCli(["list"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("no Redis instances: pass --redis redis://host:port");
    const secret = await runCli(["list"], { REDIS_URL: "redis://:hunter2@127.0.0.1:1,nope" });
    expect(secret.code).toBe(2);
    expect(secret.stderr).toContain("REDIS_URL: entry 2 is not a redis:// or rediss:// URL");
    expect(secret.stderr).not.toContain("hunter2");
  });
});

describe("redlock-kit instances", PROCESS_TIMEOUT, () => {
  it("come from --redis when it is given, from REDIS_URL only when it is absent", async () => {
    await dlm.acquire("order:42", 60_000);
    await heldEverywhere("lock:order:42");
    // REDIS_URL names an instance nobody listens on: read, it would make the verdict unknown (exit 3)
    const elsewhere = { REDIS_URL: `redis://127.0.0.1:${await freePort()}` };
    const flag = await runCli(["inspect", "order:42", "--prefix", "lock:", "--redis", env.REDIS_URL], elsewhere);
    expect({ code: flag.code, stderr: flag.stderr }).toEqual({ code: 0, stderr: "" });
    expect(flag.stdout).toContain("on 3 of 3 instances");
    expect((await runCli(["inspect", "order:42", "--prefix", "lock:", "--timeout", "200"], elsewhere)).code).toBe(3);
  });

  it("read REDIS_URL as the examples read it: blanks around a URL and empty entries (a trailing comma) are skipped", async () => {
    await dlm.acquire("order:7", 60_000);
    await heldEverywhere("lock:order:7");
    const [a, b, c] = env.REDIS_URL.split(",");
    for (const REDIS_URL of [`${env.REDIS_URL},`, ` ${a} , ,${b},${c} `]) {
      const run = await runCli(["inspect", "order:7", "--prefix", "lock:"], { REDIS_URL });
      expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: "" });
      expect(run.stdout).toContain("on 3 of 3 instances");
    }
    const none = await runCli(["list"], { REDIS_URL: " , ," });
    expect(none.code).toBe(2);
    expect(none.stderr).toContain("no Redis instances: pass --redis redis://host:port");
  });

  it("come from every --redis given, each a URL or a comma-separated list", async () => {
    await dlm.acquire("stuck", 60_000);
    await heldEverywhere("lock:stuck");
    // the last --redis alone used to count: "Deleted on 1 of 1 instances", exit 0, with the lock
    // still held on the other two, a quorum
    const [first, ...rest] = env.REDIS_URL.split(",");
    const run = await runCli([
      "release",
      "--force",
      "stuck",
      "--prefix",
      "lock:",
      "--yes",
      "--redis",
      first as string,
      "--redis",
      rest.join(","),
    ]);
    expect({ code: run.code, stdout: run.stdout }).toEqual({
      code: 0,
      stdout: "Deleted lock:stuck on 3 of 3 instances.\n",
    });
    expect(await exists("lock:stuck")).toEqual([0, 0, 0]);
  });

  it("refuses a URL that sets the client's keyPrefix, which list could not see locks under (exit 2)", async () => {
    await dlm.acquire("order:42", 60_000);
    await heldEverywhere("lock:order:42");
    const urls = env.REDIS_URL.split(",")
      .map((url) => `${url}?keyPrefix=lock:`)
      .join(",");
    // list found lock:order:42 and read it as the key lock:lock:order:42: "No locks match", exit 1
    const listed = await runCli(["list", "--redis", urls]);
    expect({ code: listed.code, stdout: listed.stdout }).toEqual({ code: 2, stdout: "" });
    expect(listed.stderr).toContain(
      "--redis: entry 1 sets keyPrefix: drop it, and pass it as --prefix (with the Redlock's keyPrefix after it)",
    );
  });

  it("refuses a URL that sets a connection option the CLI sets itself, or a function (exit 2), never crashing", async () => {
    const [first, second] = env.REDIS_URL.split(",") as [string, string];
    // ioredis takes a URL's query items as options, as strings: its connectTimeout went to
    // socket.setTimeout(), which threw outside any await (a stack trace, exit 1: "not held" to a
    // script); a reconnectOnError threw at the first error reply
    for (const query of ["connectTimeout=5000", "reconnectOnError=1", "retryStrategy=1", "maxRetriesPerRequest=5"]) {
      const run = await runCli(["inspect", "order:42", "--redis", `${first},${second}?${query}`]);
      const option = query.split("=")[0];
      expect({ query, code: run.code, stdout: run.stdout }).toEqual({ query, code: 2, stdout: "" });
      expect(run.stderr).toMatch(new RegExp(`--redis: entry 2 sets ${option}, which .*: drop it`));
    }
  });

  it("exits 2 naming the entry of a URL ioredis cannot use, after one it can, leaving no connection open", async () => {
    const port = server(0).port;
    const good = `redis://127.0.0.1:${server(1).port}`;
    // a port out of range, and a password with a bare % (ioredis: "URI malformed"): both thrown
    // once the first URL's client was connecting, which nothing closed, so the process never exited
    for (const bad of ["redis://127.0.0.1:99999", `redis://:50%off@127.0.0.1:${port}`]) {
      const run = await runCli(["inspect", "order:42", "--redis", `${good},${bad}`]);
      expect({ bad, code: run.code, stdout: run.stdout }).toEqual({ bad, code: 2, stdout: "" });
      expect(run.stderr).toContain("entry 2 of the Redis URLs cannot be used: ");
      expect(run.stderr).not.toContain("50%off");
    }
  });

  it("exits 2 for a port that ioredis reads from the URL's query and no server can have", async () => {
    const good = `redis://127.0.0.1:${server(1).port}`;
    // a URL without a port takes ioredis's from its query, which nothing checked: every command
    // failed as for a server that is down, and inspect exited 3, an outage a script waits out
    for (const port of ["99999", "abc"]) {
      const run = await runCli(["inspect", "order:42", "--redis", `${good},redis://127.0.0.1?port=${port}`]);
      expect({ port, code: run.code, stdout: run.stdout }).toEqual({ port, code: 2, stdout: "" });
      expect(run.stderr).toContain(`--redis: entry 2 names port "${port}", not a port number`);
    }
  });
});

describe("redlock-kit list", PROCESS_TIMEOUT, () => {
  it("finds nothing with exit 1", async () => {
    const { code, stdout } = await runCli(["list"], env);
    expect(code).toBe(1);
    expect(stdout).toBe('No locks match "*".\n');
  });

  it("lists the locks under the prefix with SCAN, one row each, with the quorum and each instance's ttl", async () => {
    const order = await dlm.acquire("order:42", 60_000);
    const report = await dlm.acquire("report", 60_000);
    await clients[0]?.set("other-app-key", "x");
    await clients[0]?.hset("lock:not-a-lock", "field", "x");
    await clients[1]?.set("lock:order:42", "someone-else", "PX", 60_000);
    // a fence counter (a string without expiry) is no stuck lock: not listed, so never offered for deletion
    await Promise.all(clients.map((client) => client.set("lock:order:42:redlock-kit:fence", "3")));
    await Promise.all(clients.map((client) => client.config("RESETSTAT")));

    const { code, stdout, stderr } = await runCli(["list", "--prefix", "lock:"], env);
    expect(code).toBe(0);
    expect(stderr).toBe("");
    const lines = stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(
      /^RESOURCE +QUORUM +TTL +HOLDER +127\.0\.0\.1:\d+\/0 +127\.0\.0\.1:\d+\/0 +127\.0\.0\.1:\d+\/0$/,
    );
    expect(lines[1]).toMatch(new RegExp(`^order:42 +held 2/3 +\\d+s +${fingerprint(order)} +\\d+s +\\d+s\\* +\\d+s$`));
    expect(lines[2]).toMatch(new RegExp(`^report +held 3/3 +\\d+s +${fingerprint(report)} +\\d+s +\\d+s +\\d+s$`));
    expect(lines[3]).toBe("* another holder than the row's");
    expect(lines).toHaveLength(4);
    for (const client of clients) {
      const stats = await client.info("commandstats");
      expect(stats).toContain("cmdstat_scan:");
      expect(stats).not.toContain("cmdstat_keys:");
    }
    expect(stdout).not.toContain(order.value);
  });

  it("filters by a pattern on the resource name and prints JSON with --json", async () => {
    const order = await dlm.acquire("order:42", 60_000);
    await dlm.acquire("report", 60_000);
    await heldEverywhere("lock:order:42");
    const { code, stdout } = await runCli(["list", "order:*", "--prefix", "lock:", "--json"], env);
    expect(code).toBe(0);
    const listing = JSON.parse(stdout);
    expect(listing).toMatchObject({ quorum: 2, unavailable: [], truncated: false });
    expect(listing.instances).toHaveLength(3);
    expect(listing.locks).toHaveLength(1);
    expect(listing.locks[0]).toMatchObject({
      resource: "order:42",
      key: "lock:order:42",
      state: "held",
      held: 3,
      holder: fingerprint(order),
      ours: false,
    });
    expect(stdout).not.toContain(order.value);
    expect((await runCli(["list", "invoice:*", "--prefix", "lock:"], env)).code).toBe(1);
  });

  it("reads the prefix literally, whatever glob characters it holds", async () => {
    await clients[0]?.set("l*:a", "v", "PX", 60_000);
    await clients[0]?.set("lx:b", "v", "PX", 60_000);
    await Promise.all(clients.map((client) => client.config("RESETSTAT")));
    const { stdout } = await runCli(["list", "--prefix", "l*:", "--json"], env);
    expect(JSON.parse(stdout).locks.map((lock: { resource: string }) => lock.resource)).toEqual(["a"]);
    // only "a" was inspected: "lx:b" did not match (as "b" it would read "l*:b" and be left out as free)
    expect(await clients[0]?.info("commandstats")).toMatch(/^cmdstat_get:calls=1,/m);
  });

  it("skips keys whose name cannot be a resource (empty, over 1024 characters) instead of refusing the command line", async () => {
    const lock = await dlm.acquire("order:42", 60_000);
    await clients[0]?.set("lock:", "x", "PX", 60_000);
    await clients[1]?.set(`lock:${"x".repeat(1025)}`, "x", "PX", 60_000);
    const listed = await runCli(["list", "--prefix", "lock:", "--json"], env);
    expect({ code: listed.code, stderr: listed.stderr }).toEqual({ code: 0, stderr: "" });
    expect(JSON.parse(listed.stdout).locks.map((view: { resource: string }) => view.resource)).toEqual(["order:42"]);
    const watched = start(["watch", "--prefix", "lock:", "--json", "--interval", "100"], env);
    await Promise.race([watched.waitFor("\n"), watched.exited]);
    watched.child.kill("SIGINT");
    expect(await watched.exited).toBe(0);
    expect(JSON.parse(watched.stdout.split("\n")[0] as string).locks[0]).toMatchObject({ resource: "order:42" });
    await lock.release();
  });

  it("lists what it can reach with one instance down, and exits 3 when too few answer", async () => {
    await dlm.acquire("order:42", 60_000);
    await heldEverywhere("lock:order:42");
    const dead = `redis://127.0.0.1:${await freePort()}`;
    const urls = env.REDIS_URL.split(",");
    const oneDown = await runCli(["list", "--prefix", "lock:", "--redis", [urls[0], urls[1], dead].join(",")]);
    expect(oneDown.code).toBe(0);
    expect(oneDown.stdout).toMatch(/^order:42 +held 2\/3 .* \?$/m);
    expect(oneDown.stderr).toMatch(/127\.0\.0\.1:\d+\/0 could not be scanned: /);

    server(1).pause();
    server(2).pause();
    const twoDown = await runCli(["list", "--prefix", "lock:", "--timeout", "200"], env);
    expect(twoDown.code).toBe(3);
    expect(twoDown.stdout).toMatch(/^order:42 +unknown \(2\/3 silent\)/m);
    expect(twoDown.stderr).toContain("could not be scanned: No answer within 200 ms");
  });

  it("shows a key's name with terminal control characters escaped, never raw", async () => {
    // anyone who can name a lock chooses its key: raw, this one clears the screen and draws a fake row
    const name = "evil\x1b[2J\nfake  held 3/3\u009b\u202e";
    await Promise.all(clients.map((client) => client.set(`lock:${name}`, "v", "PX", 60_000)));
    const shown = String.raw`"evil\u001b[2J\nfake  held 3/3\u009b\u202e"`;
    const listed = await runCli(["list", "--prefix", "lock:"], env);
    const inspected = await runCli(["inspect", name, "--prefix", "lock:"], env);
    const released = await runCli(["release", "--force", name, "--prefix", "lock:", "--yes"], env);
    expect([listed.code, inspected.code, released.code]).toEqual([0, 0, 0]);
    for (const { stdout } of [listed, inspected, released]) {
      for (const raw of ["\x1b", "\nfake", "\u009b", "\u202e"]) expect(stdout).not.toContain(raw);
    }
    const row = listed.stdout.split("\n")[1] as string;
    expect(row.startsWith(`${shown}  `) && row.slice(shown.length).trimStart().startsWith("held 3/3 ")).toBe(true);
    expect(inspected.stdout).toContain(`${shown} (key "lock:${shown.slice(1)}) is held by`);
    expect(released.stdout).toBe(`Deleted "lock:${shown.slice(1)} on 3 of 3 instances.\n`);
    // --json keeps the exact name
    await clients[0]?.set(`lock:${name}`, "v", "PX", 60_000);
    const json = await runCli(["list", "--prefix", "lock:", "--json"], env);
    expect(JSON.parse(json.stdout).locks[0].resource).toBe(name);
  });

  it("keeps its exit code when the reader of its stderr is gone (list 2>&1 | head -1)", async () => {
    const dead = `redis://127.0.0.1:${await freePort()}`;
    const run = start(["list", "--prefix", "lock:", "--redis", `${env.REDIS_URL.split(",")[0]},${dead}`]);
    run.child.stderr?.destroy(); // its warning about the dead instance is written into a closed pipe: EPIPE
    expect(await run.exited).toBe(3);
  });

  it("does not say that no lock matches when too few instances could be scanned to tell", async () => {
    server(1).pause();
    server(2).pause();
    const twoDown = await runCli(["list", "never:*", "--prefix", "lock:", "--timeout", "200"], env);
    expect(twoDown.code).toBe(3);
    expect(twoDown.stdout).toBe(
      'Cannot tell which locks match "never:*": fewer than a quorum of instances could be scanned.\n',
    );
    expect(twoDown.stderr).toContain("could not be scanned: No answer within 200 ms");
  });
});

describe("redlock-kit list and inspect at Ctrl-C", PROCESS_TIMEOUT, () => {
  it("stop at once while a slow instance keeps them waiting: exit 130, nothing printed", async () => {
    server(2).pause();
    const [first] = clients as [Redis];
    await first.config("RESETSTAT");
    const probes = async () =>
      Number(/cmdstat_cluster\|slots:calls=(\d+)/.exec(await first.info("commandstats"))?.[1] ?? 0);
    // each waits --timeout for the paused instance (its CLUSTER SLOTS, then its SCAN or read)
    const runs = [["list"], ["inspect", "job"]].map((command) =>
      start([...command, "--prefix", "lock:", "--timeout", "20000"], env),
    );
    // both are running: their CLUSTER SLOTS reached a live instance
    await expect.poll(probes).toBe(2);
    for (const run of runs) run.child.kill("SIGINT");
    const ended = await Promise.all(runs.map(async (run) => ({ code: await run.exited, stdout: run.stdout })));
    // the first Ctrl-C was swallowed (only watch and release's question hear it): each went on waiting
    expect(ended).toEqual([
      { code: 130, stdout: "" },
      { code: 130, stdout: "" },
    ]);
  });
});

describe("redlock-kit inspect", PROCESS_TIMEOUT, () => {
  it("shows each instance and the verdict: exit 0 held, 1 free, 3 unknown", async () => {
    const lock = await dlm.acquire("order:42", 60_000);
    await heldEverywhere("lock:order:42");
    const held = await runCli(["inspect", "order:42", "--prefix", "lock:"], env);
    expect(held.code).toBe(0);
    expect(held.stdout).toMatch(
      new RegExp(
        `^order:42 \\(key lock:order:42\\) is held by ${fingerprint(lock)} on 3 of 3 instances \\(quorum 2\\) for \\d+s more\\.\\n`,
      ),
    );
    expect(held.stdout).toMatch(
      new RegExp(`^127\\.0\\.0\\.1:${server(2).port}/0 +held +\\d+s +${fingerprint(lock)}$`, "m"),
    );

    const json = await runCli(["inspect", "order:42", "--prefix", "lock:", "--json"], env);
    expect(JSON.parse(json.stdout)).toMatchObject({ state: "held", quorum: 2, held: 3, holder: fingerprint(lock) });
    expect(json.stdout).not.toContain(lock.value);

    const free = await runCli(["inspect", "order:43", "--prefix", "lock:"], env);
    expect(free.code).toBe(1);
    expect(free.stdout).toContain("order:43 (key lock:order:43) is free (quorum 2).");

    server(0).pause();
    server(1).pause();
    const unknown = await runCli(["inspect", "order:42", "--prefix", "lock:", "--timeout", "200"], env);
    expect(unknown.code).toBe(3);
    expect(unknown.stdout).toContain("unknown, 2 of 3 instances did not answer");
    expect(unknown.stdout).toMatch(/ unknown +- +- +No answer within 200 ms$/m);
  });
});

describe("redlock-kit inspect of a key without a ttl", PROCESS_TIMEOUT, () => {
  it("says it never expires, in words", async () => {
    // a key set by hand, or by a client that forgot its PX: nothing will ever free it
    await Promise.all(clients.map((client) => client.set("lock:stuck", "by-hand")));
    const { code, stdout } = await runCli(["inspect", "stuck", "--prefix", "lock:"], env);
    expect(code).toBe(0);
    const holder = createHash("sha256").update("by-hand").digest("hex").slice(0, 8);
    expect(stdout.split("\n")[0]).toBe(
      `stuck (key lock:stuck) is held by ${holder} on 3 of 3 instances (quorum 2) with no ttl: it never expires.`,
    );
  });
});

/** `release --force stuck` on a terminal, once it asks about `lock` (held on every instance). */
async function askedToRelease(lock: Lock, instances = env) {
  await heldEverywhere("lock:stuck");
  const run = startOnTty(["release", "--force", "stuck", "--prefix", "lock:"], instances);
  await run.waitFor("[y/N]");
  expect(run.stdout).toContain(`is held by ${fingerprint(lock)} on 3 of 3 instances`);
  return run;
}

describe("redlock-kit release --force", PROCESS_TIMEOUT, () => {
  it("refuses without --yes when stdin is not a terminal, and deletes with it", async () => {
    const lock = await dlm.acquire("stuck", 60_000);
    const refused = await runCli(["release", "--force", "stuck", "--prefix", "lock:"], env);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain("stdin is not a terminal. Add --yes to delete it anyway.");
    expect(await exists("lock:stuck")).toEqual([1, 1, 1]);

    const done = await runCli(["release", "--force", "stuck", "--prefix", "lock:", "--yes", "--json"], env);
    expect(done.code).toBe(0);
    expect(JSON.parse(done.stdout)).toMatchObject({ resource: "stuck", key: "lock:stuck", deleted: 3, unknown: 0 });
    expect(await exists("lock:stuck")).toEqual([0, 0, 0]);
    expect(lock.valid).toBe(true); // the holder does not know: why this verb is behind --force

    const again = await runCli(["release", "--force", "stuck", "--prefix", "lock:", "-y"], env);
    expect(again.code).toBe(1);
    expect(again.stdout).toContain("is free (quorum 2). Nothing to delete.");
  });

  it("exits 3 when too few instances answered to be sure the lock is gone", async () => {
    await dlm.acquire("stuck", 60_000);
    await heldEverywhere("lock:stuck");
    server(0).pause();
    server(1).pause();
    const { code, stdout, stderr } = await runCli(
      ["release", "--force", "stuck", "--prefix", "lock:", "--yes", "--timeout", "200"],
      env,
    );
    expect(code).toBe(3);
    expect(stdout).toContain("Deleted lock:stuck on 1 of 3 instances.");
    expect(stderr).toContain("did not answer (No answer within 200 ms): the key may remain there.");
  });

  it("refuses URLs that name one server twice through a host alias (exit 2), never counting its key twice", async () => {
    await clients[0]?.set("lock:aliased", "someone", "PX", 60_000);
    const port = server(0).port;
    const urls = `redis://localhost:${port},redis://127.0.0.1:${port},redis://127.0.0.1:${server(1).port}`;
    for (const command of [
      ["inspect", "aliased"],
      ["release", "--force", "aliased", "--yes"],
    ]) {
      const run = await runCli([...command, "--prefix", "lock:", "--redis", urls]);
      expect({ code: run.code, stdout: run.stdout }).toEqual({ code: 2, stdout: "" });
      expect(run.stderr).toContain(
        `is the same Redis server as instances[0] (localhost:${port}/0): it would vote twice`,
      );
    }
    expect(await clients[0]?.get("lock:aliased")).toBe("someone");
  });

  it("refuses one URL given twice (exit 2), spelt the same or with and without its database", async () => {
    const port = server(0).port;
    for (const twice of [`redis://127.0.0.1:${port}`, `redis://127.0.0.1:${port}/0`]) {
      const urls = `redis://127.0.0.1:${port},${twice},redis://127.0.0.1:${server(1).port}`;
      const run = await runCli(["inspect", "twice", "--prefix", "lock:", "--redis", urls]);
      expect({ code: run.code, stdout: run.stdout }).toEqual({ code: 2, stdout: "" });
      expect(run.stderr).toContain(
        `instances[1] is the same Redis database as instances[0] (127.0.0.1:${port}/0): it would vote twice`,
      );
    }
  });

  it("list and watch refuse URLs that name one server twice (exit 2) when no key matches too", async () => {
    const port = server(0).port;
    const urls = `redis://localhost:${port},redis://127.0.0.1:${port},redis://127.0.0.1:${server(1).port}`;
    const listed = await runCli(["list", "--prefix", "lock:", "--redis", urls]);
    expect({ code: listed.code, stdout: listed.stdout }).toEqual({ code: 2, stdout: "" });
    expect(listed.stderr).toContain("it would vote twice");
    // a watch that runs stops at its first frame: it should not have drawn one
    const watched = start(["watch", "--prefix", "lock:", "--json", "--redis", urls]);
    await Promise.race([watched.waitFor("\n"), watched.exited]);
    watched.child.kill("SIGINT");
    expect({ code: await watched.exited, stdout: watched.stdout }).toEqual({ code: 2, stdout: "" });
    expect(watched.stderr).toContain("it would vote twice");
  });

  it("never deletes in db 0 for a URL naming a database the server refuses or that is not a number", async () => {
    await dlm.acquire("stuck", 60_000);
    const urls = (db: string) =>
      env.REDIS_URL.split(",")
        .map((url) => url.replace("redis://", "redis://:hunter2@") + db)
        .join(",");
    // 99: out of range on a server with 16 databases
    const refused = await runCli(["release", "--force", "stuck", "--prefix", "lock:", "--yes", "--redis", urls("/99")]);
    expect(refused.code).toBe(3);
    expect(await exists("lock:stuck")).toEqual([1, 1, 1]);
    // ioredis keeps the last of a repeated query item: "?db=1&db=abc" selected NaN before each
    // command (a rejection nobody handled: exit 70), and each command ran in db 0, where runCli
    // embedded in a process that survives unhandled rejections deleted the key
    for (const db of ["/abc", "/?db=abc", "/?db=1&db=abc"]) {
      const bad = await runCli(["release", "--force", "stuck", "--prefix", "lock:", "--yes", "--redis", urls(db)]);
      expect({ code: bad.code, stdout: bad.stdout }).toEqual({ code: 2, stdout: "" });
      expect(bad.stderr).toContain('--redis: entry 1 names database "abc", not a number');
      expect(bad.stderr).not.toContain("hunter2");
    }
    expect(await exists("lock:stuck")).toEqual([1, 1, 1]);
  });

  it("asks on a terminal and deletes only on yes", async () => {
    const no = await askedToRelease(await dlm.acquire("stuck", 60_000));
    no.child.stdin?.write("n\r");
    expect(await no.exited).toBe(1);
    expect(no.stdout).toContain("Nothing deleted.");
    expect(await exists("lock:stuck")).toEqual([1, 1, 1]);

    const interrupted = startOnTty(["release", "--force", "stuck", "--prefix", "lock:"], env);
    await interrupted.waitFor("[y/N]");
    interrupted.child.stdin?.write("\x03");
    expect(await interrupted.exited).toBe(1);
    expect(await exists("lock:stuck")).toEqual([1, 1, 1]);

    const yes = startOnTty(["release", "--force", "stuck", "--prefix", "lock:"], env);
    await yes.waitFor("[y/N]");
    yes.child.stdin?.write("y\r");
    expect(await yes.exited).toBe(0);
    expect(yes.stdout).toContain("Deleted lock:stuck on 3 of 3 instances.");
    expect(await exists("lock:stuck")).toEqual([0, 0, 0]);
  });

  it("deletes nothing when the lock changed hands while the question waited for its answer", async () => {
    const crashed = await dlm.acquire("stuck", 60_000);
    const run = await askedToRelease(crashed);
    // meanwhile the holder shown released, and a live owner took the lock: the yes is not for it
    await crashed.release();
    const live = await dlm.acquire("stuck", 60_000);
    await heldEverywhere("lock:stuck");
    run.child.stdin?.write("y\r");
    expect(await run.exited).toBe(1);
    expect(run.stdout).toContain(
      `It changed hands since you were asked: held by ${fingerprint(live)} on 3 of 3 instances, kept there. Nothing deleted.`,
    );
    expect(await values("lock:stuck")).toEqual([live.value, live.value, live.value]);
  });

  it("deletes nothing when the lock changed hands between its last read and the delete", async () => {
    const proxies = await Promise.all(cluster.servers.map((redis) => startDelayProxy(redis.port)));
    try {
      const viaProxies = { REDIS_URL: proxies.map((proxy) => `redis://127.0.0.1:${proxy.port}`).join(",") };
      const crashed = await dlm.acquire("stuck", 60_000);
      const run = await askedToRelease(crashed, viaProxies);
      // after the yes, every read runs; the first script (the delete) waits on each instance
      for (const proxy of proxies) proxy.holdCommandsWhen = (chunk) => /\r\neval(sha)?\r\n/i.test(chunk.toString());
      run.child.stdin?.write("y\r");
      await expect
        .poll(() => proxies.map((proxy) => proxy.heldCommandBytes > 0), { timeout: 30_000 })
        .toEqual([true, true, true]);
      // meanwhile the holder shown released, and a live owner took the lock: the yes is not for it
      await crashed.release();
      const live = await dlm.acquire("stuck", 60_000);
      await heldEverywhere("lock:stuck");
      for (const proxy of proxies) proxy.releaseCommands();
      const code = await run.exited;
      expect(await values("lock:stuck")).toEqual([live.value, live.value, live.value]);
      expect(code).toBe(1);
      expect(run.stdout).toContain(
        `It changed hands since you were asked: held by ${fingerprint(live)} on 3 of 3 instances, kept there. Nothing deleted.`,
      );
    } finally {
      await Promise.all(proxies.map((proxy) => proxy.close()));
    }
  });
});

describe("redlock-kit watch", PROCESS_TIMEOUT, () => {
  it("appends a JSON line per refresh into a pipe until interrupted, then exits 0", async () => {
    const lock = await dlm.acquire("job", 60_000);
    const run = start(["watch", "--prefix", "lock:", "--json", "--interval", "100"], env);
    await run.waitFor("\n", 2);
    await lock.release();
    await run.waitFor('"locks":[]');
    run.child.kill("SIGINT");
    expect(await run.exited).toBe(0);
    const frames = run.stdout
      .trimEnd()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(frames[0].locks[0]).toMatchObject({ resource: "job", state: "held" });
    expect(frames.at(-1).locks).toEqual([]);
    expect(frames.every((frame) => typeof frame.at === "string")).toBe(true);
  });

  it("ends on SIGTERM (a process manager's stop) as at Ctrl-C: exit 0, not killed by the signal", async () => {
    await dlm.acquire("job", 60_000);
    const run = start(["watch", "--prefix", "lock:", "--json", "--interval", "100"], env);
    await run.waitFor("\n");
    run.child.kill("SIGTERM");
    const code = await run.exited;
    expect({ code, signal: run.child.signalCode, stderr: run.stderr }).toEqual({ code: 0, signal: null, stderr: "" });
    expect(JSON.parse(run.stdout.split("\n")[0] as string).locks[0]).toMatchObject({ resource: "job", state: "held" });
  });

  it("stops when the reader of its pipe goes away (watch --json | head -1): exit 0, no stack trace", async () => {
    await dlm.acquire("job", 60_000);
    const run = start(["watch", "--prefix", "lock:", "--json", "--interval", "100"], env);
    await run.waitFor("\n");
    run.child.stdout?.destroy(); // the next refresh is written into a closed pipe: EPIPE
    expect({ code: await run.exited, stderr: run.stderr }).toEqual({ code: 0, stderr: "" });
  });

  it("ends at Ctrl-C during a refresh that waits for a slow instance, printing nothing more", async () => {
    await dlm.acquire("job", 60_000);
    await heldEverywhere("lock:job");
    // the third instance turns slow at the second refresh: its SCAN, and all after it, wait in the
    // proxy (slow from the start, it would not answer CLUSTER SLOTS and never be asked)
    const proxy = await startDelayProxy(server(2).port);
    let scans = 0;
    proxy.holdCommandsWhen = (chunk) => /\r\nscan\r\n/i.test(chunk.toString()) && ++scans === 2;
    const urls = [0, 1].map((index) => `redis://127.0.0.1:${server(index).port}`);
    const redis = [...urls, `redis://127.0.0.1:${proxy.port}`].join(",");
    try {
      const run = start([
        "watch",
        "--prefix",
        "lock:",
        "--json",
        "--interval",
        "1",
        "--timeout",
        "3000",
        "--redis",
        redis,
      ]);
      await run.waitFor("\n");
      // the second refresh has begun: it waits for the slow instance's SCAN
      await expect.poll(() => proxy.heldCommandBytes).toBeGreaterThan(0);
      run.child.kill("SIGINT");
      expect(await run.exited).toBe(0);
      // that refresh was finished first (seconds later) and printed: its frame came after the Ctrl-C
      expect(run.stdout.trimEnd().split("\n")).toHaveLength(1);
    } finally {
      await proxy.close();
    }
  });

  it("redraws the table on a terminal until Ctrl-C", async () => {
    await dlm.acquire("job", 60_000);
    await heldEverywhere("lock:job");
    const run = startOnTty(["watch", "--prefix", "lock:", "--interval", "100"], env);
    await run.waitFor("\x1b[H\x1b[2J", 3);
    run.child.stdin?.write("\x03");
    expect(await run.exited).toBe(0);
    expect(run.stdout).toContain('redlock-kit watch "*" on 3 instances, every 100 ms; Ctrl-C to stop.');
    expect(run.stdout).toMatch(/^job +held 3\/3 /m);
  });
});
