//! The feature store: `user_features(as_of)` (via `_feature_query`), the bulk refresh in
//! SQL, and the refresh of some users (one, or the real-time worker's batch) computed by
//! the core from their event histories.

use customer_analyzer_core::catalog::{Kind, FEATURES};
use customer_analyzer_core::features::{
    carry_forward, compute_features_timed, ActivityTimes, FeatureValue, FeatureVector,
};
use customer_analyzer_core::frame::Frame;
use customer_analyzer_core::history_cache::HistoryCache;
use customer_analyzer_core::snapshots::History;
use pgrx::datum::DatumWithOid;
use pgrx::datum::{FromDatum, IntoDatum};
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiHeapTupleData};
use pgrx::{PgBuiltInOids, PgOid};
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use crate::cursor::{fetch_each_in_place, Deformed};
use crate::error::{self, Result, SpiContext};
use crate::features_sql::{feature_query, history_query, Scope};
use crate::plans;
use crate::plans::types::{INT8, INT8_ARRAY, TIMESTAMPTZ, TIMESTAMPTZ_ARRAY};
use crate::products;
use crate::source::{self, Sources};
use crate::time::{from_unix_micros, to_unix_micros};
use crate::training_set;

/// The feature query over the configured tables; `user_features()` executes it.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn _feature_query(one_user: bool) -> Result<String> {
    Spi::connect(|client| {
        let s = source::load(client)?;
        Ok(feature_query(
            &s,
            if one_user {
                Scope::SomeUsers
            } else {
                Scope::AllUsers
            },
        ))
    })
}

/// One field of [`ActivityTimes`].
pub type TimeField = fn(&mut ActivityTimes) -> &mut Option<i64>;

/// The columns of the feature_store table (and the user_metrics view) after the
/// features that keep each user's [`ActivityTimes`], in their order there, each with
/// its field.
pub const TIME_COLUMNS: [(&str, TimeField); 6] = [
    ("first_event_at", |t| &mut t.first_at),
    ("last_event_at", |t| &mut t.last_at),
    ("first_purchase_at", |t| &mut t.first_purchase),
    ("last_purchase_at", |t| &mut t.last_purchase),
    ("last_cart_at", |t| &mut t.last_cart),
    ("registered_at", |t| &mut t.registered),
];

/// A user's features as stored: the values and the times the incremental refresh moves
/// them from.
pub type Computed = (FeatureVector, ActivityTimes);

/// Whether the rows written are likely stored already.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Store {
    /// Most users have a stored row (the worker, the incremental refresh).
    Filled,
    /// The store was emptied in this transaction (the full refresh): probing it for each
    /// row first would only meet the deleted rows.
    Emptied,
}

