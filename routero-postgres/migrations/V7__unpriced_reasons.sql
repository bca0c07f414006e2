-- Unpriced reasons are typed: the reason columns hold a stable code, and the error's
-- words move to routero_unpriced.detail. Rows written before keep their words as the
-- detail and get the code their words name ('other' when none does).
ALTER TABLE routero_unpriced ADD COLUMN detail TEXT NOT NULL DEFAULT '';
ALTER TABLE routero_unpriced ALTER COLUMN detail DROP DEFAULT;

CREATE FUNCTION routero_unpriced_code(words TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN words LIKE 'malformed %' THEN 'malformed_response'
        WHEN words LIKE '% carries no usage' THEN 'no_usage'
        WHEN words LIKE 'invalid usage%' THEN 'invalid_usage'
        WHEN words LIKE '% which is not priced per token' THEN 'unpriced_tier'
        WHEN words LIKE 'unknown model %' THEN 'unknown_model'
        WHEN words LIKE 'no price of %' THEN 'no_price_in_force'
        WHEN words LIKE '% tier price' THEN 'unsupported_service_tier'
        WHEN words LIKE '%, which this usage consumes' THEN 'missing_rate'
        WHEN words LIKE 'cost overflows %' THEN 'overflow'
        ELSE 'other'
    END
$$;

UPDATE routero_unpriced SET detail = reason, reason = routero_unpriced_code(reason);
UPDATE routero_spend_log SET unpriced_reason = routero_unpriced_code(unpriced_reason)
    WHERE unpriced_reason IS NOT NULL;
DROP FUNCTION routero_unpriced_code(TEXT);

ALTER TABLE routero_unpriced ADD CONSTRAINT routero_unpriced_reason CHECK (reason IN (
    'malformed_response', 'no_usage', 'invalid_usage', 'unpriced_tier', 'unknown_model',
    'no_price_in_force', 'unsupported_service_tier', 'missing_rate', 'overflow', 'other'));
