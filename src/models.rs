//! Versioned model rows, deployments and the per-backend model cache.
//!
//! Model rows never change (triggers refuse UPDATE, DELETE and TRUNCATE), so the cache is
//! keyed by model id: whichever deployment a transaction sees, the id it reads names
//! exactly one model, and a rolled-back deploy can never leave a backend serving the
//! wrong model. Deployments are append-only too: each row names the deployment it
//! replaced, so `rollback()` walks back through the history. Every change of what serves
//! a task takes the task's deploy lock first and re-reads what serves after taking it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use customer_analyzer_core::catalog::CATALOG_VERSION;
use customer_analyzer_core::codec::{self, Payload};
use customer_analyzer_core::model::Scorer;
use customer_analyzer_core::segment::Segmentation;
use customer_analyzer_core::task::{Task, SEGMENTATION};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;

use crate::error::{self, Result, SpiContext};
use crate::plans::types::{INT8, TEXT};
use crate::{gucs, plans, statement};

/// Checks a task argument.
pub fn task(task: Option<&str>) -> Result<Task> {
    Task::parse(task.ok_or_else(|| error::null_argument("task"))?).map_err(error::from_core)
}

/// What serves: a task's name, or segmentation (for rollback and retire).
fn served(task: Option<&str>) -> Result<&'static str> {
    match task {
        Some(SEGMENTATION) => Ok(SEGMENTATION),
        other => Ok(self::task(other)?.name()),
    }
}

/// A decoded model row.
pub enum Loaded {
    Classifier(Scorer),
    Segmentation(Segmentation),
}

struct Cached {
    /// Shared with the pool's jobs, which score batches while the backend reads.
    model: Arc<Loaded>,
    blob_bytes: usize,
}

thread_local! {
    static CACHE: RefCell<HashMap<i64, Cached>> = RefCell::new(HashMap::new());
    /// The model each task resolved to in the current statement (see `statement`).
    static SERVING: RefCell<(statement::Key, HashMap<&'static str, Option<i64>>)> =
        RefCell::new((statement::Key::default(), HashMap::new()));
    /// Set while purge_models() deletes, so that the append-only trigger lets it through.
    static PURGING: Cell<bool> = const { Cell::new(false) };
}

/// The newest deployment of a task: (deployment id, model id).
fn newest_deployment(client: &SpiClient<'_>, task: &str) -> Result<Option<(i64, i64)>> {
    let rows = plans::select(
        client,
        "SELECT id, model_id FROM customer_analyzer.deployments WHERE task = $1 ORDER BY id DESC LIMIT 1",
        &[TEXT],
        &[task.into()],
    )?;
    match rows.into_iter().next() {
        None => Ok(None),
        Some(row) => {
            let id = row.get::<i64>(1).ctx("reading deployments")?;
            let model = row.get::<i64>(2).ctx("reading deployments")?;
            Ok(id.zip(model))
        }
    }
}

/// The model serving `task`, or None when nothing is deployed. Within one statement the
/// answer is fixed at its first use, so a statement that scores many rows never mixes
/// two models even when another session deploys meanwhile.
pub fn serving_model(client: &SpiClient<'_>, task: &'static str) -> Result<Option<i64>> {
    let key = statement::key();
    let known = SERVING.with(|s| {
        let s = s.borrow();
        if s.0 == key {
            s.1.get(task).copied()
        } else {
            None
        }
    });
    if let Some(id) = known {
        return Ok(id);
    }
    let id = newest_deployment(client, task)?.map(|(_, model)| model);
    SERVING.with(|s| {
        let mut s = s.borrow_mut();
        if s.0 != key {
            *s = (key, HashMap::new());
        }
        s.1.insert(task, id);
    });
    Ok(id)
}

/// The model serving `task`, or 55000 when none is deployed.
pub fn deployed_model_id(client: &SpiClient<'_>, task: &'static str) -> Result<i64> {
    serving_model(client, task)?.ok_or_else(|| {
        if task == SEGMENTATION {
            error::not_ready(
                "no segmentation exists yet",
                "Run SELECT * FROM customer_analyzer.segment_users(); first.",
            )
        } else {
            error::not_ready(
                format!("no {task} model is deployed"),
                &format!("Train one with SELECT * FROM customer_analyzer.train('{task}');"),
            )
        }
    })
}

/// Decodes a stored model blob.
pub fn decode(blob: &[u8]) -> Result<Loaded> {
    match codec::decode(blob).map_err(error::from_core)? {
        Payload::Classifier(model) => Ok(Loaded::Classifier(
            Scorer::new(model).map_err(error::from_core)?,
        )),
        Payload::Segmentation(s) => Ok(Loaded::Segmentation(s)),
    }
}

impl Loaded {
    pub fn classifier(&self) -> Result<&Scorer> {
        match self {
            Loaded::Classifier(s) => Ok(s),
            Loaded::Segmentation(_) => Err(error::invalid_parameter(
                "the model is a segmentation, not a classifier",
                "Use segment_of() for segmentations.",
            )),
        }
    }

    pub fn segmentation(&self) -> Result<&Segmentation> {
        match self {
            Loaded::Segmentation(s) => Ok(s),
            Loaded::Classifier(_) => Err(error::invalid_parameter(
                "the model is a classifier, not a segmentation",
                "Use predict() for classifiers.",
            )),
        }
    }
}

/// Any model row, from the cache or decoded from its row. The cache holds at most
/// `customer_analyzer.model_cache_size` models and four times
/// `customer_analyzer.max_model_mb` of blobs.
pub fn loaded(client: &SpiClient<'_>, model_id: i64) -> Result<Arc<Loaded>> {
    if let Some(s) = CACHE.with(|c| c.borrow().get(&model_id).map(|m| m.model.clone())) {
        return Ok(s);
    }
    let blob = plans::select(
        client,
        "SELECT model FROM customer_analyzer.models WHERE id = $1",
        &[INT8],
        &[model_id.into()],
    )?
    .next()
    .map(|row| row.get::<Vec<u8>>(1))
    .transpose()
    .ctx("reading a model")?
    .flatten()
    .ok_or_else(|| unknown_model(model_id))?;
    let model = Arc::new(decode(&blob)?);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let held: usize = c.values().map(|m| m.blob_bytes).sum();
        if c.len() >= gucs::model_cache_size() || held + blob.len() > 4 * gucs::max_model_bytes() {
            c.clear();
        }
        c.insert(
            model_id,
            Cached {
                model: model.clone(),
                blob_bytes: blob.len(),
            },
        );
    });
    Ok(model)
}

