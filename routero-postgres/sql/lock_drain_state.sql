-- Locks a shard's drain state for the rest of the transaction, creating it at first
-- use, and returns it. (An upsert locks the row it returns, inserted or not.)
INSERT INTO routero_drain_state AS s (shard) VALUES ($1)
ON CONFLICT (shard) DO UPDATE SET shard = s.shard
RETURNING watermark_major, watermark_minor, fencing_token
