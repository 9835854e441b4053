//! The store-wide refresh behind `refresh_features()`, full or incremental.
//!
//! Full: every user's features as of one time, computed by the core from one read of the
//! event histories (training's query, one index scan per user, no sort of all events)
//! while the pool computes the previous batch, written batch by batch. The set-based SQL
//! of `user_features()` computes the same rows (the agreement tests compare the two),
//! but its per-event aggregates and its sort of every event took ten minutes at a
//! million users.
//!
//! Incremental, after an earlier refresh on the same basis (`refresh_state`): only the
//! users whose stored row can be wrong at the new time are read from their events: those
//! whose events changed (the real-time queue, which the triggers fill on every insert,
//! update and delete, whatever the event's time), those with an event that entered or
//! left one of the windows since their row's as_of, new users and users the worker could
//! not rescore. Every other row keeps its event-based features and is moved to the new
//! time in one UPDATE from its stored activity times and the users table (the formulas
//! of the core's `TimeRelative`, spelled in SQL; a test checks that the result equals a
//! full refresh). Active days are UTC calendar days, so they too change only when an
//! event enters or leaves a window.

use customer_analyzer_core::features::compute_features_timed;
use customer_analyzer_core::work::{Pending, Work};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgMemoryContexts;

use crate::cursor::fetch_each_in_place;
use crate::error::{self, Result, SpiContext};
use crate::feature_store::{self, Computed};
use crate::features_sql::{history_query, user_columns, Scope};
use crate::plans;
use crate::plans::types::{INT8, TEXT, TIMESTAMPTZ};
use crate::products;
use crate::source::{self, Sources};
use crate::time::to_unix_micros;
use crate::{gucs, realtime, training_set};

/// Users read, computed and written at a time.
const BATCH_USERS: usize = 2000;

/// The window lengths in days (0: events that reached as_of) whose edges the incremental
/// refresh watches; every windowed feature of the catalog uses one of them.
const WINDOW_DAYS: [u32; 6] = [0, 7, 14, 30, 60, 90];

/// Above this share of the stored users to read again, a full refresh is cheaper.
const INCREMENTAL_MAX_SHARE: f64 = 0.5;

/// Refreshes the feature store as of `as_of` (incrementally when it can); returns the
/// number of users in the store. `refresh_features()` calls it under its lock.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn _refresh_store(as_of: TimestampWithTimeZone) -> Result<i64> {
    refresh_as_of(as_of, INCREMENTAL_MAX_SHARE)
}

/// [`_refresh_store`], incremental up to `max_share` of the stored users to read again
/// (the tests raise it to check the incremental path on small, busy shops).
pub(crate) fn refresh_as_of(as_of: TimestampWithTimeZone, max_share: f64) -> Result<i64> {
    error::require_primary("refresh_features()")?;
    let work = crate::work::work()?;
    crate::work::finish(Spi::connect_mut(|client| {
        refresh(client, &work, as_of, max_share)
    }))
}

/// What one refresh did, as `refresh_state` records it.
struct Done {
    full_because: Option<String>,
    computed: i64,
    moved: i64,
}

fn refresh(
    client: &mut SpiClient<'_>,
    work: &Work,
    as_of: TimestampWithTimeZone,
    max_share: f64,
) -> Result<i64> {
    let started = plans::select(client, "SELECT pg_catalog.clock_timestamp()", &[], &[])?
        .first()
        .get_one::<TimestampWithTimeZone>()
        .ctx("reading the clock")?;
    let s = source::load(client)?;
    let basis = basis(client, &s)?;
    let done = match why_full(client, &basis, as_of)? {
        Some(reason) => full(client, work, &s, as_of, reason)?,
        None => match incremental(client, &s, as_of, max_share)? {
            Some(done) => done,
            None => full(
                client,
                work,
                &s,
                as_of,
                format!(
                    "more than {:.0}% of the users changed or crossed a window's edge",
                    max_share * 100.0
                ),
            )?,
        },
    };
    plans::update(
        client,
        "INSERT INTO customer_analyzer.refresh_state AS r
             (id, as_of, basis, mode, full_because, users_computed, users_moved, started_at, finished_at)
         VALUES (true, $1, $2, CASE WHEN $3 IS NULL THEN 'incremental' ELSE 'full' END, $3, $4, $5, $6,
                 pg_catalog.clock_timestamp())
         ON CONFLICT (id) DO UPDATE SET
             (as_of, basis, mode, full_because, users_computed, users_moved, started_at, finished_at)
             = ROW(EXCLUDED.as_of, EXCLUDED.basis, EXCLUDED.mode, EXCLUDED.full_because,
                   EXCLUDED.users_computed, EXCLUDED.users_moved, EXCLUDED.started_at,
                   EXCLUDED.finished_at)",
        &[TIMESTAMPTZ, TEXT, TEXT, INT8, INT8, TIMESTAMPTZ],
        &[
            as_of.into(),
            basis.as_str().into(),
            done.full_because.into(),
            done.computed.into(),
            done.moved.into(),
            started.into(),
        ],
    )?;
    stored_users(client)
}