fn unknown_model(model_id: i64) -> pgrx::pg_sys::panic::ErrorReport {
    error::invalid_parameter(
        format!("model {model_id} does not exist"),
        "See customer_analyzer.models for the ids.",
    )
}

/// What the models table stores about a new model, besides the blob's own header.
pub struct NewModel<'a> {
    pub task: &'a str,
    pub algorithm: &'a str,
    pub params: serde_json::Value,
    pub preprocessing: serde_json::Value,
    pub trained_as_of: TimestampWithTimeZone,
    pub training_from: TimestampWithTimeZone,
    pub training_to: TimestampWithTimeZone,
    pub metrics: serde_json::Value,
    pub payload: Payload,
}

/// Stores a new model row (the one place that writes `models`); returns its id. Models
/// above `customer_analyzer.max_model_mb` are refused with 54000.
pub fn store_model(client: &mut SpiClient<'_>, m: NewModel<'_>) -> Result<i64> {
    let blob = codec::encode(&m.payload).map_err(error::from_core)?;
    let limit = gucs::max_model_bytes();
    if blob.len() > limit {
        return Err(error::from_core(customer_analyzer_core::Error::TooLarge {
            what: "storing this model".into(),
            needed_mb: blob.len().div_ceil(customer_analyzer_core::work::MB),
            limit_mb: limit / customer_analyzer_core::work::MB,
            setting: "customer_analyzer.max_model_mb",
        }));
    }
    let names: Vec<String> = customer_analyzer_core::catalog::FEATURES
        .iter()
        .map(|f| f.name.to_string())
        .collect();
    client
        .update(
            "INSERT INTO customer_analyzer.models (task, algorithm, params, preprocessing, feature_names,
                 catalog_version, trained_as_of, training_from, training_to, metrics, size_bytes,
                 format_version, model)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
            None,
            &[
                m.task.into(),
                m.algorithm.into(),
                JsonB(m.params).into(),
                JsonB(m.preprocessing).into(),
                names.into(),
                CATALOG_VERSION.into(),
                m.trained_as_of.into(),
                m.training_from.into(),
                m.training_to.into(),
                JsonB(m.metrics).into(),
                (blob.len() as i32).into(),
                (codec::FORMAT_VERSION as i32).into(),
                blob.into(),
            ],
        )
        .ctx("storing the model")?
        .first()
        .get_one::<i64>()
        .ctx("storing the model")?
        .ok_or_else(|| error::internal("storing the model", "no id returned"))
}