/// Upsert into the feature_store table of rows given as arrays, in user id order: `$1` the as_of,
/// `$2` the user ids (bigint[]), then one array per catalogued feature in its column's
/// type, then the activity times, one timestamptz[] per [`TIME_COLUMNS`]. Into a filled
/// store, stored users are updated in place and only new ones inserted: an update writes
/// one WAL record a row where `ON CONFLICT DO UPDATE` writes two (it locks the row
/// first), and the real-time worker's WAL is what the shop's commits wait on. A stored
/// row computed for a later as_of (the worker's, written while a bulk refresh ran) is
/// kept.
fn store_sql(into: Store) -> &'static str {
    static SQL: [OnceLock<String>; 2] = [OnceLock::new(), OnceLock::new()];
    SQL[into as usize].get_or_init(|| {
        let cols: Vec<&str> = FEATURES
            .iter()
            .map(|f| f.name)
            .chain(TIME_COLUMNS.iter().map(|(c, _)| *c))
            .collect();
        let arrays: Vec<String> = FEATURES
            .iter()
            .map(|f| f.kind.sql_type())
            .chain(TIME_COLUMNS.iter().map(|_| "timestamptz"))
            .enumerate()
            .map(|(i, t)| format!("${}::{t}[]", i + 3))
            .collect();
        let set: Vec<String> = cols.iter().map(|c| format!("EXCLUDED.{c}")).collect();
        let from_r: Vec<String> = cols.iter().map(|c| format!("r.{c}")).collect();
        let (updated, only_new) = match into {
            Store::Filled => (
                format!(
                    ",
                  updated AS (
                      UPDATE customer_analyzer.feature_store AS m
                      SET ({cols}, as_of, refreshed_at) = ROW({from_r}, $1, clock_timestamp())
                      FROM r WHERE m.user_id = r.user_id AND m.as_of <= $1
                      RETURNING m.user_id)",
                    cols = cols.join(", "),
                    from_r = from_r.join(", "),
                ),
                "WHERE NOT EXISTS (SELECT FROM updated u WHERE u.user_id = r.user_id)",
            ),
            // a row another session stored meanwhile (the worker's) still meets the
            // conflict clause
            Store::Emptied => (String::new(), ""),
        };
        format!(
            "WITH r AS (SELECT * FROM unnest($2::bigint[], {arrays}) AS r(user_id, {cols})){updated}
             INSERT INTO customer_analyzer.feature_store AS m (user_id, {cols}, as_of, refreshed_at)
             SELECT r.*, $1, clock_timestamp() FROM r
             {only_new}
             ORDER BY r.user_id
             ON CONFLICT (user_id) DO UPDATE
             SET ({cols}, as_of, refreshed_at) = ROW({set}, EXCLUDED.as_of, EXCLUDED.refreshed_at)
             WHERE m.as_of <= EXCLUDED.as_of",
            cols = cols.join(", "),
            arrays = arrays.join(", "),
            set = set.join(", "),
        )
    })
}

/// Whether `user_id` is in the shop's users table.
pub fn user_exists(client: &SpiClient<'_>, s: &Sources, user_id: i64) -> Result<bool> {
    Ok(plans::select(
        client,
        &format!("SELECT EXISTS (SELECT 1 FROM {} WHERE id = $1)", s.users),
        &[INT8],
        &[user_id.into()],
    )?
    .first()
    .get_one::<bool>()
    .ctx("looking up the user")?
    .unwrap_or(false))
}

/// The feature store's rows: `user_id`, the features, then `as_of` (and `refreshed_at`),
/// the layout every feature row read here has.
pub const STORE_ROWS: &str = "SELECT m.* FROM customer_analyzer.user_metrics m";

/// A row laid out as every query here selects features: `user_id`, the catalog's
/// features in order, then one more column (`as_of`, or a training row's label).
pub struct FeatureRow<'a, R: Columns>(pub &'a R);

/// A row read by column number (from 1): as pgrx reads it, or taken apart at once.
pub trait Columns {
    fn column<T: FromDatum + IntoDatum>(&self, i: usize) -> Result<Option<T>>;
}

impl Columns for SpiHeapTupleData<'_> {
    fn column<T: FromDatum + IntoDatum>(&self, i: usize) -> Result<Option<T>> {
        self.get::<T>(i).ctx(READING_FEATURES)
    }
}

impl Columns for Deformed<'_> {
    fn column<T: FromDatum + IntoDatum>(&self, i: usize) -> Result<Option<T>> {
        self.get::<T>(i, READING_FEATURES)
    }
}

const READING_FEATURES: &str = "reading features";

/// The column of a feature_store row (`m.*`) `i` places after its features: 0 as_of,
/// 1 refreshed_at, then the [`TIME_COLUMNS`], then what a statement selects after the row.
fn after_features(i: usize) -> usize {
    FEATURES.len() + 2 + i
}

