-- Keeps the requests that could not be priced, with their reason.
INSERT INTO routero_unpriced (
    request_id, event_time, org, workspace, team, api_key, user_id, customer, provider, model,
    billing_mode, usage, reason, detail
)
SELECT * FROM UNNEST(
    $1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
    $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[]
)
ON CONFLICT (request_id) DO NOTHING
