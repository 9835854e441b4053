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
//! users whose stored row can be wrong at the new time are read from their events. Those
//! whose events changed (the real-time queue, which the triggers fill on every insert,
//! update and delete, whatever the event's time), who have an event since the oldest
//! stored row, are new, or whom the worker could not rescore are read whole. Those with
//! an event that only left or entered a window are read from their last 90 days: the
//! core keeps their stored all-time features and recomputes the windowed ones
//! (`roll_forward`). Every other row is left as it is: the view user_metrics brings a
//! row older than the store's as_of (`refresh_state`) to it from its stored activity and
//! registration times (the formulas of the core's `TimeRelative`, spelled in SQL), so a
//! refresh writes only the rows it recomputes, and those whose users row changed (status,
//! username, registration). A test checks that the result equals a full refresh. Active
//! days are UTC calendar days, so they too change only
//! when an event enters or leaves a window.

use customer_analyzer_core::events::SetAside;
use customer_analyzer_core::features::ProductTable;
use customer_analyzer_core::features::{compute_features_timed, roll_forward, WINDOW_REACH_MICROS};
use customer_analyzer_core::snapshots::History;
use customer_analyzer_core::work::Work;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::sync::Arc;
use std::time::Instant;

use crate::cursor::fetch_each_in_place;
use crate::data_quality;
use crate::error::{self, Result, SpiContext};
use crate::feature_store::{self, Computed, Store};
use crate::features_sql::{history_query, user_columns, Scope};
use crate::plans;
use crate::plans::types::{INT8, TEXT, TIMESTAMPTZ};
use crate::products;
use crate::source::{self, Sources};
use crate::time::{from_unix_micros, to_unix_micros};
use crate::{gucs, realtime, training_set};

/// Users read, computed and written at a time.
const BATCH_USERS: usize = 2000;

/// The window lengths in days whose edges the incremental refresh watches; every
/// windowed feature of the catalog (`Reach::Window`) uses one of them.
const WINDOW_DAYS: [u32; 5] = [7, 14, 30, 60, 90];

/// Above this share of the stored users to read again, a full refresh is cheaper.
const INCREMENTAL_MAX_SHARE: f64 = 0.5;

/// Refreshes the feature store as of `as_of` (incrementally when it can); returns the
/// number of users in the store. `refresh_features()` calls it under its lock.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn _refresh_store(as_of: TimestampWithTimeZone) -> Result<i64> {
    refresh_as_of(as_of, INCREMENTAL_MAX_SHARE)?;
    Spi::connect(stored_users)
}

/// [`_refresh_store`], incremental up to `max_share` of the stored users to read again
/// (the tests raise it to check the incremental path on small, busy shops).
pub(crate) fn refresh_as_of(as_of: TimestampWithTimeZone, max_share: f64) -> Result<Done> {
    error::require_primary("refresh_features()")?;
    let work = crate::work::work()?;
    crate::work::finish(Spi::connect_mut(|client| {
        refresh(client, &work, as_of, max_share)
    }))
}

/// What one refresh did, as `refresh_state` records it.
pub(crate) struct Done {
    pub full_because: Option<String>,
    /// Users read from their whole history.
    pub computed: i64,
    /// Users read from their last 90 days only (their events entered or left windows).
    pub recent: i64,
    /// Stored rows moved in time without reading events.
    pub moved: i64,
}

fn refresh(
    client: &mut SpiClient<'_>,
    work: &Work,
    as_of: TimestampWithTimeZone,
    max_share: f64,
) -> Result<Done> {
    let started = plans::select(client, "SELECT pg_catalog.clock_timestamp()", &[], &[])?
        .first()
        .get_one::<TimestampWithTimeZone>()
        .ctx("reading the clock")?;
    let s = source::load(client)?;
    let basis = basis(client, &s)?;
    let done = match why_full(client, &s, &basis, as_of)? {
        Some(reason) => full(client, work, &s, as_of, reason)?,
        None => match incremental(client, work, &s, as_of, max_share)? {
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
            basis.text.as_str().into(),
            done.full_because.clone().into(),
            (done.computed + done.recent).into(),
            done.moved.into(),
            started.into(),
        ],
    )?;
    Ok(done)
}

