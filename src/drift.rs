//! Drift: every churn or purchase model is stored with a baseline (its task population's
//! features and its own scores at the end of its training data, profiled by
//! `customer_analyzer_core::drift`); `drift_report()` compares the feature store and
//! the model's scores of it today with that baseline.

use customer_analyzer_core::drift::{Baseline, Shift};
use customer_analyzer_core::frame::Frame;
use customer_analyzer_core::model;
use customer_analyzer_core::task::Task;
use customer_analyzer_core::work::Work;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;

use crate::error::{self, Result, SpiContext};
use crate::feature_store::{FeatureRow, STORE_ROWS};
use crate::models;
use crate::training::in_population;
use crate::work::work;

/// Rows read from the store at a time.
const FETCH_ROWS: i64 = 5000;

/// Profiles `frame` (the task's population at `as_of`) and the model's scores of it, and
/// stores them as the model's baseline unless it has one.
pub fn record_baseline(
    client: &mut SpiClient<'_>,
    work: &Work,
    model_id: i64,
    as_of: TimestampWithTimeZone,
    frame: &Frame,
) -> Result<()> {
    let has_one = client
        .select(
            "SELECT EXISTS (SELECT FROM customer_analyzer.model_baselines WHERE model_id = $1)",
            None,
            &[model_id.into()],
        )
        .ctx("reading the drift baseline")?
        .first()
        .get_one::<bool>()
        .ctx("reading the drift baseline")?
        .unwrap_or(false);
    if has_one {
        return Ok(());
    }
    let scores = models::loaded(client, model_id)?
        .classifier()?
        .predict_in(work, frame)
        .map_err(error::from_core)?;
    let baseline = serde_json::to_value(Baseline::of(frame, &scores))
        .map_err(|e| error::internal("encoding the drift baseline", e))?;
    client
        .update(
            "INSERT INTO customer_analyzer.model_baselines (model_id, as_of, users, baseline)
             VALUES ($1, $2, $3, $4) ON CONFLICT (model_id) DO NOTHING",
            None,
            &[
                model_id.into(),
                as_of.into(),
                (frame.rows as i64).into(),
                JsonB(baseline).into(),
            ],
        )
        .ctx("storing the drift baseline")?;
    Ok(())
}

