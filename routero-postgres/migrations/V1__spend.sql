-- Routero's system of record: drain state, daily rollups, the unpriced record and
-- the request-level spend log. Money is NUMERIC (exact); token counts are BIGINT.
-- An absent optional dimension (a request without a team) is stored as '' (ids are
-- never empty), so that it can be part of the rollup key.

CREATE TABLE routero_drain_state (
    shard           INTEGER     PRIMARY KEY CHECK (shard >= 0),
    watermark_major BIGINT,
    watermark_minor BIGINT,
    fencing_token   BIGINT,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((watermark_major IS NULL) = (watermark_minor IS NULL))
);

CREATE TABLE routero_daily_rollups (
    day                   DATE    NOT NULL,
    org                   TEXT    NOT NULL,
    workspace             TEXT    NOT NULL,
    team                  TEXT    NOT NULL,
    api_key               TEXT    NOT NULL,
    user_id               TEXT    NOT NULL,
    customer              TEXT    NOT NULL,
    provider              TEXT    NOT NULL,
    model                 TEXT    NOT NULL,
    billing_mode          TEXT    NOT NULL CHECK (billing_mode IN ('managed', 'byok')),
    input_tokens          BIGINT  NOT NULL CHECK (input_tokens >= 0),
    cache_read_tokens     BIGINT  NOT NULL CHECK (cache_read_tokens >= 0),
    cache_write_5m_tokens BIGINT  NOT NULL CHECK (cache_write_5m_tokens >= 0),
    cache_write_1h_tokens BIGINT  NOT NULL CHECK (cache_write_1h_tokens >= 0),
    output_tokens         BIGINT  NOT NULL CHECK (output_tokens >= 0),
    reasoning_tokens      BIGINT  NOT NULL CHECK (reasoning_tokens >= 0),
    web_search_requests   BIGINT  NOT NULL CHECK (web_search_requests >= 0),
    successes             BIGINT  NOT NULL CHECK (successes >= 0),
    failures              BIGINT  NOT NULL CHECK (failures >= 0),
    unpriced              BIGINT  NOT NULL CHECK (unpriced >= 0),
    cost                  NUMERIC NOT NULL,
    -- The org and the day lead: every read is scoped to one org and a date range.
    PRIMARY KEY (org, day, workspace, team, api_key, user_id, customer, provider, model, billing_mode)
);

-- The daily-activity reads filter one org by team, key, user or customer over a range.
CREATE INDEX routero_daily_rollups_team ON routero_daily_rollups (org, team, day);
CREATE INDEX routero_daily_rollups_api_key ON routero_daily_rollups (org, api_key, day);
CREATE INDEX routero_daily_rollups_user ON routero_daily_rollups (org, user_id, day);
CREATE INDEX routero_daily_rollups_customer ON routero_daily_rollups (org, customer, day);

-- Requests that could not be priced, kept with their reason to be repriced later.
CREATE TABLE routero_unpriced (
    request_id   TEXT        PRIMARY KEY,
    event_time   TIMESTAMPTZ NOT NULL,
    org          TEXT        NOT NULL,
    workspace    TEXT        NOT NULL,
    team         TEXT        NOT NULL,
    api_key      TEXT        NOT NULL,
    user_id      TEXT        NOT NULL,
    customer     TEXT        NOT NULL,
    provider     TEXT        NOT NULL,
    model        TEXT        NOT NULL,
    billing_mode TEXT        NOT NULL,
    usage        TEXT,
    reason       TEXT        NOT NULL,
    repriced_at  TIMESTAMPTZ
);

CREATE INDEX routero_unpriced_open ON routero_unpriced (org, event_time) WHERE repriced_at IS NULL;

-- The request-level log, one partition per month (created as needed, dropped by
-- the retention setting). A request id is unique within its event time.
CREATE TABLE routero_spend_log (
    request_id            TEXT        NOT NULL,
    event_time            TIMESTAMPTZ NOT NULL,
    org                   TEXT        NOT NULL,
    workspace             TEXT        NOT NULL,
    team                  TEXT        NOT NULL,
    api_key               TEXT        NOT NULL,
    user_id               TEXT        NOT NULL,
    customer              TEXT        NOT NULL,
    provider              TEXT        NOT NULL,
    model                 TEXT        NOT NULL,
    billing_mode          TEXT        NOT NULL,
    success               BOOLEAN     NOT NULL,
    partial               BOOLEAN     NOT NULL,
    input_tokens          BIGINT,
    cache_read_tokens     BIGINT,
    cache_write_5m_tokens BIGINT,
    cache_write_1h_tokens BIGINT,
    output_tokens         BIGINT,
    reasoning_tokens      BIGINT,
    cost                  NUMERIC,
    price_version         TEXT,
    priced_model          TEXT,
    unpriced_reason       TEXT,
    PRIMARY KEY (request_id, event_time)
) PARTITION BY RANGE (event_time);

CREATE INDEX routero_spend_log_org_time ON routero_spend_log (org, event_time);
