/**
 * Numbers the event-loop phases in which commands were sent, with one `setImmediate` per such
 * phase for the whole process however many instances there are: `setImmediate` runs after the
 * I/O callbacks of the current loop iteration, which is where a phase ends for batching.
 */
let current = 0;
let armed = false;
const atEnd = new Set<() => void>();

/** The current phase's number; callers compare it with the one of their last send. */
export function loopPhase(): number {
  if (!armed) {
    armed = true;
    setImmediate(endPhase);
  }
  return current;
}

/** Runs `callback` once when the current phase ends. */
export function atPhaseEnd(callback: () => void): void {
  loopPhase();
  atEnd.add(callback);
}

function endPhase(): void {
  armed = false;
  flush();
}

function flush(): void {
  current++;
  for (const callback of atEnd) callback();
  atEnd.clear();
}
