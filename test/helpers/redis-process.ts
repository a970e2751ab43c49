/**
 * Real redis-server processes on free loopback ports, started and stopped by their own PIDs
 * (spawned without a shell, so the PID is the server's). Free of vitest, so that the benchmark
 * (bench/) starts its servers with the same code as the tests.
 */
import { type ChildProcess, type SpawnOptions, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis, type RedisOptions } from "ioredis";

const started = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of started) child.kill("SIGKILL");
});

/**
 * Spawns a server process the harness owns: SIGKILLed if this process exits first. `exited()` tells
 * whether it already ended (a failed start).
 */
export function spawnOwned(command: string, args: readonly string[], options: SpawnOptions) {
  const child = spawn(command, args, options);
  started.add(child);
  let exited = false;
  child.once("exit", () => {
    exited = true;
    started.delete(child);
  });
  return { child, exited: () => exited };
}

/*
 * Ports for servers come from a block of this vitest worker's own (VITEST_POOL_ID), below the
 * kernel's ephemeral range: a server killed for a while keeps its port for restart() and its clients
 * keep reconnecting to it, and a listen(0) anywhere (an HTTP app, a proxy, another test file's
 * servers) could otherwise get that port meanwhile, where restart() or those clients would find
 * another file's server. Three blocks of 3,333 from 10000 (vitest.config.ts runs three workers),
 * their Cluster bus ports (port + 10000) from 20000; listen(0) outside them (bench/, a fourth
 * worker), or where the ephemeral range reaches below 30000.
 */
const BLOCKS_FROM = 10_000;
export const BLOCK_SIZE = 3_333;
const BLOCKS = 3;
const BUS_OFFSET = 10_000;
/** Every port handed out by this process: never twice, even once its server is gone. */
const handedOut = new Set<number>();

function ephemeralFrom(): number {
  try {
    return Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
  } catch {
    return 32_768; // not Linux: macOS and Windows start at 49152
  }
}

function ownBlock(): number | undefined {
  const pool = Number(process.env.VITEST_POOL_ID);
  if (!Number.isInteger(pool) || pool < 1 || pool > BLOCKS) return undefined;
  if (ephemeralFrom() < BLOCKS_FROM + BLOCKS * BLOCK_SIZE + BUS_OFFSET) return undefined;
  return BLOCKS_FROM + (pool - 1) * BLOCK_SIZE;
}

function listenOn(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

const canListen = (port: number) =>
  listenOn(port).then(
    () => true,
    () => false,
  );

export async function freePort(): Promise<number> {
  const first = ownBlock();
  if (first === undefined) return listenOn(0);
  const offset = Math.floor(Math.random() * BLOCK_SIZE);
  for (let i = 0; i < BLOCK_SIZE; i++) {
    const port = first + ((offset + i) % BLOCK_SIZE);
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    if ((await canListen(port)) && (await canListen(port + BUS_OFFSET))) return port;
  }
  throw new Error(`no free port left in ${first}-${first + BLOCK_SIZE - 1}`);
}

/**
 * Sends PING and INFO over a raw socket; resolves true on +PONG from process `pid`. Another
 * process's server on the port (one that took it while this one was down) is not this one.
 */
function answers(port: number, pid: number, timeoutMs = 200): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    let reply = "";
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("error", () => done(false));
    socket.once("connect", () => socket.write("PING\r\nINFO server\r\n"));
    socket.on("data", (data) => {
      reply += data.toString();
      if (!"+PONG".startsWith(reply.slice(0, 5))) return done(false);
      const id = /\r\nprocess_id:(\d+)\r\n/.exec(reply);
      if (id) done(Number(id[1]) === pid);
    });
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export interface ServerOptions {
  /** Extra redis-server arguments, e.g. ["--appendonly", "yes"]. */
  args?: string[];
}

/** One redis-server process the harness owns. */
export class RedisServer {
  readonly port: number;
  readonly dir: string;
  #child: ChildProcess | undefined;
  #paused = false;
  readonly #args: string[];
  readonly #clients = new Set<Redis>();

  constructor(port: number, options: ServerOptions = {}) {
    this.port = port;
    this.dir = mkdtempSync(join(tmpdir(), `redlock-kit-${port}-`));
    this.#args = options.args ?? [];
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  async start(): Promise<void> {
    const { child, exited } = spawnOwned(
      "redis-server",
      [
        "--port",
        String(this.port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--enable-debug-command",
        "local",
        "--daemonize",
        "no",
        "--dir",
        this.dir,
        "--logfile",
        "",
        ...this.#args,
      ],
      { stdio: "ignore" },
    );
    this.#child = child;
    for (let i = 0; i < 250; i++) {
      if (exited()) break;
      if (await answers(this.port, child.pid as number)) return;
      await sleep(20);
    }
    this.#child = undefined;
    child.kill("SIGKILL");
    throw new Error(`redis-server on port ${this.port} did not start`);
  }

  /** SIGSTOP: the server accepts connections (kernel backlog) but answers nothing. */
  pause(): void {
    this.#signal("SIGSTOP");
    this.#paused = true;
  }

  resume(): void {
    this.#signal("SIGCONT");
    this.#paused = false;
  }

  /** kill -9, keeping the port for restart(); all in-memory state is lost. */
  async kill(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = undefined;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    if (this.#paused) child.kill("SIGCONT");
    this.#paused = false;
    child.kill("SIGKILL");
    await exited;
  }

  async restart(): Promise<void> {
    await this.kill();
    await this.start();
  }

  /** A client with pinned options; closed by stop(). */
  client(options: RedisOptions = {}): Redis {
    const client = new Redis({
      host: "127.0.0.1",
      port: this.port,
      maxRetriesPerRequest: 1,
      retryStrategy: (times) => Math.min(times * 20, 200),
      ...options,
    });
    client.on("error", () => {});
    this.#clients.add(client);
    client.once("end", () => this.#clients.delete(client));
    return client;
  }

  async stop(): Promise<void> {
    for (const client of this.#clients) client.disconnect();
    this.#clients.clear();
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }

  #signal(signal: NodeJS.Signals): void {
    if (!this.#child?.pid) throw new Error(`redis-server on port ${this.port} is not running`);
    process.kill(this.#child.pid, signal);
  }
}

export async function startServer(options?: ServerOptions): Promise<RedisServer> {
  for (let attempt = 0; ; attempt++) {
    const server = new RedisServer(await freePort(), options);
    try {
      await server.start();
      return server;
    } catch (error) {
      // another process may have taken the port between freePort() and the start
      await server.stop();
      if (attempt >= 3) throw error;
    }
  }
}

export async function startServers(count: number, options?: ServerOptions): Promise<RedisServer[]> {
  return Promise.all(Array.from({ length: count }, () => startServer(options)));
}

/** Every key on the server with its PTTL. */
export async function keysWithTtl(client: Redis, pattern = "*"): Promise<Map<string, number>> {
  const result = new Map<string, number>();
  for (const key of await client.keys(pattern)) result.set(key, await client.pttl(key));
  return result;
}

export { sleep };

/**
 * Resolves once `ms` have passed on the wall clock, the clock Redis expires keys by: a timer on
 * Node's monotonic clock may fire a little early on it.
 */
export async function pastOnWallClock(ms: number): Promise<void> {
  const from = Date.now();
  while (Date.now() <= from + ms) await sleep(from + ms + 1 - Date.now());
}