impl<R: Columns> FeatureRow<'_, R> {
    pub fn user_id(&self) -> Result<i64> {
        self.0
            .column::<i64>(1)?
            .ok_or_else(|| error::internal(READING_FEATURES, "NULL user_id"))
    }

    /// The catalog's features (columns 2 onwards).
    pub fn features(&self) -> Result<Vec<FeatureValue>> {
        let mut values = Vec::with_capacity(FEATURES.len());
        for (i, f) in FEATURES.iter().enumerate() {
            let c = 2 + i;
            values.push(match f.kind {
                Kind::Count => FeatureValue::Num(self.0.column::<i64>(c)?.map(|v| v as f64)),
                Kind::Real => FeatureValue::Num(self.0.column::<f64>(c)?),
                Kind::Category => FeatureValue::Text(self.0.column::<String>(c)?),
            });
        }
        Ok(values)
    }

    /// The column after the features.
    pub fn last<T: FromDatum + IntoDatum>(&self) -> Result<Option<T>> {
        self.0.column::<T>(after_features(0))
    }

    /// The `as_of` after the features.
    pub fn as_of(&self) -> Result<TimestampWithTimeZone> {
        self.last::<TimestampWithTimeZone>()?
            .ok_or_else(|| error::internal(READING_FEATURES, "NULL as_of"))
    }

    /// The activity and registration times of a feature_store row (`m.*`).
    pub fn times(&self) -> Result<ActivityTimes> {
        let mut times = ActivityTimes::default();
        for (i, (_, field)) in TIME_COLUMNS.iter().enumerate() {
            *field(&mut times) = self
                .0
                .column::<TimestampWithTimeZone>(after_features(2 + i))?
                .map(to_unix_micros);
        }
        Ok(times)
    }
}

/// One user's features for scoring: the stored row, or (when the store has none)
/// computed now without writing. Errors for unknown users and users with no features.
pub fn features_for_user(
    client: &SpiClient<'_>,
    user_id: i64,
) -> Result<(Vec<FeatureValue>, TimestampWithTimeZone)> {
    // the table and the core rather than the view: a third of the lookup's time went to
    // the view's join and expressions. The store's time in the same statement, so that
    // the row and the time are of one snapshot (a refresh committing between two reads
    // would carry a row it rewrote).
    let stored = plans::select(
        client,
        "SELECT m.*, (SELECT r.as_of FROM customer_analyzer.refresh_state r)
         FROM customer_analyzer.feature_store m WHERE m.user_id = $1",
        &[INT8],
        &[user_id.into()],
    )?;
    if let Some(tuple) = stored.into_iter().next() {
        let row = FeatureRow(&tuple);
        let (mut values, as_of) = (row.features()?, row.as_of()?);
        let store_as_of = tuple
            .get::<TimestampWithTimeZone>(after_features(2 + TIME_COLUMNS.len()))
            .ctx("reading the store's time")?
            .map(to_unix_micros);
        // a row the last refresh left unwritten, read at its time (as user_metrics reads it)
        if let Some(store) = store_as_of.filter(|&t| t > to_unix_micros(as_of)) {
            let times = row.times()?;
            if times.registered.is_some() {
                let mut carried = FeatureVector { user_id, values };
                carry_forward(store, &mut carried, &times);
                values = carried.values;
                let store = from_unix_micros(store)
                    .ok_or_else(|| error::internal("reading the store's time", store))?;
                return Ok((values, store));
            }
        }
        return Ok((values, as_of));
    }
    let s = source::load(client)?;
    if !user_exists(client, &s, user_id)? {
        return Err(error::unknown_user(user_id, &s.users));
    }
    let as_of = pgrx::datum::now();
    match compute_users(client, &s, &[user_id], as_of)?.pop() {
        Some(row) => Ok((row.values, as_of)),
        None => Err(error::not_ready(
            format!("user {user_id} registered after now() and has no features yet"),
            "Score the user once their registration time has passed.",
        )),
    }
}

/// Recomputes one user's features as of now; the real-time path calls this per event.
/// Returns false when the user registered after now and so has no features yet.
#[pg_extern(name = "refresh_features", volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn refresh_user_features(user_id: Option<i64>) -> Result<bool> {
    error::require_primary("refresh_features(user_id)")?;
    let user_id = user_id.ok_or_else(|| error::null_argument("user_id"))?;
    Spi::connect_mut(|client| {
        let s = source::load(client)?;
        refresh_one(client, &s, user_id)
    })
}

