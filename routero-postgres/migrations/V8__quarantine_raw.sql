-- An entry the queue could not decode is quarantined with its bytes as stored (and
-- an empty batch): nothing is lost, and an operator can read it back.
ALTER TABLE routero_quarantine ADD COLUMN raw BYTEA;
