-- The warehouse sync. Every rollup and request-log row carries, as its version, the
-- id of the transaction that last wrote it (pg_current_xact_id(): 64 bits, it never
-- wraps). A sync run exports the versions in [from_version, to_version), where
-- to_version is the xmin of a snapshot taken when the run was planned: every
-- transaction below it had ended, so the range's rows were final.
-- Rows written before this migration get version 0 and go in the first run.
ALTER TABLE routero_daily_rollups ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE routero_daily_rollups
    ALTER COLUMN version SET DEFAULT (pg_current_xact_id()::text::bigint);

ALTER TABLE routero_spend_log ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE routero_spend_log
    ALTER COLUMN version SET DEFAULT (pg_current_xact_id()::text::bigint);
-- The log is append-only and its versions grow with its heap: a BRIN index finds a
-- run's rows and costs the drain almost nothing to keep.
CREATE INDEX routero_spend_log_version ON routero_spend_log USING brin (version);

-- The runs of each sink. The newest run's to_version is the sink's watermark.
CREATE TABLE routero_sync_runs (
    sink         TEXT        NOT NULL,
    run          BIGINT      NOT NULL CHECK (run > 0),
    hour         TIMESTAMPTZ NOT NULL,
    from_version BIGINT      NOT NULL CHECK (from_version >= 0),
    to_version   BIGINT      NOT NULL CHECK (to_version >= from_version),
    planned_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ,
    rollup_rows  BIGINT,
    log_rows     BIGINT,
    PRIMARY KEY (sink, run),
    UNIQUE (sink, hour)
);

-- A sink has at most one unfinished run.
CREATE UNIQUE INDEX routero_sync_runs_open ON routero_sync_runs (sink) WHERE finished_at IS NULL;
