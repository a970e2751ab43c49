/**
 * Numbers the event-loop phases in which commands were sent, with one `setImmediate` per such
 * phase for the whole process however many instances there are: `setImmediate` runs after the
 * I/O callbacks of the current loop iteration, which is where a phase ends for batching.
 */
let current = 0;
let armed = false;
let held = false;
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

/**
 * Holds every command back, the first of a phase too, until the microtasks queued so far and
 * those they queue have run; then ends the phase early, so they leave together. A release that
 * hands the key to a waiter of this process sends the release and that waiter's attempt in one
 * write (RedisStore#releaseNotifying).
 */
export function holdWrites(): void {
  if (held) return;
  held = true;
  // a tick queued from a microtask runs once the microtask queue is empty
  queueMicrotask(() => process.nextTick(releaseWrites));
}

/** Whether commands are held back now, even the first of a phase. */
export function writesHeld(): boolean {
  return held;
}

function releaseWrites(): void {
  held = false;
  flush();
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
