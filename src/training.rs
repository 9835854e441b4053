//! Labels and `train()`: stacks point-in-time snapshots whose horizon has passed, hands
//! them to the core, stores the model row and deploys it when it wins.
//!
//! Labels, with T a snapshot's as_of:
//! - purchase_30d: every user registered before T; 1 when the user makes a purchase in
//!   (T, T + 30 days].
//! - churn_60d: users with an event in the 30 days before T; 1 when the user has no
//!   event at all in (T, T + 60 days].

use customer_analyzer_core::catalog::CATALOG_VERSION;
use customer_analyzer_core::codec::Payload;
use customer_analyzer_core::events::MICROS_PER_DAY;
use customer_analyzer_core::metrics::auc;
use customer_analyzer_core::model::{self, Split, TrainingData};
use customer_analyzer_core::params::{Algorithm, DeployPolicy, TrainParams};
use customer_analyzer_core::schedule::Schedule;
use customer_analyzer_core::task::{Population, Task};
use customer_analyzer_core::work::Work;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::json;

use crate::error::{self, Result, SpiContext};
use crate::models::{self, record_deployment, NewModel};
use crate::source::{self, Sources};
use crate::time::{from_unix_micros, to_unix_micros};
use crate::training_set;
use crate::work::work;

/// The label rule over SQL expressions for the snapshot time and the user: whether the
/// user has an event (churn: none at all) or a purchase in (as_of, as_of + horizon].
/// Training labels and the outcomes of logged predictions (`outcomes.rs`) both use it.
pub fn label_sql(s: &Sources, task: Task, as_of: &str, user: &str) -> String {
    let events = &s.events;
    let hours = task.horizon_days() * 24;
    let (exists, kind) = match task {
        Task::Churn => ("NOT EXISTS", ""),
        Task::Purchase => ("EXISTS", " AND e.event_type::text = 'purchase'"),
    };
    format!(
        "{exists} (
             SELECT 1 FROM {events} e WHERE e.user_id = {user}{kind}
               AND e.created_at::timestamptz > {as_of}
               AND e.created_at::timestamptz <= {as_of} + interval '{hours} hours')"
    )
}

/// Whether the feature row `row` is in the task's population, as SQL.
pub fn in_population(task: Task, row: &str) -> String {
    match task.population() {
        Population::ActiveInLast30Days => format!("{row}.events_last_30_days > 0"),
        Population::Registered => "true".to_string(),
    }
}

/// `user_features($1)` with the task's population and label as the last column.
fn labelled_query(s: &Sources, task: Task) -> String {
    format!(
        "SELECT f.*, {label} AS label
         FROM customer_analyzer.user_features($1) f WHERE {population}",
        label = label_sql(s, task, "$1", "f.user_id"),
        population = in_population(task, "f")
    )
}

fn one_time(client: &SpiClient<'_>, sql: &str) -> Result<Option<TimestampWithTimeZone>> {
    client
        .select(sql, None, &[])
        .ctx("reading the data's time range")?
        .first()
        .get_one::<TimestampWithTimeZone>()
        .ctx("reading the data's time range")
}

fn horizon_passed(
    client: &SpiClient<'_>,
    as_of: TimestampWithTimeZone,
    task: Task,
) -> Result<bool> {
    Ok(client
        .select(
            &format!(
                "SELECT $1 + interval '{} hours' <= now()",
                task.horizon_days() * 24
            ),
            None,
            &[as_of.into()],
        )
        .ctx("checking the label horizon")?
        .first()
        .get_one::<bool>()
        .ctx("checking the label horizon")?
        .unwrap_or(false))
}

