/**
 * A row that only the newest lock holder may write: every write carries the holder's fencing token
 * and the row keeps the largest token it accepted. The `WHERE ... fence < $2` makes PostgreSQL
 * itself refuse a holder whose lock expired while it was paused, after a newer holder wrote.
 */
import type { Lock, Redlock } from "@redlock-kit/core";

/** What these functions need of `pg`: a `Pool`, a `Client` or a `PoolClient`. */
export interface Queryable {
  query(text: string, values?: unknown[]): Promise<{ rows: unknown[]; rowCount: number | null }>;
}

/**
 * `fence` is a bigint: Redis counters and PostgreSQL's bigint are both 64-bit signed, so every fence
 * fits. Pass it as the decimal string `lock.fence` is; PostgreSQL compares it as an integer.
 */
export const CREATE_ACCOUNTS = `CREATE TABLE IF NOT EXISTS accounts (
  id text PRIMARY KEY,
  balance bigint NOT NULL,
  fence bigint NOT NULL DEFAULT 0
)`;

export interface Account {
  readonly id: string;
  readonly balance: number;
  /** The fence of the last write, as a decimal string ("0": never written under a lock). */
  readonly fence: string;
}

/** Creates the account with `balance` (fence 0), or resets it. */
export async function openAccount(db: Queryable, id: string, balance: number): Promise<void> {
  await db.query(CREATE_ACCOUNTS);
  await db.query(
    "INSERT INTO accounts (id, balance, fence) VALUES ($1, $2, 0) ON CONFLICT (id) DO UPDATE SET balance = $2, fence = 0",
    [id, balance],
  );
}

export async function readAccount(db: Queryable, id: string): Promise<Account | undefined> {
  // bigint comes back as a string from pg: exact past 2^53
  const { rows } = await db.query(
    "SELECT id, balance::float8 AS balance, fence::text AS fence FROM accounts WHERE id = $1",
    [id],
  );
  return rows[0] as Account | undefined;
}

/**
 * The fenced write: sets the balance only if no write with this fence or a later one happened.
 * Resolves to `false` when refused: a newer lock holder has written, so this holder's view is stale.
 * For a balance that does not depend on what the row held; one computed from a read of the row is
 * `claimAccount` then `writeClaimed` (see `deposit`).
 */
export async function writeBalance(db: Queryable, id: string, balance: number, fence: string): Promise<boolean> {
  const result = await db.query("UPDATE accounts SET balance = $3, fence = $2 WHERE id = $1 AND fence < $2", [
    id,
    fence,
    balance,
  ]);
  return result.rowCount === 1;
}

/**
 * Claims the account for the holder of `fence` and reads it, in one statement: the row takes the
 * fence before it is read, so from then on every write with an older fence is refused. A write
 * check alone is not enough for a read-modify-write: an older holder, paused past its ttl, whose
 * write lands after this holder's read (no newer fence stored yet, so it is accepted) would be
 * overwritten by this holder's write, computed without it. Resolves to `undefined` when a holder
 * with this fence or a newer one claimed or wrote the account first, or there is no such account.
 */
export async function claimAccount(db: Queryable, id: string, fence: string): Promise<Account | undefined> {
  const { rows } = await db.query(
    "UPDATE accounts SET fence = $2 WHERE id = $1 AND fence < $2 RETURNING id, balance::float8 AS balance, fence::text AS fence",
    [id, fence],
  );
  return rows[0] as Account | undefined;
}

/** The write after `claimAccount`: sets the balance only if no newer holder claimed the account since. */
export async function writeClaimed(db: Queryable, id: string, balance: number, fence: string): Promise<boolean> {
  const result = await db.query("UPDATE accounts SET balance = $3 WHERE id = $1 AND fence = $2", [id, fence, balance]);
  return result.rowCount === 1;
}

/**
 * Read-modify-write under a fenced lock on `account:<id>`: resolves to the new balance, or
 * `undefined` when refused because a newer holder claimed the account first (the deposit was not
 * made). The read claims the row (`claimAccount`), so an older holder's late write can no longer
 * land between this read and this write.
 *
 * @example
 * const dlm = new Redlock(instances, { fencing: true });
 * await deposit(dlm, pool, "acme", 10);
 */
export async function deposit(dlm: Redlock, db: Queryable, id: string, amount: number): Promise<number | undefined> {
  return dlm.using(
    `account:${id}`,
    5000,
    async (_signal, lock: Lock) => {
      const fence = lock.fence as string;
      const account = await claimAccount(db, id, fence);
      if (account === undefined) {
        if ((await readAccount(db, id)) === undefined) throw new Error(`no account ${id}`);
        return undefined;
      }
      const balance = account.balance + amount;
      return (await writeClaimed(db, id, balance, fence)) ? balance : undefined;
    },
    { fencing: true, wait: 5000 },
  );
}
