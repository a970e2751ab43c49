/**
 * A throwaway CA and a server certificate for 127.0.0.1/localhost, made with openssl as in
 * docs/reliability.md §4, and redis-server arguments that add a TLS port next to the plain one.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestCertificates {
  readonly dir: string;
  /** PEM of the CA, for the client's `tls.ca`. */
  readonly ca: string;
  /** redis-server arguments for a TLS listener on `port` (clients are not asked for certificates). */
  serverArgs(port: number): string[];
  remove(): void;
}

export function createTestCertificates(): TestCertificates {
  const dir = mkdtempSync(join(tmpdir(), "redlock-kit-tls-"));
  const file = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => execFileSync("openssl", args, { stdio: "pipe" });
  openssl(
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    file("ca.key"),
    "-out",
    file("ca.crt"),
    "-days",
    "2",
    "-subj",
    "/CN=redlock-kit-test-ca",
  );
  openssl(
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    file("redis.key"),
    "-out",
    file("redis.csr"),
    "-subj",
    "/CN=127.0.0.1",
  );
  writeFileSync(file("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  openssl(
    "x509",
    "-req",
    "-in",
    file("redis.csr"),
    "-CA",
    file("ca.crt"),
    "-CAkey",
    file("ca.key"),
    "-CAcreateserial",
    "-out",
    file("redis.crt"),
    "-days",
    "2",
    "-extfile",
    file("ext.cnf"),
  );
  return {
    dir,
    ca: readFileSync(file("ca.crt"), "utf8"),
    serverArgs: (port) => [
      "--tls-port",
      String(port),
      "--tls-cert-file",
      file("redis.crt"),
      "--tls-key-file",
      file("redis.key"),
      "--tls-ca-cert-file",
      file("ca.crt"),
      "--tls-auth-clients",
      "no",
    ],
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