/// Advisory-lock key space of customer_analyzer ("CA") and the key of each task.
const LOCK_SPACE: i32 = 0x4341;
fn lock_key(served: &str) -> i32 {
    Task::ALL
        .iter()
        .position(|t| t.name() == served)
        .map_or(0, |i| i as i32 + 1)
}

/// Takes the task's deploy lock until the end of the transaction and returns what
/// serves it now, read with a fresh snapshot: a deploy that committed while this call
/// waited is seen (in READ COMMITTED, the default).
pub fn lock_task(client: &mut SpiClient<'_>, task: &str) -> Result<Option<(i64, i64)>> {
    client
        .update(
            "SELECT pg_catalog.pg_advisory_xact_lock($1, $2)",
            None,
            &[LOCK_SPACE.into(), lock_key(task).into()],
        )
        .ctx("taking the deploy lock")?;
    // `update` runs with a new snapshot; a read-only `select` would reuse the
    // statement's, from before the wait.
    let row = client
        .update(
            "SELECT id, model_id FROM customer_analyzer.deployments WHERE task = $1 ORDER BY id DESC LIMIT 1",
            None,
            &[task.into()],
        )
        .ctx("reading deployments")?;
    match row.into_iter().next() {
        None => Ok(None),
        Some(r) => Ok(r
            .get::<i64>(1)
            .ctx("reading deployments")?
            .zip(r.get::<i64>(2).ctx("reading deployments")?)),
    }
}

/// Records that `model_id` serves `task` from now on, replacing deployment `replaces`.
/// The caller holds the task's lock (see `lock_task`).
pub fn record_deployment(
    client: &mut SpiClient<'_>,
    task: &str,
    model_id: i64,
    reason: &str,
    replaces: Option<i64>,
) -> Result<()> {
    client
        .update(
            "INSERT INTO customer_analyzer.deployments (task, model_id, reason, previous_id)
             VALUES ($1, $2, $3, $4)",
            None,
            &[task.into(), model_id.into(), reason.into(), replaces.into()],
        )
        .ctx("recording a deployment")?;
    statement::serving_changed();
    // a test compares two fixed models: another champion ends it
    crate::abtests::end_with_notice(
        client,
        task,
        &format!("model {model_id} serves {task} now ({reason})"),
    )
}

/// What deploying or testing a model checks about it.
pub struct ModelFacts {
    pub task: String,
    pub catalog_version: i32,
    pub retired: bool,
}

/// The task, catalog version and retirement of a model.
pub fn model_facts(client: &mut SpiClient<'_>, model_id: i64) -> Result<ModelFacts> {
    let rows = client
        .update(
            "SELECT m.task, m.catalog_version,
                    EXISTS (SELECT 1 FROM customer_analyzer.retired_models r WHERE r.model_id = m.id)
             FROM customer_analyzer.models m WHERE m.id = $1",
            None,
            &[model_id.into()],
        )
        .ctx("reading a model")?;
    let row = rows
        .into_iter()
        .next()
        .ok_or_else(|| unknown_model(model_id))?;
    Ok(ModelFacts {
        task: row
            .get::<String>(1)
            .ctx("reading a model")?
            .unwrap_or_default(),
        catalog_version: row
            .get::<i32>(2)
            .ctx("reading a model")?
            .unwrap_or_default(),
        retired: row.get::<bool>(3).ctx("reading a model")?.unwrap_or(false),
    })
}

