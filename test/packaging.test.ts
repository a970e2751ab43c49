/**
 * The packages as a user gets them: packed with `pnpm pack`, installed from the tarballs with npm
 * into projects outside the workspace (one from the README's install lines, on the newest majors;
 * one on the lowest version of every peer range), then loaded, run against
 * redis-server and type-checked there. Needs the built dist (`pnpm build`; `pnpm test` runs it).
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { checkPackage, createPackageFromTarballData } from "@arethetypeswrong/core";
import { publint } from "publint";
import { formatMessage } from "publint/utils";
import semver from "semver";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pendingReleases } from "./helpers/changesets.js";
import { installLines } from "./helpers/readme-install.js";
import { useRedisServers } from "./helpers/redis-servers.js";
import {
  type Manifest,
  type PublicPackage,
  packAll,
  publicPackages,
  readJson,
  ScratchProject,
  type TypecheckReport,
  type TypecheckRun,
  workspaceRoot,
} from "./helpers/scratch-project.js";

const exec = promisify(execFile);
const packages = publicPackages();
const names = packages.map((pkg) => pkg.name);
const root = readJson<Manifest & { repository: { url: string }; devDependencies: Record<string, string> }>(
  join(workspaceRoot, "package.json"),
);
const fixtures = join(workspaceRoot, "test", "fixtures", "packaging");

/** The apps that run in a scratch project, by package folder, and what each needs besides the package's peers. */
const apps: Record<string, { file: string; needs: string[] }> = {
  express: { file: "express-app.cjs", needs: [] },
  koa: { file: "koa-app.mjs", needs: ["@koa/router"] },
  fastify: { file: "fastify-app.mjs", needs: [] },
  decorators: { file: "out/decorators-app.js", needs: [] },
};
/** Installed besides the packages: the compiler the workspace builds with, and the types a TypeScript user adds. */
const typeTools = [`typescript@${root.devDependencies.typescript}`, "@types/node@20"];
const typeSampleTools = ["@types/express", "@types/koa"];

const resolutions = {
  NodeNext: { module: "nodenext", moduleResolution: "nodenext" },
  bundler: { module: "esnext", moduleResolution: "bundler" },
  node10: { module: "commonjs", moduleResolution: "node10", esModuleInterop: true },
} as const;
type Resolution = keyof typeof resolutions;
/** For a test that runs Node in a scratch project; for one that waits for the type-check queue. */
const RUNS = 60_000;
const TYPECHECKS = 300_000;
/** A strict user's settings; noUnusedLocals makes a sample that imports a name without using it fail. */
const strictUser = { strict: true, noUnusedLocals: true, target: "es2022", noEmit: true, skipLibCheck: false };

/** The majors a range admits: `^4.21.0 || ^5.0.0` → [4, 5]. */
function majorsOf(range: string): number[] {
  return Array.from({ length: 100 }, (_, major) => major).filter((major) =>
    semver.intersects(range, `>=${major}.0.0 <${major + 1}.0.0`),
  );
}

/** A file that imports every package's types, so that their whole declaration graph is checked. */
const allPackagesFile = (pkgs: readonly PublicPackage[]) =>
  `${pkgs.map((pkg, i) => `import type * as p${i} from "${pkg.name}";`).join("\n")}\n` +
  `export type AllPackages = [${pkgs.map((_, i) => `typeof p${i}`).join(", ")}];\n`;

/** The run that type-checks these packages' samples (test/fixtures/packaging/types/<dir>.ts) under one resolution. */
function sampleRun(project: ScratchProject, pkgs: readonly PublicPackage[], resolution: Resolution): TypecheckRun {
  project.write("all-packages.ts", allPackagesFile(pkgs));
  const samples = pkgs.map((pkg) => `types/${pkg.dir}.ts`).filter((file) => existsSync(join(fixtures, file)));
  // a CommonJS file require()s the packages: TypeScript allows it under nodenext only
  const cjs = resolution === "NodeNext" && pkgs.some((pkg) => pkg.dir === "express") ? ["types/require.cts"] : [];
  return {
    options: { ...strictUser, ...resolutions[resolution] },
    files: ["all-packages.ts", ...samples, ...cjs],
    exportsOf: pkgs.map((pkg) => pkg.name),
  };
}

