/**
 * Fencing tokens between OS processes (docs/fencing.md): each worker has its own Redlock and
 * connections and imports the BUILT core, as users run it. A witness Redis outside the quorum
 * records the fences in the order it saw the critical sections. The stale-holder tests write to a
 * Redis-held resource (fencedSet) and to a real PostgreSQL row (examples/fencing-postgres), which
 * the test starts and stops itself.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { fencedGet, fencedSet, Redlock } from "@redlock-kit/core";
import type { Redis } from "ioredis";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  deposit,
  openAccount,
  type Queryable,
  readAccount,
  writeBalance,
} from "../examples/fencing-postgres/src/accounts.js";
import { type PostgresServer, postgresAvailability, startPostgres } from "./helpers/postgres-process.js";
import { type RedisServer, useRedisServers } from "./helpers/redis-servers.js";
import { startUntilStopped } from "./helpers/stopped-child.js";

const run = promisify(execFile);
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const servers = useRedisServers(6);
const postgres = postgresAvailability();
let lockClients: Redis[] = [];
let witness: Redis;
let database: PostgresServer | undefined;

beforeAll(async () => {
  for (const built of ["../packages/core/dist/index.js", "../examples/fencing-postgres/dist/accounts.js"]) {
    expect(existsSync(new URL(built, import.meta.url)), `${built}: run \`pnpm build\` first`).toBe(true);
  }
  lockClients = servers.servers.slice(0, 5).map((server) => server.client());
  witness = (servers.servers[5] as RedisServer).client();
  if (postgres.bin !== undefined) database = await startPostgres(postgres.bin);
}, 60_000);

afterEach(async () => {
  await Promise.all([...lockClients, witness].map((client) => client.flushall()));
});

afterAll(async () => {
  await database?.stop();
});

const portsOf = (instances: number) => servers.servers.slice(0, instances).map((server) => server.port);
const witnessPort = () => (servers.servers[5] as RedisServer).port;

async function runFenceWorker(instances: number, iterations: number): Promise<void> {
  const config = { ports: portsOf(instances), witnessPort: witnessPort(), resource: "relay", iterations };
  const { stdout } = await run(process.execPath, [fixture("fence-worker.mjs"), JSON.stringify(config)], {
    timeout: 60_000,
  });
  expect(JSON.parse(stdout)).toEqual({ overlaps: 0 });
}

/** The fences in the order the witness saw the sections, checked to be decimal strings. */
async function witnessedFences(): Promise<bigint[]> {
  const fences = await witness.lrange("w:fences", 0, -1);
  for (const fence of fences) expect(fence).toMatch(/^[1-9][0-9]*$/);
  return fences.map(BigInt);
}

const strictlyIncreasing = (fences: readonly bigint[]) =>
  fences.every((fence, i) => i === 0 || fence > (fences[i - 1] as bigint));

describe.each([1, 3, 5])("fences between processes on %i instance(s)", (instances) => {
  it("strictly increase in the order a witness sees the sections: sequential processes, then contending ones", async () => {
    // two processes one after the other: the second's first fence is above the first's last
    await runFenceWorker(instances, 5);
    await runFenceWorker(instances, 5);
    // three at once, waiting for each other
    await Promise.all([0, 1, 2].map(() => runFenceWorker(instances, 8)));
    const fences = await witnessedFences();
    expect(fences).toHaveLength(34);
    expect(strictlyIncreasing(fences), fences.join(" ")).toBe(true);
    // the counters never expire, and stand at the last fence or above on a quorum: the last
    // write-back reached a quorum; a minority may be behind (docs/fencing.md, "behind")
    let atLastFence = 0;
    for (const client of lockClients.slice(0, instances)) {
      expect(await client.pttl("relay:redlock-kit:fence")).toBe(-1);
      const counter = BigInt((await client.get("relay:redlock-kit:fence")) ?? "0");
      if (counter >= (fences[fences.length - 1] as bigint)) atLastFence++;
    }
    expect(atLastFence).toBeGreaterThanOrEqual(Math.floor(instances / 2) + 1);
  }, 90_000);
});

interface HolderReport {
  fence: string;
  valid: boolean;
  written: boolean;
}

/**
 * Starts the stale holder (fixtures/fenced-holder.mjs) on 3 instances, waits until it is stopped
 * inside its section, lets `next` run (another holder acquiring and writing), resumes it, and
 * returns its report.
 */
async function withPausedHolder(target: object, next: () => Promise<string>): Promise<[HolderReport, string]> {
  const config = { ports: portsOf(3), resource: "account:acme", ttl: 1000, target };
  const holder = await startUntilStopped(fixture("fenced-holder.mjs"), config);
  try {
    const nextFence = await next();
    const { code, stdout, stderr } = await holder.resume();
    expect(code, stderr).toBe(0);
    return [JSON.parse(stdout) as HolderReport, nextFence];
  } finally {
    await holder.kill();
  }
}

/** The holder after the stale one: waits out its ttl (it is frozen, so it never releases) and takes the lock. */
async function nextHolder(write: (fence: string) => Promise<boolean>): Promise<string> {
  const dlm = new Redlock(lockClients.slice(0, 3), { fencing: true, retryDelay: 20, retryJitter: 20 });
  const lock = await dlm.acquire("account:acme", 5000, { wait: 5000 });
  try {
    expect(await write(lock.fence as string)).toBe(true);
    return lock.fence as string;
  } finally {
    await lock.release();
  }
}

