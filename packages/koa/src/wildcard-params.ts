/**
 * @koa/router gives a wildcard (`/files/*path`) as one string, `"a/b/c"`; Express 5 gives it as the
 * list of its segments. Handed to core as that list, it meets core's rule for wildcard paths: joined
 * with "/", and an empty, "." or ".." segment refused (400), since `/files/a//b` and `/files/a/b`
 * name one file and must never hold two locks. The route's path (`ctx.routerPath`, which
 * @koa/router documents) names its wildcards (path-to-regexp v8: `*name`).
 */
const WILDCARD = /\*([$_\p{ID_Start}][$\p{ID_Continue}]*)/gu;

/** `params` with each wildcard of `routerPath` given as its list of segments; `params` itself when there is none. */
export function withWildcardLists(params: unknown, routerPath: unknown): unknown {
  // most routes have no wildcard: one `includes` and nothing else
  if (typeof routerPath !== "string" || !routerPath.includes("*")) return params;
  if (typeof params !== "object" || params === null) return params;
  const listed: Record<string, unknown> = { ...params };
  for (const [, name] of routerPath.matchAll(WILDCARD)) {
    const value = listed[name as string];
    if (typeof value === "string") listed[name as string] = value.split("/");
  }
  return listed;
}
