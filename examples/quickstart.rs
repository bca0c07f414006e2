//! A small gateway's day, end to end, on the embedded default: no servers.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Four hundred requests from two orgs (several workspaces, teams, keys, users and
//! customers, managed and bring-your-own-key) are answered with real provider
//! response shapes, JSON and streamed. Each response's usage is extracted (streams
//! arrive in random chunks, as off a socket), priced with the bundled table, and
//! recorded. A drainer moves the spend into the in-memory store while traffic flows.
//! The example then prints the spend per team and per model from the store's read
//! side, and checks that the drained total equals the sum of the per-request costs to
//! the last digit.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use routero::attribution::{
    ApiKeyId, Attribution, BillingMode, BillingPolicy, CredentialId, CustomerId, OrgId, RequestId,
    TeamId, UserId,
};
use routero::drainer::{Drainer, DrainerConfig};
use routero::extract::{self, Extraction, StreamExtractor};
use routero::memory::{MemoryElector, MemoryQueue, MemoryStore};
use routero::port::{Clock, GroupBy, RollupFilter, SpendReader};
use routero::recorder::{Recorder, RecorderConfig};
use routero::spend::{Outcome, SpendEvent};
use routero::{PriceTable, Provider};
use rust_decimal::Decimal;

macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!("../routero-core/tests/data/providers/", $path)).as_slice()
    };
}

/// A canned provider response: who serves it, its shape, and the model the request
/// asked for (what a gateway knows when the response names none).
struct Response {
    provider: Provider,
    body: &'static [u8],
    streamed: bool,
    model: &'static str,
}