// created by beforeAll (so that a run that filters these tests out leaves nothing behind), removed by afterAll
let work: string;
let newest: ScratchProject;
let lowest: ScratchProject;
let tarballs = new Map<string, string>();
/** The packages as published: package.json read from each tarball. */
const published = new Map<string, Manifest>();
/** Packages with a peer outside @redlock-kit; installed in `lowest` with each such peer at its floor. */
let withPeers: PublicPackage[] = [];
/** Each such peer's floor: the lowest version its range admits (the highest of them, where two packages name it). */
const floors = new Map<string, string>();
const typechecks = new Map<string, Promise<TypecheckReport>>();
let typecheckQueue: Promise<unknown> = Promise.resolve();

const externalPeers = (pkg: PublicPackage) =>
  Object.entries(published.get(pkg.name)?.peerDependencies ?? {}).filter(([peer]) => !peer.startsWith("@redlock-kit/"));

/** The `@redlock-kit/*` packages `pkg` depends on (not as peers): they come from their tarballs too. */
const workspaceDependencies = (pkg: PublicPackage) =>
  Object.keys(published.get(pkg.name)?.dependencies ?? {}).filter((name) => name.startsWith("@redlock-kit/"));

const redis = useRedisServers(1);
const redisEnv = () => ({ REDIS_URL: `redis://127.0.0.1:${redis.servers[0]?.port}` });

beforeAll(async () => {
  for (const pkg of packages) {
    if (!existsSync(join(workspaceRoot, "packages", pkg.dir, "dist")))
      throw new Error(`packages/${pkg.dir}/dist is missing: run \`pnpm build\` first`);
  }
  work = mkdtempSync(join(tmpdir(), "redlock-kit-packs-"));
  newest = new ScratchProject("newest");
  lowest = new ScratchProject("lowest");
  tarballs = await packAll(packages, work);
  for (const pkg of packages) {
    const unpacked = join(work, "unpacked", pkg.dir);
    mkdirSync(unpacked, { recursive: true });
    await exec("tar", ["-xzf", tarballs.get(pkg.name) ?? "", "-C", unpacked]);
    published.set(pkg.name, readJson<Manifest>(join(unpacked, "package", "package.json")));
  }

  for (const pkg of packages) {
    for (const [peer, range] of externalPeers(pkg)) {
      const floor = semver.minVersion(range)?.version ?? range;
      if (semver.gt(floor, floors.get(peer) ?? "0.0.0")) floors.set(peer, floor);
    }
  }
  withPeers = packages.filter((pkg) => externalPeers(pkg).length > 0);
  const asTarball = (spec: string) => tarballs.get(spec) ?? spec;

  await Promise.all([
    newest.install([...new Set(installLines().flat())].map(asTarball).concat(typeTools, typeSampleTools)),
    lowest.install([
      ...[...new Set(withPeers.flatMap((pkg) => [pkg.name, ...workspaceDependencies(pkg)]))].map(asTarball),
      ...[...floors].map(([peer, floor]) => `${peer}@${floor}`),
      ...withPeers.flatMap((pkg) => apps[pkg.dir]?.needs ?? []),
      ...typeTools,
    ]),
  ]);

  // tsc is the slow part: the checks start now, one after another (one core for them, the other for
  // the tests meanwhile), and each test waits for its own
  const start = (key: string, project: ScratchProject, run: () => TypecheckRun) => {
    const report = typecheckQueue.then(() => project.typecheck(run()));
    typecheckQueue = report.catch(() => {}); // awaited, and reported, by its test
    typechecks.set(key, report);
  };
  start("decorators-app", newest, () => ({
    options: {
      ...resolutions.NodeNext,
      strict: true,
      target: "es2022",
      skipLibCheck: true,
      experimentalDecorators: true,
      emitDecoratorMetadata: true,
      outDir: "out",
    },
    files: ["decorators-app.ts"],
    emit: true,
  }));
  for (const resolution of Object.keys(resolutions) as Resolution[]) {
    start(resolution, newest, () => sampleRun(newest, packages, resolution));
  }
  const installedLow = packages.filter((pkg) => lowest.installedVersion(pkg.name) !== undefined);
  start("lowest", lowest, () => sampleRun(lowest, installedLow, "NodeNext"));
}, 300_000);

afterAll(async () => {
  // no tsc left running in a folder about to go, even when a test failed before waiting for it
  await typecheckQueue;
  newest?.remove();
  lowest?.remove();
  if (work) rmSync(work, { recursive: true, force: true });
}, 300_000);