/// What the stored rows depend on besides the events and the users table, one
/// `name: value` line each; a refresh is incremental only on the same basis.
struct Basis {
    text: String,
    /// Whether the real-time triggers cover the events table and all its partitions.
    triggers: bool,
}

fn basis(client: &SpiClient<'_>, s: &Sources) -> Result<Basis> {
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
    let triggers = realtime::covering_triggers(client, &s.events)?;
    // the cluster and the database: refresh_state is dumped with the store, and a
    // restored one must not trust a queue it does not have
    let database = plans::select(
        client,
        "SELECT (SELECT system_identifier FROM pg_catalog.pg_control_system())::text || '/'
                || (SELECT oid FROM pg_catalog.pg_database
                    WHERE datname = pg_catalog.current_database())::text",
        &[],
        &[],
    )?
    .first()
    .get_one::<String>()
    .ctx("naming the database")?
    .unwrap_or_default();
    let values = [
        env!("CARGO_PKG_VERSION").to_string(),
        database,
        format!("{s:?}"),
        time_zone(client)?,
        source::events_storage(client, s)?,
        triggers.clone(),
        trigger_errors.to_string(),
        digest,
    ];
    Ok(Basis {
        text: BASIS
            .iter()
            .zip(values)
            .map(|((name, _), value)| format!("{name}: {value}"))
            .collect::<Vec<_>>()
            .join("\n"),
        triggers: !triggers.is_empty(),
    })
}

/// The lines of the basis, by name, each with what its change means for the reader of
/// `refresh_state.full_because`.
const BASIS: [(&str, &str); 8] = [
    ("extension", "the extension's version changed"),
    ("database", "the store was restored into another database"),
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

/// The line `prune()` adds to the last refresh's basis when it trimmed the queue or the
/// worker's failures: no basis has it, so the next refresh is full. The row stays, since
/// user_metrics reads the store's as_of from it.
const QUEUE_PRUNED: &str = "queue: pruned";

/// Makes the next refresh a full one, because the real-time queue or the worker's
/// failures may no longer name every user whose events changed.
pub(crate) fn forget_queue(client: &mut SpiClient<'_>) -> Result<()> {
    plans::update(
        client,
        "UPDATE customer_analyzer.refresh_state SET basis = basis || E'\\n' || $1
         WHERE NOT $1 = ANY (pg_catalog.string_to_array(basis, E'\\n'))",
        &[TEXT],
        &[QUEUE_PRUNED.into()],
    )?;
    Ok(())
}

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
    s: &Sources,
    basis: &Basis,
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
    if !basis.triggers {
        return Ok(Some(
            "the real-time triggers are not on the events table and all its partitions (configure() puts them there)".into(),
        ));
    }
    if !s.events_by_user {
        // each batch of users would read every event
        return Ok(Some("the events table has no index on user_id".into()));
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
    if last_basis.lines().any(|line| line == QUEUE_PRUNED) {
        return Ok(Some(
            "prune() trimmed the real-time queue or the worker's failures".into(),
        ));
    }
    if let Some((_, now)) = last_basis
        .lines()
        .zip(basis.text.lines())
        .find(|(was, now)| was != now)
    {
        let name = now.split(':').next().unwrap_or(now);
        let reason = BASIS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("the basis changed", |(_, why)| why);
        return Ok(Some(reason.to_string()));
    }
    if last_basis.lines().count() != basis.text.lines().count() {
        return Ok(Some("the basis changed".into()));
    }
    Ok(None)
}

fn stored_users(client: &SpiClient<'_>) -> Result<i64> {
    Ok(plans::select(
        client,
        "SELECT count(*) FROM customer_analyzer.feature_store",
        &[],
        &[],
    )?
    .first()
    .get_one::<i64>()
    .ctx("counting the stored users")?
    .unwrap_or(0))
}

/// Replaces the store with every user's features as of `as_of`.
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
        "DELETE FROM customer_analyzer.feature_store",
        &[],
        &[],
    )?;
    let mut cursor = plans::cursor(
        client,
        &history_query(s, Scope::AllUsers, false),
        &[TIMESTAMPTZ, TIMESTAMPTZ],
        &[as_of.into(), as_of.into()],
    )?;
    let mut last_user: Option<i64> = None;
    let mut written = 0i64;
    // the data rules' report that follows counts the events read here from this read
    let mut set_aside = SetAside::default();
    crate::work::pipeline(
        client,
        work,
        |_| {
            let mut histories = Vec::new();
            let fetched = fetch_each_in_place(
                &mut cursor,
                BATCH_USERS as i64,
                training_set::READING,
                |row| {
                    let h = training_set::history(row)?;
                    // a users table without a unique id may hold a user twice (the rows
                    // come in id order): keep the first
                    if last_user.replace(h.user.user_id) != Some(h.user.user_id) {
                        set_aside.add(&h.events);
                        histories.push(h);
                    }
                    Ok(())
                },
            )?;
            Ok((fetched > 0).then_some(histories))
        },
        compute_whole(t, products),
        |client, rows| {
            written += rows.len() as i64;
            feature_store::store_rows(client, Store::Emptied, as_of, &rows)
        },
    )?;
    data_quality::record_store_read(as_of, set_aside);
    Ok(Done {
        full_because: Some(because),
        computed: written,
        recent: 0,
        moved: 0,
    })
}

