//! `segment_users()`, `segment_of()` and `rename_segment()`: segmentations are model rows
//! (task 'segmentation', same table and codec as the classifiers), their segments and
//! every user's assignment are tables, and the newest segmentation serves `segment_of`.

use customer_analyzer_core::codec::Payload;
use customer_analyzer_core::frame::Frame;
use customer_analyzer_core::segment::{
    seeded_sample, segment, segment_bytes, SegAlgorithm, SegParams, Tally,
};
use customer_analyzer_core::task::{Task, SEGMENTATION};
use customer_analyzer_core::work::Work;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::json;
use std::sync::Arc;

use crate::error::{self, Result, SpiContext};
use crate::feature_store::{features_for_user, next_stored_rows, StoredRows, STORE_ROWS};
use crate::models::{self, record_deployment, NewModel};
use crate::work::work;

type SegmentRow = (
    i32,
    String,
    String,
    i64,
    f64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Stored rows read per batch.
const BATCH: i64 = 10_000;
/// Bytes kept per user while every user is placed (id, segment and distance), with their
/// copies in the final INSERT's arrays.
const PLACED_BYTES: usize = 48;
const READING: &str = "reading the feature store";

/// Every user's place, gathered batch by batch for one INSERT at the end: the segments'
/// final ids (ordered by size) are known only when every user is counted.
struct Placed {
    user_ids: Vec<i64>,
    segments: Vec<i32>,
    distances: Vec<f64>,
    /// The oldest and the newest as_of of the rows placed.
    span: Option<(TimestampWithTimeZone, TimestampWithTimeZone)>,
}

impl Placed {
    fn with_capacity(users: usize) -> Placed {
        Placed {
            user_ids: Vec::with_capacity(users),
            segments: Vec::with_capacity(users),
            distances: Vec::with_capacity(users),
            span: None,
        }
    }

    fn push(&mut self, rows: &StoredRows, at: &[(usize, f64)]) {
        self.user_ids.extend_from_slice(&rows.user_ids);
        self.segments.extend(at.iter().map(|a| a.0 as i32));
        self.distances.extend(at.iter().map(|a| a.1));
        for &t in &rows.as_of {
            self.span = Some(match self.span {
                None => (t, t),
                Some((first, last)) => (first.min(t), last.max(t)),
            });
        }
    }
}

fn empty_store() -> pgrx::pg_sys::panic::ErrorReport {
    error::not_ready(
        "the feature store holds no users to segment",
        "Run SELECT customer_analyzer.refresh_features(); first.",
    )
}

/// The users a segmentation is fitted on: the whole feature store, or a seeded sample of
/// `fit_sample` of its users (by position in user id order) when it holds more.
fn read_sample(
    client: &mut SpiClient<'_>,
    work: &Work,
    users: usize,
    p: &SegParams,
) -> Result<StoredRows> {
    let mut sample = StoredRows::new();
    sample
        .frame
        .try_reserve_rows(users.min(p.fit_sample))
        .map_err(error::from_core)?;
    let mut cursor = if users <= p.fit_sample {
        client.try_open_cursor(&format!("{STORE_ROWS} ORDER BY m.user_id"), &[])
    } else {
        let mut ids = Vec::with_capacity(users);
        let mut all = client
            .try_open_cursor(
                "SELECT user_id FROM customer_analyzer.feature_store ORDER BY user_id",
                &[],
            )
            .ctx(READING)?;
        while crate::cursor::fetch_each(&mut all, 100_000, READING, |row| {
            ids.push(row.get::<i64>(1).ctx(READING)?.unwrap_or_default());
            Ok(())
        })? > 0
        {
            work.checkpoint().map_err(error::from_core)?;
        }
        drop(all);
        let chosen: Vec<i64> = seeded_sample(ids.len(), p.fit_sample, p.seed)
            .into_iter()
            .map(|i| ids[i])
            .collect();
        client.try_open_cursor(
            &format!("{STORE_ROWS} WHERE m.user_id = ANY($1) ORDER BY m.user_id"),
            &[chosen.into()],
        )
    }
    .ctx(READING)?;
    while sample.read(&mut cursor, BATCH, READING)? > 0 {
        work.checkpoint().map_err(error::from_core)?;
    }
    Ok(sample)
}

/// Clusters every user of the feature store and stores the segmentation; returns one row
/// per segment.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn segment_users(
    algorithm: default!(Option<&str>, "'kmeans'"),
    k: default!(Option<i32>, "NULL"),
    params: default!(Option<JsonB>, "'{}'"),
) -> Result<
    TableIterator<
        'static,
        (
            name!(segment_id, i32),
            name!(name, String),
            name!(description, String),
            name!(size, i64),
            name!(share, f64),
            name!(mean_recency_days, Option<f64>),
            name!(mean_frequency, Option<f64>),
            name!(mean_monetary, Option<f64>),
            name!(churn_rate, Option<f64>),
        ),
    >,
