//! Outcome tracking: `evaluate_matured()` gives every logged prediction whose horizon has
//! passed its outcome, by the label rule training uses, and keeps each model's live
//! metrics (overall and per week of the features' as_of); `ab_report()` compares the arms
//! of an A/B test on them.

use std::collections::BTreeMap;

use customer_analyzer_core::abtest::{arm_report, auc_difference, ArmReport};
use customer_analyzer_core::outcomes::{summarise, Summary};
use customer_analyzer_core::task::{Population, Task};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::error::{self, Result, SpiContext};
use crate::models;
use crate::source::{self, Sources};
use crate::training::label_sql;
use crate::work::work;

/// Bytes one matured prediction takes while its model's metrics are computed.
const BYTES_PER_OUTCOME: usize = 48;

/// Inserts the outcomes of `task`'s matured, not yet evaluated predictions of users in
/// the task's population at their as_of; returns how many.
fn record_outcomes(client: &mut SpiClient<'_>, s: &Sources, task: Task) -> Result<i64> {
    let hours = task.horizon_days() * 24;
    // churn's population, as events_last_30_days > 0 at as_of in the feature query
    let population = match task.population() {
        Population::ActiveInLast30Days => format!(
            " AND EXISTS (SELECT 1 FROM {events} a WHERE a.user_id = p.user_id
                 AND a.created_at::timestamptz >= p.as_of - interval '720 hours'
                 AND a.created_at::timestamptz < p.as_of
                 AND a.created_at::timestamptz > '-infinity')",
            events = s.events
        ),
        Population::Registered => String::new(),
    };
    let sql = format!(
        "WITH added AS (
             INSERT INTO customer_analyzer.matured_predictions
                 (prediction_id, task, user_id, model_id, arm, as_of, predicted_at, score, outcome)
             SELECT p.id, p.task, p.user_id, p.model_id, p.arm, p.as_of, p.predicted_at, p.score,
                    {label}
             FROM customer_analyzer.predictions p
             WHERE p.task = $1 AND p.as_of + interval '{hours} hours' <= now(){population}
               AND NOT EXISTS (SELECT 1 FROM customer_analyzer.matured_predictions o
                               WHERE o.prediction_id = p.id)
             ON CONFLICT (prediction_id) DO NOTHING
             RETURNING 1)
         SELECT count(*) FROM added",
        label = label_sql(s, task, "p.as_of", "p.user_id"),
    );
    Ok(client
        .update(&sql, None, &[task.name().into()])
        .ctx("recording outcomes")?
        .first()
        .get_one::<i64>()
        .ctx("recording outcomes")?
        .unwrap_or(0))
}

/// Per model: (scores, outcomes) overall and per week start (days since 2000-01-01).
type Outcomes = BTreeMap<i64, ((Vec<f64>, Vec<f64>), BTreeMap<i32, (Vec<f64>, Vec<f64>)>)>;

/// Reads every matured prediction of `task`, grouped by model and week.
fn read_outcomes(client: &SpiClient<'_>, task: Task) -> Result<Outcomes> {
    let n = client
        .select(
            "SELECT count(*) FROM customer_analyzer.matured_predictions WHERE task = $1",
            None,
            &[task.name().into()],
        )
        .ctx("counting outcomes")?
        .first()
        .get_one::<i64>()
        .ctx("counting outcomes")?
        .unwrap_or(0);
    work()?
        .reserve("live metrics", n.max(0) as usize * BYTES_PER_OUTCOME)
        .map_err(error::from_core)?;
    let mut out: Outcomes = BTreeMap::new();
    let rows = client
        .select(
            "SELECT model_id, date_trunc('week', as_of)::date - date '2000-01-01', score, outcome
             FROM customer_analyzer.matured_predictions WHERE task = $1",
            None,
            &[task.name().into()],
        )
        .ctx("reading outcomes")?;
    for row in rows {
        let model = row
            .get::<i64>(1)
            .ctx("reading outcomes")?
            .unwrap_or_default();
        let week = row
            .get::<i32>(2)
            .ctx("reading outcomes")?
            .unwrap_or_default();
        let score = row
            .get::<f64>(3)
            .ctx("reading outcomes")?
            .unwrap_or(f64::NAN);
        let y = f64::from(u8::from(
            row.get::<bool>(4).ctx("reading outcomes")?.unwrap_or(false),
        ));
        let (all, weeks) = out.entry(model).or_default();
        all.0.push(score);
        all.1.push(y);
        let w = weeks.entry(week).or_default();
        w.0.push(score);
        w.1.push(y);
    }
    Ok(out)
}

