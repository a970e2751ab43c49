import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import net from "node:net";
import { tmpdir } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { probeRedis } from "./probe.js";

/** One redis-server process started by {@link startThrowawayRedis}. */
export interface ThrowawayServer {
  readonly port: number;
  readonly pid: number;
}

/** A set of redis-server processes that live only as long as this process. */
export interface ThrowawayRedis {
  readonly servers: readonly ThrowawayServer[];
  /** Stops every server by its PID (SIGTERM, then SIGKILL if it lingers); safe to call twice. */
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
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

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
  await exited;
  clearTimeout(timer);
}

interface Started {
  readonly child: ChildProcess;
  readonly port: number;
  readonly pid: number;
}

async function startOne(env: NodeJS.ProcessEnv): Promise<Started> {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    // no persistence: these servers hold demo locks only, and must leave no files behind
    const child = spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"],
      { stdio: "ignore", env, cwd: tmpdir() },
    );
    // rejects with ENOENT when redis-server is not on PATH
    await once(child, "spawn");
    // a failed kill() is reported as an 'error' event, which would crash the process unheard
    child.on("error", () => {});
    for (let i = 0; i < 250 && child.exitCode === null && child.signalCode === null; i++) {
      if (await probeRedis({ host: "127.0.0.1", port }, 200)) {
        return { child, port, pid: child.pid as number };
      }
      await sleep(20);
    }
    await stopChild(child);
    // another process may have taken the port between freePort() and the start
    if (attempt >= 3) throw new Error(`redis-server did not start on 127.0.0.1:${port}`);
  }
}

/**
 * Starts `count` redis-server processes on free loopback ports, without persistence, and makes
 * sure they are stopped when this process exits, even without a call to `stop()`.
 * Rejects with an ENOENT error when `redis-server` is not on the PATH of `env`.
 *
 * @example
 * const redis = await startThrowawayRedis(3);
 * const dlm = new Redlock(redis.servers.map(({ port }) => ({ host: "127.0.0.1", port })));
 * // ...
 * await dlm.quit();
 * await redis.stop();
 */
export async function startThrowawayRedis(count = 3, env: NodeJS.ProcessEnv = process.env): Promise<ThrowawayRedis> {
  const started: Started[] = [];
  // 'exit' listeners must be synchronous: kill() is, waiting for the child is not
  const killAll = () => {
    for (const { child } of started) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  };
  process.once("exit", killAll);
  const stop = async () => {
    process.removeListener("exit", killAll);
    await Promise.all(started.map(({ child }) => stopChild(child)));
  };
  const results = await Promise.allSettled(Array.from({ length: count }, () => startOne(env)));
  for (const result of results) if (result.status === "fulfilled") started.push(result.value);
  const failed = results.find((result) => result.status === "rejected");
  if (failed) {
    await stop();
    throw failed.reason;
  }
  return { servers: started.map(({ port, pid }) => ({ port, pid })), stop };
}
