/**
 * A query builder as Drizzle's and Knex's are: a thenable that runs its query each time `then` is
 * called (nothing memoized), the way a handler returns `db.update(...)` without awaiting it. `runs`
 * counts the runs: a framework awaits it once, and anything else that calls `then` runs it again.
 */
export function lazyQuery<T>(query: () => Promise<T>): PromiseLike<T> & { readonly runs: number } {
  let runs = 0;
  return {
    get runs() {
      return runs;
    },
    // biome-ignore lint/suspicious/noThenProperty: the thenable is what is under test
    then(onFulfilled, onRejected) {
      runs++;
      return query().then(onFulfilled, onRejected);
    },
  };
}