/// The pool's job for users read from their whole history: their rows as of `t`.
fn compute_whole(
    t: i64,
    products: Arc<Option<ProductTable>>,
) -> impl Fn(Vec<History>) -> Vec<Computed> + Send + Sync + 'static {
    move |histories| {
        histories
            .iter()
            .filter_map(|h| compute_features_timed(t, &h.user, &h.events, (*products).as_ref()))
            .collect()
    }
}

/// The users whose stored rows cannot simply be carried to `$1` (see the module's
/// comment), as two arrays in id order: those read from their whole history (queued,
/// failed in the worker since `$2`, the oldest time a stored row is read at, new, or with
/// an event since `$2`), and the others with an event in [`$2` - W, `$1` - W) for a window
/// of W days, which only their last 90 days can have changed. `$2` is a parameter rather
/// than a subquery, which would keep PostgreSQL from scanning the events in parallel.
fn changed_users_sql(s: &Sources) -> String {
    let (users, events) = (&s.users, &s.events);
    // events in [`$2` - hours, `$1` - hours)
    let slice = |hours: u32| {
        format!(
            "(e.created_at::timestamptz >= $2 - interval '{hours} hours'
                  AND e.created_at::timestamptz < $1 - interval '{hours} hours')"
        )
    };
    // one scan for every window's slice (a UNION of one scan each took half as long again)
    let slices: String = WINDOW_DAYS
        .iter()
        .map(|&w| slice(w * 24))
        .collect::<Vec<_>>()
        .join("\n               OR ");
    let edges = format!(
        "SELECT DISTINCT e.user_id::bigint AS user_id FROM {events} e
             WHERE e.user_id IS NOT NULL AND ({slices})"
    );
    format!(
        "WITH whole AS (
             SELECT user_id FROM customer_analyzer.rescore_queue
             UNION SELECT user_id FROM customer_analyzer.worker_errors
                   WHERE source = 'worker' AND user_id IS NOT NULL
                     AND occurred_at >= $2
             UNION SELECT src.id::bigint FROM {users} src
                   WHERE src.id IS NOT NULL AND src.registered_at::timestamptz < $1
                     AND src.registered_at::timestamptz > '-infinity'
                     AND NOT EXISTS (SELECT FROM customer_analyzer.feature_store m WHERE m.user_id = src.id)
             UNION SELECT e.user_id::bigint FROM {events} e
               WHERE e.user_id IS NOT NULL AND {new_events}
         ),
         edge AS ({edges} EXCEPT SELECT user_id FROM whole)
         SELECT (SELECT coalesce(array_agg(user_id ORDER BY user_id), '{{}}') FROM whole),
                (SELECT coalesce(array_agg(user_id ORDER BY user_id), '{{}}') FROM edge)",
        new_events = slice(0),
    )
}

