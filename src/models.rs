//! Versioned model rows, deployments and the per-backend model cache.
//!
//! Model rows never change (a trigger refuses UPDATE), so the cache is keyed by model
//! id: whichever deployment a transaction sees, the id it reads names exactly one model.
//! A rolled-back deploy therefore can never leave a backend serving the wrong model.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use customer_analyzer_core::codec::{self, Payload};
use customer_analyzer_core::model::Scorer;
use customer_analyzer_core::segment::Segmentation;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{PgBuiltInOids, PgOid};

use crate::error::{self, Result, SpiContext};
use crate::plans;

pub const TASKS: [&str; 2] = ["churn", "purchase"];

/// Checks a task name.
pub fn task(task: Option<&str>) -> Result<&'static str> {
    let t = task.ok_or_else(|| error::null_argument("task"))?;
    TASKS.iter().copied().find(|k| *k == t).ok_or_else(|| {
        error::invalid_parameter(
            format!("unknown task \"{t}\""),
            "Use 'churn' (no event in the next 60 days) or 'purchase' (a purchase in the next 30 days).",
        )
    })
}

const MAX_CACHED: usize = 16;

/// A decoded model row.
pub enum Loaded {
    Classifier(Scorer),
    Segmentation(Segmentation),
}

thread_local! {
    static CACHE: RefCell<HashMap<i64, Rc<Loaded>>> = RefCell::new(HashMap::new());
}

/// The model currently serving `task`, or 55000 when none is deployed.
pub fn deployed_model_id(client: &SpiClient<'_>, task: &str) -> Result<i64> {
    plans::select(
        client,
        "SELECT model_id FROM customer_analyzer.deployments WHERE task = $1 ORDER BY id DESC LIMIT 1",
        &[PgOid::BuiltIn(PgBuiltInOids::TEXTOID)],
        &[task.into()],
    )?
    .into_iter()
    .next()
    .and_then(|row| row.get::<i64>(1).ok().flatten())
    .ok_or_else(|| {
        error::not_ready(
            format!("no {task} model is deployed"),
            &format!("Train one with SELECT * FROM customer_analyzer.train('{task}');"),
        )
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

/// Any model row, from the cache or decoded from its row.
pub fn loaded(client: &SpiClient<'_>, model_id: i64) -> Result<Rc<Loaded>> {
    if let Some(s) = CACHE.with(|c| c.borrow().get(&model_id).cloned()) {
        return Ok(s);
    }
    let blob = plans::select(
        client,
        "SELECT model FROM customer_analyzer.models WHERE id = $1",
        &[PgOid::BuiltIn(PgBuiltInOids::INT8OID)],
        &[model_id.into()],
    )?
    .into_iter()
    .next()
    .map(|row| row.get::<Vec<u8>>(1))
    .transpose()
    .ctx("reading a model")?
    .flatten()
    .ok_or_else(|| {
        error::invalid_parameter(
            format!("model {model_id} does not exist"),
            "See customer_analyzer.models for the ids.",
        )
    })?;
    let s = Rc::new(decode(&blob)?);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= MAX_CACHED {
            c.clear();
        }
        c.insert(model_id, s.clone());
    });
    Ok(s)
}

fn model_task(client: &SpiClient<'_>, model_id: i64) -> Result<String> {
    client
        .select(
            "SELECT task FROM customer_analyzer.models WHERE id = $1",
            None,
            &[model_id.into()],
        )
        .ctx("reading a model")?
        .into_iter()
        .next()
        .and_then(|row| row.get::<String>(1).ok().flatten())
        .ok_or_else(|| {
            error::invalid_parameter(
                format!("model {model_id} does not exist"),
                "See customer_analyzer.models for the ids.",
            )
        })
}

/// Records that `model_id` serves its task from now on (inside the caller's transaction).
pub fn record_deployment(
    client: &mut SpiClient<'_>,
    task: &str,
    model_id: i64,
    reason: &str,
) -> Result<()> {
    client
        .update(
            "INSERT INTO customer_analyzer.deployments (task, model_id, reason) VALUES ($1, $2, $3)",
            None,
            &[task.into(), model_id.into(), reason.into()],
        )
        .ctx("recording a deployment")?;
    Ok(())
}

/// Makes `model_id` serve its task. The model must decode, so a corrupt blob is never
/// deployed.
#[pg_extern(volatile)]
fn deploy(model_id: Option<i64>) -> Result<String> {
    let model_id = model_id.ok_or_else(|| error::null_argument("model_id"))?;
    Spi::connect_mut(|client| {
        let task = model_task(client, model_id)?;
        loaded(client, model_id)?;
        record_deployment(client, &task, model_id, "deploy")?;
        Ok(task)
    })
}

/// Returns `task` to the model that served before the current one; returns its id.
#[pg_extern(volatile)]
fn rollback(task: Option<&str>) -> Result<i64> {
    let task = match task {
        Some("segmentation") => "segmentation",
        other => self::task(other)?,
    };
    Spi::connect_mut(|client| {
        let current = deployed_model_id(client, task)?;
        let previous = client
            .select(
                "SELECT model_id FROM customer_analyzer.deployments
                 WHERE task = $1 AND model_id <> $2 ORDER BY id DESC LIMIT 1",
                None,
                &[task.into(), current.into()],
            )
            .ctx("reading deployments")?
            .into_iter()
            .next()
            .and_then(|row| row.get::<i64>(1).ok().flatten())
            .ok_or_else(|| {
                error::not_ready(
                    format!("no earlier {task} model to roll back to"),
                    "customer_analyzer.deployments lists the history; deploy(model_id) picks any model.",
                )
            })?;
        record_deployment(client, task, previous, "rollback")?;
        Ok(previous)
    })
}

/// Drops every cached model of this backend (for tests and after restores).
#[pg_extern(volatile)]
fn clear_model_cache() -> i64 {
    CACHE.with(|c| {
        let n = c.borrow().len() as i64;
        c.borrow_mut().clear();
        n
    })
}

/// Model ids this backend has decoded and keeps.
#[pg_extern(volatile)]
fn cached_models() -> Vec<i64> {
    CACHE.with(|c| {
        let mut ids: Vec<i64> = c.borrow().keys().copied().collect();
        ids.sort_unstable();
        ids
    })
}
