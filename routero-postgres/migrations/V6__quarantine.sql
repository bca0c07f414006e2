-- Batches the drain could not apply, set aside in the same transaction that advanced
-- their shard's watermark past them. Nothing is deleted: a batch leaves the
-- quarantine by a replay (applied once, in the transaction that marks it) or a
-- discard, and its row stays as the record.
CREATE TABLE routero_quarantine (
    id             BIGSERIAL   PRIMARY KEY,
    shard          INTEGER     NOT NULL,
    position_major BIGINT      NOT NULL,
    position_minor BIGINT      NOT NULL,
    batch_id       TEXT        NOT NULL,
    batch          TEXT        NOT NULL,
    events         INTEGER     NOT NULL,
    reason         TEXT        NOT NULL
        CHECK (reason IN ('missing_exchange_rate', 'invalid', 'corrupt', 'other')),
    detail         TEXT        NOT NULL,
    quarantined_at TIMESTAMPTZ NOT NULL,
    state          TEXT        NOT NULL DEFAULT 'quarantined'
        CHECK (state IN ('quarantined', 'replayed', 'discarded')),
    released_at    TIMESTAMPTZ,
    release_reason TEXT,
    UNIQUE (shard, position_major, position_minor),
    CHECK ((state = 'quarantined') = (released_at IS NULL))
);

CREATE INDEX routero_quarantine_waiting ON routero_quarantine (id) WHERE state = 'quarantined';