/// Recomputes one user's features as of now into the feature store; false when the user
/// registered after now. Errors for an unknown user.
pub fn refresh_one(client: &mut SpiClient<'_>, s: &Sources, user_id: i64) -> Result<bool> {
    if !user_exists(client, s, user_id)? {
        return Err(error::unknown_user(user_id, &s.users));
    }
    Ok(!refresh_users(client, s, &[user_id], None)?
        .user_ids
        .is_empty())
}

/// The rescoring worker's kept histories, and what the queue says of the batch's users.
pub struct Kept<'a> {
    pub cache: &'a mut HistoryCache,
    /// Per user of the batch, the earliest `created_at` queued since (Unix microseconds).
    pub earliest: &'a [i64],
}

/// Recomputes the features of `user_ids` (distinct) as of now into the feature store, the
/// real-time worker's batch, and returns the rows written, in user id order (a user
/// registered after now, or missing from the users table, has none). With `kept`, the
/// histories it holds are read only from their newest event on.
pub fn refresh_users(
    client: &mut SpiClient<'_>,
    s: &Sources,
    user_ids: &[i64],
    kept: Option<Kept<'_>>,
) -> Result<StoredRows> {
    let as_of = pgrx::datum::now();
    let computed = features_of(client, s, user_ids, as_of, kept)?;
    store_rows(client, Store::Filled, as_of, &computed)?;
    let rows: Vec<&FeatureVector> = computed.iter().map(|(f, _)| f).collect();
    let mut out = StoredRows {
        user_ids: Vec::with_capacity(rows.len()),
        as_of: vec![as_of; rows.len()],
        frame: Frame::for_catalog(),
    };
    for row in rows {
        out.frame.push_catalog_row(&row.values);
        out.user_ids.push(row.user_id);
    }
    Ok(out)
}

/// Writes `rows`, computed as of `as_of`, into the feature store (an upsert: see
/// [`store_sql`]). The arrays are made in the current memory context.
pub fn store_rows(
    client: &mut SpiClient<'_>,
    into: Store,
    as_of: TimestampWithTimeZone,
    computed: &[Computed],
) -> Result<()> {
    let rows: Vec<&FeatureVector> = computed.iter().map(|(f, _)| f).collect();
    let mut args: Vec<DatumWithOid<'_>> = Vec::with_capacity(FEATURES.len() + 7);
    let mut types: Vec<PgOid> = Vec::with_capacity(FEATURES.len() + 7);
    args.push(as_of.into());
    types.push(TIMESTAMPTZ);
    args.push(rows.iter().map(|r| r.user_id).collect::<Vec<i64>>().into());
    types.push(INT8_ARRAY);
    for (i, f) in FEATURES.iter().enumerate() {
        fn value(r: &FeatureVector, i: usize) -> &FeatureValue {
            &r.values[i]
        }
        let (array, oid) = match f.kind {
            Kind::Count => (
                rows.iter()
                    .map(|r| value(r, i).as_f64().map(|v| v as i64))
                    .collect::<Vec<Option<i64>>>()
                    .into(),
                PgBuiltInOids::INT8ARRAYOID,
            ),
            Kind::Real => (
                rows.iter()
                    .map(|r| value(r, i).as_f64())
                    .collect::<Vec<Option<f64>>>()
                    .into(),
                PgBuiltInOids::FLOAT8ARRAYOID,
            ),
            Kind::Category => (
                rows.iter()
                    .map(|r| value(r, i).as_text().map(str::to_owned))
                    .collect::<Vec<Option<String>>>()
                    .into(),
                PgBuiltInOids::TEXTARRAYOID,
            ),
        };
        args.push(array);
        types.push(PgOid::BuiltIn(oid));
    }
    for (_, field) in TIME_COLUMNS {
        args.push(
            computed
                .iter()
                .map(|(_, t)| field(&mut t.clone()).and_then(from_unix_micros))
                .collect::<Vec<Option<TimestampWithTimeZone>>>()
                .into(),
        );
        types.push(TIMESTAMPTZ_ARRAY);
    }
    plans::update(client, store_sql(into), &types, &args)?;
    Ok(())
}

/// Users whose histories are fetched from the cursor at a time.
const FETCH_USERS: i64 = 500;