> {
    error::require_primary("segment_users()")?;
    let algorithm =
        SegAlgorithm::parse(algorithm.ok_or_else(|| error::null_argument("algorithm"))?)
            .map_err(error::from_core)?;
    let params = params.ok_or_else(|| error::null_argument("params"))?.0;
    let work = work()?;
    let rows = crate::work::finish(Spi::connect_mut(|client| {
        crate::subxact::guarded(|| -> Result<Vec<SegmentRow>> {
            let users = client
                .select(
                    "SELECT count(*) FROM customer_analyzer.feature_store",
                    None,
                    &[],
                )
                .ctx("counting the feature store")?
                .first()
                .get_one::<i64>()
                .ctx("counting the feature store")?
                .unwrap_or(0) as usize;
            if users == 0 {
                return Err(empty_store());
            }
            let p = SegParams::from_json(algorithm, k.map(i64::from), &params, users)
                .map_err(error::from_core)?;
            let numeric_names = Frame::for_catalog().numeric_names;
            let fitted_on = users.min(p.fit_sample);
            work.reserve(
                "segmenting the feature store",
                segment_bytes(fitted_on, numeric_names.len()) + users * PLACED_BYTES,
            )
            .map_err(error::from_core)?;
            let sample = read_sample(client, &work, users, &p)?;
            if sample.frame.rows == 0 {
                return Err(empty_store());
            }
            let (mut seg, _) = segment(&work, &sample.frame, &p).map_err(error::from_core)?;
            drop(sample);

            // every user placed from the fitted centres, in batches: the pool places (and
            // scores for churn) one batch while this thread reads the next
            let placing = Arc::new(seg.clone());
            let churn = match models::serving_model(client, Task::Churn.name())? {
                Some(id) => {
                    let loaded = models::loaded(client, id)?;
                    loaded.classifier()?;
                    Some(loaded)
                }
                None => None,
            };
            let churn_known = churn.is_some();
            let mut tally = Tally::new(&seg, &numeric_names);
            let mut placed = Placed::with_capacity(users);
            let mut churn_sum = vec![0.0; seg.groups()];
            let mut cursor = client
                .try_open_cursor(format!("{STORE_ROWS} ORDER BY m.user_id").as_str(), &[])
                .ctx(READING)?;
            crate::work::pipeline(
                client,
                &work,
                |_| next_stored_rows(&mut cursor, BATCH, READING),
                move |rows: StoredRows| {
                    let at = placing.place_all(&rows.frame);
                    let churn = churn
                        .as_ref()
                        .and_then(|m| m.classifier().ok())
                        .map(|scorer| scorer.predict(&rows.frame));
                    (rows, at, churn)
                },
                |_, (rows, at, churn)| {
                    tally.add(&rows.frame, &at);
                    if let Some(c) = churn {
                        for (&(s, _), p) in at.iter().zip(c) {
                            churn_sum[s] += p;
                        }
                    }
                    placed.push(&rows, &at);
                    Ok(())
                },
            )?;
            let (first, last) = placed.span.ok_or_else(empty_store)?;
            let new_id = seg.recount(&tally);
            for s in placed.segments.iter_mut() {
                *s = new_id[*s as usize] as i32;
            }
            let mut churn_by_segment = vec![0.0; seg.segments.len()];
            for (old, sum) in churn_sum.into_iter().enumerate() {
                if let Some(to) = churn_by_segment.get_mut(new_id[old]) {
                    *to = sum;
                }
            }
            let churn_sum = churn_by_segment;
            let mut quality = serde_json::to_value(&seg.quality)
                .map_err(|e| error::internal("encoding quality", e))?;
            if let Some(q) = quality.as_object_mut() {
                q.insert("view".into(), json!(seg.inputs.view.as_str()));
                q.insert(
                    "view_silhouettes".into(),
                    json!(seg
                        .view_silhouettes
                        .iter()
                        .map(|(v, s)| json!({"view": v.as_str(), "silhouette": s}))
                        .collect::<Vec<_>>()),
                );
            }
            let segments = seg.segments.clone();
            let id = models::store_model(
                client,
                NewModel {
                    task: SEGMENTATION,
                    algorithm: algorithm.as_str(),
                    params: serde_json::to_value(&p)
                        .map_err(|e| error::internal("encoding params", e))?,
                    preprocessing: json!({"options": seg.preprocessor.options, "inputs": seg.preprocessor.output_names}),
                    trained_as_of: last,
                    training_from: first,
                    training_to: last,
                    metrics: quality,
                    payload: Payload::Segmentation(seg),
                },
            )?;

            let mut out = Vec::with_capacity(segments.len());
            for s in &segments {
                let churn_rate =
                    (churn_known && s.size > 0).then(|| churn_sum[s.id] / s.size as f64);
                let row: SegmentRow = (
                    s.id as i32,
                    s.name.clone(),
                    s.description.clone(),
                    s.size as i64,
                    s.share,
                    finite(s.profile[0]),
                    finite(s.profile[1]),
                    finite(s.profile[2]),
                    churn_rate,
                );
                client
                .update(
                    "INSERT INTO customer_analyzer.segments VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    None,
                    &[
                        id.into(),
                        row.0.into(),
                        row.1.clone().into(),
                        row.2.clone().into(),
                        row.3.into(),
                        row.4.into(),
                        row.5.into(),
                        row.6.into(),
                        row.7.into(),
                        row.8.into(),
                        s.noise.into(),
                    ],
                )
                .ctx("storing segments")?;
                out.push(row);
            }
            let Placed {
                user_ids: ids,
                segments: seg_ids,
                distances: dist,
                ..
            } = placed;
            client
            .update(
                "INSERT INTO customer_analyzer.user_segments (user_id, segmentation_id, segment_id, segment_name, distance)
                 SELECT u, $2, s, g.name, d
                 FROM unnest($1::bigint[], $3::int[], $4::float8[]) AS x(u, s, d)
                 JOIN customer_analyzer.segments g ON g.segmentation_id = $2 AND g.segment_id = x.s",
                None,
                &[ids.into(), id.into(), seg_ids.into(), dist.into()],
            )
            .ctx("storing user segments")?;
            let serving = models::lock_task(client, SEGMENTATION)?;
            record_deployment(
                client,
                "segmentation",
                id,
                "segment_users",
                serving.map(|s| s.0),
            )?;
            Ok(out)
        })
    }))?;
    Ok(TableIterator::new(rows))
}

