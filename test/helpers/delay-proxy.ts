/**
 * A TCP proxy for fault injection between a client and one redis-server, on loopback:
 * a delay per direction, a blackhole that swallows bytes while keeping connections open,
 * replies held back (on open or on new connections) until released, commands held back from the
 * first one a test picks, and a reset of every connection.
 * `tc netem` is not available on this machine kind (see docs/reliability.md §4), so latency is
 * injected in user space.
 */
import net from "node:net";

export interface DelayProxyOptions {
  /** Delay of every chunk from the client to the server, in ms. @default 0 */
  upDelayMs?: number;
  /** Delay of every chunk from the server to the client, in ms. @default 0 */
  downDelayMs?: number;
}

interface Queued {
  readonly dueAt: number;
  readonly chunk: Buffer;
}

/** Forwards chunks to `to`, each held back by the current delay, in order; then forwards the end. */
class DelayedPipe {
  readonly #to: net.Socket;
  readonly #delay: (chunk: Buffer) => number;
  readonly #dropping: () => boolean;
  readonly #queue: Queued[] = [];
  #timer: NodeJS.Timeout | undefined;
  #lastDue = 0;
  #ending = false;
  /** Nothing (bytes or end) is forwarded until release(). */
  #held: boolean;

  constructor(to: net.Socket, delay: (chunk: Buffer) => number, dropping: () => boolean, held = false) {
    this.#to = to;
    this.#delay = delay;
    this.#dropping = dropping;
    this.#held = held;
  }

  /** Bytes waiting while held. */
  get heldBytes(): number {
    return this.#held ? this.#queue.reduce((sum, { chunk }) => sum + chunk.length, 0) : 0;
  }

  release(): void {
    this.#held = false;
    this.#drain();
  }

  /** Forwards nothing more until release(). */
  hold(): void {
    this.#held = true;
  }

