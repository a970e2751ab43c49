/**
 * The Lua scripts of the algorithm, of fencing, and of the fenced write. Each runs atomically on one instance
 * over every key of a (possibly multi-resource) lock, so a lock is all or
 * nothing per instance. KEYS are the resource keys; ARGV[1] is the lock value.
 * The stores send each one whole once, then call it by SHA, and send it whole again when Redis
 * answers NOSCRIPT (after SCRIPT FLUSH, a restart, a failover): speed/evalsha-bypass.ts.
 */

/**
 * Shared by both acquire scripts (with `value`, `entry` and `n` set, queue keys at KEYS[n + i]):
 * refuses if any key belongs to another owner, reporting that owner's remaining ttl, and queues a
 * waiting caller behind it.
 */
const ENQUEUE = `-- queue the caller's entry (ARGV[4] its order; NX keeps an earlier place) and keep the queue ARGV[5] ms
local function enqueue(queue)
  redis.pcall('zadd', queue, 'nx', ARGV[4], entry)
  local left = redis.pcall('pttl', queue)
  if type(left) == 'number' and left < tonumber(ARGV[5]) then
    redis.pcall('pexpire', queue, ARGV[5])
  end
end
`;

const REFUSE_IF_HELD = `${ENQUEUE}-- refuse if any key belongs to another owner, reporting the longest remaining ttl among them
-- (-1: a key without expiry), whatever the keys' order
local longest
for i = 1, n do
  local holder = redis.call('get', KEYS[i])
  -- a key that holds our value is ours: handed to us by a release, or a SET that ioredis re-sent
  if holder and holder ~= value then
    if entry and not longest then
      -- queue behind the first holder: its release hands the key to the oldest entry (NX keeps our place)
      enqueue(KEYS[n + i])
    end
    local left = redis.call('pttl', KEYS[i])
    if left == -1 then
      return -1
    end
    if not longest or left > longest then
      longest = left
    end
  end
end
if longest then
  return longest
end
`;

/**
 * KEYS: the n lock keys, then (when ARGV[3] is given) their n queue keys. ARGV[1]: value, ARGV[2]: ttl
 * in ms; ARGV[3..5], for a call that will wait: its queue entry, its order (the same score on every
 * instance, so that every instance hands the key to the same waiter) and how long the queue may live.
 * Returns the status reply OK when acquired, as SET does, or the holder's PTTL (an integer) when
 * another owner holds a key; the waiter is then queued on that key. Not an array: an array reply
 * costs Redis a multi-part write and the client an array decode on every lock (bench/).
 */
export const ACQUIRE_SCRIPT = [
  `
local value, entry = ARGV[1], ARGV[3]
local n = entry and #KEYS / 2 or #KEYS
-- one free key: SET NX is the whole job (the common case)
-- queue commands go through pcall: a user not allowed them still locks, and its waiters poll
if n == 1 and redis.call('set', KEYS[1], value, 'nx', 'px', ARGV[2]) then
  if entry then
    redis.pcall('zrem', KEYS[2], entry)
  end
  return redis.status_reply('OK')
end
`,
  REFUSE_IF_HELD,
  `-- every key is free or ours: take them all
for i = 1, n do
  redis.call('set', KEYS[i], value, 'px', ARGV[2])
  if entry then
    redis.pcall('zrem', KEYS[n + i], entry)
  end
end
return redis.status_reply('OK')
`,
].join("");

/** The error the fenced acquire script answers when a fence counter holds data of another type. */
export const COUNTER_WRONGTYPE = "WRONGTYPE a fence counter holds data of another type";

/**
 * Phase 1 of a fenced acquisition (docs/fencing.md). KEYS: the n lock keys, then (when ARGV[3] is
 * given) their n queue keys, then their n fence counters; ARGV as for ACQUIRE_SCRIPT. Refuses as
 * ACQUIRE_SCRIPT does (the holder's PTTL) without touching a counter; otherwise increments each
 * key's counter and takes the keys. Returns the counters' new values as decimal strings, one per
 * key, in order. A counter of another type is the error COUNTER_WRONGTYPE, not Redis's WRONGTYPE,
 * which would read as the lock key's.
 */
