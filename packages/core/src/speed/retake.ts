import type { LockStore } from "../stores/store.js";
import type { Grant } from "./own-grant.js";

/**
 * Retake, for speed only: a process that releases a one-key lock and asks for the key again at
 * once (a worker looping on one resource) takes it back first, for at most `MAX_STREAK` sections
 * in a row, instead of handing every section to a waiter in another process. What it buys: a
 * hand-over to another process costs its wake-up (and a claim where speed/message-grant.ts does
 * not apply) on the critical path, and a refused attempt by the releaser; a retake costs one round
 * trip in a process that is already running. Measured in bench/ ("Between processes,
 * contention", 4 processes, 1 and 3 instances). Without this module every release hands the key to
 * the head of its queue; the outcome of each lock is the same (mutual exclusion never depends on
 * it).
 *
 * How:
 * - A lock is a "looper" when its acquire call started right after this Redlock released the
 *   same key (before the end of that event-loop turn, `setImmediate`). It carries how many
 *   retakes came before it (`streak`).
 * - The release of a looper with `streak < MAX_STREAK`, held less than `MAX_HELD_MS`, asks each
 *   instance to leave the key free when the head of its queue waits in another Redlock
 *   (RELEASE_SCRIPT, mode 'r').
 * - If this Redlock asks for the key again before the end of the turn, it takes it; otherwise every
 *   instance that left the key free is asked to hand it over now (KICK_SCRIPT), one round trip
 *   later than the release would have.
 *
 * Fairness that holds across processes: the head of a queue waits at most `MAX_STREAK` + 1
 * sections of the process ahead of it before the key is handed to it, and the retaken ones are
 * short (under `MAX_HELD_MS` each); waiters behind it keep their order. A waiter of the releasing
 * Redlock itself at the head is served as without retake (granted the key: speed/own-grant.ts).
 */
export const MAX_STREAK = 3;

/**
 * Only a lock held less than this is retaken. A hand-over to another process costs well under a
 * millisecond here (docs/waiting.md): a longer section would gain next to nothing by a retake, and
 * its retakes would keep the head of the queue waiting for whole sections.
 */
export const MAX_HELD_MS = 10;

/** One release of a key by this Redlock, until the end of the turn in which it resolved. */
interface Window {
  /** The streak a lock acquired in this window carries. */
  readonly next: number;
  /** The release resolved: the window closes at the end of this turn. */
  open: boolean;
  /** An acquire of the key started in the window: the instances that left it free are kicked only if it fails. */
  retaken: boolean;
  /** Instances that left the key free, to kick if it is not retaken. */
  readonly kept: LockStore[];
}

export class Retake {
  readonly #channel: string;
  readonly #windows = new Map<string, Window>();
  #armed = false;

  /** `channel`: this Redlock's hand-over channel, which its own waiters listen on. */
  constructor(channel: string) {
    this.#channel = channel;
  }

  /**
   * An acquire call of `keys` starts: the window of this Redlock's release of that key, when the
   * call follows it in the same turn (the lock it may return carries `window.next` as its streak).
   * The first call in a window takes the retake: the window's kicks wait on its outcome (`failed`).
   */
  acquiring(keys: readonly string[]): Window | undefined {
    if (this.#windows.size === 0 || keys.length !== 1) return undefined;
    const window = this.#windows.get(keys[0] as string);
    if (window === undefined || window.retaken) return undefined;
    window.retaken = true;
    return window;
  }

  /** The call that took the retake of `window` ended without the lock: the waiters must be told. */
  failed(key: string, window: Window): void {
    for (const store of window.kept.splice(0)) kick(store, key);
  }

  /** A release of a one-key lock held `heldMs` starts: its window, open once it resolved (`released`). */
  releasing(key: string, streak: number | undefined, heldMs: number): Window {
    const retake = streak !== undefined && streak < MAX_STREAK && heldMs < MAX_HELD_MS;
    const window: Window = { next: retake ? streak + 1 : 0, open: false, retaken: false, kept: [] };
    const earlier = this.#windows.get(key);
    // a second release of the key in one turn: the first one's kept instances are told now
    if (earlier !== undefined && !earlier.retaken) this.failed(key, earlier);
    this.#windows.set(key, window);
    return window;
  }

  /** Whether the release that opened `window` asks the instances to leave the key free. */
  static retakes(window: Window): boolean {
    return window.next > 0;
  }

  /** The release call of one instance for `window`'s key, which may also `grant` it (speed/own-grant.ts). */
  release(store: LockStore, key: string, value: string, window: Window, grant: Grant | undefined): Promise<number> {
    if (store.releaseOne === undefined) return store.release([key], value);
    return store.releaseOne(key, value, this.#channel, { retake: window.next > 0, grant }).then((reply) => {
      if (reply === -2) {
        grant?.granted(store);
        return 1;
      }
      if (reply !== -1) return reply;
      // answered after its window closed with no retake: the head must be told now
      if (this.#windows.get(key) !== window && !window.retaken) kick(store, key);
      else window.kept.push(store);
      return 1;
    });
  }

  /** The release resolved: the window stays open until the end of this event-loop turn. */
  released(key: string, window: Window): void {
    if (this.#windows.get(key) !== window) return;
    window.open = true;
    if (this.#armed) return;
    this.#armed = true;
    setImmediate(this.#close);
  }

  readonly #close = (): void => {
    this.#armed = false;
    for (const [key, window] of this.#windows) {
      if (!window.open) continue;
      this.#windows.delete(key);
      if (!window.retaken) this.failed(key, window);
    }
  };
}

export type { Window as RetakeWindow };

function kick(store: LockStore, key: string): void {
  store.handOverIfFree?.(key).catch(() => {
    // an instance that cannot be told: its waiters poll
  });
}