/// The features of `user_ids` as of `as_of`, computed by the core from one read of their
/// histories (training's query, one index scan per user) rather than by the set-based
/// SQL, whose per-event aggregates cost milliseconds per user; in user id order, without
/// the users registered at or after `as_of` or missing from the users table.
pub fn compute_users(
    client: &SpiClient<'_>,
    s: &Sources,
    user_ids: &[i64],
    as_of: TimestampWithTimeZone,
) -> Result<Vec<FeatureVector>> {
    Ok(features_of(client, s, user_ids, as_of, None)?
        .into_iter()
        .map(|(f, _)| f)
        .collect())
}

/// [`compute_users`], reading after the newest kept event of the users `kept` holds
/// (only with an index on the events' user_id: the query without one reads them all).
fn features_of(
    client: &SpiClient<'_>,
    s: &Sources,
    user_ids: &[i64],
    as_of: TimestampWithTimeZone,
    mut kept: Option<Kept<'_>>,
) -> Result<Vec<Computed>> {
    let products = products::table(client, s)?;
    let t = to_unix_micros(as_of);
    let after: HashMap<i64, i64> = match &kept {
        Some(k) if s.events_by_user => user_ids
            .iter()
            .zip(k.earliest)
            .filter_map(|(&u, &earliest)| Some((u, k.cache.read_after(u, earliest, t)?)))
            .filter(|(_, a)| from_unix_micros(*a).is_some())
            .collect(),
        _ => HashMap::new(),
    };
    let bounds = (kept.is_some() && s.events_by_user).then(|| {
        user_ids
            .iter()
            .map(|u| {
                after
                    .get(u)
                    .and_then(|&a| from_unix_micros(a))
                    .unwrap_or_else(TimestampWithTimeZone::negative_infinity)
            })
            .collect()
    });
    let histories = read_histories(client, s, user_ids, as_of, bounds)?;
    let seen: HashSet<i64> = histories.iter().map(|h| h.user.user_id).collect();
    let mut out: Vec<Computed> = Vec::with_capacity(histories.len());
    for mut h in histories {
        check_for_interrupts!();
        if let Some(k) = kept.as_mut() {
            let from = after.get(&h.user.user_id).copied();
            h.events = k
                .cache
                .merge(h.user.user_id, from, std::mem::take(&mut h.events), t)
                // cannot happen (nothing is evicted during a batch); should it, the
                // batch fails and the worker's per-user retry reads the user in full
                .ok_or_else(|| {
                    error::internal("reading kept histories", "a kept history went mid-batch")
                })?;
        }
        if let Some(f) = compute_features_timed(t, &h.user, &h.events, (*products).as_ref()) {
            out.push(f);
        }
    }
    if let Some(k) = kept.as_mut() {
        for u in user_ids.iter().filter(|u| !seen.contains(u)) {
            k.cache.forget(*u);
        }
        k.cache.trim();
    }
    Ok(out)
}

/// The histories of `user_ids` before `as_of` (training's query: one index scan per
/// user), in user id order, without users missing from the users table or registered at
/// or after `as_of`. With `after` (one bound per user; only with an index on the events'
/// user_id), each user's events after their bound only.
pub fn read_histories(
    client: &SpiClient<'_>,
    s: &Sources,
    user_ids: &[i64],
    as_of: TimestampWithTimeZone,
    after: Option<Vec<TimestampWithTimeZone>>,
) -> Result<Vec<History>> {
    let mut cursor = match after {
        Some(bounds) => plans::cursor(
            client,
            &history_query(s, Scope::SomeUsers, true),
            &[TIMESTAMPTZ, TIMESTAMPTZ, INT8_ARRAY, TIMESTAMPTZ_ARRAY],
            &[
                as_of.into(),
                as_of.into(),
                user_ids.to_vec().into(),
                bounds.into(),
            ],
        )?,
        None => plans::cursor(
            client,
            &history_query(s, Scope::SomeUsers, false),
            &[TIMESTAMPTZ, TIMESTAMPTZ, INT8_ARRAY],
            &[as_of.into(), as_of.into(), user_ids.to_vec().into()],
        )?,
    };
    let mut out: Vec<History> = Vec::with_capacity(user_ids.len());
    while fetch_each_in_place(&mut cursor, FETCH_USERS, training_set::READING, |row| {
        let h = training_set::history(row)?;
        // a users table without a unique id may hold a user twice (the rows come in id
        // order): keep the first
        if out
            .last()
            .is_none_or(|last| last.user.user_id != h.user.user_id)
        {
            out.push(h);
        }
        Ok(())
    })? > 0
    {}
    Ok(out)
}

