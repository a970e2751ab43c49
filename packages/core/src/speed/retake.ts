import { newLockValue } from "../lock/lock-value.js";
import type { LockStore } from "../stores/store.js";
import type { Grant } from "./own-grant.js";

/**
 * Retake, for speed only: a process that releases a one-key lock and asks for the key again at
 * once (a worker looping on one resource) takes it back first, for a run of sections at most
 * `MAX_STREAK_MS` old, instead of handing every section to a waiter in another process. What it
 * buys: a hand-over to another process costs that process's wake-up on the critical path, and a
 * refused attempt by the releaser; a retake costs nothing beyond the release, whose script sets the key to
 * the value of the releaser's next lock (a reservation), so that the next call holds the key
 * without a round trip of its own. Measured in bench/ ("Between processes, contention", 4
 * processes, 1 and 3 instances). Without this module every release hands the key to the head of
 * its queue; the outcome of each lock is the same (mutual exclusion never depends on it).
 *
 * How:
 * - A lock is a "looper" when its acquire call started right after this Redlock released the
 *   same key (before the end of that event-loop turn, `setImmediate`), unless it is fenced: no
 *   fenced call can hold a reservation (quorum/acquire-loop.ts). It carries when its run of
 *   retakes began (`streakStart`): its own acquisition, unless it is itself a retake.
 * - The release of a looper whose run began less than `MAX_STREAK_MS` ago, held less than
 *   `MAX_HELD_MS`, draws the next lock's value and asks each instance to set the key to it for
 *   the released lock's ttl, unless the head of the key's queue waits in this Redlock (RELEASE_SCRIPT,
 *   mode 'r'). When no waiter of this Redlock waits for the key (`HandOvers.waitsOn`), the script
 *   reads no queue: it compares, deletes and sets (mode 'R'), three commands where mode 'r' runs four.
 * - The first call of the key with the released lock's ttl, started after the release resolved
 *   and before the end of the turn, holds the lock if a quorum reserved it: valid for its ttl from
 *   the release's start (less the drift), as strong as a lock acquired then. Otherwise
 *   every instance that reserved the key is released (the release script, which hands it over),
 *   one round trip later than the release would have; `quit()` does it before closing. A call on
 *   several keys, this one among them, releases it before its own attempt is sent.
 * - A call of the key started while the release is still on its way (an `unlock()` not awaited)
 *   waits for its answer (`settling`), then goes on as a call of that turn: sent at once, it would
 *   follow the release on the same connections and be refused by this Redlock's reservation.
 *
 * Fairness that holds across processes: the head of a queue waits for the process ahead of it at
 * most `MAX_STREAK_MS` plus one section shorter than `MAX_HELD_MS` (the last retake), then the key
 * is handed to it; waiters behind it keep their order. A waiter of the releasing Redlock itself
 * at the head is served as without retake (granted the key: speed/own-grant.ts).
 */
/**
 * A run of retakes ends once it is this old (ms since its first lock was acquired): its release
 * hands the key over. At 50 ms a looping process with sections of 1–2 ms keeps the key for about 30
 * of them; the head of the queue waits no longer than the run plus one section. Each hand-over to
 * another process puts that process's wake-up and cold first section on the critical path: the
 * between-process contention rows before (20 ms) and after (50 ms) are in bench/README.md.
 */
export const MAX_STREAK_MS = 50;

/**
 * Only a lock held less than this is retaken. A hand-over to another process costs about a
 * millisecond more than a retake on the benchmark machine (docs/waiting.md): against a longer
 * section a retake gains little, and its retakes would keep the head of the queue waiting for
 * whole sections.
 */
export const MAX_HELD_MS = 10;

/** The key set to the next lock's value by a release, for this Redlock's next call of the key. */
export interface Reservation {
  readonly value: string;
  /**
   * The released lock's ttl, for which the instances keep the key reserved (the PX the release
   * script sets): only a call with the same ttl holds the reservation.
   */
  readonly ttl: number;
  /** Monotonic and wall-clock (epoch ms) time when the release started: the validity counts from there. */
  readonly start: number;
  readonly wallStart: number;
}

