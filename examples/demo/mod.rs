//! The demo traffic the examples share: real provider response shapes (the test
//! fixtures), JSON and streamed, from two orgs' workspaces, teams, keys, users and
//! customers, managed and bring-your-own-key, each response extracted (streams in random
//! chunks, as off a socket) and priced with the bundled table.

use chrono::{DateTime, Duration, Utc};
use routero::attribution::{
    ApiKeyId, Attribution, BillingMode, BillingPolicy, CredentialId, CustomerId, RequestId, TeamId,
    UserId,
};
use routero::extract::{self, Extraction, StreamExtractor};
use routero::spend::{Outcome, RequestContext, SpendEvent};
use routero::{PriceTable, Provider};

macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!("../../routero-core/tests/data/providers/", $path)).as_slice()
    };
}

/// A canned provider response: who serves it, its shape, and the model the request
/// asked for (what a gateway knows when the response names none).
pub(crate) struct Response {
    provider: Provider,
    body: &'static [u8],
    streamed: bool,
    model: &'static str,
}

pub(crate) fn responses() -> Vec<Response> {
    let r = |provider, body, streamed, model| Response {
        provider,
        body,
        streamed,
        model,
    };
    vec![
        r(
            Provider::OpenAi,
            fixture!("openai_chat/chat_completion_reasoning_cached.json"),
            false,
            "o4-mini",
        ),
        r(
            Provider::OpenAi,
            fixture!("openai_chat/chat_stream_include_usage.sse"),
            true,
            "gpt-4o-mini",
        ),
        r(
            Provider::OpenAi,
            fixture!("openai_chat/chat_stream_no_usage.sse"),
            true,
            "gpt-4o-mini",
        ),
        r(
            Provider::OpenAi,
            fixture!("openai_responses/response_stream.sse"),
            true,
            "gpt-5.4",
        ),
        r(
            Provider::OpenAi,
            fixture!("openai_embeddings/embeddings.json"),
            false,
            "text-embedding-3-small",
        ),
        r(
            Provider::Azure,
            fixture!("azure_openai/chat_completion.json"),
            false,
            "gpt-4o",
        ),
        r(
            Provider::Anthropic,
            fixture!("anthropic/message_cache_web_search.json"),
            false,
            "claude-sonnet-4-5",
        ),
        r(
            Provider::Anthropic,
            fixture!("anthropic/message_stream.sse"),
            true,
            "claude-sonnet-4-5",
        ),
        r(
            Provider::Anthropic,
            fixture!("anthropic/message_thinking.json"),
            false,
            "claude-opus-4-8",
        ),
        r(
            Provider::Gemini,
            fixture!("gemini/generate_content_thinking_cached.json"),
            false,
            "gemini-2.5-pro",
        ),
        r(
            Provider::Gemini,
            fixture!("gemini/stream_generate_content.sse"),
            true,
            "gemini-2.5-flash",
        ),
        r(
            Provider::DeepSeek,
            fixture!("deepseek/chat_stream.sse"),
            true,
            "deepseek-chat",
        ),
        r(
            Provider::Mistral,
            fixture!("mistral/chat_completion.json"),
            false,
            "mistral-medium-2508",
        ),
        r(
            Provider::Groq,
            fixture!("groq/chat_stream_x_groq.sse"),
            true,
            "llama-3.3-70b-versatile",
        ),
        r(
            Provider::Xai,
            fixture!("xai/chat_completion_reasoning.json"),
            false,
            "grok-3-mini",
        ),
        r(
            Provider::Bedrock,
            fixture!("bedrock/converse_cache_write.json"),
            false,
            "anthropic.claude-haiku-4-5-20251001-v1:0",
        ),
        r(
            Provider::Cohere,
            fixture!("cohere/chat_v2.json"),
            false,
            "command-a-03-2025",
        ),
        r(
            Provider::OpenRouter,
            fixture!("openrouter/chat_completion_anthropic_cache.json"),
            false,
            "anthropic/claude-sonnet-4.5",
        ),
    ]
}

