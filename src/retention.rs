//! What the extension keeps about users and how long: `prune()` applies
//! `customer_analyzer.prediction_retention` to the logs, `forget_user()` erases one user
//! (an erasure request).

use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::error::{self, Result, SpiContext};
use crate::plans::types::INT8;
use crate::{gucs, plans, source};

/// The logs `prune()` trims, each with the column that dates a row.
const LOGS: &[(&str, &str)] = &[
    ("predictions", "predicted_at"),
    ("rescore_queue", "first_enqueued_at"),
    ("worker_errors", "occurred_at"),
    ("retrain_log", "finished_at"),
];

/// Every table that holds rows about a user, by its user column.
const USER_TABLES: &[&str] = &[
    "feature_store",
    "latest_scores",
    "predictions",
    "matured_predictions",
    "user_segments",
    "rescore_queue",
    "worker_errors",
];

/// Deletes `table`'s rows matching `condition` (over `$1`); returns how many.
fn delete_where(client: &mut SpiClient<'_>, table: &str, condition: &str, arg: i64) -> Result<i64> {
    Ok(plans::update(
        client,
        &format!(
            "WITH gone AS (DELETE FROM customer_analyzer.{table} WHERE {condition} RETURNING 1)
             SELECT count(*) FROM gone"
        ),
        &[INT8],
        &[arg.into()],
    )?
    .first()
    .get_one::<i64>()
    .ctx("deleting rows")?
    .unwrap_or(0))
}

/// Deletes the logs' rows older than the retention; (table, rows deleted) for each log,
/// none when the retention is 0 (keep everything).
pub fn prune_logs(client: &mut SpiClient<'_>) -> Result<Vec<(String, i64)>> {
    let Some(minutes) = gucs::prediction_retention_minutes() else {
        return Ok(Vec::new());
    };
    let pruned = LOGS
        .iter()
        .map(|(table, at)| {
            let n = delete_where(
                client,
                table,
                &format!("{at} < pg_catalog.now() - pg_catalog.make_interval(mins => $1::int)"),
                minutes,
            )?;
            Ok((table.to_string(), n))
        })
        .collect::<Result<Vec<_>>>()?;
    if pruned
        .iter()
        .any(|(table, n)| (table == "rescore_queue" || table == "worker_errors") && *n > 0)
    {
        // the queue and the worker's failures may no longer name every user whose events
        // changed: the next refresh_features() must read everyone's events
        crate::refresh::forget_queue(client)?;
    }
    if pruned
        .iter()
        .any(|(table, n)| table == "predictions" && *n > 0)
    {
        // a user whose newest row went has no latest score any more, as the log says
        plans::update(
            client,
            "DELETE FROM customer_analyzer.latest_scores l
             WHERE NOT EXISTS (SELECT FROM customer_analyzer.predictions p WHERE p.id = l.prediction_id)",
            &[],
            &[],
        )?;
    }
    Ok(pruned)
}

/// Deletes the rows of the prediction log, the rescoring queue, worker_errors and
/// retrain_log older than `customer_analyzer.prediction_retention`.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn prune() -> Result<TableIterator<'static, (name!(table_name, String), name!(rows_deleted, i64))>>
{
    error::require_primary("prune()")?;
    let rows = Spi::connect_mut(prune_logs)?;
    Ok(TableIterator::new(rows))
}

/// Erases everything the extension holds about a user: features, predictions, segment
/// assignments, outcomes, queue entries and errors. The shop's own tables are the shop's: a user
/// still in them comes back at the next refresh, which the NOTICE says.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn forget_user(
    user_id: Option<i64>,
) -> Result<TableIterator<'static, (name!(table_name, String), name!(rows_deleted, i64))>> {
    error::require_primary("forget_user()")?;
    let user_id = user_id.ok_or_else(|| error::null_argument("user_id"))?;
    let rows = Spi::connect_mut(|client| -> Result<Vec<(String, i64)>> {
        let rows = USER_TABLES
            .iter()
            .map(|table| {
                Ok((
                    table.to_string(),
                    delete_where(client, table, "user_id = $1", user_id)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        if let Ok(s) = source::load(client) {
            let still = crate::feature_store::user_exists(client, &s, user_id)?;
            if still {
                pgrx::notice!(
                    "user {user_id} is still in {}: their features and scores come back at the next refresh or event; delete the user from the shop's tables too",
                    s.users
                );
            }
        }
        Ok(rows)
    })?;
    Ok(TableIterator::new(rows))
}
