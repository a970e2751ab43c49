import Fastify, { type FastifyInstance, type FastifyServerOptions } from "fastify";
import { useRedlockBed } from "#test-helpers/redlock-bed.js";

/** A test file's bed (`useRedlockBed`) whose `app()` is a new Fastify instance closed after the test. */
export function useFastifyRedlock() {
  const bed = useRedlockBed((app: FastifyInstance) => app.close());
  return {
    get redis() {
      return bed.redis;
    },
    get dlm() {
      return bed.dlm;
    },
    app: (options?: FastifyServerOptions): FastifyInstance => bed.track(Fastify(options)),
  };
}
