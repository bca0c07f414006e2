-- Writes the request-level log of a drain step; a request already logged is kept as it was.
INSERT INTO routero_spend_log (
    request_id, event_time, org, workspace, team, api_key, user_id, customer, provider, model,
    billing_mode, success, partial, input_tokens, cache_read_tokens, cache_write_5m_tokens,
    cache_write_1h_tokens, output_tokens, reasoning_tokens, cost, price_version, priced_model,
    unpriced_reason, currency, usage
)
SELECT * FROM UNNEST(
    $1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
    $9::text[], $10::text[], $11::text[], $12::bool[], $13::bool[], $14::bigint[], $15::bigint[],
    $16::bigint[], $17::bigint[], $18::bigint[], $19::bigint[], $20::numeric[], $21::text[],
    $22::text[], $23::text[], $24::text[], $25::jsonb[]
)
ON CONFLICT (request_id, event_time) DO NOTHING
