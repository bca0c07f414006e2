//! Finalised invoices on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use routero_core::attribution::WorkspaceId;
use routero_core::invoice::{Invoice, InvoiceStore};
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
        let mut client = self.client().await?;
        let month = invoice.month.first_day().ok_or_else(|| {
            BackendError::new(ErrorKind::Invalid, format!("month {}", invoice.month))
        })?;
        if let Some(row) = existing(&client, invoice.workspace.as_str(), month).await? {
            return decode(&row.get::<_, String>(0));
        }
        // The number comes from a counter row locked until commit: finalisers take
        // turns, and a close that fails or dies before its commit uses no number.
        let tx = client.transaction().await.map_err(backend)?;
        let seq: i64 = tx
            .query_one(
                "UPDATE routero_invoice_counter SET last = last + 1 RETURNING last",
                &[],
            )
            .await
            .map_err(backend)?
            .get(0);
        if let Some(row) = tx
            .query_opt(
                "SELECT body FROM routero_invoices WHERE workspace = $1 AND month = $2",
                &[&invoice.workspace.as_str(), &month],
            )
            .await
            .map_err(backend)?
        {
            // Another coworker finalised it while this one waited: theirs stands.
            tx.rollback().await.map_err(backend)?;
            return decode(&row.get::<_, String>(0));
        }
        invoice.number = Some(format!(
            "INV-{}{:02}-{seq:06}",
            invoice.month.year, invoice.month.month
        ));
        invoice.finalized_at = Some(at);
        let body = serde_json::to_string(&invoice)
            .map_err(|e| BackendError::new(ErrorKind::Invalid, e.to_string()))?;
        tx.execute(
            "INSERT INTO routero_invoices (workspace, month, number, finalized_at, body) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &invoice.workspace.as_str(),
                &month,
                &invoice.number,
                &at,
                &body,
            ],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(invoice)
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
