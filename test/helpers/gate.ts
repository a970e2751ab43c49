import { PassThrough } from "node:stream";

/** A gate the test opens: a critical section (a handler, a stream's producer) that waits on `opened` ends only then. */
export function gate(): { open: () => void; opened: Promise<void> } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, opened };
}

/**
 * A push-based producer of streamed bodies, the critical section of a HEAD test: `produce()` starts
 * one (counted in `state`), which writes whether or not anyone reads, and ends its stream once the
 * test calls `open()`.
 */
export function gatedProducer() {
  const done = gate();
  const state = { runs: 0, inside: 0, maxInside: 0 };
  return {
    state,
    open: done.open,
    produce(): PassThrough {
      state.runs++;
      state.maxInside = Math.max(state.maxInside, ++state.inside);
      const out = new PassThrough();
      out.write("first\n");
      void done.opened.then(() => {
        state.inside--;
        out.end("last\n");
      });
      return out;
    },
  };
}
