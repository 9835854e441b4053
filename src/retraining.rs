//! Retraining: `retrain(task)` trains the serving model's own recipe (its algorithm
//! choice, `auto` choosing again, and its parameters) on fresh data and deploys the new
//! model only when it beats the serving one on the new holdout, one retrain per task at
//! a time. The retraining worker, a dynamic background worker the rescoring worker starts
//! every `customer_analyzer.monitor_interval`, records matured outcomes and retrains a
//! task when its model is older than `customer_analyzer.retrain_interval`, its scores
//! drifted or its live AUC fell (`customer_analyzer_core::retrain`). It never runs
//! inside the rescoring worker, whose queue a training of tens of seconds would stall.
//! Every retrain, and every failed one the worker tried, is in `retrain_log`.

use std::time::Instant;

use customer_analyzer_core::params::{Algorithm, TrainParams};
use customer_analyzer_core::retrain::{self, Watch};
use customer_analyzer_core::task::Task;
use pgrx::bgworkers::{BackgroundWorkerBuilder, BackgroundWorkerStatus, DynamicBackgroundWorker};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::json;

use crate::error::{self, Result, SpiContext};
use crate::{drift, gucs, models, outcomes, training, worker};

/// Advisory-lock key space of retraining ("CR"); the key is the task's.
const RETRAIN_LOCKS: i32 = 0x4352;

/// What a retrain did.
struct Retrained {
    model_id: i64,
    algorithm: String,
    auc: f64,
    brier: f64,
    previous_model_id: Option<i64>,
    previous_auc: Option<f64>,
    deployed: bool,
}

/// The serving model's recipe: its id, the algorithm asked for and the parameters.
fn recipe(client: &mut SpiClient<'_>, task: Task) -> Result<(i64, Algorithm, serde_json::Value)> {
    let locked = client
        .update(
            "SELECT pg_catalog.pg_try_advisory_xact_lock($1, $2)",
            None,
            &[RETRAIN_LOCKS.into(), (task as i32 + 1).into()],
        )
        .ctx("taking the retrain lock")?
        .first()
        .get_one::<bool>()
        .ctx("taking the retrain lock")?
        .unwrap_or(false);
    if !locked {
        return Err(error::busy(
            format!("a retrain of {task} is already running"),
            "Wait for it to finish; customer_analyzer.retrain_log shows what it did.",
        ));
    }
    let serving = models::serving_model(client, task.name())?.ok_or_else(|| {
        error::not_ready(
            format!("no {task} model is deployed, so there is nothing to retrain"),
            &format!("Train the first one with SELECT * FROM customer_analyzer.train('{task}');"),
        )
    })?;
    let row = client
        .select(
            "SELECT coalesce(metrics -> 'requested' ->> 'algorithm', algorithm),
                    coalesce(metrics -> 'requested' -> 'params', '{}')
             FROM customer_analyzer.models WHERE id = $1",
            None,
            &[serving.into()],
        )
        .ctx("reading the serving model")?
        .first()
        .get_two::<String, pgrx::JsonB>()
        .ctx("reading the serving model")?;
    let algorithm =
        Algorithm::parse(row.0.as_deref().unwrap_or("auto")).map_err(error::from_core)?;
    let mut params = row.1.map_or(json!({}), |p| p.0);
    if !params.is_object() {
        params = json!({});
    }
    // the new model replaces the serving one only when it is better
    params["deploy"] = json!("if_better");
    Ok((serving, algorithm, params))
}

