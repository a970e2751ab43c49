/**
 * Real redis-server processes on free loopback ports, started and stopped by their own PIDs
 * (spawned without a shell, so the PID is the server's). Free of vitest, so that the benchmark
 * (bench/) starts its servers with the same code as the tests.
 */
import { type ChildProcess, type SpawnOptions, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
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

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Sends PING over a raw socket; resolves true on +PONG. */
function ping(port: number, timeoutMs = 200): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("error", () => done(false));
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.once("data", (data) => done(data.toString().startsWith("+PONG")));
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
      if (await ping(this.port)) return;
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
