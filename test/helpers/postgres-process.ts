/**
 * A throwaway PostgreSQL for the fencing tests, started and stopped like the redis-servers: initdb
 * into a temp dir, `postgres` listening only on a unix socket in that dir (no TCP), on a free port
 * number, stopped by its PID. PostgreSQL refuses to run as root: as root, the cluster belongs to
 * the `postgres` user (Debian's package creates it), or `nobody`.
 */
import { type ChildProcess, execFileSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import pg from "pg";
import { freePort, sleep, spawnOwned } from "./redis-process.js";

/** Where `initdb` and `postgres` are: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (newest). */
export function findPostgres(): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    const initdb = join(dir, "initdb");
    if (dir !== "" && existsSync(initdb) && existsSync(join(dir, "postgres"))) return dirname(realpathSync(initdb));
  }
  const debian = "/usr/lib/postgresql";
  if (!existsSync(debian)) return undefined;
  const versions = readdirSync(debian)
    .filter((version) => existsSync(join(debian, version, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? undefined : join(debian, versions[0], "bin");
}

/** The uid and gid to run PostgreSQL as: ours, or, as root, `postgres`'s or `nobody`'s. */
function runAs(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  for (const user of ["postgres", "nobody"]) {
    try {
      const uid = Number(execFileSync("id", ["-u", user], { encoding: "utf8" }).trim());
      const gid = Number(execFileSync("id", ["-g", user], { encoding: "utf8" }).trim());
      return { uid, gid };
    } catch {}
  }
  throw new Error("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as");
}

export class PostgresServer {
  readonly dir: string;
  readonly port: number;
  readonly #bin: string;
  readonly #user: { uid: number; gid: number } | undefined;
  #child: ChildProcess | undefined;

  constructor(bin: string, port: number) {
    this.#bin = bin;
    this.port = port;
    this.#user = runAs();
    this.dir = mkdtempSync(join(tmpdir(), "redlock-kit-pg-"));
    if (this.#user) chownSync(this.dir, this.#user.uid, this.#user.gid);
  }

  /** What `pg` connects with: the unix socket dir as host, trust authentication. */
  get config(): pg.ClientConfig {
    return { host: this.dir, port: this.port, user: "redlock", database: "postgres" };
  }

  async start(): Promise<void> {
    const data = join(this.dir, "data");
    const options = { cwd: this.dir, ...this.#user, stdio: "pipe" as const };
    // no fsync: a throwaway cluster; trust: only this dir's socket can reach it
    execFileSync(
      join(this.#bin, "initdb"),
      ["-D", data, "-U", "redlock", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"],
      options,
    );
    const { child, exited } = spawnOwned(
      join(this.#bin, "postgres"),
      ["-D", data, "-p", String(this.port), "-k", this.dir, "-c", "listen_addresses=", "-c", "fsync=off"],
      { ...options, stdio: "ignore" },
    );
    this.#child = child;
    for (let i = 0; i < 500 && !exited(); i++) {
      const client = new pg.Client(this.config);
      try {
        await client.connect();
        await client.end();
        return;
      } catch {
        await client.end().catch(() => {});
        await sleep(20);
      }
    }
    await this.stop();
    throw new Error(`postgres on socket ${this.dir} (port ${this.port}) did not start`);
  }

  /** Fast shutdown (SIGINT) by PID, then the temp dir is removed. */
  async stop(): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGINT");
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * PostgreSQL for a test file: `bin` found (start one with `startPostgres`), or the reason it is
 * not. Not installed is a visible skip on a developer's machine and an error under CI=true, where
 * `.ci/run` installs it.
 */
export function postgresAvailability():
  | { readonly bin: string }
  | { readonly bin: undefined; readonly reason: string } {
  const bin = findPostgres();
  if (bin !== undefined) return { bin };
  const reason =
    "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin): `apt-get install -y postgresql`";
  if (process.env.CI === "true") throw new Error(`${reason}. CI must run the PostgreSQL tests.`);
  return { bin: undefined, reason };
}

export async function startPostgres(bin: string): Promise<PostgresServer> {
  for (let attempt = 0; ; attempt++) {
    const server = new PostgresServer(bin, await freePort());
    try {
      await server.start();
      return server;
    } catch (error) {
      if (attempt >= 2) throw error;
    }
  }
}
