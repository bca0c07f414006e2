-- The prepaid wallet: an append-only ledger per workspace, and its credit lots.
-- The balance is the sum of a wallet's entries; no column holds it.

CREATE TABLE routero_wallets (
    workspace  TEXT        PRIMARY KEY,
    currency   TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE routero_wallet_lots (
    workspace  TEXT        NOT NULL REFERENCES routero_wallets (workspace),
    id         BIGINT      NOT NULL,
    kind       TEXT        NOT NULL CHECK (kind IN ('paid', 'granted')),
    amount     NUMERIC     NOT NULL CHECK (amount > 0),
    remaining  NUMERIC     NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ,
    PRIMARY KEY (workspace, id)
);

CREATE TABLE routero_wallet_entries (
    workspace       TEXT        NOT NULL REFERENCES routero_wallets (workspace),
    id              BIGINT      NOT NULL,
    kind            TEXT        NOT NULL,
    amount          NUMERIC     NOT NULL,
    currency        TEXT        NOT NULL,
    at              TIMESTAMPTZ NOT NULL,
    idempotency_key TEXT        NOT NULL,
    fingerprint     TEXT        NOT NULL,
    lot             BIGINT,
    allocations     TEXT        NOT NULL,
    memo            TEXT,
    PRIMARY KEY (workspace, id),
    UNIQUE (workspace, idempotency_key)
);

CREATE INDEX routero_wallet_entries_time ON routero_wallet_entries (workspace, at);

-- Append-only: a ledger entry is never changed or removed.
CREATE FUNCTION routero_wallet_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'routero_wallet_entries is append-only';
END
$$;

CREATE TRIGGER routero_wallet_entries_append_only
    BEFORE UPDATE OR DELETE ON routero_wallet_entries
    FOR EACH ROW EXECUTE FUNCTION routero_wallet_entries_append_only();
