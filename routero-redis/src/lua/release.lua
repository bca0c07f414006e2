-- Gives a lease up, only if it is still held by the same holder and token.
-- KEYS[1]  the lease
-- ARGV[1]  'holder|token'
-- Returns 1 when released, 0 when it was not held any more.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
