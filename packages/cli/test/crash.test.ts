import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { Readable } from "node:stream";
import { type CliIo, readArgs, runCli } from "@redlock-kit/cli";
import { Redlock } from "@redlock-kit/core";
import { beforeAll, describe, expect, it } from "vitest";
import { type RedisServer, useRedisServers } from "#test-helpers/redis.js";
import { collect } from "../src/commands/list.js";
import { connect } from "../src/connect.js";
import { BIN } from "./helpers/run-cli.js";

const redis = useRedisServers(1);
let url: string;

beforeAll(async () => {
  const server = redis.servers[0] as RedisServer;
  url = `redis://127.0.0.1:${server.port}`;
  // held: a verdict of 0, which a crash's exit 1 would turn into "free" for a script
  await new Redlock([server.client()]).acquire("order:42", 600_000);
});

/** A stream that keeps what is written. */
function sink(): NodeJS.WritableStream & { text: string } {
  const stream = {
    text: "",
    write(chunk: string) {
      stream.text += chunk;
      return true;
    },
  };
  return stream as unknown as NodeJS.WritableStream & { text: string };
}

describe("an error nobody expected (a bug, a dependency's failure)", { timeout: 90_000 }, () => {
  it("makes runCli resolve to 70, no verdict's code, with one line on stderr", async () => {
    // a bug's TypeError was taken for core refusing the resource (exit 2), any other error for an outage (exit 3)
    for (const thrown of [new TypeError("Cannot read properties of undefined (reading 'holder')"), new Error("boom")]) {
      const stderr = sink();
      const io: CliIo = {
        stdin: Readable.from([]),
        stdout: {
          write: () => {
            throw thrown;
          },
        } as unknown as NodeJS.WritableStream,
        stderr,
        env: {},
      };
      const code = await runCli(["inspect", "order:42", "--redis", url], io);
      expect({ code, stderr: stderr.text }).toEqual({
        code: 70,
        stderr: `redlock-kit: unexpected error, no verdict: ${thrown.name}: ${thrown.message}\n`,
      });
    }
  });

  it("makes the binary exit 70 with one line on stderr, not 1 and a stack trace (stdout on a full disk)", async () => {
    const full = openSync("/dev/full", "w");
    try {
      const child = spawn(process.execPath, [BIN, "inspect", "order:42", "--redis", url], {
        stdio: ["ignore", full, "pipe"],
      });
      let stderr = "";
      child.stderr?.on("data", (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      const code = await new Promise((resolve) => child.once("close", resolve));
      expect({ code, stderr }).toEqual({
        code: 70,
        stderr: "redlock-kit: unexpected error, no verdict: Error: ENOSPC: no space left on device, write\n",
      });
    } finally {
      closeSync(full);
    }
  });

  it("in list, is no name core refuses: the run fails with it rather than leave a lock out", async () => {
    const server = redis.servers[0] as RedisServer;
    // an empty resource name, which core refuses: no lock, skipped
    await server.client().set("", "x", "PX", 600_000);
    const args = readArgs(["list", "--redis", url], {});
    const instances = await connect(args.urls, args.prefix, args.timeout, false);
    try {
      const bug = new TypeError("Cannot read properties of undefined (reading 'holder')");
      const buggy = {
        ...instances,
        inspect: (resource: string) => (resource === "order:42" ? Promise.reject(bug) : instances.inspect(resource)),
      };
      // the held lock's row was dropped without a word, as if core had refused its name
      await expect(collect(args, buggy)).rejects.toBe(bug);
      expect((await collect(args, instances)).locks.map((view) => view.resource)).toEqual(["order:42"]);
    } finally {
      instances.close();
    }
  });
});
