//! Billing's conformance tests: wallets, invoices, spend controls and exports
//! (re-exported by [`crate::conformance`]).

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::Currency;
use crate::attribution::{Attribution, BillingMode, OrgId, TeamId};
use crate::port::{ApplyOutcome, DrainApply, FencingToken, SpendReader, SpendStore};
use crate::provider::Provider;
use crate::spend::{QueuePosition, ShardId, SpendEvent};

use crate::conformance::*;

/// Top-ups are applied once per key, even when sent at once; the same key with another
/// body is refused; the balance is the sum of the entries.
pub async fn wallet_top_ups_are_idempotent<W: crate::wallet::Wallets + ?Sized>(wallets: &W) {
    use crate::wallet::WalletError;
    let w = ws("ws-topup");
    let attempts =
        (0..8).map(|_| wallets.top_up(&w, money("1000.00"), Currency::USD, "topup-1", day(1)));
    let results = futures::future::join_all(attempts).await;
    let written: Vec<crate::wallet::Written> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let first = written[0].entry.clone();
    for w in &written {
        assert_eq!(w.entry, first, "every replay returns the first result");
    }
    assert_eq!(
        written.iter().filter(|w| !w.replayed).count(),
        1,
        "exactly one of the eight wrote; the others say they were replays"
    );
    assert_eq!(
        first.amount.to_string(),
        "1000.00",
        "stored at the currency's scale"
    );
    let conflict = wallets
        .top_up(&w, money("999.00"), Currency::USD, "topup-1", day(1))
        .await;
    assert!(
        matches!(conflict, Err(WalletError::IdempotencyConflict { .. })),
        "{conflict:?}"
    );
    // Trailing zeros beyond the minor unit are not kept: the entry and every balance
    // read back are at the currency's scale.
    let half = wallets
        .top_up(&w, money("0.5000000"), Currency::USD, "topup-2", day(2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(half.entry.amount.to_string(), "0.50");
    let balance = wallets
        .balance(&w, day(3))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(balance.balance, money("1000.50"));
    assert_eq!(balance.balance.to_string(), "1000.50");
    let page = wallets
        .transactions(
            &w,
            &crate::wallet::TransactionQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.entries.len(), 2, "two top-ups, not nine");
    assert_eq!(
        page.entries.iter().map(|e| e.amount).sum::<Decimal>(),
        balance.balance
    );
}

/// Invalid amounts and other currencies get typed errors.
pub async fn wallet_refuses_invalid_credits<W: crate::wallet::Wallets + ?Sized>(wallets: &W) {
    use crate::wallet::WalletError;
    let w = ws("ws-invalid");
    wallets
        .open(&w, Currency::USD)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for amount in ["0", "-5.00", "0.001", "1000000.01"] {
        let result = wallets
            .top_up(
                &w,
                money(amount),
                Currency::USD,
                &format!("k-{amount}"),
                day(1),
            )
            .await;
        assert!(
            matches!(result, Err(WalletError::InvalidAmount { .. })),
            "{amount}: {result:?}"
        );
    }
    let euros = wallets
        .top_up(&w, money("10.00"), Currency::EUR, "k-eur", day(1))
        .await;
    assert!(
        matches!(euros, Err(WalletError::CurrencyMismatch { .. })),
        "{euros:?}"
    );
    assert!(matches!(
        wallets.open(&w, Currency::EUR).await,
        Err(WalletError::CurrencyMismatch { .. })
    ));
    let bad_key = wallets
        .top_up(&w, money("1.00"), Currency::USD, "", day(1))
        .await;
    assert!(matches!(bad_key, Err(WalletError::Invalid(_))));
    let balance = wallets
        .balance(&w, day(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        balance.balance,
        Decimal::ZERO,
        "nothing refused was written"
    );
}

/// Debits consume granted credit before paid, the soonest expiry first; an expired
/// lot's remainder leaves through its own entry; transactions page newest first.
pub async fn wallet_lots_and_history<W: crate::wallet::Wallets + ?Sized>(wallets: &W) {
    use crate::wallet::{EntryKind, TransactionQuery};
    let w = ws("ws-lots");
    let ok = |r: Result<crate::wallet::Written, crate::wallet::WalletError>| {
        r.unwrap_or_else(|e| panic!("{e}")).entry
    };
    ok(wallets
        .top_up(&w, money("100.00"), Currency::USD, "paid", day(1))
        .await);
    ok(wallets
        .grant(
            &w,
            money("10.00"),
            Currency::USD,
            Some(day(20)),
            "promo-late",
            day(1),
        )
        .await);
    ok(wallets
        .grant(
            &w,
            money("5.00"),
            Currency::USD,
            Some(day(10)),
            "promo-soon",
            day(1),
        )
        .await);
    // A 12.00 charge: 5.00 from the soonest-expiring grant, 7.00 from the other.
    let charge = ok(wallets
        .adjust(
            &w,
            EntryKind::Adjustment,
            money("-12.00"),
            Currency::USD,
            "manual charge",
            "charge-1",
            day(2),
        )
        .await);
    assert_eq!(charge.amount, money("-12.00"));
    let taken: Vec<Decimal> = charge.allocations.iter().map(|a| a.amount).collect();
    assert_eq!(taken, vec![money("5.00"), money("7.00")]);
    let before = wallets
        .balance(&w, day(15))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (
            before.balance,
            before.granted_remaining,
            before.paid_remaining
        ),
        (money("103.00"), money("3.00"), money("100.00"))
    );
    // On the 21st the late grant has expired: its 3.00 leaves through an entry.
    let after = wallets
        .balance(&w, day(21))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(after.balance, money("100.00"));
    assert_eq!(after.granted_remaining, Decimal::ZERO);
    ok(wallets
        .adjust(
            &w,
            EntryKind::Refund,
            money("2.50"),
            Currency::USD,
            "goodwill",
            "refund-1",
            day(22),
        )
        .await);
    let all = wallets
        .transactions(
            &w,
            &TransactionQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<EntryKind> = all.entries.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EntryKind::Refund,
            EntryKind::CreditExpiry,
            EntryKind::Adjustment,
            EntryKind::GrantedCredit,
            EntryKind::GrantedCredit,
            EntryKind::TopUp,
        ],
        "newest first"
    );
    assert_eq!(
        all.entries.iter().map(|e| e.amount).sum::<Decimal>(),
        money("102.50"),
        "the history explains the balance"
    );
    let first = wallets
        .transactions(
            &w,
            &TransactionQuery {
                limit: 4,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.entries.len(), 4);
    let second = wallets
        .transactions(
            &w,
            &TransactionQuery {
                limit: 4,
                before: first.next_cursor,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.entries.len(), 2);
    assert_eq!(second.next_cursor, None);
    let credits = wallets
        .transactions(
            &w,
            &TransactionQuery {
                kinds: Some(vec![EntryKind::GrantedCredit]),
                from: Some(day(1)),
                to: Some(day(2)),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(credits.entries.len(), 2);
}

/// The drain debits managed spend from the wallet in the same step as the rollups,
/// once; BYOK spend never touches the wallet.
pub async fn drain_debits_managed_spend_only<S>(store: &S)
where
    S: SpendStore + crate::wallet::Wallets + ?Sized,
{
    let mut managed = sample_event("walletorg", 0, "1.25");
    managed.attribution.who.workspace = ws("ws-drain");
    let mut byok = sample_event("walletorg", 1, "7.5");
    byok.attribution.who.workspace = ws("ws-drain");
    assert_eq!(managed.billing_mode, BillingMode::Managed);
    assert_eq!(byok.billing_mode, BillingMode::Byok);
    store
        .top_up(
            &ws("ws-drain"),
            money("10.00"),
            Currency::USD,
            "seed",
            day(1),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let events = vec![managed, byok];
    let rollups = rollups_of(&events);
    let step = DrainApply {
        shard: ShardId(6),
        token: FencingToken(1),
        expected: None,
        through: QueuePosition::new(3, 0),
        rollups: &rollups,
        events: &events,
        at: day(28),
    };
    assert_eq!(
        store.apply(step).await.unwrap_or_else(|e| panic!("{e}")),
        ApplyOutcome::Applied
    );
    assert_eq!(
        store.apply(step).await.unwrap_or_else(|e| panic!("{e}")),
        ApplyOutcome::AlreadyApplied
    );
    let balance = store
        .balance(&ws("ws-drain"), day(3))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        balance.balance,
        money("8.75"),
        "10.00 − the managed 1.25, once; BYOK never debited"
    );
}

/// Concurrent top-ups and debits with distinct keys never lose an update.
pub async fn wallet_concurrent_writes_lose_nothing<W: crate::wallet::Wallets + ?Sized>(
    wallets: &W,
) {
    use crate::wallet::EntryKind;
    let w = ws("ws-concurrent");
    let top_ups = (0..20).map(|i| {
        let w = w.clone();
        async move {
            wallets
                .top_up(&w, money("1.00"), Currency::USD, &format!("up-{i}"), day(1))
                .await
        }
    });
    let debits = (0..10).map(|i| {
        let w = w.clone();
        async move {
            wallets
                .adjust(
                    &w,
                    EntryKind::Adjustment,
                    money("-0.50"),
                    Currency::USD,
                    "charge",
                    &format!("down-{i}"),
                    day(1),
                )
                .await
        }
    });
    let (ups, downs) = tokio::join!(
        futures::future::join_all(top_ups),
        futures::future::join_all(debits)
    );
    for result in ups.into_iter().chain(downs) {
        result.unwrap_or_else(|e| panic!("{e}"));
    }
    let balance = wallets
        .balance(&w, day(2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(balance.balance, money("15.00"));
    assert_eq!(
        balance.paid_remaining,
        money("15.00"),
        "the lots agree with the ledger"
    );
}

/// A month with mixed billing modes invoices to the exact expected lines; closing
/// numbers and freezes it; spend arriving late lands on the next invoice, once.
pub async fn invoices_close_months_and_carry_late_spend<S>(store: &S)
where
    S: SpendStore + SpendReader + crate::wallet::Wallets + crate::invoice::InvoiceStore,
{
    use crate::invoice::{Billing, InvoiceStatus, LineKind, Month};
    let org = OrgId::new("invorg").unwrap_or_else(|e| panic!("{e}"));
    let no_rates = crate::money::RateTable::new();
    let billing = Billing {
        reader: store,
        wallets: store,
        invoices: store,
        rates: &no_rates,
    };
    let w = ws("ws-inv");
    let event = |seq: u64,
                 cost: &str,
                 provider: Provider,
                 model: &str,
                 mode: BillingMode,
                 day_of_month: u32| {
        let mut e = sample_event("invorg", seq, cost);
        e.attribution.who.workspace = w.clone();
        e.provider = provider;
        e.model = model.to_owned();
        e.billing_mode = mode;
        e.event_time = day(day_of_month);
        e
    };
    store
        .top_up(&w, money("100.00"), Currency::USD, "pay-1", day(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let november = vec![
        event(
            1,
            "1.234567",
            Provider::OpenAi,
            "gpt-4o",
            BillingMode::Managed,
            3,
        ),
        event(
            2,
            "2.000001",
            Provider::OpenAi,
            "gpt-4o",
            BillingMode::Managed,
            4,
        ),
        event(
            3,
            "0.5",
            Provider::Anthropic,
            "claude-x",
            BillingMode::Managed,
            5,
        ),
        event(4, "9.99", Provider::OpenAi, "gpt-4o", BillingMode::Byok, 6),
    ];
    let apply = |events: &[SpendEvent], through: u64, at: DateTime<Utc>| {
        let rollups = rollups_of(events);
        let events = events.to_vec();
        async move {
            store
                .apply(DrainApply {
                    shard: ShardId(9),
                    token: FencingToken(1),
                    expected: (through > 1).then(|| QueuePosition::new(through - 1, 0)),
                    through: QueuePosition::new(through, 0),
                    rollups: &rollups,
                    events: &events,
                    at,
                })
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    assert_eq!(apply(&november, 1, day(28)).await, ApplyOutcome::Applied);
    let nov = Month {
        year: 2026,
        month: 11,
    };
    let dec_2 = NaiveDate::from_ymd_opt(2026, 12, 2)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or_default();
    let plan = Some(money("49.00"));
    let draft = billing
        .invoice(&org, &w, nov, plan, dec_2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(draft.status, InvoiceStatus::Draft);
    let lines: Vec<(String, Decimal, Decimal)> = draft
        .lines
        .iter()
        .map(|l| (format!("{:?}", l.kind), l.exact_amount, l.amount))
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(
        (lines[0].1, lines[0].2.to_string()),
        (money("0.5"), "0.5000".to_owned()),
        "anthropic claude-x, shown at $0.0001"
    );
    assert_eq!(
        (lines[1].1, lines[1].2.to_string()),
        (money("3.234568"), "3.2346".to_owned()),
        "openai gpt-4o, BYOK excluded"
    );
    assert_eq!(draft.lines[2].kind, LineKind::Subscription);
    assert_eq!(draft.lines[3].kind, LineKind::Rounding);
    assert_eq!(
        draft.lines[3].amount.to_string(),
        "-0.0046",
        "52.7346 shown, 52.73 billed"
    );
    assert_eq!(
        draft.total.to_string(),
        "52.73",
        "the exact total rounded once; the shown lines add up to it"
    );
    assert_eq!(
        draft.lines.iter().map(|l| l.amount).sum::<Decimal>(),
        draft.total
    );
    assert_eq!(draft.exact_total, money("52.734568"));
    assert_eq!(draft.payments.len(), 1);
    assert_eq!(draft.payments[0].amount, money("100.00"));
    assert_eq!(draft.opening_balance, Decimal::ZERO);
    assert_eq!(
        draft.closing_balance,
        money("96.265432"),
        "100 − the managed 3.734568"
    );

    let closed = billing
        .close_month(&org, &w, nov, plan, dec_2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(closed.status, InvoiceStatus::Final);
    let number = closed
        .number
        .clone()
        .unwrap_or_else(|| panic!("a final invoice is numbered"));
    let again = billing
        .close_month(&org, &w, nov, plan, dec_2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        again.number.as_deref(),
        Some(number.as_str()),
        "closing twice changes nothing"
    );
    assert!(
        billing
            .close_month(
                &org,
                &w,
                Month {
                    year: 2026,
                    month: 12
                },
                plan,
                dec_2
            )
            .await
            .is_err(),
        "a month that is not over cannot be closed"
    );

    // Spend of November arrives after the close.
    let late = vec![event(
        5,
        "0.75",
        Provider::OpenAi,
        "gpt-4o",
        BillingMode::Managed,
        30,
    )];
    assert_eq!(
        apply(&late, 2, dec_2 + chrono::Duration::days(3)).await,
        ApplyOutcome::Applied
    );
    let nov_now = billing
        .invoice(&org, &w, nov, plan, dec_2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(nov_now, closed, "a final invoice never changes");
    let dec = Month {
        year: 2026,
        month: 12,
    };
    let jan_2 = NaiveDate::from_ymd_opt(2027, 1, 2)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or_default();
    let december = billing
        .close_month(&org, &w, dec, plan, jan_2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let late_lines: Vec<&crate::invoice::InvoiceLine> = december
        .lines
        .iter()
        .filter(|l| matches!(l.kind, LineKind::LateSpend { .. }))
        .collect();
    assert_eq!(late_lines.len(), 1);
    assert_eq!(late_lines[0].exact_amount, money("0.75"));
    assert_eq!(
        december.opening_balance,
        money("96.265432"),
        "November closed where December opens"
    );
    assert_eq!(
        december.closing_balance,
        money("95.515432"),
        "the late debit is December's"
    );
    let january = billing
        .invoice(
            &org,
            &w,
            Month {
                year: 2027,
                month: 1,
            },
            plan,
            jan_2,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !january
            .lines
            .iter()
            .any(|l| matches!(l.kind, LineKind::LateSpend { .. })),
        "late spend is carried once"
    );
    let csv = closed.to_csv();
    assert!(
        csv.starts_with("number,workspace,month,kind,description,currency,exact_amount,amount\n")
    );
    assert!(csv.contains(&number));
    assert_eq!(
        csv.lines().count(),
        1 + 4 + 1 + 1 + 2,
        "header, lines (the rounding line among them), total, payment, balances"
    );
}

/// Concurrent reservations never reserve more than the wallet has; settled spend not
/// yet drained counts against it; a refresh after the drain keeps the same figure.
pub async fn control_reservations_never_overspend(control: Arc<dyn crate::control::SpendControl>) {
    use crate::control::{Decision, SpendRequest};
    let org = OrgId::new("ctl-org").unwrap_or_else(|e| panic!("{e}"));
    let w = ws("ws-ctl");
    control
        .refresh_wallet(&org, &w, money("10.00"), Decimal::ZERO)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let attribution = Arc::new(
        Attribution::new(org.clone(), w.clone())
            .with_team(TeamId::new("search").unwrap_or_else(|e| panic!("{e}"))),
    );
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let control = control.clone();
            let attribution = attribution.clone();
            tokio::spawn(async move {
                let request = SpendRequest {
                    attribution: &attribution,
                    billing_mode: BillingMode::Managed,
                    estimate: money("1.00"),
                    at: day(25),
                };
                control
                    .reserve(&request, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            })
        })
        .collect();
    let mut allowed = Vec::new();
    for task in tasks {
        if let Decision::Allowed(r) = task.await.unwrap_or_else(|e| panic!("{e}")) {
            allowed.push(r);
        }
    }
    assert!(
        allowed.len() <= 10,
        "{} reservations of 1.00 against 10.00",
        allowed.len()
    );
    assert!(
        allowed.len() >= 5,
        "contention near the limit refuses some, not most ({})",
        allowed.len()
    );
    let n = Decimal::from(allowed.len());
    for r in &allowed {
        control
            .settle(r, money("0.60"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let left = money("10.00") - n * money("0.60");
    let ask = |estimate: Decimal| SpendRequest {
        attribution: &attribution,
        billing_mode: BillingMode::Managed,
        estimate,
        at: day(25),
    };
    let fits = |decision: &Decision| matches!(decision, Decision::Allowed(_));
    let over = control
        .reserve(&ask(left + money("0.01")), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!fits(&over), "undrained spend counts against the balance");
    let exact = control
        .reserve(&ask(left), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let Decision::Allowed(exact) = exact else {
        panic!("{exact:?}")
    };
    control
        .release(&exact)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The drain debits the settled spend: the ledger's balance and debits move together.
    control
        .refresh_wallet(&org, &w, left, n * money("0.60"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let over = control
        .reserve(&ask(left + money("0.01")), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!fits(&over));
    assert!(fits(
        &control
            .reserve(&ask(left), &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    ));
}

/// Budgets hold per period; BYOK requests are not checked against the wallet.
pub async fn control_budgets_hold_per_period(control: Arc<dyn crate::control::SpendControl>) {
    use crate::control::{Budget, BudgetScope, Decision, Denial, Period, SpendRequest};
    let org = OrgId::new("budget-org").unwrap_or_else(|e| panic!("{e}"));
    let team = TeamId::new("research").unwrap_or_else(|e| panic!("{e}"));
    let budgets = [Budget {
        scope: BudgetScope::Team(team.clone()),
        period: Period::Day,
        limit: money("2.00"),
    }];
    let research = Attribution::new(org.clone(), ws("ws-b")).with_team(team);
    let other = Attribution::new(org, ws("ws-b"))
        .with_team(TeamId::new("other").unwrap_or_else(|e| panic!("{e}")));
    let ask = |attribution, estimate: &str, at| SpendRequest {
        attribution,
        billing_mode: BillingMode::Byok,
        estimate: money(estimate),
        at,
    };
    let Decision::Allowed(first) = control
        .reserve(&ask(&research, "1.50", day(25)), &budgets)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    else {
        panic!("within budget, and BYOK needs no wallet")
    };
    let second = control
        .reserve(&ask(&research, "1.00", day(25)), &budgets)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(second, Decision::Denied(Denial::BudgetExceeded { .. })),
        "{second:?}"
    );
    assert!(matches!(
        control
            .reserve(&ask(&other, "1.00", day(25)), &budgets)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Decision::Allowed(_)
    ));
    control
        .release(&first)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let Decision::Allowed(third) = control
        .reserve(&ask(&research, "1.00", day(25)), &budgets)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    else {
        panic!("released reservations free the budget")
    };
    control
        .settle(&third, money("1.75"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(
            control
                .reserve(&ask(&research, "0.50", day(25)), &budgets)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            Decision::Denied(_)
        ),
        "1.75 spent + 0.50 > 2.00"
    );
    assert!(
        matches!(
            control
                .reserve(&ask(&research, "2.00", day(26)), &budgets)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            Decision::Allowed(_)
        ),
        "a new day, a new budget"
    );
}

/// A month's chargeback and FOCUS exports read back (RFC 4180) to the exact totals of
/// the month's events: the org's only, the month's days only, a quoted model name
/// intact, unpriced requests counted, the team filter applied.
pub async fn export_round_trips_a_month<S: SpendStore + SpendReader + ?Sized>(store: &S) {
    use crate::export::{CsvExport, ExportFormat, ExportRequest};
    use crate::invoice::Month;

    let events = a_month_of_events();
    let (mut cost, mut team_cost, mut requests, mut unpriced) =
        (Decimal::ZERO, Decimal::ZERO, 0u64, 0u64);
    for event in events.iter().filter(|e| in_acme_november(e)) {
        requests += 1;
        match event.cost() {
            Some(c) => {
                cost += c;
                if event.attribution.who.team.as_ref().map(TeamId::as_str) == Some("team-0") {
                    team_cost += c;
                }
            }
            None => unpriced += 1,
        }
    }
    apply_first_step(store, &events, november(30)).await;

    let org = OrgId::new("acme").unwrap_or_else(|e| panic!("{e}"));
    let month = Month::parse("2026-11").unwrap_or_else(|| panic!("month"));
    let request = |format, teams: Option<Vec<TeamId>>| ExportRequest {
        org: org.clone(),
        workspaces: None,
        teams,
        month,
        format,
        invoice_issuer: "Routero".to_owned(),
    };
    let export = |request: ExportRequest| async move {
        let mut out = Vec::new();
        let summary = CsvExport::new(store, request)
            .unwrap_or_else(|e| panic!("{e}"))
            .write_to(&mut out)
            .await
            .unwrap_or_else(|e| panic!("export: {e}"));
        (summary, out)
    };
    let column = |headers: &csv::StringRecord, name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    };
    let dec = |text: &str| Decimal::from_str_exact(text).unwrap_or_else(|e| panic!("{text}: {e}"));

    // Chargeback.
    let (summary, file) = export(request(ExportFormat::Chargeback, None)).await;
    assert_eq!(summary.cost(Currency::USD), cost);
    assert_eq!(summary.costs.len(), 1, "one currency");
    assert_eq!(summary.requests, requests);
    assert_eq!(summary.unpriced_requests, unpriced);
    let mut reader = csv::Reader::from_reader(file.as_slice());
    let headers = reader.headers().unwrap_or_else(|e| panic!("{e}")).clone();
    let (c_cost, c_requests, c_unpriced, c_org, c_date, c_model) = (
        column(&headers, "cost"),
        column(&headers, "requests"),
        column(&headers, "unpriced_requests"),
        column(&headers, "org"),
        column(&headers, "date"),
        column(&headers, "model"),
    );
    let (mut sum, mut sum_requests, mut sum_unpriced, mut rows, mut weird) =
        (Decimal::ZERO, 0u64, 0u64, 0u64, false);
    for record in reader.records() {
        let record = record.unwrap_or_else(|e| panic!("{e}"));
        rows += 1;
        sum += dec(&record[c_cost]);
        sum_requests += record[c_requests].parse::<u64>().unwrap_or(0);
        sum_unpriced += record[c_unpriced].parse::<u64>().unwrap_or(0);
        assert_eq!(&record[c_org], "acme");
        assert!(
            record[c_date].starts_with("2026-11-"),
            "{:?}",
            &record[c_date]
        );
        weird |= &record[c_model] == "weird \"model\", v2";
    }
    assert_eq!(
        (sum, sum_requests, sum_unpriced, rows),
        (cost, requests, unpriced, summary.rows)
    );
    assert!(weird, "a quoted model name reads back intact");

    // FOCUS: the same totals in BilledCost and x_Requests, a day per charge period.
    let (focus, file) = export(request(ExportFormat::Focus, None)).await;
    assert_eq!(focus, summary);
    let mut reader = csv::Reader::from_reader(file.as_slice());
    let headers = reader.headers().unwrap_or_else(|e| panic!("{e}")).clone();
    for required in [
        "BilledCost",
        "BillingAccountId",
        "BillingCurrency",
        "BillingPeriodStart",
        "BillingPeriodEnd",
        "ChargeCategory",
        "ChargePeriodStart",
        "ChargePeriodEnd",
        "EffectiveCost",
        "ListCost",
        "ContractedCost",
        "InvoiceIssuerName",
        "ProviderName",
        "PublisherName",
        "ServiceCategory",
        "ServiceName",
        "SubAccountId",
    ] {
        column(&headers, required);
    }
    let (f_cost, f_requests, f_issuer, f_mode, f_start) = (
        column(&headers, "BilledCost"),
        column(&headers, "x_Requests"),
        column(&headers, "InvoiceIssuerName"),
        column(&headers, "x_BillingMode"),
        column(&headers, "BillingPeriodStart"),
    );
    let (mut sum, mut sum_requests) = (Decimal::ZERO, 0u64);
    for record in reader.records() {
        let record = record.unwrap_or_else(|e| panic!("{e}"));
        sum += dec(&record[f_cost]);
        sum_requests += record[f_requests].parse::<u64>().unwrap_or(0);
        let issuer = if &record[f_mode] == "byok" {
            "openai"
        } else {
            "Routero"
        };
        assert_eq!(&record[f_issuer], issuer);
        assert_eq!(&record[f_start], "2026-11-01T00:00:00Z");
    }
    assert_eq!((sum, sum_requests), (cost, requests));

    // One team's export holds that team's spend only.
    let team = TeamId::new("team-0").unwrap_or_else(|e| panic!("{e}"));
    let (summary, _) = export(request(ExportFormat::Chargeback, Some(vec![team]))).await;
    assert_eq!(summary.cost(Currency::USD), team_cost);
}

/// A dry-run repricing over a store's request log (feature `testing`): November's
/// gpt-4o requests, priced at the bundled rates, priced again with gpt-4o's input
/// rate doubled and a price for a model that had none; each total exact, pages of
/// two, and a workspace's scope leaves the others out.
pub async fn repricing_dry_run<S>(store: &S)
where
    S: SpendStore + crate::reprice::RequestLog + SpendReader,
{
    use crate::price::{PriceTable, layered};
    use crate::reprice::{RepricingScope, dry_run};
    use crate::spend::{Pricing, UnpricedReason};

    let bundled = PriceTable::bundled();
    let mut events = Vec::new();
    let mut extra = std::collections::BTreeMap::<&str, Decimal>::new();
    let mut recorded = std::collections::BTreeMap::<&str, Decimal>::new();
    for (org, seq) in [
        ("acme", 1u64),
        ("acme", 2),
        ("acme", 3),
        ("globex", 4),
        ("globex", 5),
    ] {
        let mut event = sample_event(org, seq, "0");
        let usage = event.usage.unwrap_or_else(|| panic!("usage"));
        let cost = bundled
            .cost(&event.provider, &event.model, &usage, event.event_time)
            .unwrap_or_else(|e| panic!("{e}"))
            .total();
        if let Pricing::Priced { cost: c, .. } = &mut event.pricing {
            *c = cost;
        }
        *recorded.entry(org).or_default() += cost;
        // Doubling the input rate (2.5 → 5 per million) adds 2.5 per million input tokens.
        *extra.entry(org).or_default() += Decimal::from(usage.input_tokens) * Decimal::new(25, 7);
        events.push(event);
    }
    // A model without a price then, priced now: 1,000 input and 100 output tokens.
    let mut unknown = sample_event("acme", 6, "0");
    unknown.model = "acme-custom-1".to_owned();
    unknown.usage = Some(crate::Usage::tokens(1_000, 100));
    unknown.pricing = Pricing::Unpriced {
        reason: UnpricedReason::UnknownModel,
        detail: "unknown model".to_owned(),
    };
    events.push(unknown);
    // No usage at all: nothing to price from.
    let mut blind = sample_event("acme", 7, "0");
    blind.usage = None;
    blind.pricing = Pricing::Unpriced {
        reason: UnpricedReason::NoUsage,
        detail: "no usage".to_owned(),
    };
    events.push(blind);
    // December: out of the scope.
    let mut later = sample_event("acme", 8, "0.5");
    later.event_time += chrono::Duration::days(30);
    events.push(later);
    apply_step(store, 1, &events).await;

    let corrected = layered(
        &bundled,
        "format = 1\nversion = \"fix-1\"\ncurrency = \"USD\"\n\
         [[model]]\nprovider = \"openai\"\nname = \"gpt-4o\"\ninput = \"5\"\ncache_read = \"1.25\"\noutput = \"10\"\n\
         [[model]]\nprovider = \"openai\"\nname = \"acme-custom-1\"\ninput = \"2\"\noutput = \"8\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let november = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap_or_default();
    let scope = RepricingScope::days(november(1), november(30));
    let report = dry_run(store, &scope, &corrected, 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.price_version, corrected.version());
    let row = |workspace: &str, model: &str| {
        report
            .rows
            .iter()
            .find(|r| r.workspace == workspace && r.model == model)
            .unwrap_or_else(|| panic!("no row {workspace} {model}: {report:?}"))
    };
    let acme = row("acme-ws", "gpt-4o");
    assert_eq!((acme.requests, acme.changed, acme.no_usage), (4, 3, 1));
    assert_eq!(acme.old_total, recorded["acme"]);
    assert_eq!(acme.delta, extra["acme"]);
    assert_eq!(acme.new_total, recorded["acme"] + extra["acme"]);
    let globex = row("globex-ws", "gpt-4o");
    assert_eq!((globex.requests, globex.delta), (2, extra["globex"]));
    let custom = row("acme-ws", "acme-custom-1");
    // 1,000 × 2 / 1M + 100 × 8 / 1M.
    let custom_cost = Decimal::new(28, 4);
    assert_eq!(
        (custom.newly_priced, custom.new_total, custom.delta),
        (1, custom_cost, custom_cost)
    );
    assert_eq!(report.rows.len(), 3, "{report:?}");
    assert_eq!(report.total.requests, 7, "December is out of the scope");
    assert_eq!(
        report.total.delta,
        extra["acme"] + extra["globex"] + custom_cost
    );
    let csv = report.to_csv();
    assert!(
        csv.starts_with("workspace,provider,model,requests,"),
        "{csv}"
    );
    assert!(
        csv.lines()
            .last()
            .unwrap_or_default()
            .starts_with("total,,,7,"),
        "{csv}"
    );

    // One workspace: the others are left out.
    let mut only = scope.clone();
    only.workspace =
        Some(crate::attribution::WorkspaceId::new("globex-ws").unwrap_or_else(|e| panic!("{e}")));
    let report = dry_run(store, &only, &corrected, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.rows.len(), 1);
    assert_eq!(report.total.delta, extra["globex"]);
}

/// A store that stops answering after `pages` corrections (a coworker killed in the
/// middle of a repricing): every call before goes through.
#[derive(Debug)]
struct StopsAfter<'a, S> {
    inner: &'a S,
    pages: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl<S: crate::reprice::Repricings> crate::reprice::RequestLog for StopsAfter<'_, S> {
    async fn requests(
        &self,
        scope: &crate::reprice::RepricingScope,
        after: Option<&crate::reprice::LogCursor>,
        limit: usize,
    ) -> Result<Vec<crate::reprice::LoggedRequest>, crate::port::BackendError> {
        self.inner.requests(scope, after, limit).await
    }
}

#[async_trait::async_trait]
impl<S: crate::reprice::Repricings> crate::reprice::Repricings for StopsAfter<'_, S> {
    async fn begin(
        &self,
        repricing: &crate::reprice::Repricing,
    ) -> Result<crate::reprice::Repricing, crate::port::BackendError> {
        self.inner.begin(repricing).await
    }

    async fn correct(
        &self,
        id: &crate::reprice::RepricingId,
        corrections: &[crate::reprice::Correction],
        at: DateTime<Utc>,
    ) -> Result<u64, crate::port::BackendError> {
        use std::sync::atomic::Ordering;
        if self
            .pages
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(crate::port::BackendError::new(
                crate::port::ErrorKind::Unavailable,
                "the process was killed",
            ));
        }
        self.inner.correct(id, corrections, at).await
    }

    async fn finish(
        &self,
        id: &crate::reprice::RepricingId,
        at: DateTime<Utc>,
    ) -> Result<Option<crate::reprice::Repricing>, crate::port::BackendError> {
        self.inner.finish(id, at).await
    }

    async fn repricing(
        &self,
        id: &crate::reprice::RepricingId,
    ) -> Result<Option<crate::reprice::Repricing>, crate::port::BackendError> {
        self.inner.repricing(id).await
    }

    async fn repricings(
        &self,
        org: Option<&OrgId>,
    ) -> Result<Vec<crate::reprice::Repricing>, crate::port::BackendError> {
        self.inner.repricings(org).await
    }
}

/// Applying repricings (feature `testing`): a workspace-scoped one leaves the others
/// untouched; one stopped after its first page and asked again finishes without
/// applying a page twice; rollups (a model unpriced until now included), wallets and
/// invoices move by the exact corrections; a closed month's invoice stays as it was
/// and the next one carries its correction; asking again, or applying the same
/// corrections again, changes nothing.
pub async fn repricing_applies_once<S>(store: &S)
where
    S: SpendStore
        + SpendReader
        + crate::wallet::Wallets
        + crate::invoice::InvoiceStore
        + crate::reprice::Repricings,
{
    use crate::invoice::{Billing, LineKind, Month};
    use crate::port::RollupFilter;
    use crate::price::{PriceTable, layered};
    use crate::reprice::{RepricingRequest, RepricingScope, RepricingState, apply, corrections};
    use crate::spend::{Pricing, UnpricedReason};
    use crate::wallet::{EntryKind, TransactionQuery};

    let org = OrgId::new("rporg").unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (ws("rp-a"), ws("rp-b"));
    let bundled = PriceTable::bundled();
    let at = |month: u32, d: u32| {
        NaiveDate::from_ymd_opt(2026, month, d)
            .and_then(|d| d.and_hms_opt(9, 0, 0))
            .map(|t| t.and_utc())
            .unwrap_or_default()
    };
    // Doubling gpt-4o's input rate adds 2.5 per million input tokens.
    let extra =
        |e: &SpendEvent| Decimal::from(e.usage.map_or(0, |u| u.input_tokens)) * Decimal::new(25, 7);
    let event = |seq: u64,
                 workspace: &crate::attribution::WorkspaceId,
                 when: DateTime<Utc>,
                 mode: BillingMode| {
        let mut e = sample_event("rporg", seq, "0");
        e.attribution.who.workspace = workspace.clone();
        e.event_time = when;
        e.billing_mode = mode;
        let usage = e.usage.unwrap_or_default();
        let cost = bundled
            .cost(&e.provider, &e.model, &usage, when)
            .unwrap_or_else(|err| panic!("{err}"))
            .total();
        if let Pricing::Priced { cost: c, .. } = &mut e.pricing {
            *c = cost;
        }
        e
    };
    let october = vec![
        event(1, &a, at(10, 20), BillingMode::Managed),
        event(2, &a, at(10, 21), BillingMode::Managed),
    ];
    let mut november = vec![
        event(3, &a, at(11, 3), BillingMode::Managed),
        event(4, &a, at(11, 4), BillingMode::Managed),
        event(5, &a, at(11, 5), BillingMode::Managed),
        event(6, &a, at(11, 6), BillingMode::Byok),
        event(7, &b, at(11, 7), BillingMode::Managed),
        event(8, &b, at(11, 8), BillingMode::Managed),
    ];
    // A model without a price then: 1,000 input and 100 output tokens.
    let mut custom = event(9, &a, at(11, 9), BillingMode::Managed);
    custom.model = "acme-custom-1".to_owned();
    custom.usage = Some(crate::Usage::tokens(1_000, 100));
    custom.pricing = Pricing::Unpriced {
        reason: UnpricedReason::UnknownModel,
        detail: "unknown model".to_owned(),
    };
    november.push(custom.clone());
    let custom_cost = Decimal::new(28, 4);

    store
        .top_up(&a, money("100.00"), Currency::USD, "rp-pay", at(10, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for (step, events, when) in [(1u64, &october, at(10, 25)), (2, &november, at(11, 28))] {
        let rollups = rollups_of(events);
        let outcome = store
            .apply(DrainApply {
                shard: ShardId(11),
                token: FencingToken(1),
                expected: (step > 1).then(|| QueuePosition::new(step - 1, 0)),
                through: QueuePosition::new(step, 0),
                rollups: &rollups,
                events,
                at: when,
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outcome, ApplyOutcome::Applied);
    }
    let no_rates = crate::money::RateTable::new();
    let billing = Billing {
        reader: store,
        wallets: store,
        invoices: store,
        rates: &no_rates,
    };
    let oct = Month {
        year: 2026,
        month: 10,
    };
    let nov = oct.next();
    let closed = billing
        .close_month(&org, &a, oct, None, at(11, 2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let rollup_totals = |workspace: &crate::attribution::WorkspaceId, month: u32| {
        let mut filter = RollupFilter::new(
            org.clone(),
            at(month, 1).date_naive(),
            Month { year: 2026, month }
                .days()
                .map(|(_, last)| last)
                .unwrap_or_default(),
        );
        filter.workspaces = Some(vec![workspace.clone()]);
        async move {
            let mut sum = crate::spend::RollupTotals::default();
            for row in store
                .rollups(&filter)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
            {
                sum.add(&row.totals).unwrap_or_else(|e| panic!("{e}"));
            }
            sum
        }
    };
    let recorded = |events: &[SpendEvent], w: &crate::attribution::WorkspaceId| -> Decimal {
        events
            .iter()
            .filter(|e| e.attribution.who.workspace == *w)
            .filter_map(SpendEvent::cost)
            .sum()
    };
    let extra_of =
        |events: &[SpendEvent], w: &crate::attribution::WorkspaceId, managed: bool| -> Decimal {
            events
                .iter()
                .filter(|e| e.attribution.who.workspace == *w && e.model == "gpt-4o")
                .filter(|e| !managed || e.billing_mode == BillingMode::Managed)
                .map(extra)
                .sum()
        };
    let before_a_nov = rollup_totals(&a, 11).await;
    assert_eq!(before_a_nov.unpriced, 1);
    let balance_before = store
        .balance(&a, at(11, 29))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .balance;

    let corrected = layered(
        &bundled,
        "format = 1\nversion = \"fix-1\"\ncurrency = \"USD\"\n\
         [[model]]\nprovider = \"openai\"\nname = \"gpt-4o\"\ninput = \"5\"\ncache_read = \"1.25\"\noutput = \"10\"\n\
         [[model]]\nprovider = \"openai\"\nname = \"acme-custom-1\"\ninput = \"2\"\noutput = \"8\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let request = |scope: RepricingScope| RepricingRequest {
        scope,
        reason: "gpt-4o input was half its list price".to_owned(),
        actor: "ops@rporg".to_owned(),
        current: &bundled,
        prices: &corrected,
    };
    let mut whole = RepricingScope::days(at(10, 1).date_naive(), at(11, 30).date_naive());
    whole.org = Some(org.clone());

    // One workspace: the other is untouched.
    let mut only_b = whole.clone();
    only_b.workspace = Some(b.clone());
    let done = apply(store, request(only_b), 2, at(12, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.state, RepricingState::Applied);
    assert_eq!(
        (done.corrected, done.delta),
        (2, extra_of(&november, &b, false))
    );
    assert_eq!(done.planned.delta, done.delta);
    assert_eq!(
        rollup_totals(&b, 11).await.cost,
        recorded(&november, &b) + extra_of(&november, &b, false)
    );
    assert_eq!(rollup_totals(&a, 11).await, before_a_nov, "rp-a untouched");

    // The whole org, stopped after its first page of two, then asked again.
    let stopping = StopsAfter {
        inner: store,
        pages: std::sync::atomic::AtomicU32::new(1),
    };
    assert!(
        apply(&stopping, request(whole.clone()), 2, at(12, 1))
            .await
            .is_err()
    );
    let halfway = rollup_totals(&a, 10).await;
    assert_eq!(
        halfway.cost,
        recorded(&october, &a) + extra_of(&october, &a, false),
        "the first page (October's two requests) applied"
    );
    let id = crate::reprice::RepricingId::derive(&whole, corrected.version());
    let record = store
        .repricing(&id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("recorded before applying"));
    assert_eq!(record.state, RepricingState::Applying);
    assert_eq!(record.actor, "ops@rporg");
    let done = apply(store, request(whole.clone()), 2, at(12, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.state, RepricingState::Applied);
    let a_delta = extra_of(&october, &a, false) + extra_of(&november, &a, false) + custom_cost;
    // rp-a: October's 2, November's 4 gpt-4o and the model priced now; rp-b's
    // requests were corrected already.
    assert_eq!((done.corrected, done.delta), (7, a_delta));
    assert_eq!(
        (done.prices_before.as_str(), done.prices_after.as_str()),
        (bundled.version(), corrected.version())
    );

    let after_a_nov = rollup_totals(&a, 11).await;
    assert_eq!(
        after_a_nov.cost,
        recorded(&november, &a) + extra_of(&november, &a, false) + custom_cost
    );
    assert_eq!(after_a_nov.unpriced, 0, "the custom model is priced now");
    assert_eq!(after_a_nov.requests(), before_a_nov.requests());
    assert_eq!(after_a_nov.input_tokens, before_a_nov.input_tokens);
    assert_eq!(
        rollup_totals(&b, 11).await.cost,
        recorded(&november, &b) + extra_of(&november, &b, false),
        "rp-b corrected once"
    );

    // The wallet: managed corrections only, as price_correction entries.
    let managed_delta = extra_of(&october, &a, true) + extra_of(&november, &a, true) + custom_cost;
    let balance = |when| {
        let a = a.clone();
        async move {
            store
                .balance(&a, when)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .balance
        }
    };
    assert_eq!(balance(at(12, 2)).await, balance_before - managed_delta);
    let entries = store
        .transactions(
            &a,
            &TransactionQuery {
                kinds: Some(vec![EntryKind::PriceCorrection]),
                limit: 100,
                ..TransactionQuery::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .entries;
    assert_eq!(
        entries.iter().map(|e| e.amount).sum::<Decimal>(),
        -managed_delta
    );

    // October stays as closed; November's invoice carries its correction.
    let october_now = billing
        .invoice(&org, &a, oct, None, at(12, 2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(october_now, closed, "a closed month never changes");
    let draft = billing
        .invoice(&org, &a, nov, None, at(12, 2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let carried: Decimal = draft
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::LateSpend { month: oct })
        .map(|l| l.exact_amount)
        .sum();
    assert_eq!(carried, extra_of(&october, &a, true));
    assert_eq!(
        draft.managed_spend,
        Currency::USD.canonical(
            november
                .iter()
                .filter(
                    |e| e.attribution.who.workspace == a && e.billing_mode == BillingMode::Managed
                )
                .filter_map(SpendEvent::cost)
                .sum::<Decimal>()
                + extra_of(&november, &a, true)
                + custom_cost
        )
    );

    // Asking again changes nothing; nor does applying the same corrections again.
    let totals = (rollup_totals(&a, 10).await, rollup_totals(&a, 11).await);
    let again = apply(store, request(whole.clone()), 2, at(12, 3))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, done);
    let log = store
        .requests(&whole, None, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // rp-a's requests, as they stood before this repricing (rp-b's were corrected
    // by the other one).
    let mut uncorrected: Vec<_> = log.into_iter().filter(|r| *r.workspace() == a).collect();
    for request in &mut uncorrected {
        let original = october
            .iter()
            .chain(&november)
            .find(|e| e.request_id == request.request_id)
            .unwrap_or_else(|| panic!("{}", request.request_id));
        request.cost = original.cost();
        request.currency = original.currency();
    }
    let replay = corrections(&uncorrected, &corrected);
    assert_eq!(replay.len(), 7, "every correction, as first computed");
    assert_eq!(
        store
            .correct(&id, &replay, at(12, 3))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        0,
        "each correction is applied once per repricing"
    );
    assert_eq!(
        (rollup_totals(&a, 10).await, rollup_totals(&a, 11).await),
        totals
    );
    assert_eq!(balance(at(12, 3)).await, balance_before - managed_delta);
    let listed = store
        .repricings(Some(&org))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.len(), 2);
    assert!(
        store
            .repricings(Some(&OrgId::new("other").unwrap_or_else(|e| panic!("{e}"))))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty()
    );
}
