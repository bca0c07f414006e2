-- Adds signed amounts to rollups that exist (a correction taking out what a request
-- added): an INSERT would check the negative counts of the row it proposes.
UPDATE routero_daily_rollups AS r SET
    input_tokens          = r.input_tokens + u.input_tokens,
    cache_read_tokens     = r.cache_read_tokens + u.cache_read_tokens,
    cache_write_5m_tokens = r.cache_write_5m_tokens + u.cache_write_5m_tokens,
    cache_write_1h_tokens = r.cache_write_1h_tokens + u.cache_write_1h_tokens,
    output_tokens         = r.output_tokens + u.output_tokens,
    reasoning_tokens      = r.reasoning_tokens + u.reasoning_tokens,
    web_search_requests   = r.web_search_requests + u.web_search_requests,
    successes             = r.successes + u.successes,
    failures              = r.failures + u.failures,
    unpriced              = r.unpriced + u.unpriced,
    cost                  = r.cost + u.cost,
    version               = pg_current_xact_id()::text::bigint
FROM UNNEST(
    $1::date[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
    $9::text[], $10::text[], $11::text[], $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[],
    $16::bigint[], $17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[], $21::bigint[],
    $22::numeric[]
) AS u(
    day, org, workspace, team, api_key, user_id, customer, provider, model, billing_mode, currency,
    input_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, output_tokens,
    reasoning_tokens, web_search_requests, successes, failures, unpriced, cost
)
WHERE r.org = u.org AND r.day = u.day AND r.workspace = u.workspace AND r.team = u.team
  AND r.api_key = u.api_key AND r.user_id = u.user_id AND r.customer = u.customer
  AND r.provider = u.provider AND r.model = u.model AND r.billing_mode = u.billing_mode
  AND r.currency = u.currency