/// The task's population as of `as_of` with each user's label.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn labels(
    task: Option<&str>,
    as_of: Option<TimestampWithTimeZone>,
) -> Result<TableIterator<'static, (name!(user_id, i64), name!(label, bool))>> {
    let task = models::task(task)?;
    let as_of = as_of.ok_or_else(|| error::null_argument("as_of"))?;
    let rows = Spi::connect(|client| {
        crate::subxact::guarded(|| -> Result<Vec<(i64, bool)>> {
            if !horizon_passed(client, as_of, task)? {
                return Err(error::invalid_parameter(
                    format!(
                        "the {task} label needs the {} days after as_of, which have not passed yet",
                        task.horizon_days()
                    ),
                    "Pass an as_of at least the horizon before now().",
                ));
            }
            let s = source::load(client)?;
            let sql = format!(
                "SELECT user_id, label FROM ({}) l",
                labelled_query(&s, task)
            );
            let mut out = Vec::new();
            for row in client
                .select(&sql, None, &[as_of.into()])
                .ctx("computing labels")?
            {
                out.push((
                    row.get::<i64>(1)
                        .ctx("computing labels")?
                        .unwrap_or_default(),
                    row.get::<bool>(2).ctx("computing labels")?.unwrap_or(false),
                ));
            }
            Ok(out)
        })
    })?;
    Ok(TableIterator::new(rows))
}

/// How the serving model compares with a new one.
struct Champion {
    id: i64,
    auc: f64,
    /// "holdout": scored on the new model's holdout rows; "recorded": its own recorded
    /// holdout AUC, because its training labels reach into the new holdout's period.
    basis: &'static str,
}

/// The serving model's AUC for the deploy decision: on the new model's holdout rows when
/// it was trained on data that ends at or before the holdout snapshot (so it has not seen
/// that period), else the honest holdout AUC recorded with it. None when nothing serves,
/// or the serving model was built for another feature catalog or does not decode (said
/// in a NOTICE: the new model may then replace it).
fn champion(
    client: &SpiClient<'_>,
    work: &Work,
    serving: Option<i64>,
    data: &TrainingData,
    holdout_rows: &[usize],
    holdout_time: i64,
) -> Result<Option<Champion>> {
    let Some(id) = serving else {
        return Ok(None);
    };
    let row = client
        .select(
            "SELECT catalog_version, trained_as_of, (metrics -> 'holdout' ->> 'auc')::float8
             FROM customer_analyzer.models WHERE id = $1",
            None,
            &[id.into()],
        )
        .ctx("reading the deployed model")?
        .first()
        .get_three::<i32, TimestampWithTimeZone, f64>()
        .ctx("reading the deployed model")?;
    let (Some(version), Some(trained_as_of), recorded) = row else {
        return Ok(None);
    };
    if version != CATALOG_VERSION {
        return Ok(None);
    }
    if to_unix_micros(trained_as_of) > holdout_time {
        return Ok(recorded.map(|auc| Champion {
            id,
            auc,
            basis: "recorded",
        }));
    }
    let loaded = match models::loaded(client, id) {
        Ok(l) => l,
        Err(e) => {
            pgrx::notice!(
                "customer_analyzer: the serving model {id} cannot be compared: {}",
                e.message()
            );
            return Ok(None);
        }
    };
    let scorer = loaded.classifier()?;
    let y: Vec<f64> = holdout_rows.iter().map(|&i| data.y[i]).collect();
    let p = scorer
        .predict_in(work, &data.frame.select(holdout_rows))
        .map_err(error::from_core)?;
    Ok(Some(Champion {
        id,
        auc: auc(&y, &p),
        basis: "holdout",
    }))
}

/// The end of the data: `as_of`, or the newest event that is not in the future.
fn data_end(
    client: &SpiClient<'_>,
    s: &Sources,
    as_of: Option<TimestampWithTimeZone>,
) -> Result<TimestampWithTimeZone> {
    let end = match as_of {
        Some(t) => t,
        None => one_time(
            client,
            &format!(
                "SELECT max(created_at::timestamptz) FROM {} WHERE created_at::timestamptz <= now()
                   AND created_at::timestamptz > '-infinity'",
                s.events
            ),
        )?
        .ok_or_else(|| {
            error::not_ready(
                "the events table holds no events to learn from",
                "Load the shop's events, or run customer_analyzer.generate_demo_data().",
            )
        })?,
    };
    let future = client
        .select("SELECT NOT isfinite($1) OR $1 > now()", None, &[end.into()])
        .ctx("checking as_of")?
        .first()
        .get_one::<bool>()
        .ctx("checking as_of")?
        .unwrap_or(true);
    if future {
        return Err(error::invalid_parameter(
            "as_of is in the future or not finite",
            "Labels need events after each snapshot; leave as_of NULL to use the newest event.",
        ));
    }
    Ok(end)
}

