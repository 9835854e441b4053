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
use customer_analyzer_core::frame::Frame;
use customer_analyzer_core::metrics::auc;
use customer_analyzer_core::model::{self, TrainingData};
use customer_analyzer_core::params::{Algorithm, DeployPolicy, TrainParams};
use customer_analyzer_core::task::{Population, Task};
use customer_analyzer_core::work::Work;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::json;

use crate::error::{self, Result, SpiContext};
use crate::feature_store::FeatureRow;
use crate::models::{self, record_deployment, NewModel};
use crate::source::{self, Sources};
use crate::time::{from_unix_micros, to_unix_micros};
use crate::work::work;

/// `user_features($1)` with the task's population and label as the last column.
fn labelled_query(s: &Sources, task: Task) -> String {
    let events = &s.events;
    let hours = task.horizon_days() * 24;
    let (exists, kind) = match task {
        Task::Churn => ("NOT EXISTS", ""),
        Task::Purchase => ("EXISTS", " AND e.event_type::text = 'purchase'"),
    };
    let population = match task.population() {
        Population::ActiveInLast30Days => " WHERE f.events_last_30_days > 0",
        Population::Registered => "",
    };
    format!(
        "SELECT f.*, {exists} (
             SELECT 1 FROM {events} e WHERE e.user_id = f.user_id{kind}
               AND e.created_at::timestamptz > $1
               AND e.created_at::timestamptz <= $1 + interval '{hours} hours') AS label
         FROM customer_analyzer.user_features($1) f{population}"
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

/// Snapshot times, oldest first: end - horizon - k * step for k = 0.., kept while at
/// least a week after the first registration.
fn snapshot_times(end: i64, first_registration: i64, task: Task, p: &TrainParams) -> Vec<i64> {
    let newest = end - task.horizon_days() * MICROS_PER_DAY;
    let mut out: Vec<i64> = (0..p.common.snapshots as i64)
        .map(|k| newest - k * p.common.snapshot_days as i64 * MICROS_PER_DAY)
        .filter(|&t| t > first_registration + 7 * MICROS_PER_DAY)
        .collect();
    out.reverse();
    out
}

/// Rows fetched from the cursor at a time.
const FETCH_ROWS: i64 = 5000;

/// The stacked snapshots, and how many users they were sampled down to.
struct Gathered {
    data: TrainingData,
    /// The sample keeps 1 / 2^halvings of the users (0: everyone).
    halvings: u32,
    rows_read: usize,
}

/// Reads every snapshot's labelled features through a cursor. When the rows would not
/// fit the memory budget, users are sampled by a fixed hash, halving the share until
/// they fit; the same users are kept in every snapshot.
fn gather(
    client: &SpiClient<'_>,
    work: &Work,
    s: &Sources,
    task: Task,
    times: &[i64],
) -> Result<Gathered> {
    let sql = labelled_query(s, task);
    let mut data = TrainingData {
        frame: Frame::for_catalog(),
        ..TrainingData::default()
    };
    let per_row = model::bytes_per_training_row(
        data.frame.numeric_names.len(),
        data.frame.categorical_names.len(),
    );
    let max_rows = (work.memory_limit / per_row).max(1);
    let (mut halvings, mut rows_read) = (0u32, 0usize);
    for (i, &t) in times.iter().enumerate() {
        let as_of = from_unix_micros(t).ok_or_else(|| error::internal("snapshot time", t))?;
        let mut cursor = client
            .try_open_cursor(sql.as_str(), &[as_of.into()])
            .ctx("reading a training snapshot")?;
        loop {
            work.checkpoint().map_err(error::from_core)?;
            let batch = cursor
                .fetch(FETCH_ROWS)
                .ctx("reading a training snapshot")?;
            if batch.is_empty() {
                break;
            }
            rows_read += batch.len();
            data.frame
                .try_reserve_rows(batch.len())
                .map_err(error::from_core)?;
            for row in batch {
                let row = FeatureRow(&row);
                let user = row.user_id()?;
                if !model::user_in_sample(user, halvings) {
                    continue;
                }
                data.frame.push_catalog_row(&row.features()?);
                data.user_id.push(user);
                let label = row.last::<bool>()?.unwrap_or(false);
                data.y.push(if label { 1.0 } else { 0.0 });
                data.snapshot.push(i);
            }
            while data.y.len() > max_rows && halvings < 20 {
                halvings += 1;
                data.retain_users(|u| model::user_in_sample(u, halvings));
            }
        }
    }
    Ok(Gathered {
        data,
        halvings,
        rows_read,
    })
}

/// The serving model's AUC on the new model's holdout rows, when it can be compared:
/// None when nothing serves, or the serving model was built for another feature catalog
/// or does not decode (said in a NOTICE: the new model may then replace it).
fn champion_auc(
    client: &SpiClient<'_>,
    work: &Work,
    serving: Option<i64>,
    data: &TrainingData,
) -> Result<Option<(i64, f64)>> {
    let Some(id) = serving else {
        return Ok(None);
    };
    let version = client
        .select(
            "SELECT catalog_version FROM customer_analyzer.models WHERE id = $1",
            None,
            &[id.into()],
        )
        .ctx("reading the deployed model")?
        .first()
        .get_one::<i32>()
        .ctx("reading the deployed model")?;
    if version != Some(CATALOG_VERSION) {
        return Ok(None);
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
    let latest = data.snapshot.iter().copied().max().unwrap_or(0);
    let rows: Vec<usize> = (0..data.y.len())
        .filter(|&i| data.snapshot[i] == latest)
        .collect();
    let y: Vec<f64> = rows.iter().map(|&i| data.y[i]).collect();
    let p = scorer
        .predict_in(work, &data.frame.select(&rows))
        .map_err(error::from_core)?;
    Ok(Some((id, auc(&y, &p))))
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

/// The snapshot times train() uses, oldest first, with at least two of them.
fn snapshots_for(
    client: &SpiClient<'_>,
    s: &Sources,
    task: Task,
    end: TimestampWithTimeZone,
    params: &TrainParams,
) -> Result<Vec<i64>> {
    let first = one_time(
        client,
        &format!("SELECT min(registered_at::timestamptz) FROM {}", s.users),
    )?
    .ok_or_else(|| error::not_ready("the users table is empty", "Load the shop's users first."))?;
    let times = snapshot_times(to_unix_micros(end), to_unix_micros(first), task, params);
    if times.len() < 2 {
        return Err(error::from_core(
            customer_analyzer_core::Error::NotEnoughData(format!(
                "only {} snapshot(s) fit between the first registration and {} days before as_of",
                times.len(),
                task.horizon_days()
            )),
        ));
    }
    Ok(times)
}

/// The snapshots train() would stack for `task`: each as_of and whether it trains or is
/// the holdout. With labels() and user_features() this exports a training set.
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
    let times = Spi::connect(|client| {
        let s = source::load(client)?;
        let end = data_end(client, &s, as_of)?;
        snapshots_for(client, &s, task, end, &params)
    })?;
    let last = times.len() - 1;
    let mut rows = Vec::with_capacity(times.len());
    for (i, t) in times.into_iter().enumerate() {
        let at = from_unix_micros(t).ok_or_else(|| error::internal("snapshot time", t))?;
        rows.push((at, if i == last { "holdout" } else { "train" }.to_string()));
    }
    Ok(TableIterator::new(rows))
}

type TrainRow = (i64, String, String, f64, f64, f64, f64, f64, bool);

fn train_impl(
    task: Task,
    algorithm: Algorithm,
    params: TrainParams,
    as_of: Option<TimestampWithTimeZone>,
) -> Result<TrainRow> {
    let work = work()?;
    crate::work::finish(Spi::connect_mut(|client| {
        crate::subxact::guarded(|| train_body(client, &work, task, algorithm, &params, as_of))
    }))
}

/// `train_impl` inside its SPI connection and subtransaction.
fn train_body(
    client: &mut pgrx::spi::SpiClient<'_>,
    work: &Work,
    task: Task,
    algorithm: Algorithm,
    params: &TrainParams,
    as_of: Option<TimestampWithTimeZone>,
) -> Result<TrainRow> {
    let s = source::load(client)?;
    let end = data_end(client, &s, as_of)?;
    let times = snapshots_for(client, &s, task, end, params)?;
    let gathered = gather(client, work, &s, task, &times)?;
    let data = &gathered.data;
    let (model, report) = model::train(work, data, params).map_err(error::from_core)?;
    if let Some(g) = report.growth.as_ref().filter(|g| g.stopped_at_size_limit) {
        pgrx::notice!(
            "customer_analyzer: the model reached customer_analyzer.max_model_mb after {} of {} trees; growing stopped there",
            g.trees_grown,
            g.trees_requested
        );
    }
    if gathered.halvings > 0 {
        pgrx::notice!(
            "customer_analyzer: training used 1/{} of the users ({} of {} rows) to stay within customer_analyzer.max_memory_mb",
            1u64 << gathered.halvings,
            data.y.len(),
            gathered.rows_read
        );
    }
    let preprocessing = json!({
        "options": model.preprocessor.options,
        "inputs": model.preprocessor.output_names,
    });
    // From here to the end of the transaction no other deploy of this task can
    // interleave: the champion is read after the lock, and compared on our holdout.
    let serving = models::lock_task(client, task.name())?;
    let previous = champion_auc(client, work, serving.map(|s| s.1), data)?;
    let holdout_auc = report.holdout.auc;
    let deploy = match params.common.deploy {
        DeployPolicy::Always => true,
        DeployPolicy::Never => false,
        // the new model wins unless the champion is at least as good; a champion whose
        // AUC is NaN (one class on the holdout) never blocks it
        DeployPolicy::IfBetter => previous.is_none_or(|(_, old)| {
            matches!(
                old.partial_cmp(&holdout_auc),
                None | Some(std::cmp::Ordering::Less)
            )
        }),
    };
    let mut metrics =
        serde_json::to_value(&report).map_err(|e| error::internal("encoding metrics", e))?;
    if let Some(m) = metrics.as_object_mut() {
        m.insert(
            "compared_with".into(),
            match previous {
                Some((id, auc)) => json!({"model_id": id, "holdout_auc": auc}),
                None => serde_json::Value::Null,
            },
        );
        m.insert("snapshots".into(), json!(times.len()));
        m.insert(
            "sample".into(),
            json!({
                "users_fraction": 1.0 / (1u64 << gathered.halvings) as f64,
                "rows_read": gathered.rows_read,
                "rows_kept": data.y.len(),
                "limit": "customer_analyzer.max_memory_mb",
            }),
        );
    }
    let first_snapshot =
        from_unix_micros(times[0]).ok_or_else(|| error::internal("snapshot time", times[0]))?;
    let holdout_snapshot = from_unix_micros(times[times.len() - 1])
        .ok_or_else(|| error::internal("snapshot time", times[times.len() - 1]))?;
    let id = models::store_model(
        client,
        NewModel {
            task: task.name(),
            algorithm: algorithm.as_str(),
            params: report.params.clone(),
            preprocessing,
            trained_as_of: end,
            training_from: first_snapshot,
            training_to: holdout_snapshot,
            metrics,
            payload: Payload::Classifier(model),
        },
    )?;
    if deploy {
        record_deployment(client, task.name(), id, "train", serving.map(|s| s.0))?;
    }
    let h = &report.holdout;
    Ok((
        id,
        task.to_string(),
        algorithm.as_str().to_string(),
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
    algorithm: default!(Option<&str>, "'gbm'"),
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
    let task = models::task(task)?;
    let algorithm = Algorithm::parse(algorithm.ok_or_else(|| error::null_argument("algorithm"))?)
        .map_err(error::from_core)?;
    let params = params.ok_or_else(|| error::null_argument("params"))?.0;
    let params = TrainParams::from_json(algorithm, &params).map_err(error::from_core)?;
    Ok(TableIterator::once(train_impl(
        task, algorithm, params, as_of,
    )?))
}

/// `train()` with hyperparameter search over the documented space.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn tune(
    task: Option<&str>,
    algorithm: default!(Option<&str>, "'gbm'"),
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
    let task = models::task(task)?;
    let algorithm = Algorithm::parse(algorithm.ok_or_else(|| error::null_argument("algorithm"))?)
        .map_err(error::from_core)?;
    let mut params = TrainParams::defaults(algorithm);
    params.common.search = true;
    Ok(TableIterator::once(train_impl(
        task, algorithm, params, as_of,
    )?))
}
