import { mkdirSync, mkdtempSync, readdirSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import ts from "typescript";

/** How a user's build compiles decorators: TypeScript's default, or the legacy mode NestJS apps use. */
export type DecoratorMode = "standard" | "experimental";

const root = fileURLToPath(new URL("../../../../", import.meta.url));
const packageDir = join(root, "packages/decorators");

/**
 * Type-checks and compiles a fixture with `tsc` (the TypeScript compiler API) under the repo's
 * base tsconfig and the given decorator mode, then imports the emitted JavaScript. With `target`
 * the fixture is emitted for it (type-checked still under the base target, which the packages'
 * sources need, as a user's build checks against their declarations). vitest's own
 * transform cannot stand in for this: it lowers only experimentalDecorators, without
 * emitDecoratorMetadata, and lets standard decorators through to Node 20, which cannot parse them.
 *
 * The `@redlock-kit/*` imports are checked against the packages' sources; at run time vitest's
 * aliases resolve them to the same sources, so the fixture shares module state with the test.
 * Throws with the compiler's diagnostics if the fixture does not type-check.
 */
export async function compileFixture<T>(
  fixture: URL,
  mode: DecoratorMode,
  target?: ts.ScriptTarget,
): Promise<{ module: T; emitted: string; cleanup(): void }> {
  const fileName = fileURLToPath(fixture);
  const base = ts.getParsedCommandLineOfConfigFile(
    join(root, "tsconfig.base.json"),
    {},
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (diagnostic) => {
        throw new Error(ts.flattenDiagnosticMessageText(diagnostic.messageText, "\n"));
      },
    },
  );
  if (!base) throw new Error("tsconfig.base.json could not be read");
  const options: ts.CompilerOptions = {
    ...base.options,
    experimentalDecorators: mode === "experimental",
    emitDecoratorMetadata: mode === "experimental",
    declaration: false,
    declarationMap: false,
    sourceMap: false,
    noEmit: false,
    paths: {
      "@redlock-kit/core": [join(root, "packages/core/src/index.ts")],
      "@redlock-kit/decorators": [join(packageDir, "src/index.ts")],
      "@redlock-kit/express": [join(root, "packages/express/src/index.ts")],
    },
  };
  // ambient declarations the sources rely on (core declares its untyped dependencies in src/**/*.d.ts)
  const ambient = ["core", "decorators", "express"].flatMap((name) => {
    const src = join(root, "packages", name, "src");
    return readdirSync(src, { recursive: true, encoding: "utf8" })
      .filter((file) => file.endsWith(".d.ts"))
      .map((file) => join(src, file));
  });
  const program = ts.createProgram([fileName, ...ambient], options);
  const diagnostics = ts.getPreEmitDiagnostics(program);
  if (diagnostics.length > 0) {
    const host: ts.FormatDiagnosticsHost = {
      getCanonicalFileName: (name) => name,
      getCurrentDirectory: () => root,
      getNewLine: () => "\n",
    };
    throw new Error(`${basename(fileName)} (${mode}) does not compile:\n${ts.formatDiagnostics(diagnostics, host)}`);
  }
  const source = program.getSourceFile(fileName);
  if (!source) throw new Error(`${fileName} is not in the program`);
  let output: string | undefined;
  const emitter = target === undefined ? program : ts.createProgram([fileName, ...ambient], { ...options, target });
  const result = emitter.emit(emitter.getSourceFile(fileName), (name, text) => {
    if (name.endsWith(".js")) output = text;
  });
  if (result.emitSkipped || output === undefined) throw new Error(`${basename(fileName)} was not emitted`);
  // Next to the package's node_modules, so that bare imports resolve as they would in a user's build.
  const tmp = join(packageDir, ".tmp");
  mkdirSync(tmp, { recursive: true });
  const dir = mkdtempSync(join(tmp, `${mode}-`));
  const outFile = join(dir, basename(fileName).replace(/\.ts$/, ".js"));
  writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module" }));
  writeFileSync(outFile, output);
  const cleanup = () => {
    rmSync(dir, { recursive: true, force: true });
    try {
      rmdirSync(tmp);
    } catch {
      // another test file's fixture is still there
    }
  };
  try {
    const module = (await import(pathToFileURL(outFile).href)) as T;
    return { module, emitted: output, cleanup };
  } catch (error) {
    cleanup();
    throw error;
  }
}
