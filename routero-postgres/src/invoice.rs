//! Finalised invoices on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use routero_core::attribution::WorkspaceId;
use routero_core::invoice::{
    Billing, BillingDirectory, Invoice, InvoiceError, InvoiceStore, Month,
};
use routero_core::port::{BackendError, ErrorKind};

use crate::{PgStore, backend};

async fn existing(
    client: &deadpool_postgres::Object,
    workspace: &str,
    month: chrono::NaiveDate,
) -> Result<Option<tokio_postgres::Row>, BackendError> {
    client
        .query_opt(
            "SELECT body FROM routero_invoices WHERE workspace = $1 AND month = $2",
            &[&workspace, &month],
        )
        .await
        .map_err(backend)
}

fn decode(body: &str) -> Result<Invoice, BackendError> {
    serde_json::from_str(body)
        .map_err(|e| BackendError::new(ErrorKind::Corrupt, format!("stored invoice: {e}")))
}

#[async_trait]
impl InvoiceStore for PgStore {
    async fn finalize(
        &self,
        mut invoice: Invoice,
        at: DateTime<Utc>,
    ) -> Result<Invoice, BackendError> {
        let client = self.client().await?;
        let month = invoice.month.first_day().ok_or_else(|| {
            BackendError::new(ErrorKind::Invalid, format!("month {}", invoice.month))
        })?;
        if let Some(row) = existing(&client, invoice.workspace.as_str(), month).await? {
            return decode(&row.get::<_, String>(0));
        }
        let seq: i64 = client
            .query_one("SELECT nextval('routero_invoice_number')", &[])
            .await
            .map_err(backend)?
            .get(0);
        invoice.number = Some(format!(
            "INV-{}{:02}-{seq:06}",
            invoice.month.year, invoice.month.month
        ));
        invoice.finalized_at = Some(at);
        let body = serde_json::to_string(&invoice)
            .map_err(|e| BackendError::new(ErrorKind::Invalid, e.to_string()))?;
        let inserted = client
            .execute(
                "INSERT INTO routero_invoices (workspace, month, number, finalized_at, body) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (workspace, month) DO NOTHING",
                &[&invoice.workspace.as_str(), &month, &invoice.number, &at, &body],
            )
            .await
            .map_err(backend)?;
        if inserted == 1 {
            return Ok(invoice);
        }
        // Another coworker finalised it first: theirs stands.
        match existing(&client, invoice.workspace.as_str(), month).await? {
            Some(row) => decode(&row.get::<_, String>(0)),
            None => Err(BackendError::new(
                ErrorKind::Conflict,
                "invoice vanished while finalising",
            )),
        }
    }

    async fn finalized(&self, workspace: &WorkspaceId) -> Result<Vec<Invoice>, BackendError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT body FROM routero_invoices WHERE workspace = $1 ORDER BY month",
                &[&workspace.as_str()],
            )
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| decode(&row.get::<_, String>(0)))
            .collect()
    }
}

impl PgStore {
    /// Closes the month before `now`'s, once `grace` has passed since it ended (so
    /// that late spend of its last minutes has drained), for every workspace of
    /// `directory` whose month is not closed yet; answers the invoices closed now.
    ///
    /// Any number of coworkers may call it on a schedule: one at a time holds a
    /// PostgreSQL advisory lock for the close (the others answer at once, with
    /// nothing), so invoice numbers are taken by one process, in order; each month of
    /// a workspace is finalised once (the `(workspace, month)` key); and a close cut
    /// short (a crash, a lost connection, which releases the lock) is finished by the
    /// next call. Spend that arrives after the close lands on the next invoice.
    pub async fn close_months_due(
        &self,
        directory: &BillingDirectory,
        grace: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Invoice>, InvoiceError> {
        let month = Month::of(now.date_naive()).previous();
        let due = Month::of(now.date_naive())
            .first_day()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
            .and_then(|start| {
                chrono::Duration::from_std(grace)
                    .ok()
                    .and_then(|g| start.checked_add_signed(g))
            });
        if due.is_none_or(|due| now < due) {
            return Ok(Vec::new());
        }
        let lock = self.client().await?;
        let held: bool = lock
            .query_one("SELECT pg_try_advisory_lock(7317020261201)", &[])
            .await
            .map_err(backend)?
            .get(0);
        if !held {
            return Ok(Vec::new());
        }
        let rates = self.rates();
        let billing = Billing {
            reader: self,
            wallets: self,
            invoices: self,
            rates: &*rates,
        };
        let first_day = month
            .first_day()
            .ok_or_else(|| InvoiceError::Month(month.to_string()))?;
        let closed = async {
            let mut closed = Vec::new();
            for (workspace, config) in directory.iter() {
                let client = self.client().await?;
                if existing(&client, workspace.as_str(), first_day)
                    .await?
                    .is_some()
                {
                    continue;
                }
                drop(client);
                closed.push(
                    billing
                        .close_month(&config.org, workspace, month, config.plan, now)
                        .await?,
                );
            }
            Ok::<_, InvoiceError>(closed)
        }
        .await;
        // A lock left behind by a failed unlock goes with the connection.
        if lock
            .batch_execute("SELECT pg_advisory_unlock(7317020261201)")
            .await
            .is_err()
        {
            drop(deadpool_postgres::Object::take(lock));
        }
        closed
    }
}