fn nan_null(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

pub type WeekRow = (
    i64,
    pgrx::datum::Date,
    i64,
    i64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

/// Writes the live metrics of `task`'s models; returns the weekly rows.
fn store_live_metrics(client: &mut SpiClient<'_>, outcomes: &Outcomes) -> Result<Vec<WeekRow>> {
    let mut weekly = Vec::new();
    for (&model, ((scores, y), weeks)) in outcomes {
        if let Some(s) = summarise(y, scores) {
            client
                .update(
                    "INSERT INTO customer_analyzer.model_live
                         (model_id, predictions, positives, auc, brier, mean_score, observed_rate)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (model_id) DO UPDATE SET predictions = EXCLUDED.predictions,
                         positives = EXCLUDED.positives, auc = EXCLUDED.auc, brier = EXCLUDED.brier,
                         mean_score = EXCLUDED.mean_score, observed_rate = EXCLUDED.observed_rate,
                         evaluated_at = clock_timestamp()",
                    None,
                    &summary_args(model, &s),
                )
                .ctx("storing live metrics")?;
        }
        for (&week, (scores, y)) in weeks {
            let Some(s) = summarise(y, scores) else {
                continue;
            };
            let mut args = summary_args(model, &s);
            args.push(week.into());
            let date = client
                .update(
                    "INSERT INTO customer_analyzer.live_metrics
                         (model_id, predictions, positives, auc, brier, mean_score, observed_rate, week)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, date '2000-01-01' + $8)
                     ON CONFLICT (model_id, week) DO UPDATE SET predictions = EXCLUDED.predictions,
                         positives = EXCLUDED.positives, auc = EXCLUDED.auc, brier = EXCLUDED.brier,
                         mean_score = EXCLUDED.mean_score, observed_rate = EXCLUDED.observed_rate,
                         evaluated_at = clock_timestamp()
                     RETURNING week",
                    None,
                    &args,
                )
                .ctx("storing live metrics")?
                .first()
                .get_one::<pgrx::datum::Date>()
                .ctx("storing live metrics")?
                .ok_or_else(|| error::internal("storing live metrics", "no week"))?;
            weekly.push((
                model,
                date,
                s.predictions as i64,
                s.positives as i64,
                nan_null(s.auc),
                nan_null(s.brier),
                nan_null(s.mean_score),
                nan_null(s.observed_rate),
            ));
        }
    }
    Ok(weekly)
}

fn summary_args(model: i64, s: &Summary) -> Vec<pgrx::datum::DatumWithOid<'static>> {
    vec![
        model.into(),
        (s.predictions as i64).into(),
        (s.positives as i64).into(),
        nan_null(s.auc).into(),
        nan_null(s.brier).into(),
        nan_null(s.mean_score).into(),
        nan_null(s.observed_rate).into(),
    ]
}

/// Records the outcome of every matured prediction of a task (the same label rule as
/// training, the task's population at the prediction's as_of) and recomputes each
/// model's live AUC, Brier score and calibration, overall (`model_live`) and per week of
/// the features' as_of (`live_metrics`, returned).
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn evaluate_matured(
    task: Option<&str>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(model_id, i64),
            name!(week, pgrx::datum::Date),
            name!(predictions, i64),
            name!(positives, i64),
            name!(auc, Option<f64>),
            name!(brier, Option<f64>),
            name!(mean_score, Option<f64>),
            name!(observed_rate, Option<f64>),
        ),
    >,
> {
    error::require_primary("evaluate_matured()")?;
    let task = models::task(task)?;
    let rows = Spi::connect_mut(|client| evaluate(client, task))?;
    Ok(TableIterator::new(rows))
}

/// `evaluate_matured(task)` inside an SPI connection (the retraining worker calls it).
pub fn evaluate(client: &mut SpiClient<'_>, task: Task) -> Result<Vec<WeekRow>> {
    let s = source::load(client)?;
    let added = record_outcomes(client, &s, task)?;
    if added > 0 {
        pgrx::notice!("customer_analyzer: {added} {task} predictions matured");
    }
    let outcomes = read_outcomes(client, task)?;
    store_live_metrics(client, &outcomes)
}