/// Retrains `task` in the caller's transaction and records it in retrain_log.
fn retrain_task(task: Task, trigger: &str, reason: &str) -> Result<Retrained> {
    let started = Spi::get_one::<TimestampWithTimeZone>("SELECT pg_catalog.clock_timestamp()")
        .ctx("reading the clock")?
        .ok_or_else(|| error::internal("reading the clock", "NULL"))?;
    let (serving, algorithm, requested) = Spi::connect_mut(|client| recipe(client, task))?;
    let params = TrainParams::from_json(algorithm, &requested).map_err(error::from_core)?;
    let row = training::train_impl(task, algorithm, params, requested, None)?;
    let (model_id, _, algorithm, auc, _, _, _, brier, deployed) = row;
    Spi::connect_mut(|client| {
        let previous = client
            .update(
                "INSERT INTO customer_analyzer.retrain_log
                     (task, started_at, trigger, reason, previous_model_id, new_model_id,
                      deployed, previous_auc, new_auc)
                 SELECT $1, $2, $3, $4,
                        -- what train() compared with, under its deploy lock
                        coalesce((m.metrics -> 'compared_with' ->> 'model_id')::bigint, $5), $6, $7,
                        (m.metrics -> 'compared_with' ->> 'holdout_auc')::float8, $8
                 FROM customer_analyzer.models m WHERE m.id = $6
                 RETURNING previous_model_id, previous_auc",
                None,
                &[
                    task.name().into(),
                    started.into(),
                    trigger.into(),
                    reason.into(),
                    serving.into(),
                    model_id.into(),
                    deployed.into(),
                    auc.into(),
                ],
            )
            .ctx("recording the retrain")?
            .first()
            .get_two::<i64, f64>()
            .ctx("recording the retrain")?;
        Ok(Retrained {
            model_id,
            algorithm,
            auc,
            brier,
            previous_model_id: previous.0,
            previous_auc: previous.1,
            deployed,
        })
    })
}

/// Trains the serving model's recipe on fresh data and deploys the result if it is
/// better on the new holdout; see the module comment. A concurrent retrain of the same
/// task fails at once with 55P03.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn retrain(
    task: Option<&str>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(model_id, i64),
            name!(task, String),
            name!(algorithm, String),
            name!(auc, f64),
            name!(brier, f64),
            name!(previous_model_id, Option<i64>),
            name!(previous_auc, Option<f64>),
            name!(deployed, bool),
        ),
    >,
> {
    error::require_primary("retrain()")?;
    let task = models::task(task)?;
    // who asked: the client's application_name, else a background worker's type (a
    // pg_cron job), else the role
    let caller = Spi::get_one::<String>(
        "SELECT coalesce(nullif(pg_catalog.current_setting('application_name'), ''),
                         nullif((SELECT a.backend_type FROM pg_catalog.pg_stat_activity a
                                 WHERE a.pid = pg_catalog.pg_backend_pid()), 'client backend'),
                         session_user::text)",
    )
    .ctx("reading the caller")?
    .unwrap_or_default();
    let r = retrain_task(task, "call", &format!("retrain() called by {caller}"))?;
    Ok(TableIterator::once((
        r.model_id,
        task.to_string(),
        r.algorithm,
        r.auc,
        r.brier,
        r.previous_model_id,
        r.previous_auc,
        r.deployed,
    )))
}

/// Whether the worker should retrain `task` now, and why; None when nothing serves it.
fn watch(task: Task) -> Result<Option<(retrain::Trigger, String)>> {
    Spi::connect(|client| {
        let Some(serving) = models::serving_model(client, task.name())? else {
            return Ok(None);
        };
        // ages count from the deployment (a rollback is one) or the last retrain tried
        let row = client
            .select(
                "WITH d AS (SELECT deployed_at FROM customer_analyzer.deployments
                            WHERE task = $2 ORDER BY id DESC LIMIT 1),
                      r AS (SELECT max(started_at) AS tried FROM customer_analyzer.retrain_log
                            WHERE task = $2)
                 SELECT extract(epoch FROM pg_catalog.clock_timestamp()
                                           - greatest(d.deployed_at, r.tried))::float8,
                        (m.metrics -> 'holdout' ->> 'auc')::float8, l.auc, coalesce(l.predictions, 0),
                        coalesce(r.tried > d.deployed_at, false)
                 FROM customer_analyzer.models m CROSS JOIN d CROSS JOIN r
                 LEFT JOIN customer_analyzer.model_live l ON l.model_id = m.id
                 WHERE m.id = $1",
                None,
                &[serving.into(), task.name().into()],
            )
            .ctx("reading the serving model")?;
        let Some(row) = row.into_iter().next() else {
            return Ok(None);
        };
        let what = "reading the serving model";
        let mut w = Watch {
            age_seconds: row.get::<f64>(1).ctx(what)?.unwrap_or(0.0),
            interval_seconds: gucs::retrain_interval_seconds(),
            score_drift: None,
            holdout_auc: row.get::<f64>(2).ctx(what)?,
            live_auc: row.get::<f64>(3).ctx(what)?,
            live_predictions: row.get::<i64>(4).ctx(what)?.unwrap_or(0),
            retried_since_deploy: row.get::<bool>(5).ctx(what)?.unwrap_or(false),
            auc_drop: gucs::retrain_auc_drop(),
        };
        // drift reads the whole feature store: only when it can decide. It needs a
        // baseline and stored features; without them (or when the check fails in any
        // way, in its own subtransaction) it is not a reason, and live AUC is still
        // looked at
        if retrain::drift_matters(&w) {
            w.score_drift = match worker::attempt(|| {
                let work = crate::work::work()?;
                drift::report(client, &work, task)
            }) {
                Ok(r) => Some(r.score.level()),
                Err((state, message)) => {
                    log!("customer_analyzer retraining worker: no drift check for {task}: {message} (SQLSTATE {state})");
                    None
                }
            };
        }
        Ok(retrain::decide(&w))
    })
}

