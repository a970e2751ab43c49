import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const src = (pkg: string) => fileURLToPath(new URL(`./packages/${pkg}/src/index.ts`, import.meta.url));

export default defineConfig({
  resolve: {
    // tests run against the sources; test/packaging.test.ts checks the packed tarballs separately
    alias: {
      "@redlock-kit/core": src("core"),
      "@redlock-kit/express": src("express"),
      "@redlock-kit/koa": src("koa"),
      "@redlock-kit/fastify": src("fastify"),
      "@redlock-kit/decorators": src("decorators"),
      "@redlock-kit/hono": src("hono"),
      "@redlock-kit/nestjs": src("nestjs"),
      "@redlock-kit/cli": src("cli"),
      "@redlock-kit/opentelemetry": src("opentelemetry"),
      // the shared test harness (Redis processes and topologies, leak invariants), for every package's tests
      "#test-helpers": fileURLToPath(new URL("./test/helpers", import.meta.url)),
    },
  },
  test: {
    include: ["packages/*/test/**/*.test.ts", "test/**/*.test.ts", "examples/*/test/**/*.test.ts"],
    globalSetup: ["./test/helpers/global-setup.ts"],
    pool: "forks",
    // Three test files at a time on 2 vCPUs (vitest's default there is one): most files wait on
    // lock ttls, timers and child processes rather than compute. In CI-like runs (900 s budget for
    // the whole run) the tests took 579 s two at a time, 434–457 s three at a time (509 s beside a
    // busy loop, 658 s beside two). Every Redis server (a port block per worker:
    // test/helpers/redis-process.ts), HTTP port and key is a file's own. `pnpm test` runs
    // test/reliability/thundering-start.test.ts alone, after the others: its 50 forked processes
    // stall both vCPUs for seconds, and a file beside it lost its 1 s locks
    // (test/examples.test.ts answered 409; packages/fastify/test/send-file.test.ts before).
    maxWorkers: 3,
    minWorkers: 1,
    testTimeout: 20_000,
    hookTimeout: 30_000,
    // expect.poll waits for a state (a subscription, a queue entry, a key gone), never times
    // anything: its 1 s default is a race on a loaded 2-vCPU machine (a server-identity test lost
    // it once while other suites ran beside it)
    expect: { poll: { timeout: 10_000 } },
  },
});