/// Makes `model_id` serve its task. Refuses a retired model, a model built for another
/// feature catalog and a blob that does not decode.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn deploy(model_id: Option<i64>) -> Result<String> {
    error::require_primary("deploy()")?;
    let model_id = model_id.ok_or_else(|| error::null_argument("model_id"))?;
    Spi::connect_mut(|client| {
        let ModelFacts {
            task,
            catalog_version: version,
            retired,
        } = model_facts(client, model_id)?;
        if retired {
            return Err(error::not_ready(
                format!("model {model_id} is retired"),
                "Retired models are kept for history only; deploy another model or train a new one.",
            ));
        }
        if version != CATALOG_VERSION {
            return Err(error::not_ready(
                format!(
                    "model {model_id} was trained on feature catalog version {version}, and this extension computes version {CATALOG_VERSION}"
                ),
                &format!(
                    "Its inputs no longer mean what they meant; train a new one with SELECT * FROM customer_analyzer.train('{task}');"
                ),
            ));
        }
        loaded(client, model_id)?;
        let serving = lock_task(client, &task)?;
        record_deployment(client, &task, model_id, "deploy", serving.map(|s| s.0))?;
        Ok(task)
    })
}

/// The deployment to go back to from deployment `from`: the one it replaced, skipping
/// deployments of retired models. Returns (deployment id, model id, what that one
/// replaced).
fn previous_serving(
    client: &mut SpiClient<'_>,
    from: i64,
) -> Result<Option<(i64, i64, Option<i64>)>> {
    let rows = client
        .update(
            "WITH RECURSIVE back AS (
                 SELECT p.id, p.model_id, p.previous_id, 1 AS step
                 FROM customer_analyzer.deployments d
                 JOIN customer_analyzer.deployments p ON p.id = d.previous_id
                 WHERE d.id = $1
                 UNION ALL
                 SELECT p.id, p.model_id, p.previous_id, b.step + 1
                 FROM back b JOIN customer_analyzer.deployments p ON p.id = b.previous_id
             )
             SELECT b.id, b.model_id, b.previous_id FROM back b
             WHERE NOT EXISTS (SELECT 1 FROM customer_analyzer.retired_models r WHERE r.model_id = b.model_id)
             ORDER BY b.step LIMIT 1",
            None,
            &[from.into()],
        )
        .ctx("reading the deployment history")?;
    match rows.into_iter().next() {
        None => Ok(None),
        Some(r) => {
            let id = r.get::<i64>(1).ctx("reading deployments")?;
            let model = r.get::<i64>(2).ctx("reading deployments")?;
            let previous = r.get::<i64>(3).ctx("reading deployments")?;
            Ok(id.zip(model).map(|(i, m)| (i, m, previous)))
        }
    }
}

/// Steps the task back one deployment (what the serving deployment replaced) and
/// records it; returns the model that serves now.
fn step_back(client: &mut SpiClient<'_>, task: &str, reason: &str) -> Result<i64> {
    let (current, _) = lock_task(client, task)?.ok_or_else(|| {
        error::not_ready(
            format!("no {task} model is deployed"),
            "customer_analyzer.deployments lists the history; deploy(model_id) picks any model.",
        )
    })?;
    let (_, model, replaced) = previous_serving(client, current)?.ok_or_else(|| {
        error::not_ready(
            format!("no earlier {task} model to go back to"),
            "customer_analyzer.deployments lists the history; deploy(model_id) picks any model that is not retired.",
        )
    })?;
    // the new row replaces what the restored deployment replaced, so the next rollback
    // goes one further back
    record_deployment(client, task, model, reason, replaced)?;
    Ok(model)
}

/// Returns `task` to the model that served before the current one; returns its id.
/// Each call goes one deployment further back.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn rollback(task: Option<&str>) -> Result<i64> {
    error::require_primary("rollback()")?;
    let task = served(task)?;
    Spi::connect_mut(|client| step_back(client, task, "rollback"))
}

/// Takes a model out of service for good: it is never deployed again and stays in
/// `models` for history. When it serves its task, the task goes back to the model before
/// it. Returns the model that serves the task afterwards (NULL when none).
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn retire_model(
    model_id: Option<i64>,
    reason: default!(Option<&str>, "'retired'"),
) -> Result<Option<i64>> {
    error::require_primary("retire_model()")?;
    let model_id = model_id.ok_or_else(|| error::null_argument("model_id"))?;
    let reason = reason.ok_or_else(|| error::null_argument("reason"))?;
    Spi::connect_mut(|client| {
        let ModelFacts { task, retired, .. } = model_facts(client, model_id)?;
        if retired {
            return Err(error::not_ready(
                format!("model {model_id} is already retired"),
                "See customer_analyzer.retired_models.",
            ));
        }
        let serving = lock_task(client, &task)?;
        client
            .update(
                "INSERT INTO customer_analyzer.retired_models (model_id, reason) VALUES ($1, $2)",
                None,
                &[model_id.into(), reason.into()],
            )
            .ctx("retiring a model")?;
        crate::abtests::end_for_retired_challenger(client, model_id)?;
        match serving {
            Some((_, serving_model)) if serving_model == model_id => {
                let now = step_back(client, &task, "retire")?;
                pgrx::notice!(
                    "customer_analyzer: model {model_id} served {task}; model {now} serves it again"
                );
                Ok(Some(now))
            }
            other => Ok(other.map(|s| s.1)),
        }
    })
}

