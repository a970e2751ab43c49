/** Stable codes, one per error class, for logs and `switch` statements. */
export const ErrorCodes = {
  contention: "ERR_REDLOCK_CONTENTION",
  unavailable: "ERR_REDLOCK_UNAVAILABLE",
  lost: "ERR_REDLOCK_LOST",
  key: "ERR_REDLOCK_KEY",
  config: "ERR_REDLOCK_CONFIG",
} as const;

export type RedlockErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/**
 * Headers every error answer an HTTP adapter writes carries (each `RedlockError`'s `headers`):
 * `Cache-Control: no-store`, set over one the app put on the response before. A 423 or 503 with an
 * explicit `public` or `max-age` is storable (RFC 9111): a shared cache would serve it to everyone
 * long after the lock is free or Redis is back.
 */
export const ERROR_ANSWER_HEADERS: Readonly<Record<string, string>> = Object.freeze({ "Cache-Control": "no-store" });

/** Brand that survives two installed copies of this package (instanceof would not). */
const BRAND = Symbol.for("redlock-kit.error");

/**
 * Base class of every error redlock-kit throws on purpose. Each subclass carries
 * its HTTP meaning (`status`, `statusCode`, `expose`) so that Koa, Fastify and
 * Express error handlers map it without glue.
 */
export abstract class RedlockError extends Error {
  abstract readonly code: RedlockErrorCode;
  abstract readonly status: number;
  /** The JSON body an HTTP adapter answers with. Never contains internal detail. */
  abstract readonly body: { error: string };
  /** Response headers that belong to this outcome: `ERROR_ANSWER_HEADERS`, and a 423's `Retry-After`. */
  get headers(): Record<string, string> {
    return { ...ERROR_ANSWER_HEADERS };
  }
  /** Same as `status`, for frameworks that read `statusCode` (Fastify). */
  get statusCode(): number {
    return this.status;
  }
  /** The message is safe to show to a client (Koa reads this). */
  readonly expose: boolean = true;
  readonly [BRAND] = true;

  /** True for any redlock-kit error, including one thrown by another installed copy. */
  static isRedlockError(value: unknown): value is RedlockError {
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }
}

/** Another owner holds the resource after the retries or `wait` were spent (HTTP 423). */
export class LockContentionError extends RedlockError {
  override readonly name = "LockContentionError";
  readonly code = ErrorCodes.contention;
  readonly status = 423;
  readonly body = { error: "Resource is locked" };
  /** The resources asked for. */
  readonly resources: readonly string[];
  /**
   * The holder's remaining TTL in ms, as read with the refusal: 1 when its key went meanwhile (try
   * again at once), the lock's own ttl when unknown or when the holder's key has no expiry.
   */
  readonly retryAfterMs: number;

  constructor(resources: readonly string[], retryAfterMs: number) {
    // No resource names in messages: with `expose` Koa and Fastify send the message to the client,
    // and a resource may hold user data. They stay on `resources` for logs.
    super("Resource is locked");
    this.resources = Object.freeze([...resources]);
    this.retryAfterMs = retryAfterMs;
  }

  override get headers(): Record<string, string> {
    return { ...super.headers, "Retry-After": String(Math.max(1, Math.ceil(this.retryAfterMs / 1000))) };
  }
}

/** Why one instance could not vote: its index in the instance list and a redacted error. */
export interface InstanceFailure {
  readonly instance: number;
  readonly error: Error;
}

/** No quorum could be asked: instances errored or timed out (HTTP 503). Not contention. */
export class LockUnavailableError extends RedlockError {
  override readonly name = "LockUnavailableError";
  readonly code = ErrorCodes.unavailable;
  readonly status = 503;
  readonly body = { error: "Lock service unavailable" };
  readonly resources: readonly string[];
  /** Per-instance causes of the last attempt (errors are redacted: no lock value, no command). */
  readonly causes: readonly InstanceFailure[];

  constructor(resources: readonly string[], causes: readonly InstanceFailure[], message?: string) {
    super(message ?? "Lock service unavailable: no quorum could be asked", {
      cause: causes[0]?.error,
    });
    this.resources = Object.freeze([...resources]);
    this.causes = Object.freeze([...causes]);
  }
}

/** The lock is no longer held on a quorum: a failed extension or an ended validity (HTTP 409). */
export class LockLostError extends RedlockError {
  override readonly name = "LockLostError";
  readonly code = ErrorCodes.lost;
  readonly status = 409;
  readonly body = { error: "Lock was lost" };
  readonly resources: readonly string[];

  constructor(resources: readonly string[], message?: string, options?: ErrorOptions) {
    super(message ?? "Lock lost", options);
    this.resources = Object.freeze([...resources]);
  }
}

/** A key template or key function could not produce a resource name (HTTP 400). */
export class LockKeyError extends RedlockError {
  override readonly name = "LockKeyError";
  readonly code = ErrorCodes.key;
  readonly status = 400;
  readonly body: { error: string };
  /** The placeholder that was missing or not a scalar (e.g. `params.id`), when there is one. */
  readonly path: string | undefined;

  constructor(message: string, path?: string, options?: ErrorOptions) {
    super(message, options);
    this.path = path;
    this.body = { error: message };
  }
}

/**
 * The deployment cannot give a safe lock, and retrying will not change that (HTTP 500): one Redis
 * server listed twice (it would vote twice), a Cluster node or a Sentinel given as a plain server,
 * or a lock's key holding data of another type. The message names the instances for the operator;
 * clients only see the fixed body.
 */
export class LockConfigurationError extends RedlockError {
  override readonly name = "LockConfigurationError";
  readonly code = ErrorCodes.config;
  readonly status = 500;
  readonly body = { error: "Lock service misconfigured" };
  /** The message names instances (host:port) and may name resources: not for clients. */
  override readonly expose = false;
  /** The indexes of the instances concerned, in the order given to `new Redlock()`. */
  readonly instances: readonly number[];
  /** The resources of the call that found the problem (empty when it concerns the instances alone). */
  readonly resources: readonly string[];

  constructor(
    message: string,
    instances: readonly number[],
    resources: readonly string[] = [],
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.instances = Object.freeze([...instances]);
    this.resources = Object.freeze([...resources]);
  }
}