/** An acquire call that follows this Redlock's release of its key in the same turn (`Retake.acquiring`). */
export interface RetakeCall {
  /** When the run of retakes it continues began (`undefined`: it begins one when it acquires). */
  readonly streakStart: number | undefined;
  /** The reservation it holds, if a quorum reserved the key for it. */
  readonly reservation: Reservation | undefined;
}

/** One release of a key by this Redlock, until the end of the turn in which it resolved. */
interface Window {
  /** When the run of retakes a lock acquired in this window belongs to began (`undefined`: at that lock's acquisition). */
  readonly streakStart: number | undefined;
  /** What the release asks the instances to reserve (a retake), or nothing (the release hands over). */
  readonly reservation: Reservation | undefined;
  /** The release resolved: the window closes at the end of this turn. */
  open: boolean;
  /** A call took the window, or it closed: no later call may. */
  taken: boolean;
  /** The call that took the window holds the reservation: late reservations are that lock's. */
  held: boolean;
  /** Instances that reserved the key. */
  readonly reserved: LockStore[];
  /** Calls of the key that started before the release answered, woken once it did (`Retake.settling`). */
  settled: (() => void)[] | undefined;
}

export class Retake {
  readonly #channel: string;
  readonly #quorum: number;
  readonly #windows = new Map<string, Window>();
  /** Releases asking for a reservation, not yet answered: a -1 still to come must be let go. */
  #asking = 0;
  /** `quit()` waits for the last of them. */
  #answered: (() => void) | undefined;
  #armed = false;
  /** Set by `quit()` (`Redlock.stopAcquiring()`): no call will take a reservation, so releases make none. */
  #stopped = false;

  /** `channel`: this Redlock's hand-over channel, which its own waiters listen on. */
  constructor(channel: string, quorum: number) {
    this.#channel = channel;
    this.#quorum = quorum;
  }