describe("a holder paused (SIGSTOP) past its ttl while another process acquires and writes", () => {
  it("has its late write refused by fencedSet: the newer holder's value stays", async () => {
    const target = { kind: "redis", port: witnessPort(), key: "acme:balance" };
    const [stale, newer] = await withPausedHolder(target, () =>
      nextHolder((fence) => fencedSet(witness, "acme:balance", "newer holder", fence)),
    );
    expect(BigInt(newer)).toBeGreaterThan(BigInt(stale.fence));
    expect({ valid: stale.valid, written: stale.written }).toEqual({ valid: false, written: false });
    expect(await fencedGet(witness, "acme:balance")).toEqual({ value: "newer holder", fence: newer });
  }, 30_000);

  const pgTitle =
    postgres.bin === undefined
      ? `has its late write refused by PostgreSQL (skipped: ${postgres.reason})`
      : "has its late write refused by PostgreSQL: UPDATE … WHERE fence < $2 matches no row";
  it.skipIf(postgres.bin === undefined)(
    pgTitle,
    async () => {
      const server = database as PostgresServer;
      const db = new pg.Client(server.config);
      await db.connect();
      try {
        await openAccount(db, "acme", 100);
        const target = { kind: "postgres", connection: server.config, account: "acme" };
        const [stale, newer] = await withPausedHolder(target, () =>
          nextHolder((fence) => writeBalance(db, "acme", 150, fence)),
        );
        expect(BigInt(newer)).toBeGreaterThan(BigInt(stale.fence));
        expect({ valid: stale.valid, written: stale.written }).toEqual({ valid: false, written: false });
        expect(await readAccount(db, "acme")).toEqual({ id: "acme", balance: 150, fence: newer });
      } finally {
        await db.end();
      }
    },
    30_000,
  );
});

describe("examples/fencing-postgres", () => {
  const depositTitle =
    postgres.bin === undefined
      ? `deposit() loses no deposit to a depositor paused between its read and its write (skipped: ${postgres.reason})`
      : "deposit() loses no deposit to a depositor paused (SIGSTOP) past its ttl between its read and its write, another depositor reading meanwhile";
  it.skipIf(postgres.bin === undefined)(
    depositTitle,
    async () => {
      const server = database as PostgresServer;
      const db = new pg.Client(server.config);
      await db.connect();
      const dlm = new Redlock(lockClients.slice(0, 3), { fencing: true, retryDelay: 20, retryJitter: 20 });
      try {
        await openAccount(db, "acme", 100);
        // A deposits 10: it takes the lock, reads the account, and freezes before it writes
        const config = { ports: portsOf(3), connection: server.config, account: "acme", amount: 10 };
        const stale = await startUntilStopped(fixture("paused-depositor.mjs"), config);
        let staleBalance: number | null | undefined;
        try {
          // frozen, A cannot extend: its key lapses everywhere
          await expect
            .poll(() => Promise.all(lockClients.slice(0, 3).map((client) => client.exists("account:acme"))))
            .toEqual([0, 0, 0]);
          // B deposits 50; once it has read the account, A wakes and goes on to its write
          const resumingA: Queryable = {
            async query(text, values) {
              const result = await db.query(text, values);
              if (staleBalance === undefined && result.rows.length > 0) {
                const { code, stdout, stderr } = await stale.resume();
                expect(code, stderr).toBe(0);
                staleBalance = (JSON.parse(stdout) as { balance: number | null }).balance;
              }
              return result;
            },
          };
          const newer = await deposit(dlm, resumingA, "acme", 50);
          const final = await readAccount(db, "acme");
          // every deposit whose caller was told it went through is in the balance
          const told = 100 + (newer === undefined ? 0 : 50) + (staleBalance === null ? 0 : 10);
          expect(final?.balance).toBe(told);
          // A's write came after B had read: refused, and A was told so
          expect({ a: staleBalance, b: newer }).toEqual({ a: null, b: 150 });
        } finally {
          await stale.kill();
        }
      } finally {
        await dlm.quit();
        await db.end();
      }
    },
    30_000,
  );

  const mainTitle =
    postgres.bin === undefined
      ? `dist/main.js plays the scenario (skipped: ${postgres.reason})`
      : "dist/main.js plays the scenario and exits 0, PostgreSQL having refused A's late write";
  it.skipIf(postgres.bin === undefined)(
    mainTitle,
    async () => {
      const server = database as PostgresServer;
      const config = server.config;
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        REDIS_URL: portsOf(3)
          .map((port) => `redis://127.0.0.1:${port}`)
          .join(","),
        PGHOST: config.host,
        PGPORT: String(config.port),
        PGUSER: config.user,
        PGDATABASE: config.database,
      };
      delete env.DATABASE_URL;
      const main = fileURLToPath(new URL("../examples/fencing-postgres/dist/main.js", import.meta.url));
      const { stdout } = await run(process.execPath, [main], { env, timeout: 30_000 });
      expect(stdout).toMatch(/A holds the lock with fence 1 and reads balance 100/);
      expect(stdout).toMatch(/B takes the lock with fence 2 and writes 150: accepted/);
      expect(stdout).toMatch(/A wakes \(lock valid: false\) and writes 110 with fence 1: refused/);
      expect(stdout).toMatch(/the row: balance 150, fence 2/);
    },
    30_000,
  );
});