/// A deterministic generator, so that every run prints the same report.
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from((self.0 >> 33) % u64::try_from(bound.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

/// A gateway caller: the attribution its API key maps to, and the credential its
/// requests go upstream with.
pub(crate) struct Caller {
    pub(crate) attribution: Attribution,
    pub(crate) credential: Option<CredentialId>,
}

pub(crate) fn id<T: std::str::FromStr>(text: &str) -> T
where
    T::Err: std::fmt::Display,
{
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// The demo's billing directory: Acme's two workspaces and Globex's one, in USD.
#[allow(dead_code)] // Not every example bills.
pub(crate) fn directory() -> routero::invoice::BillingDirectory {
    use routero::invoice::{BillingDirectory, WorkspaceBilling};
    let mut out = BillingDirectory::new();
    for (org, workspace) in [
        ("acme", "acme-prod"),
        ("acme", "acme-labs"),
        ("globex", "globex-main"),
    ] {
        let billing = WorkspaceBilling {
            org: id(org),
            currency: routero::Currency::USD,
            plan: None,
        };
        out = out.with(id(workspace), billing);
    }
    out
}

pub(crate) fn callers() -> Vec<Caller> {
    let mut out = Vec::new();
    let plans = [
        ("acme", "acme-prod", &["search", "support", "growth"][..]),
        ("acme", "acme-labs", &["research"][..]),
        ("globex", "globex-main", &["platform", "data"][..]),
    ];
    for (org, workspace, teams) in plans {
        for (t, team) in teams.iter().enumerate() {
            for k in 0..2 {
                let attribution = Attribution::new(id(org), id(workspace))
                    .with_team(id::<TeamId>(team))
                    .with_api_key(id::<ApiKeyId>(&format!("{team}-key-{k}")))
                    .with_user(id::<UserId>(&format!("{org}-user-{}", (t + k) % 3)))
                    .with_customer(id::<CustomerId>(&format!("{org}-customer-{}", k + t % 2)));
                // Acme's research team brings its own Anthropic key.
                let credential = (*team == "research" && k == 0)
                    .then(|| id::<CredentialId>("acme-research-anthropic"));
                out.push(Caller {
                    attribution,
                    credential,
                });
            }
        }
    }
    out
}

pub(crate) fn extract(
    response: &Response,
    rng: &mut Lcg,
) -> Result<Extraction, extract::ExtractError> {
    if !response.streamed {
        return extract::from_body(&response.provider, response.body, &[]);
    }
    let mut stream = StreamExtractor::new(&response.provider);
    let mut rest = response.body;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at((1 + rng.next(200)).min(rest.len()));
        stream.push(chunk)?;
        rest = tail;
    }
    stream.finish()
}

/// Acme pays through managed keys, except its research team's own Anthropic key;
/// Globex brings its own keys throughout.
pub(crate) fn policy() -> BillingPolicy {
    let mut policy = BillingPolicy::new(BillingMode::Managed);
    policy.set_workspace(id("globex-main"), BillingMode::Byok);
    policy.set_credential(id("acme-research-anthropic"), BillingMode::Byok);
    policy
}

/// An endless stream of demo requests: each a random response shape from a random
/// caller, priced (or unpriced, with its reason); about one in fifty failed.
pub(crate) struct Traffic {
    prices: std::sync::Arc<PriceTable>,
    policy: BillingPolicy,
    responses: Vec<Response>,
    callers: Vec<Caller>,
    rng: Lcg,
}

impl Traffic {
    pub(crate) fn new(seed: u64) -> Traffic {
        Traffic {
            prices: PriceTable::bundled(),
            policy: policy(),
            responses: responses(),
            callers: callers(),
            rng: Lcg(seed),
        }
    }

    /// The next request, answered at `at`.
    pub(crate) fn event(&mut self, request: RequestId, at: DateTime<Utc>) -> SpendEvent {
        let response = &self.responses[self.rng.next(self.responses.len())];
        let caller = &self.callers[self.rng.next(self.callers.len())];
        let mode = self
            .policy
            .mode_for(
                &caller.attribution.who.workspace,
                caller.credential.as_ref(),
            )
            .unwrap_or(BillingMode::Managed);
        let failed = self.rng.next(50) == 0;
        let context = RequestContext::new(
            request,
            at,
            caller.attribution.clone(),
            response.provider.clone(),
            response.model,
        )
        .with_billing_mode(mode);
        let event = context
            .price(&self.prices, extract(response, &mut self.rng))
            .event;
        if failed {
            event.with_outcome(Outcome::Failure)
        } else {
            event
        }
    }
}

/// `count` requests, one every `spacing` from `start` (always the same ones).
pub(crate) fn traffic(start: DateTime<Utc>, count: u32, spacing: Duration) -> Vec<SpendEvent> {
    let mut traffic = Traffic::new(7);
    (0..count)
        .map(|i| {
            let at = start + spacing * i32::try_from(i).unwrap_or(i32::MAX);
            traffic.event(id::<RequestId>(&format!("req-{i:04}")), at)
        })
        .collect()
}

/// The in-memory store with two weeks of demo traffic up to now drained into it, and
/// two topped-up Acme wallets (what the server and export examples serve).
#[allow(dead_code)] // The quickstart records its own traffic.
pub(crate) async fn store()
-> Result<std::sync::Arc<routero::memory::MemoryStore>, Box<dyn std::error::Error + Send + Sync>> {
    use routero::Currency;
    use routero::attribution::WorkspaceId;
    use routero::port::{DrainApply, FencingToken, SpendStore};
    use routero::spend::{QueuePosition, Rollups, ShardId};
    use routero::wallet::Wallets;

    let store = std::sync::Arc::new(routero::memory::MemoryStore::new());
    let now = Utc::now();
    directory().open_wallets(&*store).await?;
    for (workspace, top_up) in [("acme-prod", "50.00"), ("acme-labs", "20.00")] {
        let workspace: WorkspaceId = workspace.parse()?;
        let amount = rust_decimal::Decimal::from_str_exact(top_up)?;
        let key = format!("demo-top-up-{workspace}");
        store
            .top_up(
                &workspace,
                amount,
                Currency::USD,
                &key,
                now - Duration::days(15),
            )
            .await?;
    }
    let start = now - Duration::days(14);
    let events = traffic(start, 400, Duration::seconds(14 * 86_400 / 400));
    let mut rollups = Rollups::new();
    for event in &events {
        rollups.add_event(event)?;
    }
    store
        .apply(DrainApply {
            // A shard of its own: a live queue drained into the same store starts
            // its shards from nothing.
            shard: ShardId(u16::MAX),
            token: FencingToken(1),
            expected: None,
            through: QueuePosition::new(1, 0),
            rollups: &rollups,
            events: &events,
            at: now,
        })
        .await?;
    Ok(store)
}