/// The snapshot schedule of a training that ends at `end` (see
/// `customer_analyzer_core::schedule`): snapshots start a week after the first
/// registration.
fn schedule_for(
    client: &SpiClient<'_>,
    s: &Sources,
    task: Task,
    end: TimestampWithTimeZone,
    params: &TrainParams,
) -> Result<Schedule> {
    let first = one_time(
        client,
        &format!(
            "SELECT min(registered_at::timestamptz) FROM {} WHERE registered_at::timestamptz > '-infinity'",
            s.users
        ),
    )?
    .ok_or_else(|| error::not_ready("the users table is empty", "Load the shop's users first."))?;
    Schedule::new(
        to_unix_micros(end),
        task.horizon_days(),
        params.common.snapshots,
        params.common.snapshot_days,
        to_unix_micros(first) + 7 * MICROS_PER_DAY,
    )
    .map_err(error::from_core)
}

/// The snapshots train() would stack for `task`, oldest first: each as_of and its role
/// (train, validation, holdout, refit; the holdout time is also the newest refit). With
/// labels() and user_features() this exports a training set.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn training_snapshots(
    task: Option<&str>,
    as_of: default!(Option<TimestampWithTimeZone>, "NULL"),
    params: default!(Option<JsonB>, "'{}'"),
) -> Result<TableIterator<'static, (name!(as_of, TimestampWithTimeZone), name!(role, String))>> {
    let task = models::task(task)?;
    let params = params.ok_or_else(|| error::null_argument("params"))?.0;
    let params = TrainParams::from_json(Algorithm::Gbm, &params).map_err(error::from_core)?;
    let schedule = Spi::connect(|client| {
        let s = source::load(client)?;
        let end = data_end(client, &s, as_of)?;
        schedule_for(client, &s, task, end, &params)
    })?;
    let mut roles: Vec<(i64, &str)> = schedule.train.iter().map(|&t| (t, "train")).collect();
    roles.push((schedule.validation, "validation"));
    roles.push((schedule.holdout, "holdout"));
    roles.extend(schedule.refit.iter().map(|&t| (t, "refit")));
    roles.sort_by_key(|r| r.0);
    let mut rows = Vec::with_capacity(roles.len());
    for (t, role) in roles {
        let at = from_unix_micros(t).ok_or_else(|| error::internal("snapshot time", t))?;
        rows.push((at, role.to_string()));
    }
    Ok(TableIterator::new(rows))
}

pub type TrainRow = (i64, String, String, f64, f64, f64, f64, f64, bool);

pub fn train_impl(
    task: Task,
    algorithm: Algorithm,
    params: TrainParams,
    requested: serde_json::Value,
    as_of: Option<TimestampWithTimeZone>,
) -> Result<TrainRow> {
    let work = work()?;
    crate::work::finish(Spi::connect_mut(|client| {
        crate::subxact::guarded(|| {
            train_body(client, &work, task, algorithm, &params, &requested, as_of)
        })
    }))
}

