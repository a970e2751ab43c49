/** The floor's compare-and-delete: delete the key only if it still holds our value. */
export const FLOOR_RELEASE = `
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
`;