/// Brings the users table's status, username and registration time into the stored rows
/// older than `$1` whose users row changed (the time-relative features at the row's own
/// as_of, with the core's formulas, so that a row is as of its as_of whichever time it
/// is read at); returns how many.
fn users_changed_sql(s: &Sources) -> String {
    let (status, has_username) = user_columns(s);
    let users = &s.users;
    let days = |later: &str, earlier: &str| {
        format!(
            "(((extract(epoch FROM {later}) * 1000000)::bigint - (extract(epoch FROM {earlier}) * 1000000)::bigint)::float8 / 86400000000)"
        )
    };
    let registered = days("m.as_of", "u.registered_at");
    format!(
        "WITH changed AS (UPDATE customer_analyzer.feature_store m SET
             days_since_registration = {registered},
             monthly_spend_rate = m.total_spent / {registered} * 30,
             status = u.status,
             has_username = u.has_username,
             days_to_first_purchase = {to_first_purchase},
             registered_at = u.registered_at
         FROM (SELECT DISTINCT ON (src.id) src.id::bigint AS user_id,
                      src.registered_at::timestamptz AS registered_at,
                      {status} AS status, {has_username} AS has_username
               FROM {users} src
               WHERE src.id IS NOT NULL AND src.registered_at::timestamptz < $1
                 AND src.registered_at::timestamptz > '-infinity'
               ORDER BY src.id) u
         WHERE m.user_id = u.user_id AND m.as_of < $1
           AND (m.registered_at IS DISTINCT FROM u.registered_at
                OR m.status IS DISTINCT FROM u.status
                OR m.has_username IS DISTINCT FROM u.has_username)
         RETURNING 1)
         SELECT count(*) FROM changed",
        to_first_purchase = days("m.first_purchase_at", "u.registered_at"),
    )
}

