import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, type RedisServer, startServer } from "#test-helpers/redis.js";
import { createTestCertificates, type TestCertificates } from "#test-helpers/tls.js";
import { runCli } from "./helpers/run-cli.js";

/** A server with a TLS port beside its plain one, its certificate signed by a CA of the test's own. */
let certificates: TestCertificates;
let server: RedisServer;
let tls: string;

beforeAll(async () => {
  certificates = createTestCertificates();
  const port = await freePort();
  server = await startServer({ args: certificates.serverArgs(port) });
  tls = `rediss://127.0.0.1:${port}`;
}, 30_000);

afterAll(async () => {
  await server?.stop();
  certificates?.remove();
});

const PROCESS_TIMEOUT = { timeout: 90_000 };

describe("redlock-kit on rediss:// URLs", PROCESS_TIMEOUT, () => {
  it("says how to trust a private CA when the server's certificate is not trusted, and reads the lock once it is", async () => {
    await server.client().set("lock:job", "holder", "PX", 60_000);
    const untrusted = await runCli(["inspect", "job", "--prefix", "lock:", "--redis", tls]);
    expect(untrusted.code).toBe(3);
    // Node's "self-signed certificate in certificate chain" named no way to give the CLI the CA
    expect(untrusted.stdout).toMatch(
      / unknown +- +- +[^\n]*certificate[^\n]* \(trust the server's CA with NODE_EXTRA_CA_CERTS=\/path\/to\/ca\.pem\)$/m,
    );
    const trusted = await runCli(["inspect", "job", "--prefix", "lock:", "--redis", tls], {
      NODE_EXTRA_CA_CERTS: join(certificates.dir, "ca.crt"),
    });
    expect({ code: trusted.code, stderr: trusted.stderr }).toEqual({ code: 0, stderr: "" });
    expect(trusted.stdout).toContain("on 1 of 1 instances");
  });

  it("says that a rediss:// URL may reach a server without TLS when its connection times out", async () => {
    const plain = `rediss://127.0.0.1:${server.port}`;
    const run = await runCli(["inspect", "job", "--redis", plain, "--timeout", "300"]);
    expect(run.code).toBe(3);
    expect(run.stdout).toMatch(/ unknown +- +- +connect ETIMEDOUT \(TLS: does the server take TLS on this port\?\)$/m);
  });
});
