import { Readable } from "node:stream";
import type { ReadableStream as NodeWebStream } from "node:stream/web";
import {
  type CallHandler,
  type ExecutionContext,
  Global,
  type INestApplication,
  Injectable,
  type LoggerService,
  Module,
  type NestInterceptor,
  RequestTimeoutException,
  type Type,
} from "@nestjs/common";
import { NestFactory } from "@nestjs/core";
import { FastifyAdapter } from "@nestjs/platform-fastify";
import { Redlock } from "@redlock-kit/core";
import { catchError, type Observable, TimeoutError, throwError, timeout } from "rxjs";
import { warmUp } from "#test-helpers/warm-up.js";

export type Platform = "express" | "fastify";
export const platforms: readonly Platform[] = ["express", "fastify"];

export interface RunningNestApp {
  readonly app: INestApplication;
  readonly url: string;
  close(): Promise<void>;
}

/** A LoggerService that keeps the debug and error lines for assertions and prints nothing. */
export function captureLogs(): { logger: LoggerService; debug: string[]; error: string[] } {
  const debug: string[] = [];
  const error: string[] = [];
  const ignore = () => {};
  const logger: LoggerService = {
    log: ignore,
    warn: ignore,
    verbose: ignore,
    debug: (message: unknown) => debug.push(String(message)),
    error: (message: unknown) => error.push(String(message)),
  };
  return { logger, debug, error };
}

/**
 * A real Nest app on `platform`, listening on a free loopback port. The test files are compiled by
 * vitest's transform, which has no emitDecoratorMetadata: constructors name what they inject with
 * `@Inject(...)`.
 */
export async function startNestApp(
  module: Type<unknown>,
  platform: Platform,
  logger: LoggerService | false = false,
): Promise<RunningNestApp> {
  const app =
    platform === "express"
      ? await NestFactory.create(module, { logger, abortOnError: false })
      : await NestFactory.create(module, new FastifyAdapter(), { logger, abortOnError: false });
  await app.listen(0, "127.0.0.1");
  // the app's Redlock, if it has one, on clients it just created: a first route or @Locked call (one
  // attempt, 1 s locks in places) waits only 100 ms for them to say who they are
  const redlock = appRedlock(app);
  if (redlock !== undefined) await warmUp(redlock);
  const url = (await app.getUrl()).replace("[::1]", "127.0.0.1").replace("localhost", "127.0.0.1");
  return { app, url, close: () => app.close() };
}

/** The TimeoutInterceptor of docs.nestjs.com/interceptors: answers 408 after `ms` while the method goes on. */
/** The Redlock a RedlockModule of `app` provides; undefined for an app without one. */
function appRedlock(app: INestApplication): Redlock | undefined {
  try {
    return app.get(Redlock, { strict: false });
  } catch {
    return undefined;
  }
}

export class TimeoutInterceptor implements NestInterceptor {
  constructor(private readonly ms: number) {}
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(
      timeout(this.ms),
      catchError((error) => throwError(() => (error instanceof TimeoutError ? new RequestTimeoutException() : error))),
    );
  }
}

/**
 * In a global module, whose shutdown hooks Nest runs last (a module's run before those of the
 * modules it imports): its beforeApplicationShutdown comes after RedlockModule's, which has then
 * stopped taking locks.
 */
@Injectable()
export class ShutdownProbe {
  static began = () => {};
  beforeApplicationShutdown() {
    ShutdownProbe.began();
  }
}

@Global()
@Module({ providers: [ShutdownProbe] })
export class ShutdownProbeModule {}

/** Express's response or Fastify's reply, as a handler with `@Res()` gets it. */
export interface PlatformResponse {
  /** Fastify's reply wraps the Node response; Express's response is one. */
  raw?: unknown;
  /** Both set the status so. */
  status(code: number): unknown;
  send(payload: unknown): unknown;
}

/**
 * Sends a streamed body through the platform's own response, past the interceptor: Fastify's
 * reply.send(), Express's pipe (a web stream as a Node one).
 */
export function sendItself(response: PlatformResponse, body: Readable | ReadableStream): void {
  if (response.raw !== undefined) response.send(body);
  else {
    const node = body instanceof ReadableStream ? Readable.fromWeb(body as NodeWebStream) : body;
    node.pipe(response as unknown as NodeJS.WritableStream);
  }
}