/// The incremental refresh; None when so many users changed that a full one is cheaper.
fn incremental(
    client: &mut SpiClient<'_>,
    work: &Work,
    s: &Sources,
    as_of: TimestampWithTimeZone,
    max_share: f64,
) -> Result<Option<Done>> {
    let started = Instant::now();
    // the oldest time a stored row is read at (the store's, but for rows from before
    // 0.14.0 without a registration time), and how many there are
    let (oldest, stored) = {
        let row = plans::select(
            client,
            "SELECT min(as_of), count(*) FROM customer_analyzer.user_metrics",
            &[],
            &[],
        )?;
        let row = row.first();
        let oldest = row
            .get::<TimestampWithTimeZone>(1)
            .ctx("finding the oldest stored row")?
            .unwrap_or(as_of);
        let stored = row
            .get::<i64>(2)
            .ctx("counting the stored users")?
            .unwrap_or(0);
        (oldest, stored)
    };
    // a one-off statement, so that PostgreSQL may scan the events in parallel (it plans
    // no parallel scan for a prepared one)
    let changed = client
        .select(&changed_users_sql(s), None, &[as_of.into(), oldest.into()])
        .ctx("finding the users that changed")?;
    let row = changed.first();
    let ids = |i: usize| -> Result<Vec<i64>> {
        Ok(row
            .get::<Vec<i64>>(i)
            .ctx("finding the users that changed")?
            .unwrap_or_default())
    };
    let (whole, edge) = (ids(1)?, ids(2)?);
    pgrx::debug1!(
        "customer_analyzer: {} users to read whole, {} from their last 90 days, of {stored}, found in {:.1} s",
        whole.len(),
        edge.len(),
        started.elapsed().as_secs_f64()
    );
    // a user read from their last 90 days counts as one read whole: the users whose
    // events cross windows' edges are the active ones, most of whose events are recent
    // (87% in the 1M-user demo)
    if (whole.len() + edge.len()) as f64 > max_share * stored as f64 {
        return Ok(None);
    }
    let products = products::table(client, s)?;
    let t = to_unix_micros(as_of);
    let (mut computed, mut recent) = (0i64, 0i64);
    // users read from their whole history
    let mut batches = whole.chunks(BATCH_USERS);
    crate::work::pipeline(
        client,
        work,
        |client| {
            batches
                .next()
                .map(|ids| feature_store::read_histories(client, s, ids, as_of, None))
                .transpose()
        },
        compute_whole(t, products.clone()),
        |client, rows| {
            computed += rows.len() as i64;
            feature_store::store_rows(client, Store::Filled, as_of, &rows)
        },
    )?;
    // users whose events only entered or left windows: their stored row, moved, with the
    // windowed features from their last 90 days
    let reach_start = from_unix_micros(t - WINDOW_REACH_MICROS)
        .ok_or_else(|| error::internal("the refresh's time", t))?;
    let mut batches = edge.chunks(BATCH_USERS);
    crate::work::pipeline(
        client,
        work,
        |client| {
            let Some(ids) = batches.next() else {
                return Ok(None);
            };
            // the histories first: their arrays are made in the batch's memory context,
            // which SPI leaves after its first statement (the ids below stay, 16 kB)
            let histories = feature_store::read_histories(
                client,
                s,
                ids,
                as_of,
                Some(vec![reach_start; ids.len()]),
            )?;
            let mut stored = feature_store::stored_before(client, ids, as_of)?;
            Ok(Some(
                histories
                    .into_iter()
                    .filter_map(|h| Some((stored.remove(&h.user.user_id)?, h)))
                    .collect::<Vec<_>>(),
            ))
        },
        move |users: Vec<(Computed, History)>| -> Vec<Computed> {
            users
                .iter()
                .filter_map(|((features, times), h)| {
                    roll_forward(t, &h.user, &h.events, features, times, (*products).as_ref())
                })
                .collect()
        },
        |client, rows| {
            recent += rows.len() as i64;
            feature_store::store_rows(client, Store::Filled, as_of, &rows)
        },
    )?;
    // users gone from the users table, or registered at or after as_of now
    let started = Instant::now();
    plans::update(
        client,
        &format!(
            "DELETE FROM customer_analyzer.feature_store m
             WHERE NOT EXISTS (SELECT FROM {} src
                               WHERE src.id = m.user_id AND src.registered_at::timestamptz < $1
                                 AND src.registered_at::timestamptz > '-infinity')",
            s.users
        ),
        &[TIMESTAMPTZ],
        &[as_of.into()],
    )?;
    let changed = plans::update(
        client,
        &users_changed_sql(s),
        &[TIMESTAMPTZ],
        &[as_of.into()],
    )?
    .first()
    .get_one::<i64>()
    .ctx("bringing in the users table's changes")?
    .unwrap_or(0);
    let moved = plans::select(
        client,
        "SELECT count(*) FROM customer_analyzer.feature_store WHERE as_of < $1",
        &[TIMESTAMPTZ],
        &[as_of.into()],
    )?
    .first()
    .get_one::<i64>()
    .ctx("counting the rows carried forward")?
    .unwrap_or(0);
    pgrx::debug1!(
        "customer_analyzer: {moved} rows carried to the new time ({changed} of them with a changed users row), those of users gone deleted, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Some(Done {
        full_because: None,
        computed,
        recent,
        moved,
    }))
}
