import { setTimeout as sleep } from "node:timers/promises";
import { EXIT, type Verb } from "../io.js";
import { collect, listingJson, listingWarnings, renderListing } from "./list.js";

/** Moves the cursor home and clears the screen. */
const CLEAR = "\x1b[H\x1b[2J";

/**
 * The list, again every `--interval` ms until Ctrl-C. On a terminal the screen is redrawn; into a
 * pipe or a file each refresh is appended (with --json, one JSON line each).
 */
export const watch: Verb = async (args, instances, io) => {
  const pattern = args.target ?? "*";
  const redraw = io.stdout.isTTY === true && !args.json;
  for (let first = true; !io.signal?.aborted; first = false) {
    // each refresh with the roles of the moment (a failover since the last one), read at connect
    // for the first: one INFO per server
    const refresh = first ? collect(args, instances) : instances.rereadRoles().then(() => collect(args, instances));
    // a refresh may wait --timeout for a slow instance, per round of inspections: Ctrl-C ends it
    // there (runCli then closes the connections, failing what it still waits for)
    const listing = await unlessAborted(refresh, io.signal);
    if (listing === undefined) break;
    const at = new Date();
    if (args.json) {
      io.stdout.write(`${JSON.stringify({ at: at.toISOString(), ...listingJson(listing, instances) })}\n`);
    } else {
      const header = `redlock-kit watch ${JSON.stringify(pattern)} on ${instances.names.length} instances, every ${args.interval} ms; Ctrl-C to stop. ${at.toLocaleTimeString()}`;
      const lines = [header, ...listingWarnings(listing, instances), "", renderListing(listing, instances, pattern)];
      io.stdout.write(redraw ? `${CLEAR}${lines.join("\n")}\n` : `${lines.join("\n")}\n\n`);
    }
    await sleep(args.interval, undefined, { signal: io.signal }).catch(() => {});
  }
  return EXIT.done;
};

/** `work`'s result, or undefined once `signal` aborts first; `work` is then left to fail unheard. */
function unlessAborted<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T | undefined> {
  if (signal === undefined) return work;
  return new Promise((resolve, reject) => {
    const onAbort = () => resolve(undefined);
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
