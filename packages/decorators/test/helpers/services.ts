import type { Redlock } from "@redlock-kit/core";

/**
 * What the fixtures under both decorator modes export, so that one contract runs against each.
 * `inside` is called inside the critical section with the method's `this`; what it returns
 * (awaited) is the method's result, so a test can look at Redis, start other calls or hold the
 * lock open from there.
 */
export type Inside = (self: unknown) => unknown;

export interface Transfer {
  accountId?: string;
  amount: number;
}

export interface OrderService {
  /** `@Locked("order:{0}", 5000)` */
  pay(orderId: string, inside?: Inside): Promise<unknown>;
  /** `@Locked("account:{0.accountId}", { ttl: 5000, wait: 0 })` */
  transfer(dto: Transfer, inside?: Inside): Promise<unknown>;
  /** `@Locked(([from, to]) => ["account:<from>", "account:<to>"])`: two resources, one lock */
  move(from: string, to: string, inside?: Inside): Promise<unknown>;
  /** `@Locked((args) => args[0].map(...))`: one resource per order id; a key function that can throw */
  settle(orderIds: readonly string[], inside?: Inside): Promise<unknown>;
  /** `@Locked("order:{0}")`, throws `error` */
  fail(orderId: string, error: unknown): Promise<never>;
  /** `@Locked("order:{0}")`, then calls `this.pay(orderId, inside)` (locked on the same key) */
  payAgain(orderId: string, inside?: Inside): Promise<unknown>;
  /** `@Locked("order:{0}", { redlock: alt })`: the same key through another Redlock */
  payElsewhere(orderId: string, inside?: Inside): Promise<unknown>;
  /** `@Locked("order:{0}", { wait: 20000 })` */
  payPatiently(orderId: string, inside?: Inside): Promise<unknown>;
  /** `@Locked("order:{0}", { ttl: 1000 })`: kept by auto-extension */
  payWithShortTtl(orderId: string, inside?: Inside): Promise<unknown>;
  /** `@Locked("order:{0}", { ttl: 1000, maxHoldMs: 100 })`: not extended past the cap */
  payCapped(orderId: string, inside?: Inside): Promise<unknown>;
  /** `@Locked("counter:{0}")` on a method that is not async (TypeScript refuses it: @ts-expect-error) */
  countSync(counterId: string): unknown;
  /** how many times `countSync`'s body ran */
  readonly syncRuns: number;
  /** `@Locked("order:{0}")` below a decorator that puts `TAG` metadata on the method */
  tagged(orderId: string): Promise<string>;
}

export interface OrderServiceClass {
  new (): OrderService;
  readonly prototype: OrderService;
  /** `@Locked("audit:{0}")` on a static method */
  audit(day: string, inside?: Inside): Promise<unknown>;
}

export interface Fixtures {
  OrderService: OrderServiceClass;
}

export interface FixtureModule {
  /** The reflect-metadata key the fixture's own tagging decorator writes, and the value it writes. */
  readonly TAG: string;
  readonly TAG_VALUE: string;
  createFixtures(alt: Redlock): Fixtures;
}
