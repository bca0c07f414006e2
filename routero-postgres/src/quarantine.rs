//! The quarantine on PostgreSQL: batches set aside by the drain, replayed or
//! discarded under their row's lock, each once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use routero_core::port::{BackendError, ErrorKind};
use routero_core::quarantine::{
    Quarantine, QuarantineApply, QuarantineReason, QuarantineState, QuarantinedBatch, Release,
};
use routero_core::spend::{QueuePosition, Rollups, ShardId, SpendBatch};
use tokio_postgres::Row;

use crate::drain::{big, count};
use crate::{PgStore, backend};

fn corrupt(what: &str) -> BackendError {
    BackendError::new(ErrorKind::Corrupt, format!("quarantine: {what}"))
}

/// Stores a batch set aside (in the drain's transaction).
pub(crate) async fn insert(
    tx: &Transaction<'_>,
    q: &QuarantineApply<'_>,
) -> Result<(), BackendError> {
    let batch = serde_json::to_string(q.batch)
        .map_err(|e| BackendError::new(ErrorKind::Invalid, e.to_string()))?;
    let events = i32::try_from(q.batch.events.len()).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO routero_quarantine (shard, position_major, position_minor, batch_id, batch, \
         events, reason, detail, quarantined_at, raw) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &i32::from(q.shard.0),
            &big(q.through.major, "position")?,
            &big(q.through.minor, "position")?,
            &q.batch.id.as_str(),
            &batch,
            &events,
            &q.reason.as_str(),
            &q.detail,
            &q.at,
            &q.raw,
        ],
    )
    .await
    .map_err(backend)?;
    Ok(())
}

const COLUMNS: &str = "id, shard, position_major, position_minor, batch, reason, detail, \
    quarantined_at, state, released_at, release_reason, raw";

fn from_row(row: &Row) -> Result<QuarantinedBatch, BackendError> {
    let batch: String = row.try_get("batch").map_err(backend)?;
    let reason: String = row.try_get("reason").map_err(backend)?;
    let state: String = row.try_get("state").map_err(backend)?;
    let released: Option<DateTime<Utc>> = row.try_get("released_at").map_err(backend)?;
    let state = match (state.as_str(), released) {
        ("quarantined", None) => QuarantineState::Quarantined,
        ("replayed", Some(at)) => QuarantineState::Replayed { at },
        ("discarded", Some(at)) => QuarantineState::Discarded {
            at,
            reason: row
                .try_get::<_, Option<String>>("release_reason")
                .map_err(backend)?
                .unwrap_or_default(),
        },
        _ => return Err(corrupt("state")),
    };
    let shard: i32 = row.try_get("shard").map_err(backend)?;
    Ok(QuarantinedBatch {
        id: count(row.try_get("id").map_err(backend)?, "id")?,
        shard: ShardId(u16::try_from(shard).map_err(|_| corrupt("shard"))?),
        position: QueuePosition::new(
            count(row.try_get("position_major").map_err(backend)?, "position")?,
            count(row.try_get("position_minor").map_err(backend)?, "position")?,
        ),
        batch: serde_json::from_str::<SpendBatch>(&batch).map_err(|_| corrupt("batch"))?,
        raw: row.try_get("raw").map_err(backend)?,
        reason: QuarantineReason::parse(&reason).ok_or_else(|| corrupt("reason"))?,
        detail: row.try_get("detail").map_err(backend)?,
        quarantined_at: row.try_get("quarantined_at").map_err(backend)?,
        state,
    })
}

/// Locks a quarantined batch's row; `Err(release)` when there is nothing to do.
async fn lock(
    tx: &Transaction<'_>,
    id: u64,
) -> Result<Result<QuarantinedBatch, Release>, BackendError> {
    let row = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM routero_quarantine WHERE id = $1 FOR UPDATE"),
            &[&big(id, "id")?],
        )
        .await
        .map_err(backend)?;
    let Some(row) = row else {
        return Ok(Err(Release::NotFound));
    };
    let held = from_row(&row)?;
    if held.state != QuarantineState::Quarantined {
        return Ok(Err(Release::AlreadyReleased(held.state)));
    }
    Ok(Ok(held))
}

#[async_trait]
impl Quarantine for PgStore {
    async fn quarantined(&self) -> Result<Vec<QuarantinedBatch>, BackendError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {COLUMNS} FROM routero_quarantine ORDER BY id"),
                &[],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(from_row).collect()
    }

    async fn replay(&self, id: u64, at: DateTime<Utc>) -> Result<Release, BackendError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let held = match lock(&tx, id).await? {
            Ok(held) => held,
            Err(release) => return Ok(release),
        };
        if held.raw.is_some() {
            return Err(routero_core::quarantine::unreadable_replay(id));
        }
        let rollups = Rollups::of_events(&held.batch.events)?;
        let created = self
            .write_step(
                &tx,
                &rollups,
                &held.batch.events,
                at,
                &format!("quarantine:{id}"),
            )
            .await?;
        tx.execute(
            "UPDATE routero_quarantine SET state = 'replayed', released_at = $2 WHERE id = $1",
            &[&big(id, "id")?, &at],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        self.remember_partitions(created);
        Ok(Release::Released)
    }

    async fn discard(
        &self,
        id: u64,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Release, BackendError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        if let Err(release) = lock(&tx, id).await? {
            return Ok(release);
        }
        tx.execute(
            "UPDATE routero_quarantine SET state = 'discarded', released_at = $2, \
             release_reason = $3 WHERE id = $1",
            &[&big(id, "id")?, &at, &reason],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Release::Released)
    }
}
