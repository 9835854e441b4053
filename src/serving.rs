//! Predictions: one user from the feature store through the model cache, explanations,
//! and batch scoring into the prediction log, each user scored by the model that serves
//! them (the challenger for the users a running A/B test routes to it).

use std::collections::HashMap;
use std::sync::Arc;

use customer_analyzer_core::features::FeatureValue;
use customer_analyzer_core::frame::Frame;
use customer_analyzer_core::model::Scorer;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::error::{self, Result, SpiContext};
use crate::feature_store::{features_for_user, next_stored_rows, StoredRows, STORE_ROWS};
use customer_analyzer_core::task::Task;

use crate::abtests::{self, Running};
use crate::models::{self, Loaded};
use crate::plans;
use crate::plans::types::{
    BOOL_ARRAY, FLOAT8_ARRAY, INT8_ARRAY, TEXT, TEXT_ARRAY, TIMESTAMPTZ_ARRAY,
};
use crate::work::work;
use customer_analyzer_core::abtest::{arm_of, Arm};

struct Scored {
    score: f64,
    label: bool,
    model_id: i64,
    as_of: TimestampWithTimeZone,
}

fn frame_of(values: &[FeatureValue]) -> Frame {
    let mut f = Frame::for_catalog();
    f.push_catalog_row(values);
    f
}

/// `scorer`'s score of the one user in `f`, and whether it reaches the model's threshold.
fn score_one(scorer: &Scorer, f: &Frame) -> (f64, bool) {
    let score = scorer.predict_one(f.numeric_row(0), f.categorical_row(0));
    (score, score >= scorer.model.threshold)
}

/// One user's score from the model that serves them (the challenger for the share of
/// users a running A/B test routes to it).
fn score_user(client: &SpiClient<'_>, task: Task, user_id: i64) -> Result<Scored> {
    score_with(client, routed_model(client, task, user_id)?, user_id)
}

/// The model that serves `user_id` for `task`; 55000 when none is deployed.
fn routed_model(client: &SpiClient<'_>, task: Task, user_id: i64) -> Result<i64> {
    match abtests::route(client, task, user_id)? {
        Some(model_id) => Ok(model_id),
        None => models::deployed_model_id(client, task.name()),
    }
}

/// Scores of many users, each from the model that serves them.
pub struct RoutedScores {
    pub scores: Vec<f64>,
    pub labels: Vec<bool>,
    pub model_ids: Vec<i64>,
    pub arms: Vec<&'static str>,
}

/// The models that score a task's users in one statement: the serving model, and the
/// challenger of a running A/B test. Shared with the pool's jobs.
pub struct Routing {
    champion: (i64, Arc<Loaded>),
    test: Option<(Running, Arc<Loaded>)>,
}

impl Routing {
    /// The models that may score a user: the champion, and the challenger of a test.
    fn model_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = std::iter::once(self.champion.0)
            .chain(self.test.as_ref().map(|(test, _)| test.challenger))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The models serving `task` now; None when none is deployed.
    pub fn of(client: &SpiClient<'_>, task: Task) -> Result<Option<Routing>> {
        let Some(champion) = models::serving_model(client, task.name())? else {
            return Ok(None);
        };
        let classifier = |id: i64| -> Result<Arc<Loaded>> {
            let loaded = models::loaded(client, id)?;
            loaded.classifier()?;
            Ok(loaded)
        };
        let test = match abtests::running(client, task)? {
            Some(test) => Some((test, classifier(test.challenger)?)),
            None => None,
        };
        Ok(Some(Routing {
            champion: (champion, classifier(champion)?),
            test,
        }))
    }

    /// Scores `frame` (whose rows are `user_ids`) with `predict`: every row by the
    /// serving model, then the rows the A/B test routes to the challenger by the
    /// challenger.
    pub fn score(
        &self,
        user_ids: &[i64],
        frame: &Frame,
        predict: impl Fn(&Scorer, &Frame) -> Result<Vec<f64>>,
    ) -> Result<RoutedScores> {
        let (champion, model) = &self.champion;
        let scorer = model.classifier()?;
        let scores = predict(scorer, frame)?;
        let mut scored = RoutedScores {
            labels: scores
                .iter()
                .map(|&s| s >= scorer.model.threshold)
                .collect(),
            model_ids: vec![*champion; scores.len()],
            arms: vec![Arm::Champion.name(); scores.len()],
            scores,
        };
        if let Some((test, model)) = &self.test {
            let rows: Vec<usize> = (0..user_ids.len())
                .filter(|&i| arm_of(test.id, user_ids[i], test.share) == Arm::Challenger)
                .collect();
            if !rows.is_empty() {
                let scorer = model.classifier()?;
                let challenged = predict(scorer, &frame.select(&rows))?;
                for (&i, score) in rows.iter().zip(challenged) {
                    scored.scores[i] = score;
                    scored.labels[i] = score >= scorer.model.threshold;
                    scored.model_ids[i] = test.challenger;
                    scored.arms[i] = Arm::Challenger.name();
                }
            }
        }
        Ok(scored)
    }
}