  push(chunk: Buffer): void {
    if (this.#dropping()) return;
    // Never let a chunk overtake an earlier one when the delay is lowered mid-stream. Monotonic time:
    // a test that mocks Date.now (a wall-clock jump) must not stall or hurry the connections.
    const dueAt = Math.max(performance.now() + this.#delay(chunk), this.#lastDue);
    this.#lastDue = dueAt;
    this.#queue.push({ dueAt, chunk });
    this.#drain();
  }

  /** The sending side finished: end `to` once the bytes still held back are delivered. */
  end(): void {
    this.#ending = true;
    this.#drain();
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#queue.length = 0;
  }

  #drain = (): void => {
    this.#timer = undefined;
    if (this.#held) return;
    const now = performance.now();
    while (this.#queue.length > 0 && (this.#queue[0] as Queued).dueAt <= now) {
      const { chunk } = this.#queue.shift() as Queued;
      if (this.#to.writable) this.#to.write(chunk);
    }
    const head = this.#queue[0];
    if (head) {
      this.#timer ??= setTimeout(this.#drain, head.dueAt - now);
    } else if (this.#ending && this.#to.writable) {
      this.#to.end();
    }
  };
}

interface Pair {
  readonly client: net.Socket;
  readonly upstream: net.Socket;
  readonly pipes: readonly DelayedPipe[];
}

/** A running proxy: point a client at `port`; change the knobs at any time. */
export class DelayProxy {
  upDelayMs: number;
  downDelayMs: number;
  /**
   * While set, the delay of each chunk from the client, in place of `upDelayMs`: latency for some
   * commands only (a chunk is what one read of the socket got, often one command).
   */
  upDelayFor: ((chunk: Buffer) => number) | undefined;
  /** While true, bytes in both directions are dropped; connections stay open (a silent partition). */
  blackhole = false;
  /**
   * While true, only the server's replies are dropped: commands still arrive and are applied, the
   * client never hears back (one-way loss). The client's reply stream is then out of step: close it after.
   */
  dropReplies = false;
  /**
   * While true, connections accepted from now on hear nothing back: the server's replies, and its
   * end, wait in the proxy until `releaseReplies()`. Connections already open are not affected.
   */
  holdNewReplies = false;
  /**
   * While set, a chunk of commands it matches, and all its connection sends after it, wait in the
   * proxy until `releaseCommands()`; what was sent before runs.
   */
  holdCommandsWhen: ((chunk: Buffer) => boolean) | undefined;
  readonly #server: net.Server;
  readonly #pairs = new Set<Pair>();

  constructor(
    /** Where new connections go; change it, then `resetAll()`, to move the clients to another server. */
    public targetPort: number,
    options: DelayProxyOptions = {},
  ) {
    this.upDelayMs = options.upDelayMs ?? 0;
    this.downDelayMs = options.downDelayMs ?? 0;
    this.#server = net.createServer({ allowHalfOpen: true }, (client) => this.#accept(client));
  }

  get port(): number {
    return (this.#server.address() as net.AddressInfo).port;
  }

  /** Open client connections. */
  get connections(): number {
    return this.#pairs.size;
  }

  listen(): Promise<this> {
    return new Promise((resolve, reject) => {
      this.#server.once("error", reject);
      this.#server.listen(0, "127.0.0.1", () => resolve(this));
    });
  }

  /** Bytes of replies held back (`holdNewReplies`, `holdReplies`). */
  get heldReplyBytes(): number {
    let bytes = 0;
    for (const pair of this.#pairs) bytes += (pair.pipes[1] as DelayedPipe).heldBytes;
    return bytes;
  }

  /** Holds back the replies of the connections open now (commands still arrive and run), until `releaseReplies()`. */
  holdReplies(): void {
    for (const pair of this.#pairs) (pair.pipes[1] as DelayedPipe).hold();
  }

  /** Stops holding replies back, and delivers the held ones (then the ends that followed them). */
  releaseReplies(): void {
    this.holdNewReplies = false;
    for (const pair of this.#pairs) (pair.pipes[1] as DelayedPipe).release();
  }

  /** Bytes of commands held back (`holdCommandsWhen`). */
  get heldCommandBytes(): number {
    let bytes = 0;
    for (const pair of this.#pairs) bytes += (pair.pipes[0] as DelayedPipe).heldBytes;
    return bytes;
  }

  /** Stops holding commands back, and sends the held ones. */
  releaseCommands(): void {
    this.holdCommandsWhen = undefined;
    for (const pair of this.#pairs) (pair.pipes[0] as DelayedPipe).release();
  }

  /** Sends a TCP RST to every client and closes every upstream connection; new connections are accepted. */
  resetAll(): void {
    for (const pair of this.#pairs) this.#drop(pair, true);
  }

  async close(): Promise<void> {
    for (const pair of this.#pairs) this.#drop(pair, true);
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #accept(client: net.Socket): void {
    // half-open on both sides, so that an end is forwarded only after the bytes held back before it
    const upstream = net.connect({ port: this.targetPort, host: "127.0.0.1", allowHalfOpen: true });
    const up = new DelayedPipe(
      upstream,
      (chunk) => this.upDelayFor?.(chunk) ?? this.upDelayMs,
      () => this.blackhole,
    );
    const down = new DelayedPipe(
      client,
      () => this.downDelayMs,
      () => this.blackhole || this.dropReplies,
      this.holdNewReplies,
    );
    const pair: Pair = { client, upstream, pipes: [up, down] };
    this.#pairs.add(pair);
    client.on("data", (chunk: Buffer) => {
      if (this.holdCommandsWhen?.(chunk)) up.hold();
      up.push(chunk);
    });
    upstream.on("data", (chunk) => down.push(chunk));
    client.on("end", () => up.end());
    upstream.on("end", () => down.end());
    for (const socket of [client, upstream]) {
      socket.on("error", () => this.#drop(pair, false));
      socket.on("close", () => {
        if (client.destroyed && upstream.destroyed) this.#drop(pair, false);
      });
    }
  }

  #drop(pair: Pair, reset: boolean): void {
    if (!this.#pairs.delete(pair)) return;
    for (const pipe of pair.pipes) pipe.stop();
    if (reset && !pair.client.destroyed) pair.client.resetAndDestroy();
    else pair.client.destroy();
    pair.upstream.destroy();
  }
}

/** Starts a proxy on a free loopback port in front of `targetPort`. */
export function startDelayProxy(targetPort: number, options?: DelayProxyOptions): Promise<DelayProxy> {
  return new DelayProxy(targetPort, options).listen();
}