/// `train_impl` inside its SPI connection and subtransaction.
fn train_body(
    client: &mut pgrx::spi::SpiClient<'_>,
    work: &Work,
    task: Task,
    algorithm: Algorithm,
    params: &TrainParams,
    requested: &serde_json::Value,
    as_of: Option<TimestampWithTimeZone>,
) -> Result<TrainRow> {
    let s = source::load(client)?;
    let end = data_end(client, &s, as_of)?;
    let schedule = schedule_for(client, &s, task, end, params)?;
    let mut times = schedule.all_times();
    // the same pass reads the population at the end of the data, unlabelled: the drift
    // baseline, the shop as the model will first meet it
    let baseline_at = (times.last().is_some_and(|&t| t < to_unix_micros(end))).then(|| {
        times.push(to_unix_micros(end));
        times.len() - 1
    });
    let want = training_set::Snapshots {
        task,
        times: &times,
        end: to_unix_micros(end),
    };
    let started = std::time::Instant::now();
    let mut gathered = training_set::gather(client, work, &s, &want)?;
    let read_seconds = started.elapsed().as_secs_f64();
    let baseline = baseline_at.map(|i| gathered.data.take_snapshot(i));
    let data = &gathered.data;
    let index = |t: i64| times.iter().position(|&x| x == t).unwrap_or(usize::MAX);
    let split = Split::by_snapshot(
        data,
        &schedule.train.iter().map(|&t| index(t)).collect::<Vec<_>>(),
        index(schedule.validation),
        index(schedule.holdout),
        &schedule.refit.iter().map(|&t| index(t)).collect::<Vec<_>>(),
    );
    let (model, mut report) = model::train(work, data, &split, params).map_err(error::from_core)?;
    report
        .seconds
        .insert(0, ("reading all snapshots".into(), read_seconds));
    if let Some(g) = report.growth.as_ref().filter(|g| g.stopped_at_size_limit) {
        pgrx::notice!(
            "customer_analyzer: the model reached customer_analyzer.max_model_mb after {} of {} trees; growing stopped there",
            g.trees_grown,
            g.trees_requested
        );
    }
    if gathered.halvings > 0 {
        pgrx::notice!(
            "customer_analyzer: training used 1/{} of the users ({} of {} users, {} rows) to stay within customer_analyzer.max_memory_mb",
            1u64 << gathered.halvings,
            gathered.users_kept,
            gathered.users_read,
            data.y.len()
        );
    }
    let preprocessing = json!({
        "options": model.preprocessor.options,
        "inputs": model.preprocessor.output_names,
    });
    // From here to the end of the transaction no other deploy of this task can
    // interleave: the champion is read after the lock, and compared on our holdout.
    let serving = models::lock_task(client, task.name())?;
    let previous = champion(
        client,
        work,
        serving.map(|s| s.1),
        data,
        &split.holdout,
        schedule.holdout,
    )?;
    let holdout_auc = report.holdout.auc;
    let deploy = match params.common.deploy {
        DeployPolicy::Always => true,
        DeployPolicy::Never => false,
        // the new model wins unless the champion is at least as good; a champion whose
        // AUC is NaN (one class on the holdout) never blocks it
        DeployPolicy::IfBetter => previous.as_ref().is_none_or(|c| {
            matches!(
                c.auc.partial_cmp(&holdout_auc),
                None | Some(std::cmp::Ordering::Less)
            )
        }),
    };
    let mut metrics =
        serde_json::to_value(&report).map_err(|e| error::internal("encoding metrics", e))?;
    if let Some(m) = metrics.as_object_mut() {
        m.insert(
            "compared_with".into(),
            match &previous {
                Some(c) => json!({"model_id": c.id, "holdout_auc": c.auc, "basis": c.basis}),
                None => serde_json::Value::Null,
            },
        );
        m.insert(
            "requested".into(),
            json!({"algorithm": algorithm.as_str(), "params": requested}),
        );
        let when = |t: i64| from_unix_micros(t).map(|t| json!(t.to_iso_string()));
        m.insert(
            "schedule".into(),
            json!({
                "train": schedule.train.iter().map(|&t| when(t)).collect::<Vec<_>>(),
                "validation": when(schedule.validation),
                "holdout": when(schedule.holdout),
                "refit": schedule.refit.iter().map(|&t| when(t)).collect::<Vec<_>>(),
            }),
        );
        m.insert(
            "sample".into(),
            json!({
                "users_fraction": 1.0 / (1u64 << gathered.halvings) as f64,
                "users_read": gathered.users_read,
                "users_kept": gathered.users_kept,
                "rows_kept": data.y.len(),
                "limit": "customer_analyzer.max_memory_mb",
            }),
        );
    }
    // what the serving model learnt from: the refit snapshots
    let first_refit = schedule.refit.first().copied().unwrap_or(schedule.holdout);
    let training_from = from_unix_micros(first_refit)
        .ok_or_else(|| error::internal("snapshot time", first_refit))?;
    let training_to = from_unix_micros(schedule.holdout)
        .ok_or_else(|| error::internal("snapshot time", schedule.holdout))?;
    let chosen = model.algorithm;
    let id = models::store_model(
        client,
        NewModel {
            task: task.name(),
            algorithm: chosen.as_str(),
            params: report.params.clone(),
            preprocessing,
            trained_as_of: end,
            training_from,
            training_to,
            metrics,
            payload: Payload::Classifier(model),
        },
    )?;
    if let Some(frame) = baseline.filter(|f| f.rows > 0) {
        crate::drift::record_baseline(client, work, id, end, &frame)?;
        // a serving model from before baselines gets one from the same rows, so that a
        // retrain that keeps it still gives drift_report() something to compare with
        if let Some(c) = &previous {
            crate::drift::record_baseline(client, work, c.id, end, &frame)?;
        }
    }
    if deploy {
        record_deployment(client, task.name(), id, "train", serving.map(|s| s.0))?;
    }
    let h = &report.holdout;
    Ok((
        id,
        task.to_string(),
        chosen.as_str().to_string(),
        h.auc,
        h.f1,
        h.precision,
        h.recall,
        h.brier,
        deploy,
    ))
}

