//! Champion/challenger tests: `start_ab_test()` routes a fixed, hash-chosen share of
//! users to a challenger model (in `predict_*`, `explain`, `score_all` and the rescoring
//! worker), `promote()` deploys the challenger and `stop_ab_test()` ends the test. Any
//! other change of what serves the task ends a running test with a NOTICE, as does
//! retiring its challenger: a test compares two fixed models or nothing.

use std::cell::RefCell;
use std::collections::HashMap;

use customer_analyzer_core::abtest::{arm_of, Arm};
use customer_analyzer_core::catalog::CATALOG_VERSION;
use customer_analyzer_core::task::Task;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::error::{self, Result, SpiContext};
use crate::plans::types::TEXT;
use crate::{models, plans, statement};

/// A running test.
#[derive(Clone, Copy, Debug)]
pub struct Running {
    pub id: i64,
    pub challenger: i64,
    pub share: f64,
}

thread_local! {
    /// The running test of each task as the current statement first saw it (see
    /// `statement`), so that a statement that scores many users never mixes two splits.
    static RUNNING: RefCell<(statement::Key, HashMap<&'static str, Option<Running>>)> =
        RefCell::new((statement::Key::default(), HashMap::new()));
}

/// The running test of `task`, fixed per statement.
pub fn running(client: &SpiClient<'_>, task: Task) -> Result<Option<Running>> {
    let key = statement::key();
    let known = RUNNING.with(|r| {
        let r = r.borrow();
        (r.0 == key)
            .then(|| r.1.get(task.name()).copied())
            .flatten()
    });
    if let Some(t) = known {
        return Ok(t);
    }
    let rows = plans::select(
        client,
        "SELECT id, challenger_id, share FROM customer_analyzer.experiments
         WHERE task = $1 AND ended_at IS NULL",
        &[TEXT],
        &[task.name().into()],
    )?;
    let test = match rows.into_iter().next() {
        None => None,
        Some(row) => Some(Running {
            id: row
                .get::<i64>(1)
                .ctx("reading A/B tests")?
                .unwrap_or_default(),
            challenger: row
                .get::<i64>(2)
                .ctx("reading A/B tests")?
                .unwrap_or_default(),
            share: row
                .get::<f64>(3)
                .ctx("reading A/B tests")?
                .unwrap_or_default(),
        }),
    };
    RUNNING.with(|r| {
        let mut r = r.borrow_mut();
        if r.0 != key {
            *r = (key, HashMap::new());
        }
        r.1.insert(task.name(), test);
    });
    Ok(test)
}

/// The model that scores `user_id` for `task`: the challenger for the test's share of
/// users, the serving model otherwise; None when no model serves the task.
pub fn route(client: &SpiClient<'_>, task: Task, user_id: i64) -> Result<Option<i64>> {
    let Some(champion) = models::serving_model(client, task.name())? else {
        return Ok(None);
    };
    Ok(Some(match running(client, task)? {
        Some(t) if arm_of(t.id, user_id, t.share) == Arm::Challenger => t.challenger,
        _ => champion,
    }))
}

/// Ends `task`'s running test, if any, for `reason`; returns its id. The caller holds the
/// task's deploy lock.
fn end(client: &mut SpiClient<'_>, task: &str, reason: &str) -> Result<Option<i64>> {
    let rows = client
        .update(
            "UPDATE customer_analyzer.experiments SET ended_at = clock_timestamp(), end_reason = $2
             WHERE task = $1 AND ended_at IS NULL RETURNING id",
            None,
            &[task.into(), reason.into()],
        )
        .ctx("ending an A/B test")?;
    statement::serving_changed();
    match rows.into_iter().next() {
        None => Ok(None),
        Some(row) => Ok(row.get::<i64>(1).ctx("ending an A/B test")?),
    }
}

/// Ends `task`'s running test with a NOTICE because `why` (the champion changed, the
/// challenger was retired). The caller holds the task's deploy lock.
pub fn end_with_notice(client: &mut SpiClient<'_>, task: &str, why: &str) -> Result<()> {
    if let Some(id) = end(client, task, why)? {
        pgrx::notice!("customer_analyzer: A/B test {id} of {task} has ended: {why}");
    }
    Ok(())
}

/// Ends the test whose challenger is `model_id` (being retired), with a NOTICE.
pub fn end_for_retired_challenger(client: &mut SpiClient<'_>, model_id: i64) -> Result<()> {
    let task = client
        .update(
            "SELECT task FROM customer_analyzer.experiments
             WHERE challenger_id = $1 AND ended_at IS NULL",
            None,
            &[model_id.into()],
        )
        .ctx("reading A/B tests")?
        .next()
        .map(|row| row.get::<String>(1))
        .transpose()
        .ctx("reading A/B tests")?
        .flatten();
    match task {
        Some(task) => end_with_notice(
            client,
            &task,
            &format!("its challenger, model {model_id}, was retired"),
        ),
        None => Ok(()),
    }
}

/// Starts a champion/challenger test: from now on a `share` of users (chosen by a hash of
/// their id, the same users for the whole test) is scored by `challenger_model_id`, the
/// others by the serving model. Returns the test's id.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn start_ab_test(
    task: Option<&str>,
    challenger_model_id: Option<i64>,
    share: default!(Option<f64>, 0.1),
) -> Result<i64> {
    error::require_primary("start_ab_test()")?;
    let task = models::task(task)?;
    let challenger =
        challenger_model_id.ok_or_else(|| error::null_argument("challenger_model_id"))?;
    let share = share.ok_or_else(|| error::null_argument("share"))?;
    if !(share > 0.0 && share < 1.0) {
        return Err(error::invalid_parameter(
            format!("share must be between 0 and 1 (exclusive), got {share}"),
            "Pass the fraction of users the challenger scores, e.g. share => 0.1.",
        ));
    }
    Spi::connect_mut(|client| {
        let facts = models::model_facts(client, challenger)?;
        if facts.task != task.name() {
            return Err(error::invalid_parameter(
                format!("model {challenger} is a {} model, not a {task} model", facts.task),
                "Pick a challenger trained for the same task (see customer_analyzer.model_metrics).",
            ));
        }
        if facts.retired {
            return Err(error::not_ready(
                format!("model {challenger} is retired"),
                "Retired models are kept for history only; train a new challenger.",
            ));
        }
        if facts.catalog_version != CATALOG_VERSION {
            return Err(error::not_ready(
                format!(
                    "model {challenger} was built for feature catalog version {}, this build has version {CATALOG_VERSION}",
                    facts.catalog_version
                ),
                "Train the challenger again with this version.",
            ));
        }
        // it must load and be a classifier before any user meets it
        models::loaded(client, challenger)?.classifier()?;
        let Some((_, champion)) = models::lock_task(client, task.name())? else {
            return Err(error::not_ready(
                format!("no {task} model is deployed to be the champion"),
                &format!("Train one first: SELECT * FROM customer_analyzer.train('{task}');"),
            ));
        };
        if champion == challenger {
            return Err(error::invalid_parameter(
                format!("model {challenger} already serves {task}"),
                "The challenger must be another model than the serving one.",
            ));
        }
        let running = client
            .update(
                "SELECT id FROM customer_analyzer.experiments WHERE task = $1 AND ended_at IS NULL",
                None,
                &[task.name().into()],
            )
            .ctx("reading A/B tests")?;
        if let Some(row) = running.into_iter().next() {
            let id = row
                .get::<i64>(1)
                .ctx("reading A/B tests")?
                .unwrap_or_default();
            return Err(error::not_ready(
                format!("A/B test {id} of {task} is still running"),
                &format!("One test per task: end it with customer_analyzer.promote('{task}') or customer_analyzer.stop_ab_test('{task}') first."),
            ));
        }
        let id = client
            .update(
                "INSERT INTO customer_analyzer.experiments (task, champion_id, challenger_id, share)
                 VALUES ($1, $2, $3, $4) RETURNING id",
                None,
                &[
                    task.name().into(),
                    champion.into(),
                    challenger.into(),
                    share.into(),
                ],
            )
            .ctx("starting an A/B test")?
            .first()
            .get_one::<i64>()
            .ctx("starting an A/B test")?
            .ok_or_else(|| error::internal("starting an A/B test", "no id"))?;
        statement::serving_changed();
        Ok(id)
    })
}