/// The stored rows of `user_ids` computed before `before`, with their activity times.
pub fn stored_before(
    client: &SpiClient<'_>,
    user_ids: &[i64],
    before: TimestampWithTimeZone,
) -> Result<HashMap<i64, Computed>> {
    // the table's layout: user_id, the features, as_of, refreshed_at, TIME_COLUMNS
    let sql = "SELECT m.* FROM customer_analyzer.feature_store m
               WHERE m.user_id = ANY($1) AND m.as_of < $2";
    let rows = plans::select(
        client,
        sql,
        &[INT8_ARRAY, TIMESTAMPTZ],
        &[user_ids.to_vec().into(), before.into()],
    )?;
    let mut out = HashMap::with_capacity(rows.len());
    // the result is freed below: the refresh reads one a batch, 2 MB each
    for row in rows {
        let r = FeatureRow(&row);
        let times = r.times()?;
        let user_id = r.user_id()?;
        let values = r.features()?;
        out.insert(user_id, (FeatureVector { user_id, values }, times));
    }
    crate::cursor::free_last_batch();
    Ok(out)
}

/// Errors for the first of `user_ids` missing from the users table.
pub fn check_users_exist(client: &SpiClient<'_>, s: &Sources, user_ids: &[i64]) -> Result<()> {
    let missing = plans::select(
        client,
        &format!(
            "SELECT x.id FROM unnest($1::bigint[]) AS x(id)
             WHERE NOT EXISTS (SELECT 1 FROM {} u WHERE u.id = x.id) ORDER BY x.id LIMIT 1",
            s.users
        ),
        &[INT8_ARRAY],
        &[user_ids.to_vec().into()],
    )?;
    match missing.into_iter().next() {
        Some(row) => Err(error::unknown_user(
            row.get::<i64>(1)
                .ctx("looking up users")?
                .unwrap_or_default(),
            &s.users,
        )),
        None => Ok(()),
    }
}

/// The stored feature rows of some users, as the scorers read them.
pub struct StoredRows {
    pub user_ids: Vec<i64>,
    pub as_of: Vec<TimestampWithTimeZone>,
    pub frame: Frame,
}

impl StoredRows {
    pub fn new() -> StoredRows {
        StoredRows {
            user_ids: Vec::new(),
            as_of: Vec::new(),
            frame: Frame::for_catalog(),
        }
    }

    /// Appends the next `n` rows of a cursor over stored feature rows (`STORE_ROWS`, or
    /// `user_features()` with the as_of after its columns); returns how many there were
    /// (0 at its end).
    pub fn read(
        &mut self,
        cursor: &mut pgrx::spi::SpiCursor<'_>,
        n: i64,
        what: &'static str,
    ) -> Result<usize> {
        fetch_each_in_place(cursor, n, what, |row| {
            let row = row.deform();
            let row = FeatureRow(&row);
            self.frame.push_catalog_row(&row.features()?);
            self.user_ids.push(row.user_id()?);
            self.as_of.push(row.as_of()?);
            Ok(())
        })
    }
}

/// The next `n` rows of a cursor over stored feature rows (see [`StoredRows::read`]);
/// None at its end.
pub fn next_stored_rows(
    cursor: &mut pgrx::spi::SpiCursor<'_>,
    n: i64,
    what: &'static str,
) -> Result<Option<StoredRows>> {
    let mut out = StoredRows::new();
    Ok((out.read(cursor, n, what)? > 0).then_some(out))
}
