/**
 * A `clock` for Redlock (its option for tests) that knows, at any point, the earliest reading
 * the library took in the current turn of the event loop. A store called in the same turn as the
 * library's arithmetic (an auto-extension computes its ttl and sends it in one turn) learns a
 * time no later than the reading that ttl was computed from: "never asked past the cap" is then
 * checked without a slack for a pause between that reading and the call.
 */
export function turnClock(): { clock: () => number; firstReadThisTurn: () => number | undefined } {
  let first: number | undefined;
  const clock = () => {
    const now = performance.now();
    if (first === undefined) {
      first = now;
      setImmediate(() => {
        first = undefined;
      });
    }
    return now;
  };
  return { clock, firstReadThisTurn: () => first };
}
