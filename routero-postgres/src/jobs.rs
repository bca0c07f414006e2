//! The scheduler's run records (`routero_job_runs`) and the retention job.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use routero_core::port::{BackendError, ErrorKind, FencingToken};
use routero_core::schedule::{
    Claim, Job, JobError, JobRun, JobRuns, RunFilter, RunOutcome, RunState, claim_existing,
};
use tokio_postgres::Row;

use crate::{PgStore, Retained, backend};

fn token_param(token: FencingToken) -> Result<i64, BackendError> {
    i64::try_from(token.0).map_err(|_| {
        BackendError::new(
            ErrorKind::Invalid,
            format!("fencing token {} past BIGINT", token.0),
        )
    })
}

fn run_of(row: &Row) -> Result<JobRun, BackendError> {
    let state: String = row.get("state");
    Ok(JobRun {
        job: row.get("job"),
        period: row.get("period"),
        state: RunState::parse(&state).ok_or_else(|| {
            BackendError::new(ErrorKind::Other, format!("unknown run state {state:?}"))
        })?,
        attempts: u32::try_from(row.get::<_, i32>("attempts")).unwrap_or(0),
        token: u64::try_from(row.get::<_, i64>("token")).unwrap_or(0),
        holder: row.get("holder"),
        error: row.get("error"),
        detail: row.get("detail"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
        next_attempt_at: row.get("next_attempt_at"),
    })
}

const COLUMNS: &str = "job, period, state, attempts, token, holder, error, detail, \
                       started_at, finished_at, next_attempt_at";

#[async_trait]
impl JobRuns for PgStore {
    async fn claim(
        &self,
        job: &str,
        period: &str,
        token: FencingToken,
        holder: &str,
        now: DateTime<Utc>,
    ) -> Result<Claim, BackendError> {
        let token = token_param(token)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        // A new record starts at 0 attempts and is raised to 1 below, in the same
        // transaction; the row lock orders two claims.
        tx.execute(
            "INSERT INTO routero_job_runs (job, period, state, attempts, token, holder, started_at) \
             VALUES ($1, $2, 'running', 0, $3, $4, $5) ON CONFLICT (job, period) DO NOTHING",
            &[&job, &period, &token, &holder, &now],
        )
        .await
        .map_err(backend)?;
        let row = tx
            .query_one(
                &format!(
                    "SELECT {COLUMNS} FROM routero_job_runs WHERE job = $1 AND period = $2 FOR UPDATE"
                ),
                &[&job, &period],
            )
            .await
            .map_err(backend)?;
        let mut run = run_of(&row)?;
        let fresh = row.get::<_, i32>("attempts") == 0;
        let existing = if fresh {
            None
        } else {
            claim_existing(&run, FencingToken(u64::try_from(token).unwrap_or(0)), now)
        };
        if let Some(claim) = existing {
            tx.rollback().await.map_err(backend)?;
            return Ok(claim);
        }
        run.attempts += 1;
        tx.execute(
            "UPDATE routero_job_runs SET state = 'running', attempts = attempts + 1, token = $3, \
             holder = $4, started_at = $5, finished_at = NULL WHERE job = $1 AND period = $2",
            &[&job, &period, &token, &holder, &now],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Claim::Claimed {
            attempt: run.attempts,
        })
    }

    async fn finish(
        &self,
        job: &str,
        period: &str,
        token: FencingToken,
        outcome: &RunOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool, BackendError> {
        let token = token_param(token)?;
        let (state, error, detail, next): (
            &str,
            Option<&str>,
            Option<&str>,
            Option<DateTime<Utc>>,
        ) = match outcome {
            RunOutcome::Done(detail) => ("done", None, Some(detail), None),
            RunOutcome::Failed { error, retry_at } => {
                ("failed", Some(error), None, Some(*retry_at))
            }
            RunOutcome::Refused(error) => ("refused", Some(error), None, None),
        };
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE routero_job_runs SET state = $4, error = $5, \
                 detail = COALESCE($6, detail), next_attempt_at = $7, finished_at = $8 \
                 WHERE job = $1 AND period = $2 AND token = $3 AND state = 'running'",
                &[&job, &period, &token, &state, &error, &detail, &next, &now],
            )
            .await
            .map_err(backend)?;
        Ok(n == 1)
    }

    async fn runs(&self, filter: &RunFilter) -> Result<Vec<JobRun>, BackendError> {
        let limit =
            i64::try_from(if filter.limit == 0 { 100 } else { filter.limit }).unwrap_or(i64::MAX);
        let state = filter.state.map(RunState::as_str);
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM routero_job_runs \
                     WHERE ($1::text IS NULL OR job = $1) AND ($2::text IS NULL OR state = $2) \
                     ORDER BY started_at DESC, job, period LIMIT $3"
                ),
                &[&filter.job, &state, &limit],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(run_of).collect()
    }

    async fn retry(&self, job: &str, period: &str) -> Result<Option<bool>, BackendError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "WITH found AS (SELECT state FROM routero_job_runs \
                                WHERE job = $1 AND period = $2 FOR UPDATE), \
                      changed AS (UPDATE routero_job_runs SET state = 'failed', next_attempt_at = NULL \
                                  WHERE job = $1 AND period = $2 AND state IN ('failed', 'refused') \
                                  RETURNING 1) \
                 SELECT (SELECT count(*) FROM changed) FROM found",
                &[&job, &period],
            )
            .await
            .map_err(backend)?;
        Ok(row.map(|r| r.get::<_, i64>(0) == 1))
    }

    async fn settled(
        &self,
        job: &str,
        periods: &[String],
    ) -> Result<std::collections::HashSet<String>, BackendError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT period FROM routero_job_runs WHERE job = $1 AND period = ANY($2) \
                 AND state IN ('done', 'refused')",
                &[&job, &periods],
            )
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn counts(&self, job: &str) -> Result<Vec<(RunState, u64)>, BackendError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT state, count(*) FROM routero_job_runs WHERE job = $1 GROUP BY state",
                &[&job],
            )
            .await
            .map_err(backend)?;
        Ok(RunState::ALL
            .into_iter()
            .map(|s| {
                let n = rows
                    .iter()
                    .find(|r| r.get::<_, String>(0) == s.as_str())
                    .map_or(0, |r| u64::try_from(r.get::<_, i64>(1)).unwrap_or(0));
                (s, n)
            })
            .collect())
    }
}