async function typecheck(key: string): Promise<TypecheckReport> {
  const report = await typechecks.get(key);
  if (!report) throw new Error(`no type check ${key}`);
  expect(report.diagnostics, `type check ${key}`).toBe("");
  return report;
}

async function expectNoKeysLeft(): Promise<void> {
  expect(await redis.servers[0]?.client().dbsize()).toBe(0);
}

/** Loads `loaded` with import() and with require() from CommonJS in `project`; resolves to the names imported. */
async function loadsBothWays(project: ScratchProject, loaded: readonly string[]): Promise<Record<string, string[]>> {
  const imported = JSON.parse(await project.node("import-all.mjs", [JSON.stringify(loaded)]));
  const required = JSON.parse(await project.node("require-all.cjs", [JSON.stringify(loaded)]));
  // require(esm) adds interop names (__esModule when there is a default export, "module.exports")
  const named = (keys: string[] = []) =>
    keys.filter((key) => !["default", "module.exports", "__esModule"].includes(key));
  for (const name of loaded) {
    expect(imported[name]?.length, name).toBeGreaterThan(0);
    expect(named(required[name]), name).toEqual(named(imported[name]));
  }
  return imported;
}

async function runHttpApp(project: ScratchProject, dir: string): Promise<void> {
  const result = JSON.parse(await project.node(apps[dir]?.file ?? "", [], redisEnv()));
  expect(result.free, dir).toEqual({ status: 200, retryAfter: null, body: { paid: "1", resources: ["order:1"] } });
  expect(result.held.status, dir).toBe(423);
  expect(result.held.body, dir).toEqual({ error: "Resource is locked" });
  expect(Number(result.held.retryAfter), dir).toBeGreaterThanOrEqual(1);
  expect(result.released, dir).toBe(true);
  expect(result.missingKey.status, dir).toBe(400);
  expect(result.missingKey.body.error, dir).toMatch(/query\.id/);
  // Koa: a stream body that fails after its headers closes the connection (Koa 2 left it open)
  // and its lock goes within about its ttl, not at maxHoldMs
  if (dir === "koa") expect(result.failedExport, dir).toEqual({ status: 200, ended: "closed", keyGone: true });
  // Express: a guard's onLocked hook sending a directory (EISDIR, which Express hands to next()) goes
  // to the final handler (the hook's 429), never to the guarded handler, on Express 4 as on 5
  if (dir === "express") expect(result.guardedDirectory, dir).toEqual({ status: 429, ran: false });
  // Express: a route-level lock's onLocked hook whose res.render() fails: its error reaches the
  // route's own error middleware (Express's render callback skips it), on Express 4 as on 5
  if (dir === "express") {
    expect(result.renderedMissing, dir).toEqual({ status: 500, body: JSON.stringify({ route: true }), ran: false });
  }
  await expectNoKeysLeft();
}