/// What the stored rows depend on besides the events and the users table, one
/// `name: value` line each; a refresh is incremental only on the same basis.
fn basis(client: &SpiClient<'_>, s: &Sources) -> Result<String> {
    let products = products::table(client, s)?;
    let digest = (*products)
        .as_ref()
        .map_or("none".to_string(), |p| format!("{:016x}", p.digest()));
    let trigger_errors = plans::select(
        client,
        "SELECT coalesce(max(id), 0) FROM customer_analyzer.worker_errors WHERE source = 'trigger'",
        &[],
        &[],
    )?
    .first()
    .get_one::<i64>()
    .ctx("reading worker_errors")?
    .unwrap_or(0);
    let values = [
        env!("CARGO_PKG_VERSION").to_string(),
        format!("{s:?}"),
        time_zone(client)?,
        source::events_storage(client, s)?,
        realtime::covering_triggers(client, &s.events)?,
        trigger_errors.to_string(),
        digest,
    ];
    Ok(BASIS
        .iter()
        .zip(values)
        .map(|((name, _), value)| format!("{name}: {value}"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The lines of the basis, by name, each with what its change means for the reader of
/// `refresh_state.full_because`.
const BASIS: [(&str, &str); 7] = [
    ("extension", "the extension's version changed"),
    ("sources", "the configured tables or their columns changed"),
    // a timestamp (without time zone) column reads in the session's zone
    ("time zone", "the session's time zone is not the last refresh's"),
    (
        "events storage",
        "the events table was truncated, or a partition dropped or attached",
    ),
    ("real-time triggers", "the real-time triggers were made again"),
    (
        "trigger failures",
        "some changes were not queued (customer_analyzer.realtime off in a writing session, or a failed trigger: see worker_errors)",
    ),
    ("products", "the products changed"),
];

fn time_zone(client: &SpiClient<'_>) -> Result<String> {
    Ok(plans::select(
        client,
        "SELECT pg_catalog.current_setting('TimeZone')",
        &[],
        &[],
    )?
    .first()
    .get_one::<String>()
    .ctx("reading the time zone")?
    .unwrap_or_default())
}

/// Why this refresh must read every user (None: it may be incremental).
fn why_full(
    client: &SpiClient<'_>,
    basis: &str,
    as_of: TimestampWithTimeZone,
) -> Result<Option<String>> {
    if !gucs::incremental_refresh() {
        return Ok(Some("customer_analyzer.incremental_refresh is off".into()));
    }
    if !gucs::realtime() {
        return Ok(Some(
            "customer_analyzer.realtime is off, so no change is queued".into(),
        ));
    }
    if basis.contains("real-time triggers: \n") || basis.ends_with("real-time triggers: ") {
        return Ok(Some(
            "the real-time triggers are not on the events table and all its partitions (configure() puts them there)".into(),
        ));
    }
    let last = plans::select(
        client,
        "SELECT as_of, basis FROM customer_analyzer.refresh_state",
        &[],
        &[],
    )?;
    if last.is_empty() {
        return Ok(Some("no earlier refresh".into()));
    }
    let row = last.first();
    let last_as_of = row
        .get::<TimestampWithTimeZone>(1)
        .ctx("reading refresh_state")?;
    let last_basis = row
        .get::<String>(2)
        .ctx("reading refresh_state")?
        .unwrap_or_default();
    if last_as_of.is_none_or(|t| to_unix_micros(t) > to_unix_micros(as_of)) {
        return Ok(Some("as_of is before the last refresh's".into()));
    }
    if let Some((_, now)) = last_basis
        .lines()
        .zip(basis.lines())
        .find(|(was, now)| was != now)
    {
        let name = now.split(':').next().unwrap_or(now);
        let reason = BASIS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("the basis changed", |(_, why)| why);
        return Ok(Some(reason.to_string()));
    }
    if last_basis.lines().count() != basis.lines().count() {
        return Ok(Some("the basis changed".into()));
    }
    Ok(None)
}

fn stored_users(client: &SpiClient<'_>) -> Result<i64> {
    Ok(plans::select(
        client,
        "SELECT count(*) FROM customer_analyzer.user_metrics",
        &[],
        &[],
    )?
    .first()
    .get_one::<i64>()
    .ctx("counting the stored users")?
    .unwrap_or(0))
}

/// Replaces the store with every user's features as of `as_of`.
#[allow(unsafe_code)] // switching to and resetting a memory context this function owns
fn full(
    client: &mut SpiClient<'_>,
    work: &Work,
    s: &Sources,
    as_of: TimestampWithTimeZone,
    because: String,
) -> Result<Done> {
    let products = products::table(client, s)?;
    let t = to_unix_micros(as_of);
    plans::update(
        client,
        "DELETE FROM customer_analyzer.user_metrics",
        &[],
        &[],
    )?;
    let mut cursor = plans::cursor(
        client,
        &history_query(s, Scope::AllUsers, false),
        &[TIMESTAMPTZ, TIMESTAMPTZ],
        &[as_of.into(), as_of.into()],
    )?;
    // each batch's arrays are made here and dropped after its INSERT: in the SPI
    // connection's context they would stay until the call returns (a gigabyte at 1M)
    let mut batch_memory = PgMemoryContexts::new("customer_analyzer refresh batch");
    let mut last_user: Option<i64> = None;
    let mut written = 0i64;
    let mut computing: Option<Pending<Vec<Computed>>> = None;
    loop {
        work.checkpoint().map_err(error::from_core)?;
        let mut histories = Vec::new();
        let fetched = fetch_each_in_place(
            &mut cursor,
            BATCH_USERS as i64,
            training_set::READING,
            |row| {
                let h = training_set::history(row)?;
                // a users table without a unique id may hold a user twice (the rows come
                // in id order): keep the first
                if last_user.replace(h.user.user_id) != Some(h.user.user_id) {
                    histories.push(h);
                }
                Ok(())
            },
        )?;
        let next = (fetched > 0).then(|| {
            let products = products.clone();
            work.start(move || {
                histories
                    .iter()
                    .filter_map(|h| {
                        compute_features_timed(t, &h.user, &h.events, (*products).as_ref())
                    })
                    .collect()
            })
        });
        if let Some(done) = std::mem::replace(&mut computing, next) {
            let rows = work.wait(done).map_err(error::from_core)?;
            written += rows.len() as i64;
            // SAFETY: the arrays are made in batch_memory and used only by this INSERT,
            // which returns no rows; nothing made there is kept past the reset
            let stored = unsafe {
                batch_memory.switch_to(|_| feature_store::store_rows(client, as_of, &rows))
            };
            stored?;
            // SAFETY: see above
            unsafe { batch_memory.reset() };
        }
        if computing.is_none() {
            return Ok(Done {
                full_because: Some(because),
                computed: written,
                moved: 0,
            });
        }
    }
}

/// The users whose stored rows cannot simply be moved to `$1`, in id order (see the
/// module's comment): queued, failed in the worker since the oldest stored row, new, or
/// with an event in [oldest as_of - W, $1 - W) for a window of W days.
fn changed_users_sql(s: &Sources) -> String {
    let (users, events) = (&s.users, &s.events);
    let edges: String = WINDOW_DAYS
        .iter()
        .map(|w| {
            let hours = w * 24;
            format!(
                "SELECT e.user_id::bigint FROM {events} e
                 WHERE e.created_at::timestamptz >= (SELECT t0 FROM oldest) - interval '{hours} hours'
                   AND e.created_at::timestamptz < $1 - interval '{hours} hours'
                   AND e.user_id IS NOT NULL"
            )
        })
        .collect::<Vec<_>>()
        .join("\n             UNION ");
    format!(
        "WITH oldest AS (SELECT min(as_of) AS t0 FROM customer_analyzer.user_metrics)
         SELECT coalesce(array_agg(d.user_id ORDER BY d.user_id), '{{}}')
         FROM (
             SELECT user_id FROM customer_analyzer.rescore_queue
             UNION SELECT user_id FROM customer_analyzer.worker_errors
                   WHERE source = 'worker' AND user_id IS NOT NULL
                     AND occurred_at >= (SELECT t0 FROM oldest)
             UNION SELECT src.id::bigint FROM {users} src
                   WHERE src.id IS NOT NULL AND src.registered_at::timestamptz < $1
                     AND src.registered_at::timestamptz > '-infinity'
                     AND NOT EXISTS (SELECT FROM customer_analyzer.user_metrics m WHERE m.user_id = src.id)
             UNION {edges}
         ) d"
    )
}

/// Moves every stored row older than `$1` to `$1`: the time-relative features from the
/// stored activity times and the users table, with the core's formulas (`TimeRelative`
/// in customer_analyzer_core::features) in the same float operations, on exact
/// microsecond differences.
fn move_rows_sql(s: &Sources) -> String {
    let (status, has_username) = user_columns(s);
    let users = &s.users;
    let days = |later: &str, earlier: &str| {
        format!(
            "(((extract(epoch FROM {later}) * 1000000)::bigint - (extract(epoch FROM {earlier}) * 1000000)::bigint)::float8 / 86400000000)"
        )
    };
    let registered = days("$1", "u.registered_at");
    format!(
        "WITH moved AS (UPDATE customer_analyzer.user_metrics m SET
             days_since_registration = {registered},
             days_since_last_activity = {last},
             days_since_last_purchase = {last_purchase},
             days_since_first_activity = {first},
             days_since_first_purchase = {first_purchase},
             days_since_last_cart_addition = {last_cart},
             monthly_spend_rate = m.total_spent / {registered} * 30,
             status = u.status,
             has_username = u.has_username,
             days_to_first_purchase = {to_first_purchase},
             as_of = $1,
             refreshed_at = pg_catalog.clock_timestamp()
         FROM (SELECT DISTINCT ON (src.id) src.id::bigint AS user_id,
                      src.registered_at::timestamptz AS registered_at,
                      {status} AS status, {has_username} AS has_username
               FROM {users} src
               WHERE src.id IS NOT NULL AND src.registered_at::timestamptz < $1
                 AND src.registered_at::timestamptz > '-infinity'
               ORDER BY src.id) u
         WHERE m.user_id = u.user_id AND m.as_of < $1
         RETURNING 1)
         SELECT count(*) FROM moved",
        last = days("$1", "m.last_event_at"),
        last_purchase = days("$1", "m.last_purchase_at"),
        first = days("$1", "m.first_event_at"),
        first_purchase = days("$1", "m.first_purchase_at"),
        last_cart = days("$1", "m.last_cart_at"),
        to_first_purchase = days("m.first_purchase_at", "u.registered_at"),
    )
}

/// The incremental refresh; None when so many users changed that a full one is cheaper.
#[allow(unsafe_code)] // switching to and resetting a memory context this function owns
fn incremental(
    client: &mut SpiClient<'_>,
    s: &Sources,
    as_of: TimestampWithTimeZone,
    max_share: f64,
) -> Result<Option<Done>> {
    let changed: Vec<i64> = plans::select(
        client,
        &changed_users_sql(s),
        &[TIMESTAMPTZ],
        &[as_of.into()],
    )?
    .first()
    .get_one::<Vec<i64>>()
    .ctx("finding the users that changed")?
    .unwrap_or_default();
    let stored = stored_users(client)?;
    if changed.len() as f64 > max_share * stored as f64 {
        return Ok(None);
    }
    let mut batch_memory = PgMemoryContexts::new("customer_analyzer refresh batch");
    let mut computed = 0i64;
    for ids in changed.chunks(BATCH_USERS) {
        check_for_interrupts!();
        // SAFETY: the batch's cursor, rows and arrays are made in batch_memory and used
        // only inside this closure; nothing made there is kept past the reset
        let batch = unsafe {
            batch_memory.switch_to(|_| -> Result<i64> {
                let rows = feature_store::compute_users_timed(client, s, ids, as_of)?;
                feature_store::store_rows(client, as_of, &rows)?;
                Ok(rows.len() as i64)
            })
        };
        computed += batch?;
        // SAFETY: see above
        unsafe { batch_memory.reset() };
    }
    // users gone from the users table, or registered at or after as_of now
    plans::update(
        client,
        &format!(
            "DELETE FROM customer_analyzer.user_metrics m
             WHERE NOT EXISTS (SELECT FROM {} src
                               WHERE src.id = m.user_id AND src.registered_at::timestamptz < $1
                                 AND src.registered_at::timestamptz > '-infinity')",
            s.users
        ),
        &[TIMESTAMPTZ],
        &[as_of.into()],
    )?;
    let moved = plans::update(client, &move_rows_sql(s), &[TIMESTAMPTZ], &[as_of.into()])?
        .first()
        .get_one::<i64>()
        .ctx("moving the stored rows")?
        .unwrap_or(0);
    Ok(Some(Done {
        full_because: None,
        computed,
        moved,
    }))
}