/// The prediction log's foreign-key check skipped for one bulk writer. The check runs an
/// SPI query for every row written, a third of what `score_all` spent writing at a million
/// users; instead the writer locks the models it names once, as the check would (FOR KEY
/// SHARE: `purge_models()` cannot delete them until the transaction ends), and runs its
/// writes with `session_replication_role = replica`, PostgreSQL's switch for bulk loads
/// that skips foreign-key and ordinary triggers and rules. It is used only when the
/// extension's owner is a superuser (only one may set it) and the two tables written carry
/// no trigger or rule but the extension's own, so that nothing of the shop's (an audit or
/// replication trigger) is skipped; otherwise every check runs. The setting is put back by
/// `restore`, and by the subtransaction's rollback on an error. Each change of it empties
/// the backend's plan cache (PostgreSQL's rule), so each run replans once.
struct RowChecks {
    previous: Option<String>,
}

impl RowChecks {
    fn skip(client: &mut SpiClient<'_>, model_ids: &[i64]) -> Result<RowChecks> {
        let locked = client
            .update(
                "SELECT count(*) FROM (SELECT FROM customer_analyzer.models
                                       WHERE id = ANY($1) FOR KEY SHARE) m",
                None,
                &[model_ids.to_vec().into()],
            )
            .ctx("locking the serving models")?
            .first()
            .get_one::<i64>()
            .ctx("locking the serving models")?;
        if locked != Some(model_ids.len() as i64) {
            return Err(error::internal("scoring", "a serving model went away"));
        }
        // NULL (checks kept) unless the owner is a superuser and nothing but the
        // extension's own triggers (and the foreign key's) is on the tables written
        let previous = client
            .select(
                "SELECT CASE WHEN (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
                   AND NOT EXISTS (
                       SELECT FROM pg_catalog.pg_trigger t
                       WHERE t.tgrelid IN ('customer_analyzer.predictions'::regclass,
                                           'customer_analyzer.latest_scores'::regclass)
                         AND NOT t.tgisinternal AND t.tgname <> 'predictions_are_append_only')
                   AND NOT EXISTS (
                       SELECT FROM pg_catalog.pg_rewrite r
                       WHERE r.ev_class IN ('customer_analyzer.predictions'::regclass,
                                            'customer_analyzer.latest_scores'::regclass)
                         AND r.rulename <> '_RETURN')
                 THEN current_setting('session_replication_role') END",
                None,
                &[],
            )
            .ctx("reading session_replication_role")?
            .first()
            .get_one::<String>()
            .ctx("reading session_replication_role")?;
        if previous.is_some() {
            set_replication_role(client, "replica")?;
        }
        Ok(RowChecks { previous })
    }

    fn restore(self, client: &mut SpiClient<'_>) -> Result<()> {
        match &self.previous {
            Some(role) => set_replication_role(client, role),
            None => Ok(()),
        }
    }
}

fn set_replication_role(client: &mut SpiClient<'_>, role: &str) -> Result<()> {
    client
        .update(
            "SELECT set_config('session_replication_role', $1, true)",
            None,
            &[role.into()],
        )
        .ctx("setting session_replication_role")?;
    Ok(())
}

/// Scores `frame` (whose rows are `user_ids`) for `task` on this thread, each row by the
/// model that serves it (see [`Routing`]). None when no model serves.
pub fn score_routed(
    client: &SpiClient<'_>,
    task: Task,
    user_ids: &[i64],
    frame: &Frame,
) -> Result<Option<RoutedScores>> {
    match Routing::of(client, task)? {
        Some(routing) => {
            Ok(Some(routing.score(user_ids, frame, |scorer, f| {
                Ok(scorer.predict(f))
            })?))
        }
        None => Ok(None),
    }
}

