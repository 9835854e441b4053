//! The JSON API under /api, described by the OpenAPI document at /api/openapi.json.
//! Every figure comes from the extension's functions and views; errors keep the
//! extension's SQLSTATE (db.rs maps it to a status).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::db::{self, Failure};
use crate::AppState;

/// An error: what went wrong, the SQLSTATE the database gave (when it did) and its hint.
#[derive(Serialize, ToSchema)]
pub struct ApiError {
    pub error: String,
    pub sqlstate: Option<String>,
    pub hint: Option<String>,
}

/// A Failure answered as JSON.
pub struct JsonFailure(pub Failure);

impl From<Failure> for JsonFailure {
    fn from(f: Failure) -> JsonFailure {
        JsonFailure(f)
    }
}

impl From<tokio_postgres::Error> for JsonFailure {
    fn from(e: tokio_postgres::Error) -> JsonFailure {
        JsonFailure(e.into())
    }
}

impl IntoResponse for JsonFailure {
    fn into_response(self) -> Response {
        let f = self.0;
        let body = ApiError {
            error: f.message,
            sqlstate: f.sqlstate,
            hint: f.hint,
        };
        (f.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, JsonFailure>;

/// A user id from the path: a whole number, else 400.
pub fn user_id(text: &str) -> Result<i64, Failure> {
    text.parse::<i64>()
        .map_err(|_| Failure::bad_request(format!("user id '{text}' is not a whole number")))
}

/// Timestamps as RFC 3339 in UTC to the second, whatever the session's time zone
/// (JSON's ISO 8601 form: no colon in the SQL, which pgbench would take for a variable).
macro_rules! utc {
    ($e:literal) => {
        concat!(
            "((to_json(date_trunc('second', ",
            $e,
            " AT TIME ZONE 'UTC')) #>> '{}') || 'Z')"
        )
    };
}
pub(crate) use utc;

/// One reason behind a score: the feature, its value and how far it moved the score.
#[derive(Serialize, Deserialize, ToSchema, Clone)]
pub struct Reason {
    pub feature: String,
    pub value: Option<String>,
    pub contribution: f64,
    pub direction: String,
}

/// One task's score of a user from the model serving it.
#[derive(Serialize, ToSchema, Clone)]
pub struct TaskScore {
    pub task: String,
    /// Calibrated probability.
    pub score: f64,
    /// Whether the score reaches the model's threshold.
    pub label: bool,
    pub model_id: i64,
    /// `champion`, or `challenger` when a running A/B test routes the user to it.
    pub arm: String,
    /// When the features used were computed.
    pub as_of: String,
    pub reasons: Vec<Reason>,
}

#[derive(Serialize, ToSchema, Clone)]
pub struct SegmentRef {
    pub segment_id: i32,
    pub segment_name: String,
}

/// Both scores of a user, the serving models and A/B arms, the segment and top reasons.
#[derive(Serialize, ToSchema)]
pub struct UserPredictions {
    pub user_id: i64,
    pub churn: Option<TaskScore>,
    pub purchase: Option<TaskScore>,
    pub segment: Option<SegmentRef>,
}

/// Both tasks through `user_predictions()` (which refuses an unknown user with P0002,
/// models or not) and the segment through `segment_of()` when a segmentation serves,
/// in one statement: one row a deployed task, or one row of the segment alone.
pub const PREDICTIONS_SQL: &str = concat!(
    "SELECT p.task, p.score, p.label, p.model_id, p.arm, ",
    utc!("p.as_of"),
    ", p.reasons, s.segment_id, s.segment_name
     FROM (SELECT) one
     LEFT JOIN customer_analyzer.user_predictions($1::bigint, $2::integer) p ON true
     LEFT JOIN LATERAL (
         SELECT o.segment_id, o.segment_name FROM customer_analyzer.segment_of($1::bigint) o
         WHERE EXISTS (SELECT FROM customer_analyzer.deployed_models d WHERE d.task = 'segmentation')
     ) s ON true"
);

pub async fn predictions_of(
    pool: &deadpool_postgres::Pool,
    user: i64,
    reasons: i32,
) -> Result<UserPredictions, Failure> {
    let rows = db::query(pool, PREDICTIONS_SQL, &[&user, &reasons]).await?;
    let mut out = UserPredictions {
        user_id: user,
        churn: None,
        purchase: None,
        segment: None,
    };
    for r in rows {
        if let (Some(id), Some(name)) = (
            r.try_get::<_, Option<i32>>(7)?,
            r.try_get::<_, Option<String>>(8)?,
        ) {
            out.segment = Some(SegmentRef {
                segment_id: id,
                segment_name: name,
            });
        }
        let Some(task) = r.try_get::<_, Option<String>>(0)? else {
            continue;
        };
        let reasons: serde_json::Value = r.try_get(6)?;
        let score = TaskScore {
            score: r.try_get(1)?,
            label: r.try_get(2)?,
            model_id: r.try_get(3)?,
            arm: r.try_get(4)?,
            as_of: r.try_get(5)?,
            reasons: serde_json::from_value(reasons).map_err(|e| Failure {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: format!("reading the reasons of a {task} score: {e}"),
                sqlstate: None,
                hint: None,
            })?,
            task,
        };
        match score.task.as_str() {
            "churn" => out.churn = Some(score),
            "purchase" => out.purchase = Some(score),
            _ => {}
        }
    }
    Ok(out)
}

#[utoipa::path(get, path = "/api/predictions/{user_id}",
    params(("user_id" = i64, Path, description = "the user's id in the shop's users table")),
    responses(
        (status = 200, body = UserPredictions, description = "both scores, models, arms, segment and top reasons"),
        (status = 400, body = ApiError, description = "the id is not a whole number"),
        (status = 404, body = ApiError, description = "unknown user (SQLSTATE P0002)"),
        (status = 503, body = ApiError, description = "the database is not reachable")))]
pub async fn predictions(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<UserPredictions> {
    let user = user_id(&id)?;
    Ok(Json(predictions_of(&s.pool, user, 3).await?))
}

async fn one_task(s: &AppState, id: &str, task: &str) -> ApiResult<TaskScore> {
    let user = user_id(id)?;
    let p = predictions_of(&s.pool, user, 5).await?;
    let score = if task == "churn" { p.churn } else { p.purchase };
    score.map(Json).ok_or_else(|| {
        JsonFailure(Failure::not_ready(
            format!("no {task} model is deployed"),
            format!("Train one: SELECT * FROM customer_analyzer.train('{task}');"),
        ))
    })
}

#[utoipa::path(get, path = "/api/churn/{user_id}",
    params(("user_id" = i64, Path, description = "the user's id")),
    responses(
        (status = 200, body = TaskScore, description = "churn probability (no event in 60 days) with the top five reasons"),
        (status = 400, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "no churn model is deployed (55000)"),
        (status = 503, body = ApiError)))]
