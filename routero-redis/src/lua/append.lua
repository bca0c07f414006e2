-- Appends one spend batch to its shard's stream, once, unless the shard is sealed.
-- KEYS[1]  the batch's deduplication key
-- KEYS[2]  the shard's stream
-- KEYS[3]  the shard's seal (set when a newer layout replaced the shard's)
-- ARGV[1]  how long the batch id is remembered, in milliseconds
-- ARGV[2]  the encoded batch
-- Returns the new entry's id; false when the batch id was seen before; 0 when the
-- shard is sealed (nothing added: the batch goes to the new layout's shards).
if redis.call('EXISTS', KEYS[1]) == 1 then
  -- A retry: remember the id a while longer. This is a write, so a WAIT after it
  -- waits for the replicas to hold the original append too.
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return false
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return redis.call('XADD', KEYS[2], '*', 'b', ARGV[2])