/// Appends `scored` rows of `task` to the prediction log and makes them the users' latest
/// (`latest_scores`): users already there are updated in place, which writes one WAL
/// record a row where `ON CONFLICT DO UPDATE` writes two (it locks the row first); only
/// new users are inserted. The update's row order follows the plan, so the one bulk
/// writer, `score_all`, takes the table for its writes instead of racing the worker.
fn log_scores(
    client: &mut SpiClient<'_>,
    task: Task,
    user_ids: &[i64],
    as_of: &[TimestampWithTimeZone],
    scored: &RoutedScores,
) -> Result<()> {
    plans::update(
        client,
        "WITH logged AS (
             INSERT INTO customer_analyzer.predictions (user_id, task, model_id, score, label, as_of, arm)
             SELECT u, $2, m, s, l, t, a
             FROM unnest($1::bigint[], $3::bigint[], $4::float8[], $5::bool[], $6::timestamptz[], $7::text[])
                  AS x(u, m, s, l, t, a)
             RETURNING id, user_id, score),
              newest AS (
             SELECT DISTINCT ON (user_id) user_id, id, score FROM logged ORDER BY user_id, id DESC),
              updated AS (
             UPDATE customer_analyzer.latest_scores AS k SET prediction_id = n.id, score = n.score
             FROM newest n WHERE k.task = $2 AND k.user_id = n.user_id
             RETURNING k.user_id)
         INSERT INTO customer_analyzer.latest_scores AS k (task, user_id, prediction_id, score)
         SELECT $2, user_id, id, score FROM newest n
         WHERE NOT EXISTS (SELECT FROM updated u WHERE u.user_id = n.user_id)
         ORDER BY user_id
         ON CONFLICT (task, user_id) DO UPDATE
         SET prediction_id = EXCLUDED.prediction_id, score = EXCLUDED.score",
        &[
            INT8_ARRAY,
            TEXT,
            INT8_ARRAY,
            FLOAT8_ARRAY,
            BOOL_ARRAY,
            TIMESTAMPTZ_ARRAY,
            TEXT_ARRAY,
        ],
        &[
            user_ids.to_vec().into(),
            task.name().into(),
            scored.model_ids.clone().into(),
            scored.scores.clone().into(),
            scored.labels.clone().into(),
            as_of.to_vec().into(),
            scored.arms.clone().into(),
        ],
    )?;
    Ok(())
}

/// One user's stored (or computed) features scored by model `model_id`.
fn score_with(client: &SpiClient<'_>, model_id: i64, user_id: i64) -> Result<Scored> {
    let loaded = models::loaded(client, model_id)?;
    let scorer = loaded.classifier()?;
    let (values, as_of) = features_for_user(client, user_id)?;
    let (score, label) = score_one(scorer, &frame_of(&values));
    Ok(Scored {
        score,
        label,
        model_id,
        as_of,
    })
}

/// A fresh score the real-time worker logged.
pub struct Logged {
    pub user_id: i64,
    pub score: f64,
    /// The user's newest logged score for the task before this one.
    pub previous: Option<f64>,
    pub model_id: i64,
}

/// Scores `rows` with the model that serves each user, appends the scores to the
/// prediction log and returns them, in the rows' order; nothing when no model serves the
/// task.
pub fn score_and_log(
    client: &mut SpiClient<'_>,
    task: Task,
    rows: &StoredRows,
) -> Result<Vec<Logged>> {
    if rows.user_ids.is_empty() {
        return Ok(Vec::new());
    }
    let Some(scored) = score_routed(client, task, &rows.user_ids, &rows.frame)? else {
        return Ok(Vec::new());
    };
    let mut previous: HashMap<i64, f64> = HashMap::new();
    for row in plans::select(
        client,
        "SELECT user_id, score FROM customer_analyzer.latest_scores
         WHERE task = $1 AND user_id = ANY($2)",
        &[TEXT, INT8_ARRAY],
        &[task.name().into(), rows.user_ids.clone().into()],
    )? {
        if let (Some(u), Some(s)) = (
            row.get::<i64>(1).ctx("reading previous scores")?,
            row.get::<f64>(2).ctx("reading previous scores")?,
        ) {
            previous.insert(u, s);
        }
    }
    log_scores(client, task, &rows.user_ids, &rows.as_of, &scored)?;
    Ok(rows
        .user_ids
        .iter()
        .zip(scored.scores.iter().zip(&scored.model_ids))
        .map(|(&user_id, (&score, &model_id))| Logged {
            user_id,
            score,
            previous: previous.get(&user_id).copied(),
            model_id,
        })
        .collect())
}