export const FENCED_ACQUIRE_SCRIPT = [
  `
local value, entry = ARGV[1], ARGV[3]
local n = #KEYS / (entry and 3 or 2)
`,
  REFUSE_IF_HELD,
  `-- every key is free or ours: count this acquisition on each key's counter (never expires), then take them.
-- INCR first: one that fails (a counter that is not an integer) leaves no key set
local fences = {}
for i = 1, n do
  local counter = KEYS[#KEYS - n + i]
  local counted = redis.pcall('incr', counter)
  if type(counted) == 'table' and counted.err then
    -- say that it is the counter, not the lock key, that holds another type
    if string.sub(counted.err, 1, 9) == 'WRONGTYPE' then
      return redis.error_reply('${COUNTER_WRONGTYPE}')
    end
    return redis.error_reply(counted.err)
  end
  -- read back as a string: INCR's integer reply becomes a Lua double, inexact past 2^53
  fences[i] = redis.call('get', counter)
end
for i = 1, n do
  redis.call('set', KEYS[i], value, 'px', ARGV[2])
  if entry then
    redis.pcall('zrem', KEYS[n + i], entry)
  end
end
return fences
`,
].join("");

/**
 * `greater(a, b)` for decimal strings without sign or leading zeros (counters and fences, up to
 * 2^63 - 1): the longer is greater, else the first differing digit decides. Bytes, not Lua's
 * '<', which compares by the server's locale; no tonumber, which is a double and inexact past 2^53.
 */
const GREATER = `
local function greater(a, b)
  if #a ~= #b then
    return #a > #b
  end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x > y
    end
  end
  return false
end
`;

/** `isCounter(s)`: a decimal integer from 0 to 2^63 - 1 without sign or leading zeros, what INCR writes (uses GREATER). */
const IS_COUNTER = `
local function isCounter(s)
  if s == '0' then
    return true
  end
  if not string.match(s, '^[1-9]%d*$') or #s > 19 then
    return false
  end
  return #s < 19 or not greater(s, '9223372036854775807')
end
`;

/**
 * Phase 2 of a fenced acquisition: the write-back. KEYS: the n lock keys, then their n fence
 * counters; ARGV[1]: value, ARGV[1 + i]: the fence of key i (the largest counter a quorum
 * returned). If every key still holds our value, raises each counter to its fence (never lowers
 * one) and returns the status reply OK; otherwise returns the PTTL of the first key that is no
 * longer ours (its new holder's remaining ttl; -2 when nobody holds it), as the acquire scripts
 * report a holder: a lock lost between the phases gets no fence, and the caller learns how long
 * the new holder may keep it without another round trip. A refusal still raises the counters it
 * can (never lowering one; errors ignored, nothing confirmed): an instance that refused this
 * acquisition (another owner held the key there) would otherwise stay behind its fence, and a
 * later acquisition whose quorum is that instance and one that lost its data (a restart without
 * persistence) would get a smaller fence (docs/fencing.md, "What it survives"). A counter that is
 * not a decimal integer from 0 to 2^63 - 1 (something else wrote it: a negative number, text)
 * cannot be compared with a fence, so it cannot be raised: the script changes nothing and answers
 * an error, which is no confirmation. (Compared as text, "-999" looked greater than "101": the
 * instance confirmed a fence its counter was below.)
 */
export const RAISE_FENCES_SCRIPT = [
  GREATER,
  IS_COUNTER,
  `local value = ARGV[1]
local n = #KEYS / 2
for i = 1, n do
  if redis.call('get', KEYS[i]) ~= value then
    -- not ours here: no confirmation, but the counters are not the lock; raise those that are
    -- counters below their fence, so that this instance is not left behind it
    for j = 1, n do
      local current, fence = redis.pcall('get', KEYS[n + j]), ARGV[j + 1]
      if isCounter(fence) and (not current or (type(current) == 'string' and isCounter(current) and greater(fence, current))) then
        redis.pcall('set', KEYS[n + j], fence)
      end
    end
    return redis.call('pttl', KEYS[i])
  end
end
local currents = {}
for i = 1, n do
  local current = redis.pcall('get', KEYS[n + i])
  if type(current) == 'table' and current.err then
    return redis.error_reply(string.sub(current.err, 1, 9) == 'WRONGTYPE' and '${COUNTER_WRONGTYPE}' or current.err)
  end
  if current and not isCounter(current) then
    return redis.error_reply('ERR not a fence counter: something else wrote a value other than a decimal integer from 0 to 2^63 - 1 beside a lock key')
  end
  currents[i] = current
end
for i = 1, n do
  local fence, current = ARGV[i + 1], currents[i]
  if not current or greater(fence, current) then
    redis.call('set', KEYS[n + i], fence)
  end
end
return redis.status_reply('OK')
`,
].join("");

