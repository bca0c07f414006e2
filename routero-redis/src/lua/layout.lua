-- Replaces the shard layout if it is still the one the caller read.
-- KEYS[1]  the layout key
-- ARGV[1]  the layout the caller read ('' when the key did not exist)
-- ARGV[2]  the new layout
-- Returns 1 when replaced, 0 when the layout had changed meanwhile.
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
