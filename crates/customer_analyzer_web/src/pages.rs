//! The dashboard's pages, rendered on the server (askama templates, escaped by default).
//! Charts are drawn in the browser by ECharts from the JSON each page embeds; scores
//! update live from /api/events (assets/app.js).

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{self, utc, ModelHealth, Segmentation, TaskScore};
use crate::db::{self, Failure};
use crate::AppState;

/// A Failure answered as a page.
pub struct PageFailure(Failure);

impl From<Failure> for PageFailure {
    fn from(f: Failure) -> PageFailure {
        PageFailure(f)
    }
}

impl From<tokio_postgres::Error> for PageFailure {
    fn from(e: tokio_postgres::Error) -> PageFailure {
        PageFailure(e.into())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: &'static str,
    status: String,
    message: String,
    sqlstate: String,
    hint: String,
}

impl IntoResponse for PageFailure {
    fn into_response(self) -> Response {
        let f = self.0;
        let page = ErrorPage {
            nav: "",
            status: f.status.to_string(),
            message: f.message,
            sqlstate: f.sqlstate.unwrap_or_default(),
            hint: f.hint.unwrap_or_default(),
        };
        match page.render() {
            Ok(html) => (f.status, Html(html)).into_response(),
            Err(_) => f.status.into_response(),
        }
    }
}

type PageResult = Result<Response, PageFailure>;

fn render(t: &impl Template) -> PageResult {
    t.render()
        .map(|html| Html(html).into_response())
        .map_err(|e| {
            PageFailure(Failure {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: format!("rendering the page: {e}"),
                sqlstate: None,
                hint: None,
            })
        })
}

/// JSON for a `<script type="application/json">` block: `<`, `>` and `&` escaped, so no
/// value can close the block.
fn embed(v: &Value) -> String {
    v.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// A score as every page shows it (the browser test formats SQL's value the same way).
pub fn score_text(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "–".into())
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.filter(|v| v.is_finite())
        .map(|v| format!("{v:.decimals$}"))
        .unwrap_or_else(|| "–".into())
}

/// An RFC 3339 UTC time as the pages show it: `2026-11-27 13:09:32` (the columns say UTC).
trait ShownTime {
    fn shown_time(&self) -> String;
}

impl ShownTime for str {
    fn shown_time(&self) -> String {
        self.replace('T', " ").trim_end_matches('Z').to_owned()
    }
}

pub async fn root() -> Redirect {
    Redirect::to("/users")
}

// Users ---------------------------------------------------------------------------------

/// Sortable columns: the key in the URL, the heading and the column of user_overview.
const SORTS: &[(&str, &str, &str)] = &[
    ("user", "User", "user_id"),
    ("segment", "Segment", "segment_name"),
    ("churn", "Churn risk", "churn_score"),
    ("purchase", "Purchase chance", "purchase_score"),
    ("last_seen", "Last seen", "last_seen"),
    ("spend", "Spend", "total_spent"),
];
const PAGE_SIZE: i64 = 50;

#[derive(Deserialize)]
pub struct UsersQuery {
    q: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
    page: Option<String>,
}

pub struct UserRow {
    pub user_id: i64,
    pub segment: String,
    pub churn: String,
    pub purchase: String,
    pub last_seen: String,
    pub spend: String,
}

pub struct Heading {
    pub label: &'static str,
    pub href: String,
    pub mark: &'static str,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    nav: &'static str,
    q: String,
    headings: Vec<Heading>,
    rows: Vec<UserRow>,
    total: i64,
    page: i64,
    pages: i64,
    prev: Option<String>,
    next: Option<String>,
}

fn users_href(q: &str, sort: &str, dir: &str, page: i64) -> String {
    let q: String = q
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect();
    format!("/users?q={q}&sort={sort}&dir={dir}&page={page}")
}

pub async fn users(
    State(s): State<AppState>,
    params: Result<Query<UsersQuery>, QueryRejection>,
) -> PageResult {
    let Query(p) = params.map_err(|e| Failure::bad_request(e.body_text()))?;
    let q = p.q.unwrap_or_default().trim().to_owned();
    let (sort, _, column) = SORTS
        .iter()
        .find(|(k, _, _)| Some(*k) == p.sort.as_deref())
        .copied()
        .unwrap_or(SORTS[2]);
    let dir = match p.dir.as_deref() {
        Some("asc") => "asc",
        _ => "desc",
    };
    let page = p
        .page
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|&v| v >= 1)
        .unwrap_or(1);
    let sql = format!(
        "SELECT user_id, segment_name, churn_score, purchase_score, {}, total_spent,
                count(*) OVER ()
         FROM customer_analyzer.user_overview
         WHERE $1 = '' OR user_id::text = $1 OR segment_name ILIKE '%' || $1 || '%'
         ORDER BY {column} {dir} NULLS LAST, user_id
         LIMIT {PAGE_SIZE} OFFSET $2",
        utc!("last_seen")
    );
    let offset = (page - 1).saturating_mul(PAGE_SIZE);
    let rows = db::query(&s.pool, &sql, &[&q, &offset]).await?;
    let total: i64 = match rows.first() {
        Some(r) => r.try_get(6)?,
        None => 0,
    };
    let rows = rows
        .iter()
        .map(|r| {
            Ok(UserRow {
                user_id: r.try_get(0)?,
                segment: r.try_get::<_, Option<String>>(1)?.unwrap_or_default(),
                churn: score_text(r.try_get(2)?),
                purchase: score_text(r.try_get(3)?),
                last_seen: r
                    .try_get::<_, Option<String>>(4)?
                    .map(|t| t.shown_time())
                    .unwrap_or_else(|| "never".into()),
                spend: num(r.try_get(5)?, 2),
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let pages = ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
    let headings = SORTS
        .iter()
        .map(|(key, label, _)| {
            let active = *key == sort;
            let next_dir = if active && dir == "desc" {
                "asc"
            } else {
                "desc"
            };
            Heading {
                label,
                href: users_href(&q, key, next_dir, 1),
                mark: match (active, dir) {
                    (false, _) => "",
                    (true, "asc") => " ▲",
                    (true, _) => " ▼",
                },
            }
        })
        .collect();
    render(&UsersPage {
        nav: "users",
        prev: (page > 1).then(|| users_href(&q, sort, dir, page - 1)),
        next: (page < pages).then(|| users_href(&q, sort, dir, page + 1)),
        q,
        headings,
        rows,
        total,
        page,
        pages,
    })
}

// One user ------------------------------------------------------------------------------

pub struct Bar {
    pub feature: String,
    pub value: String,
    pub contribution: String,
    pub width: String,
    pub up: bool,
}

pub struct TaskView {
    pub task: String,
    pub title: &'static str,
    pub score: String,
    pub label: &'static str,
    pub model_id: i64,
    pub arm: String,
    pub as_of: String,
    pub bars: Vec<Bar>,
}

impl TaskView {
    fn of(t: TaskScore) -> TaskView {
        let widest = t
            .reasons
            .iter()
            .map(|r| r.contribution.abs())
            .fold(0.0f64, f64::max);
        TaskView {
            title: if t.task == "churn" {
                "Churn risk (no event in the next 60 days)"
            } else {
                "Purchase chance (a purchase in the next 30 days)"
            },
            score: score_text(Some(t.score)),
            label: if t.label {
                "above the threshold"
            } else {
                "below the threshold"
            },
            model_id: t.model_id,
            arm: t.arm,
            as_of: t.as_of.shown_time(),
            bars: t
                .reasons
                .iter()
                .map(|r| Bar {
                    feature: r.feature.clone(),
                    value: r
                        .value
                        .clone()
                        .map(|v| feature_value(Some(v)))
                        .unwrap_or_else(|| "missing".into()),
                    contribution: format!("{:+.4}", r.contribution),
                    width: format!(
                        "{:.1}",
                        if widest > 0.0 {
                            100.0 * r.contribution.abs() / widest
                        } else {
                            0.0
                        }
                    ),
                    up: r.contribution > 0.0,
                })
                .collect(),
            task: t.task,
        }
    }
}

pub struct Feature {
    pub name: String,
    pub value: String,
    pub unit: String,
}

pub struct FeatureGroup {
    pub name: String,
    pub features: Vec<Feature>,
}

pub struct EventRow {
    pub at: String,
    pub kind: String,
    pub data: String,
}

#[derive(Template)]
#[template(path = "user.html")]
struct UserPage {
    nav: &'static str,
    user_id: i64,
    segment: String,
    tasks: Vec<TaskView>,
    features_as_of: String,
    groups: Vec<FeatureGroup>,
    events: Vec<EventRow>,
}

const EVENTS_SQL: &str = concat!(
    "SELECT ",
    utc!("created_at"),
    ", event_type, event_data FROM customer_analyzer.recent_events($1, 20)"
);
const FEATURES_SQL: &str = concat!(
    "SELECT c.feature_group, c.name, coalesce(c.unit, ''), f.j ->> c.name, ",
    utc!("(f.j ->> 'as_of')::timestamptz"),
    " FROM (SELECT to_jsonb(cf) AS j FROM customer_analyzer.customer_features cf
            WHERE cf.user_id = $1) f
     CROSS JOIN customer_analyzer.feature_catalog c
     ORDER BY c.position"
);

fn feature_value(text: Option<String>) -> String {
    match text {
        None => "–".into(),
        Some(t) => match t.parse::<f64>() {
            Ok(v) if v.fract() != 0.0 => format!("{v:.2}"),
            _ => t,
        },
    }
}

pub async fn user(State(s): State<AppState>, Path(id): Path<String>) -> PageResult {
    let user = api::user_id(&id)?;
    // first: it refuses an unknown user (P0002, a 404 page)
    let events = db::query(&s.pool, EVENTS_SQL, &[&user])
        .await?
        .iter()
        .map(|r| {
            Ok(EventRow {
                at: r.try_get::<_, String>(0)?.shown_time(),
                kind: r.try_get(1)?,
                data: r.try_get::<_, Option<String>>(2)?.unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let p = api::predictions_of(&s.pool, user, 8).await?;
    let mut groups: Vec<FeatureGroup> = Vec::new();
    let mut features_as_of = String::new();
    for r in db::query(&s.pool, FEATURES_SQL, &[&user]).await? {
        let group: String = r.try_get(0)?;
        features_as_of = r.try_get::<_, String>(4)?.shown_time();
        let f = Feature {
            name: r.try_get(1)?,
            unit: r.try_get(2)?,
            value: feature_value(r.try_get(3)?),
        };
        match groups.last_mut() {
            Some(g) if g.name == group => g.features.push(f),
            _ => groups.push(FeatureGroup {
                name: group,
                features: vec![f],
            }),
        }
    }
    render(&UserPage {
        nav: "users",
        user_id: user,
        segment: p
            .segment
            .map(|s| format!("{} (segment {})", s.segment_name, s.segment_id))
            .unwrap_or_else(|| "not segmented".into()),
        tasks: [p.churn, p.purchase]
            .into_iter()
            .flatten()
            .map(TaskView::of)
            .collect(),
        features_as_of,
        groups,
        events,
    })
}

// Analytics -----------------------------------------------------------------------------

pub struct MetricsRow {
    pub task: String,
    pub model_id: i64,
    pub algorithm: String,
    pub auc: String,
    pub f1: String,
    pub precision: String,
    pub recall: String,
    pub brier: String,
    pub threshold: String,
    pub rows: String,
}

pub struct HealthRow {
    pub task: String,
    pub model_id: i64,
    pub role: String,
    pub algorithm: String,
    pub holdout_auc: String,
    pub live_predictions: String,
    pub live_auc: String,
    pub auc_change: String,
    pub last_week_auc: String,
}

pub struct DriftRow {
    pub task: String,
    pub feature: String,
    pub kind: String,
    pub psi: String,
    pub ks: String,
    pub level: String,
}

pub struct AbRow {
    pub test_id: i64,
    pub task: String,
    pub champion_id: i64,
    pub challenger_id: i64,
    pub share: String,
    pub started_at: String,
    pub champion_predictions: i64,
    pub challenger_predictions: i64,
}

pub struct Queue {
    pub depth: String,
    pub worker_last_seen: String,
    pub worker_silent: String,
    pub rescored_last_minute: String,
    pub errors_last_hour: String,
}

#[derive(Template)]
#[template(path = "analytics.html")]
struct AnalyticsPage {
    nav: &'static str,
    health: Vec<HealthRow>,
    metrics: Vec<MetricsRow>,
    drift: Vec<DriftRow>,
    drift_note: String,
    tests: Vec<AbRow>,
    queue: Queue,
    charts: String,
}

const METRICS_SQL: &str = "SELECT task, model_id, algorithm, auc, f1, precision, recall, brier, threshold, holdout_rows
     FROM customer_analyzer.model_metrics WHERE deployed AND task IN ('churn', 'purchase') ORDER BY task";
const ROC_SQL: &str = "SELECT r.task, r.false_positive_rate, r.true_positive_rate
     FROM customer_analyzer.model_roc r
     JOIN customer_analyzer.deployed_models d ON d.model_id = r.model_id
     ORDER BY r.task, r.point";
const RELIABILITY_SQL: &str = "SELECT d.task, c.mean_predicted, c.observed_rate, c.users
     FROM customer_analyzer.model_calibration c
     JOIN customer_analyzer.deployed_models d ON d.model_id = c.model_id
     WHERE d.task IN ('churn', 'purchase') ORDER BY d.task, c.decile";
const IMPORTANCE_SQL: &str =
    "SELECT task, feature, importance FROM customer_analyzer.feature_importance
     WHERE rank <= 12 AND task IN ('churn', 'purchase') ORDER BY task, rank";
const DRIFT_SQL: &str = "SELECT task, feature, kind, psi, ks, level FROM customer_analyzer.drift
     ORDER BY psi DESC NULLS LAST, task, feature LIMIT 20";
const AB_SQL: &str = concat!(
    "SELECT test_id, task, champion_id, challenger_id, share, ",
    utc!("started_at"),
    ", champion_predictions, challenger_predictions FROM customer_analyzer.ab_tests WHERE running ORDER BY task"
);
const WEEKLY_SQL: &str = "SELECT w.task, to_char(w.week, 'YYYY-MM-DD'), w.auc, w.predictions
     FROM customer_analyzer.weekly_live_metrics w
     JOIN customer_analyzer.deployed_models d ON d.model_id = w.model_id
     ORDER BY w.task, w.week";

/// Rows of (task, x, y) as {task: [[x, y], ...]} for the charts.
fn series(
    rows: &[tokio_postgres::Row],
    x: usize,
    y: usize,
) -> Result<Value, tokio_postgres::Error> {
    let mut out = serde_json::Map::new();
    for r in rows {
        let task: String = r.try_get(0)?;
        let point = if *r.columns()[x].type_() == tokio_postgres::types::Type::TEXT {
            json!([r.try_get::<_, String>(x)?, r.try_get::<_, Option<f64>>(y)?])
        } else {
            json!([
                r.try_get::<_, Option<f64>>(x)?,
                r.try_get::<_, Option<f64>>(y)?
            ])
        };
        if let Value::Array(points) = out.entry(task).or_insert_with(|| json!([])) {
            points.push(point);
        }
    }
    Ok(Value::Object(out))
}

pub async fn analytics(State(s): State<AppState>) -> PageResult {
    let pool = &s.pool;
    let health = api::model_health(pool)
        .await?
        .into_iter()
        .map(|h: ModelHealth| HealthRow {
            task: h.task,
            model_id: h.model_id,
            role: h.role,
            algorithm: h.algorithm,
            holdout_auc: num(h.holdout_auc, 4),
            live_predictions: h
                .live_predictions
                .map(|n| n.to_string())
                .unwrap_or_else(|| "0".into()),
            live_auc: num(h.live_auc, 4),
            auc_change: h
                .auc_change
                .map(|v| format!("{v:+.4}"))
                .unwrap_or_else(|| "–".into()),
            last_week_auc: num(h.last_week_auc, 4),
        })
        .collect();
    let metrics = db::query(pool, METRICS_SQL, &[])
        .await?
        .iter()
        .map(|r| {
            Ok(MetricsRow {
                task: r.try_get(0)?,
                model_id: r.try_get(1)?,
                algorithm: r.try_get(2)?,
                auc: num(r.try_get(3)?, 4),
                f1: num(r.try_get(4)?, 4),
                precision: num(r.try_get(5)?, 4),
                recall: num(r.try_get(6)?, 4),
                brier: num(r.try_get(7)?, 4),
                threshold: num(r.try_get(8)?, 4),
                rows: r
                    .try_get::<_, Option<i64>>(9)?
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let roc = series(&db::query(pool, ROC_SQL, &[]).await?, 1, 2)?;
    let reliability = series(&db::query(pool, RELIABILITY_SQL, &[]).await?, 1, 2)?;
    let importance = series(&db::query(pool, IMPORTANCE_SQL, &[]).await?, 1, 2)?;
    let weekly = series(&db::query(pool, WEEKLY_SQL, &[]).await?, 1, 2)?;
    // drift is computed when read; a failure there leaves the rest of the page
    let (drift, drift_note) = match db::query(pool, DRIFT_SQL, &[]).await {
        Ok(rows) => (
            rows.iter()
                .map(|r| {
                    Ok(DriftRow {
                        task: r.try_get(0)?,
                        feature: r.try_get(1)?,
                        kind: r.try_get(2)?,
                        psi: num(r.try_get(3)?, 3),
                        ks: num(r.try_get(4)?, 3),
                        level: r.try_get(5)?,
                    })
                })
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()?,
            String::new(),
        ),
        Err(f) => (
            Vec::new(),
            format!(
                "Drift could not be computed: {} ({})",
                f.message,
                f.sqlstate.unwrap_or_default()
            ),
        ),
    };
    let tests = db::query(pool, AB_SQL, &[])
        .await?
        .iter()
        .map(|r| {
            Ok(AbRow {
                test_id: r.try_get(0)?,
                task: r.try_get(1)?,
                champion_id: r.try_get(2)?,
                challenger_id: r.try_get(3)?,
                share: num(r.try_get(4)?, 2),
                started_at: r.try_get::<_, String>(5)?.shown_time(),
                champion_predictions: r.try_get(6)?,
                challenger_predictions: r.try_get(7)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let q = db::query_one(pool, api::QUEUE_SQL, &[]).await?;
    let queue = Queue {
        worker_last_seen: q
            .try_get::<_, Option<String>>(0)?
            .map(|t| t.shown_time())
            .unwrap_or_else(|| "never".into()),
        worker_silent: num(q.try_get(1)?, 1),
        depth: q.try_get::<_, Option<i64>>(2)?.unwrap_or(0).to_string(),
        rescored_last_minute: q.try_get::<_, Option<i64>>(3)?.unwrap_or(0).to_string(),
        errors_last_hour: q.try_get::<_, Option<i64>>(4)?.unwrap_or(0).to_string(),
    };
    let charts =
        json!({"roc": roc, "reliability": reliability, "importance": importance, "weekly": weekly});
    render(&AnalyticsPage {
        nav: "analytics",
        health,
        metrics,
        drift,
        drift_note,
        tests,
        queue,
        charts: embed(&charts),
    })
}

// Segmentation --------------------------------------------------------------------------

pub struct SegmentRow {
    pub segment_id: i32,
    pub name: String,
    pub description: String,
    pub size: i64,
    pub share: String,
    pub recency: String,
    pub frequency: String,
    pub monetary: String,
    pub churn_rate: String,
}

pub struct Transition {
    pub from: String,
    pub to: String,
    pub users: i64,
}

#[derive(Template)]
#[template(path = "segmentation.html")]
struct SegmentationPage {
    nav: &'static str,
    summary: String,
    segments: Vec<SegmentRow>,
    transitions: Vec<Transition>,
    charts: String,
}

const MAP_SQL: &str =
    "SELECT segment_name, recency_days, monetary FROM customer_analyzer.segment_map(2000)";
const TRANSITIONS_SQL: &str =
    "SELECT from_segment, to_segment, users FROM customer_analyzer.segment_transitions
     ORDER BY users DESC, from_segment, to_segment";

pub async fn segmentation(State(s): State<AppState>) -> PageResult {
    let pool = &s.pool;
    let seg: Option<Segmentation> = api::segmentation_of(pool).await?;
    let Some(seg) = seg else {
        return Err(PageFailure(api::no_segmentation()));
    };
    let mut map = serde_json::Map::new();
    for r in db::query(pool, MAP_SQL, &[]).await? {
        let name: String = r.try_get(0)?;
        let recency: Option<f64> = r.try_get(1)?;
        let spend: Option<f64> = r.try_get(2)?;
        if let Value::Array(points) = map.entry(name).or_insert_with(|| json!([])) {
            points.push(json!([recency, spend.map(|m| (1.0 + m.max(0.0)).log10())]));
        }
    }
    let transitions = db::query(pool, TRANSITIONS_SQL, &[])
        .await?
        .iter()
        .map(|r| {
            Ok(Transition {
                from: r
                    .try_get::<_, Option<String>>(0)?
                    .unwrap_or_else(|| "(new)".into()),
                to: r
                    .try_get::<_, Option<String>>(1)?
                    .unwrap_or_else(|| "(gone)".into()),
                users: r.try_get(2)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let sizes: Vec<Value> = seg
        .segments
        .iter()
        .map(|s| json!([s.name, s.size]))
        .collect();
    let flows: Vec<Value> = transitions
        .iter()
        .map(|t| json!([t.from, t.to, t.users]))
        .collect();
    let charts = json!({"sizes": sizes, "map": map, "transitions": flows});
    render(&SegmentationPage {
        nav: "segmentation",
        summary: format!(
            "Segmentation {} ({}, {} view, silhouette {}), made {}",
            seg.segmentation_id,
            seg.algorithm,
            seg.view,
            num(seg.silhouette, 3),
            seg.created_at.shown_time()
        ),
        segments: seg
            .segments
            .into_iter()
            .map(|s| SegmentRow {
                segment_id: s.segment_id,
                name: s.name,
                description: s.description,
                size: s.size,
                share: format!("{:.1}%", 100.0 * s.share),
                recency: num(s.mean_recency_days, 1),
                frequency: num(s.mean_frequency, 2),
                monetary: num(s.mean_monetary, 2),
                churn_rate: num(s.churn_rate, 3),
            })
            .collect(),
        transitions,
        charts: embed(&charts),
    })
}

pub async fn not_found() -> PageFailure {
    PageFailure(Failure::not_found("no such page"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_json_cannot_close_its_script_block() {
        let v = json!({"name": "</script><script>alert(1)</script>"});
        let e = embed(&v);
        assert!(!e.contains('<'));
        assert_eq!(serde_json::from_str::<Value>(&e).ok(), Some(v));
    }

    #[test]
    fn search_terms_are_escaped_in_links() {
        assert_eq!(
            users_href("a b&c", "churn", "desc", 2),
            "/users?q=a%20b%26c&sort=churn&dir=desc&page=2"
        );
    }
}