fn predict_score(task: Task, user_id: Option<i64>) -> Result<f64> {
    let user_id = user_id.ok_or_else(|| error::null_argument("user_id"))?;
    Spi::connect(|client| Ok(score_user(client, task, user_id)?.score))
}

/// Probability that the user has no event in the next 60 days.
#[pg_extern(stable, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn predict_churn(user_id: Option<i64>) -> Result<f64> {
    predict_score(Task::Churn, user_id)
}

/// Probability that the user buys in the next 30 days.
#[pg_extern(stable, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn predict_purchase(user_id: Option<i64>) -> Result<f64> {
    predict_score(Task::Purchase, user_id)
}

/// Score, label at the model's threshold, the serving model and the features' as_of.
#[pg_extern(stable, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn predict(
    task: Option<&str>,
    user_id: Option<i64>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(score, f64),
            name!(label, bool),
            name!(model_id, i64),
            name!(as_of, TimestampWithTimeZone),
        ),
    >,
> {
    let task = models::task(task)?;
    let user_id = user_id.ok_or_else(|| error::null_argument("user_id"))?;
    let s = Spi::connect(|client| score_user(client, task, user_id))?;
    Ok(TableIterator::once((s.score, s.label, s.model_id, s.as_of)))
}

fn show(v: &FeatureValue) -> Option<String> {
    match v {
        FeatureValue::Num(x) => x.map(|x| format!("{x}")),
        FeatureValue::Text(t) => t.clone(),
    }
}

/// `top` checked: how many reasons to give.
fn top_of(top: Option<i32>) -> Result<usize> {
    let top = top.ok_or_else(|| error::null_argument("top"))?;
    if !(1..=1000).contains(&top) {
        return Err(error::invalid_parameter(
            format!("top must be between 1 and 1000, got {top}"),
            "Ask for the few features that matter, e.g. top => 5.",
        ));
    }
    Ok(top as usize)
}

/// One reason behind a score: feature, its value, contribution and direction.
type Reason = (String, Option<String>, f64, String);

/// The `top` features that pushed `scorer`'s score of `values` (the one row of `f`) up or
/// down most.
fn reasons_of(scorer: &Scorer, f: &Frame, values: &[FeatureValue], top: usize) -> Vec<Reason> {
    scorer
        .explain(f.numeric_row(0), f.categorical_row(0))
        .into_iter()
        .take(top)
        .map(|(name, c)| {
            let value =
                customer_analyzer_core::catalog::index_of(&name).and_then(|i| show(&values[i]));
            let direction = if c >= 0.0 { "raises" } else { "lowers" };
            (name, value, c, direction.to_string())
        })
        .collect()
}

/// The features that pushed this user's score up (positive) or down (negative) most.
#[pg_extern(stable, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn explain(
    task: Option<&str>,
    user_id: Option<i64>,
    top: default!(Option<i32>, 5),
) -> Result<
    TableIterator<
        'static,
        (
            name!(feature, String),
            name!(value, Option<String>),
            name!(contribution, f64),
            name!(direction, String),
        ),
    >,
> {
    let task = models::task(task)?;
    let user_id = user_id.ok_or_else(|| error::null_argument("user_id"))?;
    let top = top_of(top)?;
    let rows = Spi::connect(|client| -> Result<Vec<Reason>> {
        let model_id = routed_model(client, task, user_id)?;
        let loaded = models::loaded(client, model_id)?;
        let (values, _) = features_for_user(client, user_id)?;
        Ok(reasons_of(
            loaded.classifier()?,
            &frame_of(&values),
            &values,
            top,
        ))
    })?;
    Ok(TableIterator::new(rows))
}

/// Both tasks' scores of one user, each from the model that serves the user (the A/B
/// arm said), with the label, the features' as_of and the `top` reasons as JSON: one row
/// per deployed task, from one read of the features. What the dashboard's API serves in
/// one call; the same routing and scores as predict() and explain().
#[pg_extern(stable, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn user_predictions(
    user_id: Option<i64>,
    top: default!(Option<i32>, 3),
) -> Result<
    TableIterator<
        'static,
        (
            name!(task, String),
            name!(score, f64),
            name!(label, bool),
            name!(model_id, i64),
            name!(arm, String),
            name!(as_of, TimestampWithTimeZone),
            name!(reasons, pgrx::JsonB),
        ),
    >,
