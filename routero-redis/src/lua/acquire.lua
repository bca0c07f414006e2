-- Takes a shard's lease if nobody holds it, with a new fencing token.
-- KEYS[1]  the lease
-- KEYS[2]  the shard's fencing-token counter
-- ARGV[1]  the holder's name
-- ARGV[2]  the lease's time to live, in milliseconds
-- Returns the fencing token, or false when the lease is held.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'KEEPTTL')
return token