/// One user's segment in the serving segmentation, assigned from the stored centres
/// without re-clustering (new users included).
#[pg_extern(stable, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn segment_of(
    user_id: Option<i64>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(segment_id, i32),
            name!(segment_name, String),
            name!(distance, f64),
            name!(segmentation_id, i64),
        ),
    >,
> {
    let user_id = user_id.ok_or_else(|| error::null_argument("user_id"))?;
    let row = Spi::connect(|client| {
        let id = models::deployed_model_id(client, SEGMENTATION)?;
        assign(client, id, user_id)
    })?;
    Ok(TableIterator::once(row))
}

/// User `user_id`'s segment in segmentation `id`: (segment_id, name, distance, id).
fn assign(client: &SpiClient<'_>, id: i64, user_id: i64) -> Result<(i32, String, f64, i64)> {
    let loaded = models::loaded(client, id)?;
    let seg = loaded.segmentation()?;
    let (values, _) = features_for_user(client, user_id)?;
    let mut f = Frame::for_catalog();
    f.push_catalog_row(&values);
    let (segment_id, distance) = seg.assign(f.numeric_row(0), &[]);
    let name = crate::plans::select(
        client,
        "SELECT name FROM customer_analyzer.segments WHERE segmentation_id = $1 AND segment_id = $2",
        &[
            pgrx::PgOid::BuiltIn(pgrx::PgBuiltInOids::INT8OID),
            pgrx::PgOid::BuiltIn(pgrx::PgBuiltInOids::INT4OID),
        ],
        &[id.into(), (segment_id as i32).into()],
    )?
    .first()
    .get_one::<String>()
    .ctx("reading the segment name")?
    .unwrap_or_default();
    Ok((segment_id as i32, name, distance, id))
}