> {
    let user_id = user_id.ok_or_else(|| error::null_argument("user_id"))?;
    let top = top_of(top)?;
    let rows = Spi::connect(|client| -> Result<Vec<_>> {
        // first: an unknown user is refused even when no model serves
        let (values, as_of) = features_for_user(client, user_id)?;
        let f = frame_of(&values);
        let mut rows = Vec::new();
        for task in [Task::Churn, Task::Purchase] {
            let Some(champion) = models::serving_model(client, task.name())? else {
                continue;
            };
            let model_id = abtests::route(client, task, user_id)?.unwrap_or(champion);
            let loaded = models::loaded(client, model_id)?;
            let scorer = loaded.classifier()?;
            let (score, label) = score_one(scorer, &f);
            let reasons = reasons_of(scorer, &f, &values, top)
                .into_iter()
                .map(|(feature, value, contribution, direction)| {
                    serde_json::json!({"feature": feature, "value": value,
                                       "contribution": contribution, "direction": direction})
                })
                .collect();
            rows.push((
                task.name().to_string(),
                score,
                label,
                model_id,
                if model_id == champion {
                    "champion"
                } else {
                    "challenger"
                }
                .to_string(),
                as_of,
                pgrx::JsonB(serde_json::Value::Array(reasons)),
            ));
        }
        Ok(rows)
    })?;
    Ok(TableIterator::new(rows))
}

/// Rows scored and written per batch.
const SCORE_BATCH: i64 = 20_000;

/// Scores every user with the deployed model into `predictions`. With `as_of` NULL the
/// feature store is scored as it stands; with a time, features are computed as of that
/// time (point-in-time), so a model can be checked on history. Rows are read through a
/// cursor and scored and written in batches, so memory stays flat whatever the number
/// of users, and an interrupt is seen between chunks. Returns the row count.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn score_all(
    task: Option<&str>,
    as_of: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> Result<i64> {
    error::require_primary("score_all()")?;
    let task = models::task(task)?;
    let work = work()?;
    crate::work::finish(Spi::connect_mut(|client| {
        crate::subxact::guarded(|| score_all_body(client, &work, task, as_of))
    }))
}

/// `score_all` inside its SPI connection and subtransaction.
fn score_all_body(
    client: &mut pgrx::spi::SpiClient<'_>,
    work: &customer_analyzer_core::work::Work,
    task: Task,
    as_of: Option<TimestampWithTimeZone>,
) -> Result<i64> {
    // 55000 up front when nothing serves the task
    models::deployed_model_id(client, task.name())?;
    // the rescoring worker writes latest_scores too, in an order its plan chooses: it
    // waits for this transaction instead of deadlocking with it row by row
    client
        .update(
            "LOCK TABLE customer_analyzer.latest_scores IN SHARE ROW EXCLUSIVE MODE",
            None,
            &[],
        )
        .ctx("taking latest_scores for scoring")?;
    let routing = Arc::new(
        Routing::of(client, task)?
            .ok_or_else(|| error::internal("scoring", "the serving model went away"))?,
    );
    let checks = RowChecks::skip(client, &routing.model_ids())?;
    let mut cursor = match as_of {
        None => client.try_open_cursor(&format!("{STORE_ROWS} ORDER BY m.user_id"), &[]),
        Some(t) => client.try_open_cursor(
            "SELECT f.*, $1 FROM customer_analyzer.user_features($1) f",
            &[t.into()],
        ),
    }
    .ctx("reading features to score")?;
    let mut scored = 0i64;
    // the pool scores a batch while this thread reads the next and writes the last
    crate::work::pipeline(
        client,
        work,
        |_| next_stored_rows(&mut cursor, SCORE_BATCH, "reading features to score"),
        move |rows: StoredRows| {
            let routed = routing.score(&rows.user_ids, &rows.frame, |scorer, f| {
                Ok(scorer.predict(f))
            });
            (rows, routed)
        },
        |client, (rows, routed)| {
            log_scores(client, task, &rows.user_ids, &rows.as_of, &routed?)?;
            scored += rows.user_ids.len() as i64;
            Ok(())
        },
    )?;
    checks.restore(client)?;
    if scored == 0 {
        return Err(error::not_ready(
            "there are no features to score",
            "Run SELECT customer_analyzer.refresh_features(); first, or pass an as_of.",
        ));
    }
    Ok(scored)
}
