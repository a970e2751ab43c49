/**
 * The root README's "Install" section, read as a user would copy it: each `npm install ...` line of
 * its first `sh` block, as the package specs it names.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { workspaceRoot } from "./scratch-project.js";

export function installLines(): string[][] {
  const readme = readFileSync(join(workspaceRoot, "README.md"), "utf8");
  const section = readme.split(/^## /m).find((part) => part.startsWith("Install\n"));
  const block = section && /```sh\n([\s\S]*?)```/.exec(section)?.[1];
  if (!block) throw new Error('README.md has no "## Install" section with a ```sh block');
  return block
    .split("\n")
    .map((line) => line.replace(/#.*/, "").trim())
    .filter((line) => line.startsWith("npm install "))
    .map((line) => line.split(/\s+/).slice(2));
}
