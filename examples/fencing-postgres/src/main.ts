/**
 * Kleppmann's scenario against a real PostgreSQL: holder A takes the lock, stalls past its ttl (a
 * GC pause, a frozen VM: here a sleep), holder B takes the lock and writes; A then wakes and writes
 * with its old fence, and PostgreSQL refuses it. Connects with DATABASE_URL (or the PG* variables)
 * and takes its locks where every example does (REDIS_URL, throwaway redis-servers, or memory).
 */
import { startBackend } from "@redlock-kit/example-support";
import pg from "pg";
import { claimAccount, openAccount, readAccount, writeBalance, writeClaimed } from "./accounts.js";

const backend = await startBackend({ redlock: { fencing: true, retryCount: 0 } });
const db = new pg.Pool(process.env.DATABASE_URL ? { connectionString: process.env.DATABASE_URL } : {});
try {
  console.log(backend.description);
  await openAccount(db, "acme", 100);

  const a = await backend.redlock.acquire("account:acme", 200);
  // a read the write depends on: the row takes A's fence as A reads it (accounts.ts, claimAccount)
  const read = await claimAccount(db, "acme", a.fence as string);
  console.log(`A holds the lock with fence ${a.fence} and reads balance ${read?.balance}`);
  await new Promise((resolve) => setTimeout(resolve, 300)); // A stalls past its 200 ms ttl

  const b = await backend.redlock.acquire("account:acme", 5000);
  const wroteB = await writeBalance(db, "acme", 150, b.fence as string);
  console.log(`B takes the lock with fence ${b.fence} and writes 150: ${wroteB ? "accepted" : "refused"}`);
  await b.release();

  const wroteA = await writeClaimed(db, "acme", (read?.balance ?? 0) + 10, a.fence as string);
  console.log(
    `A wakes (lock valid: ${a.valid}) and writes 110 with fence ${a.fence}: ${wroteA ? "accepted" : "refused"}`,
  );
  const final = await readAccount(db, "acme");
  console.log(`the row: balance ${final?.balance}, fence ${final?.fence}`);
  process.exitCode = wroteB && !wroteA ? 0 : 1;
} finally {
  await db.end();
  await backend.close();
}