/// Whether purge_models() is deleting (read by the append-only trigger).
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn _purging() -> bool {
    PURGING.with(|p| p.get())
}

/// Resets the purge flag however the delete ends.
struct PurgeGuard;
impl Drop for PurgeGuard {
    fn drop(&mut self) {
        PURGING.with(|p| p.set(false));
    }
}

/// Removes models older than `older_than` that were never deployed, are not retired,
/// have no stored predictions and are not among the newest `keep_last` of their task.
/// Owner only. Returns the removed rows.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn purge_models(
    older_than: Option<pgrx::datum::Interval>,
    keep_last: default!(Option<i32>, 10),
) -> Result<
    TableIterator<
        'static,
        (
            name!(model_id, i64),
            name!(task, String),
            name!(created_at, TimestampWithTimeZone),
        ),
    >,
> {
    error::require_primary("purge_models()")?;
    let older_than = older_than.ok_or_else(|| error::null_argument("older_than"))?;
    let keep_last = keep_last.ok_or_else(|| error::null_argument("keep_last"))?;
    if keep_last < 0 {
        return Err(error::invalid_parameter(
            format!("keep_last must be 0 or more, got {keep_last}"),
            "keep_last => 10 keeps the ten newest models of each task whatever their age.",
        ));
    }
    let rows = Spi::connect_mut(
        |client| -> Result<Vec<(i64, String, TimestampWithTimeZone)>> {
            PURGING.with(|p| p.set(true));
            let _reset = PurgeGuard;
            let deleted = client
            .update(
                "DELETE FROM customer_analyzer.models m
                 WHERE m.created_at < clock_timestamp() - $1
                   AND NOT EXISTS (SELECT 1 FROM customer_analyzer.deployments d WHERE d.model_id = m.id)
                   AND NOT EXISTS (SELECT 1 FROM customer_analyzer.retired_models r WHERE r.model_id = m.id)
                   AND NOT EXISTS (SELECT 1 FROM customer_analyzer.predictions p WHERE p.model_id = m.id)
                   AND NOT EXISTS (SELECT 1 FROM customer_analyzer.matured_predictions o WHERE o.model_id = m.id)
                   AND NOT EXISTS (SELECT 1 FROM customer_analyzer.experiments x
                                   WHERE m.id IN (x.champion_id, x.challenger_id))
                   AND m.id NOT IN (
                       SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY task ORDER BY id DESC) AS rn
                                       FROM customer_analyzer.models) newest
                       WHERE rn <= $2)
                 RETURNING m.id, m.task, m.created_at",
                None,
                &[older_than.into(), (keep_last as i64).into()],
            )
            .ctx("purging models")?;
            let mut out = Vec::new();
            for row in deleted {
                let id = row.get::<i64>(1).ctx("purging models")?.unwrap_or_default();
                let task = row
                    .get::<String>(2)
                    .ctx("purging models")?
                    .unwrap_or_default();
                let at = row
                    .get::<TimestampWithTimeZone>(3)
                    .ctx("purging models")?
                    .ok_or_else(|| error::internal("purging models", "NULL created_at"))?;
                out.push((id, task, at));
            }
            Ok(out)
        },
    )?;
    Ok(TableIterator::new(rows))
}

/// Drops every cached model of this backend (for tests and after restores).
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn clear_model_cache() -> i64 {
    CACHE.with(|c| {
        let n = c.borrow().len() as i64;
        c.borrow_mut().clear();
        n
    })
}

/// Model ids this backend has decoded and keeps.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn cached_models() -> Vec<i64> {
    CACHE.with(|c| {
        let mut ids: Vec<i64> = c.borrow().keys().copied().collect();
        ids.sort_unstable();
        ids
    })
}