pub async fn churn_of(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<TaskScore> {
    one_task(&s, &id, "churn").await
}

#[utoipa::path(get, path = "/api/purchase/{user_id}",
    params(("user_id" = i64, Path, description = "the user's id")),
    responses(
        (status = 200, body = TaskScore, description = "purchase probability (a purchase within 30 days) with the top five reasons"),
        (status = 400, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "no purchase model is deployed (55000)"),
        (status = 503, body = ApiError)))]
pub async fn purchase_of(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<TaskScore> {
    one_task(&s, &id, "purchase").await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChurnParams {
    /// Users per page, 1 to 1000 (default 50).
    limit: Option<String>,
    /// Users to skip (default 0).
    offset: Option<String>,
    /// Only users whose newest logged churn score is at least this (0 to 1).
    min_score: Option<String>,
    /// Only users of this segment (its name in the serving segmentation).
    segment: Option<String>,
}

/// A user at risk, from the newest logged scores (`user_overview`).
#[derive(Serialize, ToSchema)]
pub struct AtRisk {
    pub user_id: i64,
    pub churn_score: f64,
    pub purchase_score: Option<f64>,
    pub segment_id: Option<i32>,
    pub segment_name: Option<String>,
    pub last_seen: Option<String>,
    pub total_spent: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct AtRiskPage {
    pub limit: i64,
    pub offset: i64,
    /// Users matching the filters, over all pages.
    pub total: i64,
    pub users: Vec<AtRisk>,
}

fn parse_in<T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display>(
    name: &str,
    value: Option<&str>,
    default: T,
    range: (T, T),
) -> Result<T, Failure> {
    let v = match value {
        None => return Ok(default),
        Some(text) => text
            .parse::<T>()
            .map_err(|_| Failure::bad_request(format!("{name} is '{text}', not a number")))?,
    };
    if v >= range.0 && v <= range.1 {
        Ok(v)
    } else {
        Err(Failure::bad_request(format!(
            "{name} must be between {} and {}, not {v}",
            range.0, range.1
        )))
    }
}

const AT_RISK_SQL: &str = concat!(
    "SELECT user_id, churn_score, purchase_score, segment_id, segment_name, ",
    utc!("last_seen"),
    ", total_spent, count(*) OVER ()
     FROM customer_analyzer.user_overview
     WHERE churn_score >= $1 AND ($2::text IS NULL OR segment_name = $2)
     ORDER BY churn_score DESC, user_id
     LIMIT $3 OFFSET $4"
);

#[utoipa::path(get, path = "/api/churn", params(ChurnParams),
    responses(
        (status = 200, body = AtRiskPage, description = "users most at risk first, by their newest logged churn score"),
        (status = 400, body = ApiError, description = "a parameter out of range"),
        (status = 503, body = ApiError)))]
pub async fn churn_list(
    State(s): State<AppState>,
    params: Result<Query<ChurnParams>, QueryRejection>,
) -> ApiResult<AtRiskPage> {
    let Query(p) = params.map_err(|e| Failure::bad_request(e.body_text()))?;
    let limit = parse_in("limit", p.limit.as_deref(), 50i64, (1, 1000))?;
    let offset = parse_in("offset", p.offset.as_deref(), 0i64, (0, i64::MAX))?;
    let min_score = parse_in("min_score", p.min_score.as_deref(), 0.0f64, (0.0, 1.0))?;
    let segment = p.segment.filter(|s| !s.is_empty());
    let rows = db::query(
        &s.pool,
        AT_RISK_SQL,
        &[&min_score, &segment, &limit, &offset],
    )
    .await?;
    let total = rows.first().map(|r| r.try_get::<_, i64>(7)).transpose()?;
    let users = rows
        .iter()
        .map(|r| {
            Ok(AtRisk {
                user_id: r.try_get(0)?,
                churn_score: r.try_get(1)?,
                purchase_score: r.try_get(2)?,
                segment_id: r.try_get(3)?,
                segment_name: r.try_get(4)?,
                last_seen: r.try_get(5)?,
                total_spent: r.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        .map_err(Failure::from)?;
    Ok(Json(AtRiskPage {
        limit,
        offset,
        total: total.unwrap_or(0),
        users,
    }))
}

/// One segment of the serving segmentation, with its profile.
#[derive(Serialize, ToSchema, Clone)]
pub struct SegmentProfile {
    pub segment_id: i32,
    pub name: String,
    pub description: String,
    pub size: i64,
    pub share: f64,
    pub mean_recency_days: Option<f64>,
    pub mean_frequency: Option<f64>,
    pub mean_monetary: Option<f64>,
    pub churn_rate: Option<f64>,
    pub is_noise: bool,
}

#[derive(Serialize, ToSchema)]
pub struct Segmentation {
    pub segmentation_id: i64,
    pub algorithm: String,
    /// `rfm` or `behaviour`: what was clustered.
    pub view: String,
    pub silhouette: Option<f64>,
    pub created_at: String,
    pub segments: Vec<SegmentProfile>,
}

const SEGMENTATION_SQL: &str = concat!(
    "SELECT segmentation_id, algorithm, view, silhouette, ",
    utc!("created_at"),
    " FROM customer_analyzer.segmentation_quality WHERE serving"
);
const SEGMENTS_SQL: &str = "SELECT segment_id, name, description, size, share, mean_recency_days,
        mean_frequency, mean_monetary, churn_rate, is_noise
     FROM customer_analyzer.current_segments ORDER BY segment_id";

pub async fn segmentation_of(
    pool: &deadpool_postgres::Pool,
) -> Result<Option<Segmentation>, Failure> {
    let Some(q) = db::query(pool, SEGMENTATION_SQL, &[])
        .await?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let segments = db::query(pool, SEGMENTS_SQL, &[])
        .await?
        .iter()
        .map(|r| {
            Ok(SegmentProfile {
                segment_id: r.try_get(0)?,
                name: r.try_get(1)?,
                description: r.try_get(2)?,
                size: r.try_get(3)?,
                share: r.try_get(4)?,
                mean_recency_days: r.try_get(5)?,
                mean_frequency: r.try_get(6)?,
                mean_monetary: r.try_get(7)?,
                churn_rate: r.try_get(8)?,
                is_noise: r.try_get(9)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    Ok(Some(Segmentation {
        segmentation_id: q.try_get(0)?,
        algorithm: q.try_get(1)?,
        view: q.try_get(2)?,
        silhouette: q.try_get(3)?,
        created_at: q.try_get(4)?,
        segments,
    }))
}

/// The answer when segment_users() never ran.
pub fn no_segmentation() -> Failure {
    Failure::not_ready(
        "no segmentation serves yet",
        "Run SELECT * FROM customer_analyzer.segment_users();",
    )
}

#[utoipa::path(get, path = "/api/segmentation",
    responses(
        (status = 200, body = Segmentation, description = "the serving segmentation's segments with sizes and profiles"),
        (status = 409, body = ApiError, description = "no segmentation yet (55000)"),
        (status = 503, body = ApiError)))]
pub async fn segmentation(State(s): State<AppState>) -> ApiResult<Segmentation> {
    segmentation_of(&s.pool)
        .await?
        .map(Json)
        .ok_or_else(|| JsonFailure(no_segmentation()))
}

/// A serving model (or a running test's challenger) with holdout and live figures.
#[derive(Serialize, ToSchema, Clone)]
pub struct ModelHealth {
    pub task: String,
    pub model_id: i64,
    /// `champion` or `challenger`.
    pub role: String,
    pub algorithm: String,
    pub holdout_auc: Option<f64>,
    pub holdout_brier: Option<f64>,
    pub live_predictions: Option<i64>,
    pub live_auc: Option<f64>,
    pub live_brier: Option<f64>,
    /// Live AUC minus holdout AUC.
    pub auc_change: Option<f64>,
    pub last_week_auc: Option<f64>,
}

pub const MODEL_HEALTH_SQL: &str =
    "SELECT task, model_id, role, algorithm, holdout_auc, holdout_brier,
        live_predictions, live_auc, live_brier, auc_change, last_week_auc
     FROM customer_analyzer.model_health ORDER BY task, role";

pub async fn model_health(pool: &deadpool_postgres::Pool) -> Result<Vec<ModelHealth>, Failure> {
    Ok(db::query(pool, MODEL_HEALTH_SQL, &[])
        .await?
        .iter()
        .map(|r| {
            Ok(ModelHealth {
                task: r.try_get(0)?,
                model_id: r.try_get(1)?,
                role: r.try_get(2)?,
                algorithm: r.try_get(3)?,
                holdout_auc: r.try_get(4)?,
                holdout_brier: r.try_get(5)?,
                live_predictions: r.try_get(6)?,
                live_auc: r.try_get(7)?,
                live_brier: r.try_get(8)?,
                auc_change: r.try_get(9)?,
                last_week_auc: r.try_get(10)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?)
}

#[utoipa::path(get, path = "/api/models",
    responses(
        (status = 200, body = [ModelHealth], description = "every serving model and running challenger, holdout beside live"),
        (status = 503, body = ApiError)))]
pub async fn models(State(s): State<AppState>) -> ApiResult<Vec<ModelHealth>> {
    Ok(Json(model_health(&s.pool).await?))
}

/// Whether the database answers, and the real-time worker's state.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unreachable` (with status 503).
    pub database: String,
    pub worker_last_seen: Option<String>,
    pub worker_silent_seconds: Option<f64>,
    pub queue_depth: Option<i64>,
    pub rescored_last_minute: Option<i64>,
    pub errors_last_hour: Option<i64>,
    /// Whether this service is listening for live scores.
    pub live: bool,
}

pub const QUEUE_SQL: &str = concat!(
    "SELECT ",
    utc!("worker_last_seen"),
    ", extract(epoch FROM worker_silent_for)::float8, depth, rescored_last_minute, errors_last_hour
     FROM customer_analyzer.queue_status"
);

#[utoipa::path(get, path = "/api/health",
    responses(
        (status = 200, body = Health, description = "database reachable; worker last seen and queue depth"),
        (status = 503, body = Health, description = "the database does not answer")))]
pub async fn health(State(s): State<AppState>) -> Response {
    let live = s.live.connected();
    let answer = match db::query_one(&s.pool, QUEUE_SQL, &[]).await {
        Ok(r) => (|| -> Result<Health, tokio_postgres::Error> {
            Ok(Health {
                database: "ok".into(),
                worker_last_seen: r.try_get(0)?,
                worker_silent_seconds: r.try_get(1)?,
                queue_depth: r.try_get(2)?,
                rescored_last_minute: r.try_get(3)?,
                errors_last_hour: r.try_get(4)?,
                live,
            })
        })()
        .map_err(Failure::from),
        Err(f) => Err(f),
    };
    match answer {
        Ok(h) => Json(h).into_response(),
        Err(f) if f.status == StatusCode::SERVICE_UNAVAILABLE => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                database: "unreachable".into(),
                worker_last_seen: None,
                worker_silent_seconds: None,
                queue_depth: None,
                rescored_last_minute: None,
                errors_last_hour: None,
                live,
            }),
        )
            .into_response(),
        Err(f) => JsonFailure(f).into_response(),
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "customer_analyzer",
        description = "Predictions, segments and model health of the customer_analyzer extension, read through SQL. Live scores: GET /api/events (Server-Sent Events, event `score`, data: the NOTIFY payload of customer_analyzer_scores)."
    ),
    paths(
        predictions,
        churn_list,
        churn_of,
        purchase_of,
        segmentation,
        models,
        health
    )
)]
pub struct ApiDoc;

pub async fn openapi() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(json) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response(),
        Err(e) => JsonFailure(Failure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("encoding the OpenAPI document: {e}"),
            sqlstate: None,
            hint: None,
        })
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_out_of_range_are_refused() {
        assert_eq!(parse_in("limit", None, 50i64, (1, 1000)).ok(), Some(50));
        assert_eq!(parse_in("limit", Some("7"), 50i64, (1, 1000)).ok(), Some(7));
        assert!(parse_in("limit", Some("0"), 50i64, (1, 1000)).is_err());
        assert!(parse_in("limit", Some("x"), 50i64, (1, 1000)).is_err());
        assert!(parse_in("min_score", Some("1.5"), 0.0, (0.0, 1.0)).is_err());
        assert!(parse_in("min_score", Some("NaN"), 0.0, (0.0, 1.0)).is_err());
        assert!(user_id("12a").is_err());
        assert_eq!(user_id("-3").ok(), Some(-3));
    }

    #[test]
    fn the_openapi_document_lists_every_endpoint() {
        let doc = ApiDoc::openapi();
        for path in [
            "/api/predictions/{user_id}",
            "/api/churn",
            "/api/churn/{user_id}",
            "/api/purchase/{user_id}",
            "/api/segmentation",
            "/api/models",
            "/api/health",
        ] {
            assert!(doc.paths.paths.contains_key(path), "{path} is missing");
        }
    }
}
