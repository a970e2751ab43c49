// node-redlock 5.0.0-beta.2 has types, but its package.json "exports" does not point at them,
// so NodeNext resolution cannot find them. Only what the benchmark uses.
declare module "redlock" {
  import type { EventEmitter } from "node:events";

  export interface Settings {
    readonly driftFactor?: number;
    readonly retryCount?: number;
    readonly retryDelay?: number;
    readonly retryJitter?: number;
  }
  export class Lock {
    readonly resources: string[];
    readonly value: string;
    release(): Promise<unknown>;
  }
  export default class Redlock extends EventEmitter {
    constructor(clients: Iterable<unknown>, settings?: Settings);
    acquire(resources: string[], duration: number, settings?: Partial<Settings>): Promise<Lock>;
    release(lock: Lock, settings?: Partial<Settings>): Promise<unknown>;
  }
}
