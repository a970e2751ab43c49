/**
 * `pnpm version-packages`: `changeset version` with one difference, for releases before 1.0.
 *
 * Changesets 2 turns a minor release of a package into a *major* release of every package that
 * names it as a peer dependency (the adapters name @redlock-kit/core), and the fixed group then
 * carries that major to all of them: 0.2.0 would become 1.0.0. Before 1.0 a minor is already
 * the breaking step, so a major that no changeset asked for is brought back to a minor here.
 * Everything else (reading .changeset/, changelogs, versions, dependency ranges, deleting the
 * consumed changesets) is Changesets' own code. `--dry-run` prints the versions and writes nothing
 * (`changeset status` shows the plan before this correction).
 */
import applyReleasePlan from "@changesets/apply-release-plan";
import { read as readConfig } from "@changesets/config";
import getReleasePlan from "@changesets/get-release-plan";
import { getPackages } from "@manypkg/get-packages";

const cwd = process.cwd();
const packages = await getPackages(cwd);
const config = await readConfig(cwd, packages);
const plan = await getReleasePlan(cwd, undefined, config);
if (plan.changesets.length === 0) {
  console.log("No changesets in .changeset/: nothing to version.");
  process.exit(0);
}

// an explicit major (the 1.0 step) and pre-release versions are left as Changesets plans them
const askedMajor = plan.changesets.some((changeset) => changeset.releases.some((r) => r.type === "major"));
if (!askedMajor && plan.preState === undefined) {
  for (const release of plan.releases) {
    if (release.type !== "major") continue;
    const [major, minor] = release.oldVersion.split(".").map(Number);
    if (major === 0) {
      release.type = "minor";
      release.newVersion = `0.${minor + 1}.0`;
    }
  }
}

for (const release of plan.releases) {
  if (release.type !== "none") console.log(`${release.name}: ${release.oldVersion} -> ${release.newVersion}`);
}
if (!process.argv.includes("--dry-run")) await applyReleasePlan(plan, packages, config);
