/** The packages that the changesets waiting in .changeset/ will release (their front matter names them). */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { workspaceRoot } from "./scratch-project.js";

export function pendingReleases(): Set<string> {
  const dir = join(workspaceRoot, ".changeset");
  const names = new Set<string>();
  for (const file of readdirSync(dir).filter((name) => name.endsWith(".md") && name !== "README.md")) {
    const frontMatter = /^---\n([\s\S]*?)\n---/.exec(readFileSync(join(dir, file), "utf8"))?.[1] ?? "";
    for (const match of frontMatter.matchAll(/^\s*["']?([^"':\s]+)["']?\s*:/gm)) if (match[1]) names.add(match[1]);
  }
  return names;
}
