import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const packagesDir = fileURLToPath(new URL("../packages/", import.meta.url));
const packages = readdirSync(packagesDir).map((dir) => {
  const manifest = JSON.parse(readFileSync(`${packagesDir}${dir}/package.json`, "utf8")) as { name: string };
  return manifest.name;
});
const requireAll = fileURLToPath(new URL("./fixtures/require-all.cjs", import.meta.url));

describe("built packages", () => {
  it("load with require() from CommonJS and with import(), exposing the same names", async () => {
    const cwd = fileURLToPath(new URL(".", import.meta.url));
    const { stdout } = await run(process.execPath, [requireAll, JSON.stringify(packages)], { cwd });
    const required = JSON.parse(stdout) as Record<string, string[]>;
    const script = `const names = ${JSON.stringify(packages)}; const out = {}; for (const n of names) out[n] = Object.keys(await import(n)).sort(); process.stdout.write(JSON.stringify(out));`;
    const imported = JSON.parse((await run(process.execPath, ["--input-type=module", "-e", script], { cwd })).stdout);
    // require(esm) adds interop names (__esModule when there is a default export, "module.exports")
    const named = (keys: string[] = []) =>
      keys.filter((key) => !["default", "module.exports", "__esModule"].includes(key));
    for (const name of packages) {
      expect(required[name]?.length, name).toBeGreaterThan(0);
      expect(named(required[name]), name).toEqual(named(imported[name]));
    }
    expect(required["@redlock-kit/core"]).toContain("Redlock");
  });
});