describe("the tarballs", { timeout: RUNS }, () => {
  it("carry LICENSE, README, CHANGELOG, the sources their maps point at, and complete metadata", async () => {
    const license = readFileSync(join(workspaceRoot, "LICENSE"), "utf8");
    const web = root.repository.url.replace(/^git\+/, "").replace(/\.git$/, "");
    for (const pkg of packages) {
      const dir = join(work, "unpacked", pkg.dir, "package");
      const read = (file: string) => (existsSync(join(dir, file)) ? readFileSync(join(dir, file), "utf8") : "");
      // pnpm packs the workspace root's LICENSE into a package that has none of its own
      expect(read("LICENSE"), `${pkg.name}: LICENSE as the root's`).toBe(license);
      expect(read("README.md"), pkg.name).toContain(`# ${pkg.name}`);
      // a package not released yet gets its CHANGELOG.md from `pnpm version-packages`: a changeset must name it
      if (read("CHANGELOG.md") || !pendingReleases().has(pkg.name)) {
        expect(read("CHANGELOG.md"), `${pkg.name}: CHANGELOG.md, or a changeset in .changeset/`).toContain(
          `# ${pkg.name}`,
        );
      }
      // pnpm pack leaves out a CHANGELOG.md that `files` does not name: the first one `pnpm
      // version-packages` writes for a new package would not ship
      expect(published.get(pkg.name)?.files, `${pkg.name}: files`).toContain("CHANGELOG.md");
      expect(published.get(pkg.name), pkg.name).toMatchObject({
        license: "MIT",
        repository: { type: "git", url: root.repository.url, directory: `packages/${pkg.dir}` },
        homepage: `${web}/tree/main/packages/${pkg.dir}#readme`,
        bugs: { url: `${web}/issues` },
        keywords: expect.arrayContaining(["redis", "redlock"]),
        sideEffects: expect.any(Boolean),
        engines: { node: root.engines && (root.engines as { node: string }).node },
        publishConfig: { access: "public" },
      });
      expect(JSON.stringify(published.get(pkg.name)), `${pkg.name}: a workspace: range`).not.toContain("workspace:");

      // every declaration map and source map points at a file the tarball ships
      const maps = (await exec("find", [dir, "-name", "*.map"])).stdout.split("\n").filter(Boolean);
      expect(maps.length, `${pkg.name}: maps`).toBeGreaterThan(0);
      for (const map of maps) {
        const { sources, sourceRoot = "" } = readJson<{ sources: string[]; sourceRoot?: string }>(map);
        for (const source of sources) {
          const target = join(map, "..", sourceRoot, source);
          expect(
            target.startsWith(dir) && existsSync(target),
            `${map.slice(dir.length)} points at ${source}, not in the tarball (stale? rm -rf packages/${pkg.dir}/dist)`,
          ).toBe(true);
        }
      }
    }
  });

  it("name no peer range wider than a @redlock-kit package they depend on accepts (npm stops with ERESOLVE)", () => {
    const wider: string[] = [];
    for (const pkg of packages) {
      for (const dependency of workspaceDependencies(pkg)) {
        const theirs = published.get(dependency)?.peerDependencies ?? {};
        for (const [peer, range] of Object.entries(published.get(pkg.name)?.peerDependencies ?? {})) {
          const accepted = theirs[peer];
          if (accepted && !semver.subset(range, accepted)) {
            wider.push(`${pkg.name}: peer ${peer} "${range}", ${dependency}: "${accepted}"`);
          }
        }
      }
    }
    expect(wider).toEqual([]);
  });

  it("are clean for publint, and for arethetypeswrong but for the ESM-only finding the README explains", async () => {
    for (const pkg of packages) {
      const data = readFileSync(tarballs.get(pkg.name) ?? "");
      const tarball = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) as ArrayBuffer;
      const lint = await publint({ pack: { tarball }, level: "suggestion", strict: true });
      expect(
        lint.messages.map((message) => formatMessage(message, lint.pkg)),
        `${pkg.name}: publint`,
      ).toEqual([]);

      const analysis = await checkPackage(createPackageFromTarballData(new Uint8Array(data)));
      expect(analysis.types, `${pkg.name}: types`).not.toBe(false);
      const problems = "problems" in analysis ? analysis.problems : [];
      // TypeScript's `module: node16` forbids require() of an ES module, which Node 20.19+ and
      // `module: nodenext` allow (README, "Install")
      const explained = (problem: (typeof problems)[number]) =>
        problem.kind === "CJSResolvesToESM" && problem.resolutionKind === "node16-cjs";
      expect(
        problems.filter((problem) => !explained(problem)),
        `${pkg.name}: arethetypeswrong`,
      ).toEqual([]);
    }
  });
});