fn responses() -> Vec<Response> {
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
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from((self.0 >> 33) % u64::try_from(bound.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

/// A gateway caller: the attribution its API key maps to, and the credential its
/// requests go upstream with.
struct Caller {
    attribution: Attribution,
    credential: Option<CredentialId>,
}

fn id<T: std::str::FromStr>(text: &str) -> T
where
    T::Err: std::fmt::Display,
{
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn callers() -> Vec<Caller> {
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

fn extract(response: &Response, rng: &mut Lcg) -> Result<Extraction, extract::ExtractError> {
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

#[derive(Debug)]
struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let prices = PriceTable::bundled();
    let mut policy = BillingPolicy::new(BillingMode::Managed);
    policy.set_workspace(id("globex-main"), BillingMode::Byok);
    policy.set_credential(id("acme-research-anthropic"), BillingMode::Byok);

    let queue = Arc::new(MemoryQueue::new(4));
    let elector = Arc::new(MemoryElector::new(Arc::new(SystemClock)));
    let store = Arc::new(MemoryStore::new());
    let (recorder, recorder_handle) = Recorder::spawn(queue.clone(), RecorderConfig::default());
    let drainer = Arc::new(Drainer::new(
        queue.clone(),
        elector.clone(),
        store.clone(),
        DrainerConfig::new("quickstart"),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let background = {
        let drainer = drainer.clone();
        tokio::spawn(async move {
            drainer
                .run(async {
                    let _ = stopped.await;
                })
                .await
        })
    };

    let responses = responses();
    let callers = callers();
    let mut rng = Lcg(7);
    let day: NaiveDate = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap_or_default();
    let start = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let mut sum_of_requests = Decimal::ZERO;
    let mut unpriced: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..400 {
        let response = &responses[rng.next(responses.len())];
        let caller = &callers[rng.next(callers.len())];
        let at = start + Duration::seconds(i64::from(i) * 431);
        let mode = policy
            .mode_for(&caller.attribution.workspace, caller.credential.as_ref())
            .unwrap_or(BillingMode::Managed);
        let request = id::<RequestId>(&format!("req-{i:04}"));
        let failed = rng.next(50) == 0;
        let event = match extract(response, &mut rng) {
            Ok(extraction) => {
                let model = extraction.model.as_deref().unwrap_or(response.model);
                match prices.cost(&response.provider, model, &extraction.usage, at) {
                    Ok(cost) => {
                        sum_of_requests += cost.total();
                        SpendEvent::priced(
                            request,
                            at,
                            caller.attribution.clone(),
                            mode,
                            response.provider.clone(),
                            model,
                            &cost,
                        )
                    }
                    Err(e) => SpendEvent::unpriced(
                        request,
                        at,
                        caller.attribution.clone(),
                        mode,
                        response.provider.clone(),
                        model,
                        Some(extraction.usage),
                        e,
                    ),
                }
            }
            Err(e) => SpendEvent::unpriced(
                request,
                at,
                caller.attribution.clone(),
                mode,
                response.provider.clone(),
                response.model,
                None,
                e,
            ),
        };
        if let Some(reason) = match &event.pricing {
            routero::spend::Pricing::Unpriced { reason } => Some(reason.clone()),
            routero::spend::Pricing::Priced { .. } => None,
        } {
            *unpriced.entry(reason).or_default() += 1;
        }
        let event = if failed {
            event.with_outcome(Outcome::Failure)
        } else {
            event
        };
        if let Err(e) = recorder.record(event) {
            eprintln!("quickstart: {e}");
            return ExitCode::FAILURE;
        }
        // Traffic arrives over time: let the recorder flush and the drainer drain.
        if i % 10 == 9 {
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
    }

    // Graceful shutdown: flush the recorder, drain what is left, stop the drainer.
    let flushed = recorder_handle.shutdown().await;
    let _ = stop.send(());
    let running = background.await.unwrap_or_default();
    let last = match drainer.drain_all().await {
        Ok(stats) => stats,
        Err(e) => {
            eprintln!("quickstart: drain failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "recorded {} requests in {} batches; drained {} events while running and {} at shutdown\n",
        flushed.recorded, flushed.flushed_batches, running.events, last.events
    );

    let mut drained_total = Decimal::ZERO;
    for org in ["acme", "globex"] {
        let mut filter = RollupFilter::new(id::<OrgId>(org), day, day + Duration::days(1));
        filter.group_by = GroupBy {
            team: true,
            billing_mode: true,
            ..GroupBy::default()
        };
        let by_team = match store.rollups(&filter).await {
            Ok(rows) => rows,
            Err(e) => {
                eprintln!("quickstart: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut teams: BTreeMap<String, (u64, u64, u64, Decimal, Decimal)> = BTreeMap::new();
        for row in &by_team {
            let team = row
                .key
                .team
                .as_ref()
                .map_or("(no team)".to_owned(), ToString::to_string);
            let entry = teams.entry(team).or_default();
            entry.0 += row.totals.requests();
            entry.1 += row.totals.prompt_tokens();
            entry.2 += row.totals.output_tokens;
            match row.key.billing_mode {
                Some(BillingMode::Byok) => entry.4 += row.totals.cost,
                _ => entry.3 += row.totals.cost,
            }
            drained_total += row.totals.cost;
        }
        println!("{org}: spend per team, {day} and the day after (USD)");
        println!(
            "  {:<12} {:>8} {:>12} {:>10} {:>16} {:>16}",
            "team", "requests", "prompt tok", "output tok", "managed", "byok (tracked)"
        );
        for (team, (requests, prompt, output, managed, byok)) in &teams {
            println!(
                "  {team:<12} {requests:>8} {prompt:>12} {output:>10} {:>16} {:>16}",
                managed.round_dp(6),
                byok.round_dp(6)
            );
        }
        filter.group_by = GroupBy {
            provider: true,
            model: true,
            ..GroupBy::default()
        };
        let mut models: BTreeMap<String, (u64, u64, Decimal)> = BTreeMap::new();
        for row in store.rollups(&filter).await.unwrap_or_default() {
            let name = format!(
                "{}/{}",
                row.key.provider.map(|p| p.to_string()).unwrap_or_default(),
                row.key.model.unwrap_or_default()
            );
            let entry = models.entry(name).or_default();
            entry.0 += row.totals.requests();
            entry.1 += row.totals.unpriced;
            entry.2 += row.totals.cost;
        }
        println!("{org}: spend per model");
        println!(
            "  {:<56} {:>8} {:>9} {:>14}",
            "provider/model", "requests", "unpriced", "cost"
        );
        for (model, (requests, unpriced, cost)) in &models {
            println!(
                "  {model:<56} {requests:>8} {unpriced:>9} {:>14}",
                cost.round_dp(6)
            );
        }
        println!();
    }
    for (reason, count) in &unpriced {
        println!("unpriced, kept for repricing ({count}): {reason}");
    }
    println!("drained total (exact):      {}", drained_total.normalize());
    println!(
        "sum of per-request costs:   {}",
        sum_of_requests.normalize()
    );
    if drained_total == sum_of_requests && flushed.refused == 0 {
        println!("check: equal to the last digit");
        ExitCode::SUCCESS
    } else {
        eprintln!("check FAILED");
        ExitCode::FAILURE
    }
}
