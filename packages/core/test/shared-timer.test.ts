/**
 * The process's shared timer (src/speed/shared-timer.ts) runs what falls due (a lock's renewal, and
 * the listeners of the signal a renewal aborts) outside the async context of whichever call armed
 * it: one request's AsyncLocalStorage stores would otherwise stay with every later renewal.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { describe, expect, it } from "vitest";
import { Deadline, deadlines } from "../src/speed/shared-timer.js";

class Probe extends Deadline {
  readonly seen: Promise<string | undefined>;
  #resolve!: (store: string | undefined) => void;
  constructor(readonly storage: AsyncLocalStorage<string>) {
    super();
    this.seen = new Promise((resolve) => {
      this.#resolve = resolve;
    });
  }
  expire(): void {
    this.#resolve(this.storage.getStore());
  }
}

describe("the shared timer", () => {
  it("runs deadlines outside the context of the call that armed it, also after it re-armed itself", async () => {
    const storage = new AsyncLocalStorage<string>();
    const first = new Probe(storage);
    const later = new Probe(storage);
    // the first arms the timer; the later one, not due first, is timed by the timer re-arming as it fires
    storage.run("request A", () => deadlines.add(first, 1));
    storage.run("request B", () => deadlines.add(later, 30));
    // before: ["request A", "request A"]
    expect(await Promise.all([first.seen, later.seen])).toEqual([undefined, undefined]);
  });
});