  /**
   * An acquire call of `keys` for `ttl` ms starts: the window of this Redlock's release of that key,
   * when the call follows it in the same turn (the lock it returns carries `streakStart`),
   * with the reservation it holds if a quorum reserved the key with that ttl and the validity left
   * past `validAfter` (now plus the drift; `undefined`: this call cannot hold one, a fenced call).
   * The first call in a window takes it; a reservation it cannot hold is released at once.
   */
  acquiring(keys: readonly string[], ttl: number, validAfter: number | undefined): RetakeCall | undefined {
    if (this.#windows.size === 0) return undefined;
    if (keys.length !== 1) {
      // a call on several keys cannot hold a reservation: let go of its keys' reservations now, before
      // its attempt is sent (it would be refused by this Redlock's own reservation)
      for (const key of keys) {
        const window = this.#windows.get(key);
        if (window?.open && !window.taken) this.#giveUp(key, window);
      }
      return undefined;
    }
    const key = keys[0] as string;
    const window = this.#windows.get(key);
    if (window === undefined || !window.open || window.taken) return undefined;
    window.taken = true;
    const reservation = window.reservation;
    if (
      reservation !== undefined &&
      validAfter !== undefined &&
      reservation.ttl === ttl &&
      reservation.start + reservation.ttl > validAfter &&
      window.reserved.length >= this.#quorum
    ) {
      window.held = true;
      return { streakStart: window.streakStart, reservation };
    }
    this.#giveUp(key, window);
    return { streakStart: window.streakStart, reservation: undefined };
  }

  /**
   * Resolves once every release of one of `keys` that asks for a reservation and has not answered yet
   * has answered (`undefined`: none). A call that starts meanwhile (after an `unlock()` not awaited)
   * would be sent behind that release on the same connections and be refused by its own Redlock's
   * reservation; once the release answered, the call takes the window as any call of that turn does,
   * or lets the reservation go before its attempt.
   */
  settling(keys: readonly string[]): Promise<void> | undefined {
    if (this.#windows.size === 0) return undefined;
    let pending: Promise<void>[] | undefined;
    for (const key of keys) {
      const window = this.#windows.get(key);
      if (window === undefined || window.open || window.taken || window.reservation === undefined) continue;
      const settled = window.settled ?? [];
      window.settled = settled;
      if (pending === undefined) pending = [];
      pending.push(new Promise<void>((resolve) => settled.push(resolve)));
    }
    return pending && Promise.all(pending).then(() => undefined);
  }

  /** A release of a one-key lock acquired for `ttl` ms and held `heldMs` starts: its window, open once it resolved (`released`). */
  releasing(key: string, streakStart: number | undefined, heldMs: number, ttl: number, start: number): Window {
    const retake =
      !this.#stopped && streakStart !== undefined && start - streakStart < MAX_STREAK_MS && heldMs < MAX_HELD_MS;
    const reservation = retake ? { value: newLockValue(), ttl, start, wallStart: Date.now() } : undefined;
    const window: Window = {
      streakStart: retake ? streakStart : undefined,
      reservation,
      open: false,
      taken: false,
      held: false,
      reserved: [],
      settled: undefined,
    };
    const earlier = this.#windows.get(key);
    // a second release of the key in one turn: the first one's reservations are let go now
    if (earlier !== undefined && !earlier.taken) this.#giveUp(key, earlier);
    this.#windows.set(key, window);
    return window;
  }

  /** Whether the release that opened `window` asks the instances to reserve the key. */
  static retakes(window: Window): boolean {
    return window.reservation !== undefined;
  }

  /**
   * The release call of one instance for `window`'s key, which may also `grant` it
   * (speed/own-grant.ts); `ownQueued`: a waiter of this Redlock may be in the key's queue.
   */
  release(
    store: LockStore,
    key: string,
    value: string,
    window: Window,
    grant: Grant | undefined,
    ownQueued: boolean,
  ): Promise<number> {
    if (store.releaseOne === undefined) return store.release([key], value);
    const reservation = window.reservation;
    if (reservation !== undefined) this.#asking++;
    const reserve = reservation && { value: reservation.value, ttl: reservation.ttl };
    return store.releaseOne(key, value, this.#channel, { reserve, grant, ownQueued }).then(
      (reply) => {
        if (reservation !== undefined) this.#answer();
        if (reply === -2) {
          grant?.granted(store);
          return 1;
        }
        if (reply !== -1) return reply;
        window.reserved.push(store);
        // answered after the window was given up: let it go now
        if (window.taken && !window.held) this.#letGo(store, key, window);
        return 1;
      },
      (error: unknown) => {
        if (reservation !== undefined) this.#answer();
        throw error;
      },
    );
  }

  /** The release resolved: the window stays open until the end of this event-loop turn. */
  released(key: string, window: Window): void {
    const settled = window.settled;
    window.settled = undefined;
    // the calls that waited for this answer go on in a later microtask, when the window below is open
    if (settled !== undefined) for (const wake of settled) wake();
    if (this.#windows.get(key) !== window) return;
    window.open = true;
    if (this.#armed) return;
    this.#armed = true;
    setImmediate(this.#close);
  }

  /**
   * `Redlock.stopAcquiring()` (and so `quit()`): every reservation no call holds is released now,
   * before the connections close (the let-go is written ahead of QUIT on each connection), and so
   * is any that a release still on its way makes: resolves once those releases answered, or after
   * `boundMs` (a dead instance must not make quit() hang). Later releases (of locks still held)
   * reserve nothing: no acquisition follows them.
   */
  async quit(boundMs: number): Promise<void> {
    this.#stopped = true;
    for (const [key, window] of this.#windows) if (!window.taken) this.#giveUp(key, window);
    this.#windows.clear();
    if (this.#asking === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.#answered = resolve;
      timer = setTimeout(resolve, boundMs);
    });
    this.#answered = undefined;
    clearTimeout(timer);
  }

  #answer(): void {
    if (--this.#asking === 0) this.#answered?.();
  }

  #giveUp(key: string, window: Window): void {
    window.taken = true;
    for (const store of window.reserved) this.#letGo(store, key, window);
  }

  /** Releases the reserved value on `store`: the key is handed over as by any release. */
  #letGo(store: LockStore, key: string, window: Window): void {
    const value = window.reservation?.value;
    if (value === undefined) return;
    store.release([key], value).catch(() => {
      // an instance that cannot be told: the reservation expires after its ttl, and its waiters poll
    });
  }

  readonly #close = (): void => {
    this.#armed = false;
    for (const [key, window] of this.#windows) {
      if (!window.open) continue;
      this.#windows.delete(key);
      if (!window.taken) this.#giveUp(key, window);
    }
  };
}

export type { Window as RetakeWindow };