type ArmRow = (
    String,
    i64,
    i64,
    i64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

/// Compares the arms of the running (or else the latest) A/B test of a task on the
/// outcomes `evaluate_matured()` recorded: each user counted once per arm, with their
/// newest matured prediction made during the test.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn ab_report(
    task: Option<&str>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(arm, String),
            name!(model_id, i64),
            name!(users, i64),
            name!(positives, i64),
            name!(auc, Option<f64>),
            name!(auc_low, Option<f64>),
            name!(auc_high, Option<f64>),
            name!(brier, Option<f64>),
            name!(brier_low, Option<f64>),
            name!(brier_high, Option<f64>),
            name!(positive_rate, Option<f64>),
            name!(positive_rate_low, Option<f64>),
            name!(positive_rate_high, Option<f64>),
            name!(top_decile_lift, Option<f64>),
            name!(lift_low, Option<f64>),
            name!(lift_high, Option<f64>),
            name!(auc_difference, Option<f64>),
            name!(p_value, Option<f64>),
        ),
    >,
> {
    let task = models::task(task)?;
    let work = work()?;
    let rows = crate::work::finish(Spi::connect(|client| -> Result<Vec<ArmRow>> {
        let test = client
            .select(
                "SELECT id, champion_id, challenger_id FROM customer_analyzer.experiments
                 WHERE task = $1 ORDER BY ended_at IS NULL DESC, id DESC LIMIT 1",
                None,
                &[task.name().into()],
            )
            .ctx("reading A/B tests")?;
        if test.is_empty() {
            return Err(error::not_ready(
                format!("{task} has had no A/B test"),
                &format!("Start one with SELECT customer_analyzer.start_ab_test('{task}', challenger_model_id, 0.1);"),
            ));
        }
        let test = test.first();
        let id = test
            .get::<i64>(1)
            .ctx("reading A/B tests")?
            .unwrap_or_default();
        let champion = test
            .get::<i64>(2)
            .ctx("reading A/B tests")?
            .unwrap_or_default();
        let challenger = test
            .get::<i64>(3)
            .ctx("reading A/B tests")?
            .unwrap_or_default();
        let arm = |model: i64, arm: &str| -> Result<ArmReport> {
            let (mut y, mut p) = (Vec::new(), Vec::new());
            for row in client
                .select(
                    "SELECT DISTINCT ON (o.user_id) o.score, o.outcome
                     FROM customer_analyzer.matured_predictions o
                     JOIN customer_analyzer.experiments x ON x.id = $1
                     WHERE o.task = x.task AND o.model_id = $2 AND o.arm = $3
                       AND o.predicted_at >= x.started_at
                       AND o.predicted_at < coalesce(x.ended_at, 'infinity')
                     ORDER BY o.user_id, o.predicted_at DESC",
                    None,
                    &[id.into(), model.into(), arm.into()],
                )
                .ctx("reading outcomes")?
            {
                p.push(
                    row.get::<f64>(1)
                        .ctx("reading outcomes")?
                        .unwrap_or(f64::NAN),
                );
                y.push(f64::from(u8::from(
                    row.get::<bool>(2).ctx("reading outcomes")?.unwrap_or(false),
                )));
            }
            arm_report(&y, &p, &|| work.checkpoint()).map_err(error::from_core)
        };
        let a = arm(champion, "champion")?;
        let b = arm(challenger, "challenger")?;
        if a.users == 0 || b.users == 0 {
            pgrx::notice!(
                "customer_analyzer: an arm of A/B test {id} has no matured predictions yet; run evaluate_matured('{task}') once their {} days have passed",
                task.horizon_days()
            );
        }
        let (diff, p) = auc_difference(&a, &b);
        let row = |name: &str, model: i64, r: &ArmReport| -> ArmRow {
            (
                name.to_string(),
                model,
                r.users as i64,
                r.positives as i64,
                nan_null(r.auc.value),
                nan_null(r.auc.low),
                nan_null(r.auc.high),
                nan_null(r.brier.value),
                nan_null(r.brier.low),
                nan_null(r.brier.high),
                nan_null(r.positive_rate.value),
                nan_null(r.positive_rate.low),
                nan_null(r.positive_rate.high),
                nan_null(r.top_decile_lift.value),
                nan_null(r.top_decile_lift.low),
                nan_null(r.top_decile_lift.high),
                nan_null(diff),
                nan_null(p),
            )
        };
        Ok(vec![
            row("champion", champion, &a),
            row("challenger", challenger, &b),
        ])
    }))?;
    Ok(TableIterator::new(rows))
}
