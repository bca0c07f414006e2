-- Costs in different currencies are never added together: a rollup is kept per
-- currency ('' for unpriced requests, which carry no money), and every logged cost
-- names its currency.
--
-- Before this migration every price table Routero shipped or read was in US dollars,
-- so existing priced rollups and log rows are USD. A rollup that held priced requests
-- becomes a USD row (its version moves, so the warehouse sync exports it again with
-- its currency); one that held only unpriced requests keeps ''.
ALTER TABLE routero_daily_rollups ADD COLUMN currency TEXT NOT NULL DEFAULT '';
UPDATE routero_daily_rollups
    SET currency = 'USD', version = pg_current_xact_id()::text::bigint
    WHERE successes + failures > unpriced;
ALTER TABLE routero_daily_rollups ALTER COLUMN currency DROP DEFAULT;
ALTER TABLE routero_daily_rollups
    ADD CONSTRAINT routero_daily_rollups_currency
    CHECK (currency = '' OR currency ~ '^[A-Z]{3}$');
ALTER TABLE routero_daily_rollups
    DROP CONSTRAINT routero_daily_rollups_pkey,
    ADD PRIMARY KEY (org, day, workspace, team, api_key, user_id, customer, provider, model,
                     billing_mode, currency);

ALTER TABLE routero_spend_log ADD COLUMN currency TEXT;
UPDATE routero_spend_log SET currency = 'USD' WHERE cost IS NOT NULL;
ALTER TABLE routero_spend_log
    ADD CONSTRAINT routero_spend_log_currency
    CHECK ((cost IS NULL) = (currency IS NULL) AND (currency IS NULL OR currency ~ '^[A-Z]{3}$'));

-- A usage debit of spend priced in another currency than its wallet's records the
-- conversion (JSON: from, amount, rate, day).
ALTER TABLE routero_wallet_entries ADD COLUMN conversion TEXT;
