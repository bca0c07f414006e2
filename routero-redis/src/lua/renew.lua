-- Extends a lease, only if it is still held by the same holder and token.
-- KEYS[1]  the lease
-- ARGV[1]  'holder|token'
-- ARGV[2]  the lease's time to live, in milliseconds
-- Returns 1 when renewed, 0 when the lease was lost.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
