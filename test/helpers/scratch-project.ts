/**
 * A user's own project, outside the workspace: the public packages packed with `pnpm pack`,
 * installed from their tarballs with npm, and Node and tsc run there as the user would run them.
 * Nothing in it resolves through the workspace: it lives in the OS temp directory, and npm runs
 * without the npm_* variables that `pnpm test` puts in the environment.
 */
import { execFile } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const exec = promisify(execFile);
export const workspaceRoot = fileURLToPath(new URL("../../", import.meta.url));
const fixtures = fileURLToPath(new URL("../fixtures/packaging/", import.meta.url));

export interface Manifest {
  name: string;
  version: string;
  private?: boolean;
  bin?: string | Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  [field: string]: unknown;
}

export interface PublicPackage {
  /** The folder under packages/, e.g. "express". */
  readonly dir: string;
  readonly name: string;
  readonly manifest: Manifest;
}

export function readJson<T>(path: string): T {
  return JSON.parse(readFileSync(path, "utf8")) as T;
}

/** Every packages/* whose package.json is not private: new packages join without a list to edit. */
export function publicPackages(): PublicPackage[] {
  const packagesDir = join(workspaceRoot, "packages");
  return readdirSync(packagesDir)
    .map((dir) => ({ dir, manifest: readJson<Manifest>(join(packagesDir, dir, "package.json")) }))
    .filter(({ manifest }) => !manifest.private)
    .map(({ dir, manifest }) => ({ dir, name: manifest.name, manifest }));
}

/** The environment a user's shell would give npm: none of the npm_/pnpm_ settings of `pnpm test`. */
function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^(npm_|pnpm_|INIT_CWD$|NODE_OPTIONS$|VITEST)/i.test(key)) env[key] = value;
  }
  return { ...env, ...extra };
}

/** `pnpm pack` of each package into `dest`; resolves to the tarball path by package name. */
export async function packAll(packages: readonly PublicPackage[], dest: string): Promise<Map<string, string>> {
  const tarballs = new Map<string, string>();
  for (const pkg of packages) {
    const cwd = join(workspaceRoot, "packages", pkg.dir);
    const { stdout } = await exec("pnpm", ["pack", "--json", "--pack-destination", dest], { cwd, env: userEnv() });
    tarballs.set(pkg.name, (JSON.parse(stdout) as { filename: string }).filename);
  }
  return tarballs;
}

export interface TypecheckRun {
  options: Record<string, unknown>;
  files: readonly string[];
  /** Write the output (outDir in `options`). */
  emit?: boolean;
  /** Packages whose exported names to list. */
  exportsOf?: readonly string[];
}

export interface TypecheckReport {
  /** tsc-style text, empty when clean. */
  diagnostics: string;
  exports: Record<string, string[] | null>;
}

export class ScratchProject {
  readonly dir: string;

  constructor(prefix: string) {
    this.dir = mkdtempSync(join(tmpdir(), `redlock-kit-${prefix}-`));
    writeFileSync(
      join(this.dir, "package.json"),
      `${JSON.stringify({ name: `scratch-${prefix}`, private: true, type: "module" }, null, 2)}\n`,
    );
    cpSync(fixtures, this.dir, { recursive: true });
  }

  /** `npm install` as a user would type it; the npm cache serves what it holds without asking the registry. */
  async install(specs: readonly string[]): Promise<void> {
    await exec("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error", ...specs], {
      cwd: this.dir,
      env: userEnv(),
      timeout: 240_000,
      maxBuffer: 16 * 1024 * 1024,
    });
  }

  /** Runs a file of the project with this Node; resolves to its stdout, rejects with its stderr. */
  async node(file: string, args: readonly string[] = [], env: Record<string, string> = {}, timeout = 60_000) {
    const { stdout } = await exec(process.execPath, [file, ...args], {
      cwd: this.dir,
      env: userEnv(env),
      timeout,
      maxBuffer: 16 * 1024 * 1024,
    });
    return stdout;
  }

  /**
   * Type-checks `files` under `options` with the project's own TypeScript (fixtures/packaging/typecheck.mjs):
   * the diagnostics of the samples and of the installed @redlock-kit declarations, formatted.
   */
  async typecheck(run: TypecheckRun): Promise<TypecheckReport> {
    return JSON.parse(await this.node("typecheck.mjs", [JSON.stringify(run)], {}, 300_000)) as TypecheckReport;
  }

  write(file: string, text: string): void {
    mkdirSync(join(this.dir, file, ".."), { recursive: true });
    writeFileSync(join(this.dir, file), text);
  }

  /** The version npm installed for `name`, read from its folder (some packages do not export package.json). */
  installedVersion(name: string): string | undefined {
    try {
      return readJson<Manifest>(join(this.dir, "node_modules", name, "package.json")).version;
    } catch {
      return undefined;
    }
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
