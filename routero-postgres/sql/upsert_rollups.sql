-- Adds a drain step's rollups (aggregated by key in Rust) in one statement.
INSERT INTO routero_daily_rollups AS r (
    day, org, workspace, team, api_key, user_id, customer, provider, model, billing_mode, currency,
    input_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, output_tokens,
    reasoning_tokens, web_search_requests, successes, failures, unpriced, cost
)
SELECT * FROM UNNEST(
    $1::date[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
    $9::text[], $10::text[], $11::text[], $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[],
    $16::bigint[], $17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[], $21::bigint[],
    $22::numeric[]
)
ON CONFLICT (org, day, workspace, team, api_key, user_id, customer, provider, model, billing_mode, currency)
DO UPDATE SET
    input_tokens          = r.input_tokens + EXCLUDED.input_tokens,
    cache_read_tokens     = r.cache_read_tokens + EXCLUDED.cache_read_tokens,
    cache_write_5m_tokens = r.cache_write_5m_tokens + EXCLUDED.cache_write_5m_tokens,
    cache_write_1h_tokens = r.cache_write_1h_tokens + EXCLUDED.cache_write_1h_tokens,
    output_tokens         = r.output_tokens + EXCLUDED.output_tokens,
    reasoning_tokens      = r.reasoning_tokens + EXCLUDED.reasoning_tokens,
    web_search_requests   = r.web_search_requests + EXCLUDED.web_search_requests,
    successes             = r.successes + EXCLUDED.successes,
    failures              = r.failures + EXCLUDED.failures,
    unpriced              = r.unpriced + EXCLUDED.unpriced,
    cost                  = r.cost + EXCLUDED.cost,
    version               = pg_current_xact_id()::text::bigint