describe("installed with npm from the README's install lines, in a project outside the workspace", {
  timeout: RUNS,
}, () => {
  it("the README's install lines name every public package, and npm installed the packed version", () => {
    const named = new Set(installLines().flat());
    expect(names.filter((name) => !named.has(name))).toEqual([]);
    for (const pkg of packages) expect(newest.installedVersion(pkg.name), pkg.name).toBe(pkg.manifest.version);
  });

  it("every package loads with import() and with require() from CommonJS, with the same names, and its bins start", async () => {
    const imported = await loadsBothWays(newest, names);
    expect(imported["@redlock-kit/core"]).toContain("Redlock");
    // a decorator the description names (npm shows it on the package's page) is one the package exports
    for (const name of names) {
      const described = [...String(published.get(name)?.description).matchAll(/@([A-Z]\w*)/g)].flatMap(
        (m) => m[1] ?? [],
      );
      expect(
        described.filter((decorator) => !imported[name]?.includes(decorator)),
        `${name}: description`,
      ).toEqual([]);
    }

    // a package's bin (the CLI) is linked and starts: exit 0 for help, or 2 for a usage answer
    for (const pkg of packages) {
      const { bin } = pkg.manifest;
      const bins = typeof bin === "string" ? [pkg.name.replace(/^@[^/]+\//, "")] : Object.keys(bin ?? {});
      for (const name of bins) {
        const exit = await exec(join(newest.dir, "node_modules", ".bin", name), ["--help"], { cwd: newest.dir }).then(
          () => 0,
          (error: { code?: number }) => error.code,
        );
        expect([0, 2], `${name} --help`).toContain(exit);
      }
    }
  });

  it.each(["express", "koa", "fastify"])(
    "the %s app answers 200 with the lock, 423 with Retry-After while it is held, 400 for a missing key",
    async (dir) => {
      await runHttpApp(newest, dir);
    },
  );

  it(
    "the decorators app, compiled with experimentalDecorators, locks by its @LockKey and rejects with 423 while held",
    async () => {
      await typecheck("decorators-app");
      const result = JSON.parse(await newest.node(apps.decorators?.file ?? "", [], redisEnv()));
      expect(result).toEqual({
        free: { orderId: "1", amount: 10, held: true },
        held: { rejected: true, status: 423, resources: ["order:1"] },
        released: true,
      });
      await expectNoKeysLeft();
    },
    TYPECHECKS,
  );

  it.each(Object.keys(resolutions))(
    "the samples, naming every public export, type-check under moduleResolution %s with strict",
    async (resolution) => {
      const { exports } = await typecheck(resolution);
      for (const pkg of packages) {
        const file = join(fixtures, "types", `${pkg.dir}.ts`);
        if (!existsSync(file)) continue;
        const sample = readFileSync(file, "utf8");
        const unnamed = (exports[pkg.name] ?? ["(no type entry)"]).filter(
          (name) => name !== "default" && !new RegExp(`\\b${name}\\b`).test(sample),
        );
        expect(unnamed, `types/${pkg.dir}.ts does not use`).toEqual([]);
      }
    },
    TYPECHECKS,
  );
});

describe("installed on the lowest version of each peer range", { timeout: RUNS }, () => {
  it("has every peer at its floor there, so Express 4, Koa 2 and ioredis 5", () => {
    expect(withPeers.map((pkg) => pkg.dir)).toEqual(expect.arrayContaining(["core", "express", "koa", "nestjs"]));
    for (const [peer, floor] of floors) expect(lowest.installedVersion(peer), peer).toBe(floor);
    expect(semver.major(lowest.installedVersion("express") ?? "0.0.0")).toBe(4);
    expect(semver.major(lowest.installedVersion("koa") ?? "0.0.0")).toBe(2);
    expect(semver.major(lowest.installedVersion("ioredis") ?? "0.0.0")).toBe(5);
  });

  it("every package with a peer loads there with import() and with require() from CommonJS", async () => {
    await loadsBothWays(
      lowest,
      withPeers.map((pkg) => pkg.name),
    );
  });

  it("the Express, Koa and Fastify apps run there as on the newest majors", async () => {
    const runnable = withPeers.filter((pkg) => apps[pkg.dir] && pkg.dir !== "decorators");
    expect(runnable.map((pkg) => pkg.dir)).toEqual(expect.arrayContaining(["express", "koa", "fastify"]));
    for (const pkg of runnable) await runHttpApp(lowest, pkg.dir);
  });

  it(
    "the samples type-check there under NodeNext with strict (@types/express 4, @types/koa 2)",
    async () => {
      await typecheck("lowest");
      expect(semver.major(lowest.installedVersion("@types/express") ?? "0.0.0")).toBe(4);
    },
    TYPECHECKS,
  );

  it("every peer range admits exactly the majors that the two projects installed", () => {
    for (const pkg of packages) {
      for (const [peer, range] of externalPeers(pkg)) {
        if (newest.installedVersion(peer) === undefined) continue;
        const tested = [newest, lowest]
          .map((project) => project.installedVersion(peer))
          .filter((version): version is string => version !== undefined)
          .map((version) => semver.major(version));
        expect(majorsOf(range), `${pkg.name}: peer ${peer} "${range}"`).toEqual(
          [...new Set(tested)].sort((a, b) => a - b),
        );
      }
    }
  });
});