/// The retention job: once a UTC day, drops what [`PgStore::apply_retention`] drops
/// (the request log's old partitions, old rollups, old released quarantine rows).
/// The period is the day (`2026-12-02`).
#[derive(Debug, Clone)]
pub struct RetentionJob {
    store: PgStore,
}

impl RetentionJob {
    /// The job over `store` (its `PgConfig` says what is kept).
    pub fn new(store: PgStore) -> RetentionJob {
        RetentionJob { store }
    }
}

#[async_trait]
impl Job for RetentionJob {
    fn name(&self) -> &str {
        "retention"
    }

    async fn due(&self, now: DateTime<Utc>) -> Result<Vec<String>, JobError> {
        Ok(vec![now.date_naive().to_string()])
    }

    async fn run(&self, period: &str, _now: DateTime<Utc>) -> Result<String, JobError> {
        let day: chrono::NaiveDate = period
            .parse()
            .map_err(|_| JobError::permanent(format!("{period:?} is not a day")))?;
        let Retained {
            log_partitions,
            rollup_rows,
            quarantine_rows,
        } = self.store.apply_retention(day).await?;
        Ok(format!(
            "{} log partitions dropped, {rollup_rows} rollup rows, {quarantine_rows} quarantine rows",
            log_partitions.len()
        ))
    }
}
