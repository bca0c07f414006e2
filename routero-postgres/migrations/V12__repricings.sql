-- Repricings: the audit record of each (kept for good), and the corrections each
-- applied, beside the request log, whose recorded cost is never changed. A request
-- is corrected at most once per repricing: the primary key is what makes applying a
-- repricing again, or finishing one a crash stopped, apply nothing twice.
CREATE TABLE routero_repricings (
    id            TEXT        PRIMARY KEY,
    org           TEXT,
    from_day      DATE        NOT NULL,
    to_day        DATE        NOT NULL,
    workspace     TEXT,
    provider      TEXT,
    model         TEXT,
    billing_mode  TEXT,
    reason        TEXT        NOT NULL,
    actor         TEXT        NOT NULL,
    prices_before TEXT        NOT NULL,
    prices_after  TEXT        NOT NULL,
    currency      TEXT        NOT NULL,
    planned       JSONB       NOT NULL,
    corrected     BIGINT      NOT NULL DEFAULT 0,
    delta         NUMERIC     NOT NULL DEFAULT 0,
    state         TEXT        NOT NULL CHECK (state IN ('applying', 'applied')),
    created_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ
);
CREATE INDEX routero_repricings_org ON routero_repricings (org, created_at DESC);

CREATE TABLE routero_spend_corrections (
    request_id    TEXT        NOT NULL,
    repricing_id  TEXT        NOT NULL REFERENCES routero_repricings (id),
    event_time    TIMESTAMPTZ NOT NULL,
    old_cost      NUMERIC,
    new_cost      NUMERIC     NOT NULL,
    currency      TEXT        NOT NULL,
    price_version TEXT        NOT NULL,
    applied_at    TIMESTAMPTZ NOT NULL,
    seq           BIGINT      GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (request_id, repricing_id)
);
CREATE INDEX routero_spend_corrections_repricing ON routero_spend_corrections (repricing_id);