fn no_test(task: Task) -> pgrx::pg_sys::panic::ErrorReport {
    error::not_ready(
        format!("no A/B test of {task} is running"),
        &format!("Start one with SELECT customer_analyzer.start_ab_test('{task}', challenger_model_id, 0.1);"),
    )
}

/// Ends the running test of a task without changing what serves; returns its id.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn stop_ab_test(task: Option<&str>) -> Result<i64> {
    error::require_primary("stop_ab_test()")?;
    let task = models::task(task)?;
    Spi::connect_mut(|client| {
        models::lock_task(client, task.name())?;
        end(client, task.name(), "stopped")?.ok_or_else(|| no_test(task))
    })
}

/// Deploys the running test's challenger for every user and ends the test; returns the
/// challenger's id.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn promote(task: Option<&str>) -> Result<i64> {
    error::require_primary("promote()")?;
    let task = models::task(task)?;
    Spi::connect_mut(|client| {
        let serving = models::lock_task(client, task.name())?;
        let test = client
            .update(
                "SELECT id, challenger_id FROM customer_analyzer.experiments
                 WHERE task = $1 AND ended_at IS NULL",
                None,
                &[task.name().into()],
            )
            .ctx("reading A/B tests")?
            .next()
            .ok_or_else(|| no_test(task))?;
        let id = test
            .get::<i64>(1)
            .ctx("reading A/B tests")?
            .unwrap_or_default();
        let challenger = test
            .get::<i64>(2)
            .ctx("reading A/B tests")?
            .unwrap_or_default();
        // ended first, so that the deployment does not end it as a change of champion
        end(client, task.name(), "promoted")?;
        models::record_deployment(
            client,
            task.name(),
            challenger,
            &format!("promoted from A/B test {id}"),
            serving.map(|s| s.0),
        )?;
        Ok(challenger)
    })
}