/// Trains a churn or purchase model on the configured shop; see the module comment for
/// the labels and the README for the parameters.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn train(
    task: Option<&str>,
    algorithm: default!(Option<&str>, "'auto'"),
    params: default!(Option<JsonB>, "'{}'"),
    as_of: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> Result<
    TableIterator<
        'static,
        (
            name!(model_id, i64),
            name!(task, String),
            name!(algorithm, String),
            name!(auc, f64),
            name!(f1, f64),
            name!(precision, f64),
            name!(recall, f64),
            name!(brier, f64),
            name!(deployed, bool),
        ),
    >,
> {
    error::require_primary("train()")?;
    let task = models::task(task)?;
    let algorithm = Algorithm::parse(algorithm.ok_or_else(|| error::null_argument("algorithm"))?)
        .map_err(error::from_core)?;
    let requested = params.ok_or_else(|| error::null_argument("params"))?.0;
    let params = TrainParams::from_json(algorithm, &requested).map_err(error::from_core)?;
    Ok(TableIterator::once(train_impl(
        task, algorithm, params, requested, as_of,
    )?))
}

/// `train()` with hyperparameter search over the documented space.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn tune(
    task: Option<&str>,
    algorithm: default!(Option<&str>, "'auto'"),
    as_of: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> Result<
    TableIterator<
        'static,
        (
            name!(model_id, i64),
            name!(task, String),
            name!(algorithm, String),
            name!(auc, f64),
            name!(f1, f64),
            name!(precision, f64),
            name!(recall, f64),
            name!(brier, f64),
            name!(deployed, bool),
        ),
    >,
> {
    error::require_primary("tune()")?;
    let task = models::task(task)?;
    let algorithm = Algorithm::parse(algorithm.ok_or_else(|| error::null_argument("algorithm"))?)
        .map_err(error::from_core)?;
    let mut params = TrainParams::defaults(algorithm);
    params.common.search = true;
    Ok(TableIterator::once(train_impl(
        task,
        algorithm,
        params,
        json!({"search": true}),
        as_of,
    )?))
}