/// Records a retrain the worker tried and that failed.
fn record_failure(
    task: Task,
    trigger: &str,
    reason: &str,
    state: &str,
    message: &str,
) -> Result<()> {
    Spi::connect_mut(|client| {
        let serving = models::serving_model(client, task.name())?;
        client
            .update(
                "INSERT INTO customer_analyzer.retrain_log
                     (task, started_at, trigger, reason, previous_model_id, sqlstate, message)
                 VALUES ($1, pg_catalog.now(), $2, $3, $4, $5, $6)",
                None,
                &[
                    task.name().into(),
                    trigger.into(),
                    reason.into(),
                    serving.into(),
                    state.into(),
                    message.into(),
                ],
            )
            .ctx("recording a failed retrain")?;
        Ok(())
    })
}

/// The retraining worker's entry point: one pass over the tasks, then it exits.
#[pg_guard]
#[no_mangle]
#[allow(unsafe_code)] // the postmaster finds the entry point by its unmangled name
pub extern "C-unwind" fn customer_analyzer_retrain_main(_arg: pg_sys::Datum) {
    worker::start_session();
    if !worker::transaction(worker::installed) {
        return;
    }
    for task in Task::ALL {
        worker::transaction(|| {
            worker::logged("recording matured outcomes", || {
                Spi::connect_mut(|client| {
                    if models::serving_model(client, task.name())?.is_some() {
                        outcomes::evaluate(client, task)?;
                    }
                    Ok(())
                })
            })
        });
        let decision =
            worker::transaction(|| worker::logged("checking the models", || watch(task)));
        let Some(Some((trigger, reason))) = decision else {
            continue;
        };
        log!("customer_analyzer retraining worker: retraining {task}: {reason}");
        worker::transaction(|| {
            match worker::attempt(|| retrain_task(task, trigger.as_str(), &reason)) {
                Ok(r) => {
                    log!(
                    "customer_analyzer retraining worker: {task} model {} (holdout AUC {:.4}) {}",
                    r.model_id,
                    r.auc,
                    if r.deployed { "deployed" } else { "kept back: the serving model is as good" }
                )
                }
                Err((state, message)) => {
                    warning!("customer_analyzer retraining worker: retraining {task} failed: {message} (SQLSTATE {state})");
                    worker::logged("recording a failed retrain", || {
                        record_failure(task, trigger.as_str(), &reason, &state, &message)
                    });
                }
            }
        });
    }
}

/// The rescoring worker's clock for the retraining worker.
#[derive(Default)]
pub struct Monitor {
    last_start: Option<Instant>,
    running: Option<DynamicBackgroundWorker>,
}

impl Monitor {
    /// Starts the retraining worker when `customer_analyzer.monitor_interval` has passed
    /// since the last start and the last one has finished. Called between transactions.
    pub fn tick(&mut self) {
        let Some(every) = gucs::monitor_interval() else {
            return;
        };
        if self.last_start.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        if let Some(w) = &self.running {
            if matches!(w.pid(), Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted)) {
                return;
            }
        }
        self.last_start = Some(Instant::now());
        // the handle is allocated in the current (top) memory context: a few bytes per
        // start, at most one start per monitor_interval
        match BackgroundWorkerBuilder::new("customer_analyzer retraining worker")
            .set_type("customer_analyzer retraining")
            .set_library("customer_analyzer")
            .set_function("customer_analyzer_retrain_main")
            .enable_spi_access()
            .set_restart_time(None)
            .load_dynamic()
        {
            Ok(w) => self.running = Some(w),
            Err(_) => warning!(
                "customer_analyzer rescoring worker: could not start the retraining worker (are all max_worker_processes in use?)"
            ),
        }
    }
}