/// A model's drift today.
pub struct Report {
    pub model_id: i64,
    pub users_then: i64,
    pub score: Shift,
    /// (feature, kind, shift), numeric features first, in catalog order.
    pub features: Vec<(String, &'static str, Shift)>,
}

/// Compares the serving model's baseline with the feature store's rows of the task's
/// population today and the model's scores of them.
pub fn report(client: &SpiClient<'_>, work: &Work, task: Task) -> Result<Report> {
    let model_id = models::deployed_model_id(client, task.name())?;
    let stored = client
        .select(
            "SELECT baseline, users FROM customer_analyzer.model_baselines WHERE model_id = $1",
            None,
            &[model_id.into()],
        )
        .ctx("reading the drift baseline")?;
    let (baseline, users_then) = match stored.into_iter().next() {
        Some(row) => (
            row.get::<JsonB>(1).ctx("reading the drift baseline")?,
            row.get::<i64>(2).ctx("reading the drift baseline")?,
        ),
        None => (None, None),
    };
    let baseline: Baseline = match baseline {
        Some(JsonB(v)) => serde_json::from_value(v)
            .map_err(|e| error::internal("reading the drift baseline", e))?,
        None => {
            return Err(error::not_ready(
                format!("model {model_id}, which serves {task}, has no drift baseline (it was trained before version 0.6.0)"),
                &format!("Retrain it: SELECT * FROM customer_analyzer.retrain('{task}'); stores a baseline for the serving model too, from the newest data, whichever model wins."),
            ))
        }
    };
    let frame = current_rows(client, work, task)?;
    if frame.rows == 0 {
        return Err(error::not_ready(
            format!("the feature store holds no {task} population to compare"),
            "Run SELECT customer_analyzer.refresh_features(); first.",
        ));
    }
    let scores = models::loaded(client, model_id)?
        .classifier()?
        .predict_in(work, &frame)
        .map_err(error::from_core)?;
    work.checkpoint().map_err(error::from_core)?;
    let (shifts, score) = baseline.compare(&frame, &scores);
    let categorical = &frame.categorical_names;
    Ok(Report {
        model_id,
        users_then: users_then.unwrap_or(0),
        score,
        features: shifts
            .into_iter()
            .map(|(name, s)| {
                let kind = if categorical.contains(&name) {
                    "category"
                } else {
                    "numeric"
                };
                (name, kind, s)
            })
            .collect(),
    })
}

/// The feature store's rows of the task's population. When they would not fit
/// `customer_analyzer.max_memory_mb`, a fixed hash of the user id keeps 1/2, 1/4, ... of
/// them, as training samples.
fn current_rows(client: &SpiClient<'_>, work: &Work, task: Task) -> Result<Frame> {
    let filter = format!("WHERE {}", in_population(task, "m"));
    let count = client
        .select(
            &format!("SELECT count(*) FROM customer_analyzer.user_metrics m {filter}"),
            None,
            &[],
        )
        .ctx("counting the feature store")?
        .first()
        .get_one::<i64>()
        .ctx("counting the feature store")?
        .unwrap_or(0) as usize;
    let mut frame = Frame::for_catalog();
    let per_row =
        model::bytes_per_training_row(frame.numeric_names.len(), frame.categorical_names.len());
    let mut halvings = 0u32;
    while (count >> halvings) * per_row > work.memory_limit && halvings < 20 {
        halvings += 1;
    }
    frame
        .try_reserve_rows(count >> halvings)
        .map_err(error::from_core)?;
    let mut cursor = client
        .try_open_cursor(&format!("{STORE_ROWS} {filter}"), &[])
        .ctx("reading the feature store")?;
    loop {
        work.checkpoint().map_err(error::from_core)?;
        let fetched = crate::cursor::fetch_each_in_place(
            &mut cursor,
            FETCH_ROWS,
            "reading the feature store",
            |row| {
                let user_id = row.get::<i64>(1, "reading the feature store")?;
                if user_id.is_some_and(|u| model::user_in_sample(u, halvings)) {
                    frame.push_catalog_row(&FeatureRow(&row.deform()).features()?);
                }
                Ok(())
            },
        )?;
        if fetched == 0 {
            return Ok(frame);
        }
    }
}

/// How far the serving model's inputs and scores have moved since it was trained: the
/// score first, then every feature, with the population stability index, the
/// Kolmogorov-Smirnov statistic (numeric columns), the missing share then and now, and
/// the level the README's thresholds give.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn drift_report(
    task: Option<&str>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(model_id, i64),
            name!(feature, String),
            name!(kind, String),
            name!(psi, f64),
            name!(ks, Option<f64>),
            name!(missing_then, f64),
            name!(missing_now, f64),
            name!(users_then, i64),
            name!(users_now, i64),
            name!(level, String),
        ),
    >,
> {
    let task = models::task(task)?;
    let work = work()?;
    let report = crate::work::finish(Spi::connect(|client| report(client, &work, task)))?;
    let (id, then) = (report.model_id, report.users_then);
    let row = move |name: String, kind: &str, s: Shift| {
        (
            id,
            name,
            kind.to_string(),
            s.psi,
            s.ks,
            s.missing_then,
            s.missing_now,
            then,
            s.rows_now as i64,
            s.level().as_str().to_string(),
        )
    };
    let mut rows = vec![row("(score)".into(), "score", report.score)];
    rows.extend(report.features.into_iter().map(|(n, k, s)| row(n, k, s)));
    Ok(TableIterator::new(rows))
}
