-- Retires a sealed shard whose stream is empty (every entry applied and trimmed).
-- KEYS[1]  the shard's seal
-- KEYS[2]  the shard's stream
-- KEYS[3]  the shard's retired mark
-- Returns 1 when the shard is retired (now or before), 0 when it is not sealed or
-- still holds entries.
if redis.call('EXISTS', KEYS[3]) == 1 then
  return 1
end
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('XLEN', KEYS[2]) > 0 then
  return 0
end
redis.call('SET', KEYS[3], '1')
return 1
