-- The scheduler's run records: one row per job and period, claimed under the job
-- lease's fencing token (a claim by an older token is refused).
CREATE TABLE routero_job_runs (
    job             TEXT        NOT NULL,
    period          TEXT        NOT NULL,
    state           TEXT        NOT NULL CHECK (state IN ('running', 'done', 'failed', 'refused')),
    attempts        INTEGER     NOT NULL CHECK (attempts >= 0),
    token           BIGINT      NOT NULL,
    holder          TEXT        NOT NULL,
    error           TEXT,
    detail          TEXT,
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ,
    next_attempt_at TIMESTAMPTZ,
    PRIMARY KEY (job, period)
);
CREATE INDEX routero_job_runs_started ON routero_job_runs (started_at DESC);
