/**
 * The three Lua scripts of the algorithm. Each runs atomically on one instance
 * over every key of a (possibly multi-resource) lock, so a lock is all or
 * nothing per instance. KEYS are the resource keys; ARGV[1] is the lock value.
 * They are registered with ioredis `defineCommand`, which calls them by SHA and
 * falls back to EVAL on NOSCRIPT (after SCRIPT FLUSH or a restart).
 */

/**
 * ARGV[2]: ttl in ms. Returns the status reply OK when acquired, as SET does, or the holder's PTTL
 * (an integer) when another owner holds a key. Not an array: an array reply costs Redis a
 * multi-part write and the client an array decode on every lock (bench/).
 */
export const ACQUIRE_SCRIPT = `
-- one free key: SET NX is the whole job (the common case, one command)
if #KEYS == 1 then
  local ok = redis.call('set', KEYS[1], ARGV[1], 'nx', 'px', ARGV[2])
  if ok then
    return ok
  end
end
-- refuse if any key belongs to another owner, reporting that owner's remaining ttl
for _, key in ipairs(KEYS) do
  local holder = redis.call('get', key)
  -- a key that already holds our value counts as ours: ioredis re-sends an unanswered SET after a reconnect
  if holder and holder ~= ARGV[1] then
    return redis.call('pttl', key)
  end
end
-- every key is free or ours: take them all
for _, key in ipairs(KEYS) do
  redis.call('set', key, ARGV[1], 'px', ARGV[2])
end
return redis.status_reply('OK')
`;

/** ARGV[2]: new ttl in ms. Returns 1 when every key still held our value and was extended, else 0. */
export const EXTEND_SCRIPT = `
-- extend only if we still hold every key
for _, key in ipairs(KEYS) do
  if redis.call('get', key) ~= ARGV[1] then
    return 0
  end
end
-- PEXPIRE, not SET: a SET inside a script is refused under maxmemory, PEXPIRE is not
for _, key in ipairs(KEYS) do
  redis.call('pexpire', key, ARGV[2])
end
return 1
`;

/**
 * Returns how many keys held our value and were deleted (compare-and-delete: never another owner's
 * key), and announces each deletion on `redlock-kit:released:<key>` for waiters. ARGV[2], when
 * given, is the announcement's message, and the reply then also counts the subscribers that heard
 * it, as one integer (an array reply costs Redis a multi-part write): released + (#KEYS + 1) × heard.
 * ARGV[3] = '1' (a hand-over within the releasing process): announce only if more than one
 * connection listens, since the releaser's own listener has been told already.
 */
export const RELEASE_SCRIPT = `
local notice = ARGV[2]
local released, heard = 0, 0
for _, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then
    redis.call('del', key)
    released = released + 1
    local channel = 'redlock-kit:released:' .. key
    local reached
    if ARGV[3] == '1' then
      -- pcall: a user without PUBSUB NUMSUB permission gets an error table, and announces instead
      local subscribers = redis.pcall('pubsub', 'numsub', channel)
      if type(subscribers) == 'table' and type(subscribers[2]) == 'number' and subscribers[2] <= 1 then
        reached = subscribers[2]
      end
    end
    if not reached then
      -- pcall: a user without PUBLISH permission still releases; its waiters poll instead
      reached = redis.pcall('publish', channel, notice or '')
    end
    if type(reached) == 'number' then
      heard = heard + reached
    end
  end
end
if notice then
  return released + (#KEYS + 1) * heard
end
return released
`;

/** Command names on the ioredis client; versioned so two copies of the library never share a stale definition. */
export const COMMANDS = {
  acquire: "redlockKitAcquireV2",
  extend: "redlockKitExtendV1",
  release: "redlockKitReleaseV3",
} as const;