/**
 * The fenced write of `fencedSet()`: KEYS[1] a hash with fields "value" and "fence"; ARGV[1] the
 * value, ARGV[2] the writer's fence. Writes both and returns 1 only when the fence is greater than
 * the stored one (or none is stored); otherwise returns 0 and changes nothing. A stored fence that
 * is not a decimal integer from 0 to 2^63 - 1 (something else wrote the field) cannot be compared:
 * an error, nothing written (as text, "1e10" was shorter than "2000000000" and lost to it).
 */
export const FENCED_SET_SCRIPT = [
  GREATER,
  IS_COUNTER,
  `local stored = redis.call('hget', KEYS[1], 'fence')
if stored and not isCounter(stored) then
  return redis.error_reply('ERR not a fence: the stored fence is not a decimal integer from 0 to 2^63 - 1 (something else wrote it)')
end
if stored and not greater(ARGV[2], stored) then
  return 0
end
redis.call('hset', KEYS[1], 'value', ARGV[1], 'fence', ARGV[2])
return 1
`,
].join("");

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
 * Hands `key`, just deleted, to the oldest waiter in `queue` that can still hear of it: the key is
 * set to that waiter's value for the few ms it needs to claim it, and its process is told on its
 * hand-over channel. A waiter whose process is gone (nobody subscribed to its channel) is skipped.
 * Entries are "<channel>:<ms to hold the key>:<value>". `entry` (the release script's local) is a
 * waiter giving the key back, queued again: reaching it, the key stays free and it keeps its place.
 */
const HAND_OVER = `local function handOver(key, queue)
  while true do
    if entry then
      -- the giver itself, queued again, at the head: it keeps its place and the key stays free.
      -- Handed back, the key woke it after one hold for an attempt refused where its last one was,
      -- and so on once a hold for as long as a lock stood on the other instances. Read, not popped:
      -- a queue popped empty is deleted, and would come back without its expiry
      local first = redis.pcall('zrange', queue, 0, 0)
      if type(first) == 'table' and first[1] == entry then
        return
      end
    end
    -- pcall: a user not allowed ZPOPMIN still releases; its waiters poll
    local popped = redis.pcall('zpopmin', queue)
    local head = type(popped) == 'table' and popped[1]
    if not head then
      return
    end
    local channel, hold, waiter = string.match(head, '^([^:]+):(%d+):(.+)$')
    local name = waiter and 'redlock-kit:hand-over:' .. channel
    -- PUBLISH also counts pattern subscribers (a monitoring tool's PSUBSCRIBE *): a dead waiter
    -- would be heard, and the key held for it. NUMSUB counts the waiter's own subscriber alone
    -- (pcall: a user not allowed it goes by PUBLISH's count).
    local subscribed = name and redis.pcall('pubsub', 'numsub', name)
    if name and not (type(subscribed) == 'table' and subscribed[2] == 0) then
      redis.call('set', key, waiter, 'px', hold)
      -- pcall: a user without PUBLISH permission still releases; the key is not held for anyone then
      local heard = redis.pcall('publish', name, waiter .. ':' .. key)
      if type(heard) == 'number' and heard > 0 then
        return
      end
      redis.call('del', key)
      if type(heard) ~= 'number' then
        return
      end
    end
  end
end
`;

/**
 * Compare-and-delete: returns how many keys held our value and were deleted (never another owner's
 * key). KEYS: the n lock keys, then, when ARGV[2] is '1' or 'r', their n queue keys. Each deleted
 * key is handed to the oldest waiter in its queue (HAND_OVER). One key in mode '1' whose queue does
 * not exist (nobody waits, the common case) is compared and deleted and nothing else.
 * - ARGV[2] = 'R' (speed/retake.ts: one key, no queue key, released by a Redlock none of whose
 *   waiters is queued on it): if the key holds our value, it is deleted and set to ARGV[3] for ARGV[4] ms,
 *   nobody is told, and the script returns -1, as a reservation in mode 'r' does; the queue is not
 *   read (a waiter of another process at its head waits, as in mode 'r').
 * - ARGV[2] = '1' with ARGV[3..5], when a waiter gives back what a failed attempt took: its entry,
 *   order and queue lifetime, as for the acquire script. It is queued again before the key is
 *   handed on, so it keeps its place in every queue until it acquires (the oldest waiter then
 *   collects a quorum of hand-overs, rather than waiters each holding one instance). Where no
 *   listening waiter is ahead of it, the key is left free, not handed back to it.
 * - ARGV[2] = 'r' (one key, released by a Redlock that listens for hand-overs): ARGV[3] is that
 *   Redlock's hand-over channel.
 *   - With ARGV[4] a value (speed/retake.ts) and ARGV[5] a ttl, unless the queue's head is a
 *     waiter of the releasing Redlock, the key is set to that value for that many ms, nobody is
 *     told, and the script returns -1: the key is reserved for the releasing process's next call
 *     of the key, which holds it without a round trip; if that call does not come, the process
 *     releases the reserved value, which hands the key over as any release does.
 *   - With ARGV[6] (speed/own-grant.ts), when the queue's head is the releasing Redlock's own
 *     waiter whose value is ARGV[6], the key is set to that value for ARGV[7] ms (the waiter's own
 *     ttl) and its entry removed, nobody is told, and the script returns -2: the releasing process
 *     learns it from this reply and gives its waiter the lock without a claim.
 */
export const RELEASE_SCRIPT = `
local value, mode = ARGV[1], ARGV[2]
-- mode 'R': one key, reserved for the releasing Redlock's next call; none of its waiters is queued
-- on the key, so the queue's head need not be read (SET replaces our value and its ttl)
if mode == 'R' then
  if redis.call('get', KEYS[1]) ~= value then
    return 0
  end
  -- DEL first: under maxmemory Redis refuses a script's first write if it adds memory, not the
  -- ones after, so the key is released even when the reservation's SET could not be alone (F9)
  redis.call('del', KEYS[1])
  redis.call('set', KEYS[1], ARGV[3], 'px', ARGV[4])
  return -1
end
-- one key that nobody waits for (the common case): compare-and-delete is the whole job; skipping
-- the set-up and the queue read below saves Redis about 0.6 us per release (bench/README.md)
if mode == '1' and #KEYS == 2 and not ARGV[3] and redis.pcall('exists', KEYS[2]) == 0 then
  if redis.call('get', KEYS[1]) == value then
    return redis.call('del', KEYS[1])
  end
  return 0
end
local queued = mode == '1' or mode == 'r'
local entry = mode == '1' and ARGV[3]
local retake = mode == 'r' and ARGV[3]
local reserve = retake and ARGV[4] ~= '' and ARGV[4]
local grant = retake and ARGV[6]
${ENQUEUE}${HAND_OVER}local n = queued and #KEYS / 2 or #KEYS
local released = 0
for i = 1, n do
  local key = KEYS[i]
  if redis.call('get', key) == value then
    redis.call('del', key)
    released = released + 1
    if entry then
      enqueue(KEYS[n + i])
    end
    if queued then
      if retake then
        local first = redis.pcall('zrange', KEYS[n + i], 0, 0)
        local head = type(first) == 'table' and first[1]
        if head and string.sub(head, 1, #retake + 1) == retake .. ':' then
          if grant and string.match(head, '^[^:]+:%d+:(.+)$') == grant then
            redis.call('zrem', KEYS[n + i], head)
            redis.call('set', key, grant, 'px', ARGV[7])
            return -2
          end
        elseif reserve then
          redis.call('set', key, reserve, 'px', ARGV[5])
          return -1
        end
      end
      handOver(key, KEYS[n + i])
    end
  end
end
return released
`;

/** Command names on the ioredis client; versioned so two copies of the library never share a stale definition. */
export const COMMANDS = {
  acquire: "redlockKitAcquireV4",
  extend: "redlockKitExtendV1",
  release: "redlockKitReleaseV14",
  acquireFenced: "redlockKitAcquireFencedV3",
  raiseFences: "redlockKitRaiseFencesV4",
  fencedSet: "redlockKitFencedSetV2",
} as const;

/** The scripts a store calls (the fenced write is the user's, on the resource's client: fencing/fenced-write.ts). */
export type StoreScript = Exclude<(typeof COMMANDS)[keyof typeof COMMANDS], typeof COMMANDS.fencedSet>;

/** Each store script's Lua by its command name: what `RedisStore` defines on a client. */
export const STORE_SCRIPTS: Readonly<Record<StoreScript, string>> = {
  [COMMANDS.acquire]: ACQUIRE_SCRIPT,
  [COMMANDS.extend]: EXTEND_SCRIPT,
  [COMMANDS.release]: RELEASE_SCRIPT,
  [COMMANDS.acquireFenced]: FENCED_ACQUIRE_SCRIPT,
  [COMMANDS.raiseFences]: RAISE_FENCES_SCRIPT,
};
