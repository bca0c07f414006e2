-- The whole usage of every logged request (every category, the service tier, the
-- per-call meters), so that any request can be priced again exactly. Requests logged
-- before this migration have none and are reported as such by a repricing.
ALTER TABLE routero_spend_log ADD COLUMN usage JSONB;
