-- Appends one spend batch to its shard's stream, once.
-- KEYS[1]  the batch's deduplication key
-- KEYS[2]  the shard's stream
-- ARGV[1]  how long the batch id is remembered, in milliseconds
-- ARGV[2]  the encoded batch
-- Returns the new entry's id, or false when the batch id was seen before.
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  -- A retry: remember the id a while longer. This is a write, so a WAIT after it
  -- waits for the replicas to hold the original append too.
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return false
end
return redis.call('XADD', KEYS[2], '*', 'b', ARGV[2])