/// Moves the users of `rows` to their segments in the serving segmentation (the
/// real-time worker's step after a refresh); nothing when no segmentation serves. Users
/// already assigned are updated in place and only new ones inserted (one WAL record a
/// row, as in `serving::log_scores`).
pub fn reassign_users(client: &mut SpiClient<'_>, rows: &StoredRows) -> Result<()> {
    let Some(id) = models::serving_model(client, SEGMENTATION)? else {
        return Ok(());
    };
    if rows.user_ids.is_empty() {
        return Ok(());
    }
    let loaded = models::loaded(client, id)?;
    let seg = loaded.segmentation()?;
    let (segment_ids, distances): (Vec<i32>, Vec<f64>) = (0..rows.frame.rows)
        .map(|i| {
            let (segment_id, distance) = seg.assign(rows.frame.numeric_row(i), &[]);
            (segment_id as i32, distance)
        })
        .unzip();
    crate::plans::update(
        client,
        "WITH x AS (
             SELECT x.u, x.s, g.name, x.d
             FROM unnest($1::bigint[], $3::int[], $4::float8[]) AS x(u, s, d)
             JOIN customer_analyzer.segments g ON g.segmentation_id = $2 AND g.segment_id = x.s),
              updated AS (
             UPDATE customer_analyzer.user_segments AS a
             SET segment_id = x.s, segment_name = x.name, distance = x.d
             FROM x WHERE a.segmentation_id = $2 AND a.user_id = x.u
             RETURNING a.user_id)
         INSERT INTO customer_analyzer.user_segments
             (user_id, segmentation_id, segment_id, segment_name, distance)
         SELECT x.u, $2, x.s, x.name, x.d FROM x
         WHERE NOT EXISTS (SELECT FROM updated u WHERE u.user_id = x.u)
         ORDER BY x.u
         ON CONFLICT (segmentation_id, user_id) DO UPDATE
         SET segment_id = EXCLUDED.segment_id, segment_name = EXCLUDED.segment_name,
             distance = EXCLUDED.distance",
        &[
            pgrx::PgOid::BuiltIn(pgrx::PgBuiltInOids::INT8ARRAYOID),
            pgrx::PgOid::BuiltIn(pgrx::PgBuiltInOids::INT8OID),
            pgrx::PgOid::BuiltIn(pgrx::PgBuiltInOids::INT4ARRAYOID),
            pgrx::PgOid::BuiltIn(pgrx::PgBuiltInOids::FLOAT8ARRAYOID),
        ],
        &[
            rows.user_ids.clone().into(),
            id.into(),
            segment_ids.into(),
            distances.into(),
        ],
    )?;
    Ok(())
}

/// Gives a segment a name of the analyst's choosing.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn rename_segment(
    segmentation_id: Option<i64>,
    segment_id: Option<i32>,
    name: Option<&str>,
) -> Result<bool> {
    error::require_primary("rename_segment()")?;
    let segmentation_id = segmentation_id.ok_or_else(|| error::null_argument("segmentation_id"))?;
    let segment_id = segment_id.ok_or_else(|| error::null_argument("segment_id"))?;
    let name = name.ok_or_else(|| error::null_argument("name"))?.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(error::invalid_parameter(
            "a segment name must have 1 to 200 characters",
            "Pass a short, readable name such as 'Weekend buyers'.",
        ));
    }
    Spi::connect_mut(|client| {
        let n = client
            .update(
                "UPDATE customer_analyzer.segments SET name = $3 WHERE segmentation_id = $1 AND segment_id = $2",
                None,
                &[segmentation_id.into(), segment_id.into(), name.into()],
            )
            .ctx("renaming the segment")?
            .len();
        if n == 0 {
            return Err(error::invalid_parameter(
                format!("segmentation {segmentation_id} has no segment {segment_id}"),
                "See customer_analyzer.segments for the ids.",
            ));
        }
        client
            .update(
                "UPDATE customer_analyzer.user_segments SET segment_name = $3
                 WHERE segmentation_id = $1 AND segment_id = $2",
                None,
                &[segmentation_id.into(), segment_id.into(), name.into()],
            )
            .ctx("renaming the segment")?;
        Ok(true)
    })
}
