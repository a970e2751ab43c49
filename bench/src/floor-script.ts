/** The floor's compare-and-delete: delete the key only if it still holds our value. */
export const FLOOR_RELEASE = `
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
`;

/**
 * The floor's release with a retake: if the key still holds our value (ARGV[1]), set it to the
 * releaser's next value (ARGV[2]) for ARGV[3] ms, so that its next acquisition sends nothing.
 */
export const FLOOR_RETAKE = `
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[2], 'px', ARGV[3])
  return 1
end
return 0
`;
