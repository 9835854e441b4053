//! The data-quality report: how many source rows each documented data rule sets aside,
//! counted with the same SQL conditions the feature query applies (`events::sql`).
//!
//! `data_quality()` counts over the source tables. The report a full refresh raises
//! counts the same numbers without parsing every event twice: the refresh's own read
//! (every event of every user it computes) counts the type, amount and product-id rules
//! of what it read (core `SetAside`), and SQL counts the rest in one scan: the rules about
//! ids, times and `event_data`'s kind over every event, and those three content rules
//! over the events the read skipped.
//!
//! Under READ COMMITTED the read and the report's scan are two statements with two
//! snapshots: with events written in between, the three content counts are of the
//! events as the refresh read them (what it set aside) and the rest as of the report.

use customer_analyzer_core::events::{sql, EventKind, SetAside};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::cell::Cell;

use crate::error::{self, Result, SpiContext};
use crate::gucs;
use crate::source::{self, Sources};
use crate::statement;
use crate::time::to_unix_micros;

/// Every rule: its check's name and what the rule does with the rows, in the report's
/// order (the order of the counts query's columns).
const RULES: [(&str, &str); 13] = [
    (
        "events_without_user_id",
        "ignored: the event cannot be attributed",
    ),
    (
        "events_without_created_at",
        "ignored: the event cannot be placed in time",
    ),
    (
        "events_at_infinite_time",
        "never read: infinity or -infinity is not a time",
    ),
    (
        "events_at_or_after_as_of",
        "not read: features only see events strictly before as_of",
    ),
    (
        "events_in_the_future",
        "never read: as_of cannot be in the future",
    ),
    (
        "events_of_unknown_users",
        "ignored: no users row to attach them to",
    ),
    (
        "events_of_unknown_type",
        "count as activity (events_* and sessions) only",
    ),
    (
        "events_with_malformed_event_data",
        "read as an empty object (not an object, NULL, or json that jsonb cannot hold)",
    ),
    (
        "purchases_without_valid_amount",
        "count as purchases but add no money (missing, negative, NaN, text or >= 1e15)",
    ),
    (
        "product_events_without_valid_product_id",
        "count as events but name no product (not a whole number in canonical form, e.g. \"007\")",
    ),
    (
        "users_without_registered_at",
        "no features: the user has no registration time",
    ),
    (
        "users_with_infinite_registered_at",
        "no features: infinity or -infinity is not a time",
    ),
    (
        "users_without_id",
        "no features: the user cannot be referenced",
    ),
];

/// How many events a full refresh's read set aside under the rule `name` (zero for the
/// rules its read does not count).
fn read_count(read: &SetAside, name: &str) -> i64 {
    match name {
        "events_of_unknown_type" => read.unknown_type,
        "purchases_without_valid_amount" => read.bad_amount,
        "product_events_without_valid_product_id" => read.bad_product,
        _ => 0,
    }
}

/// Which events the content rules (type, amount, product id) are counted over.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Over {
    /// Every event.
    Every,
    /// Only those a full refresh as of `$1` did not read: the history query
    /// (`features_sql::history_query`) reads the events at or before `$1` and after
    /// -infinity of the ids with a users row registered before `$1` and after -infinity.
    Unread,
}

/// One row of counts, one column per [`RULES`] entry, as of `$1`.
fn counts_query(s: &Sources, over: Over) -> String {
    let (events, users) = (&s.events, &s.users);
    let data = format!(
        "({})",
        sql::event_data("ev.event_data", s.event_data_is_json)
    );
    let unreadable = sql::unreadable_json("ev.event_data", s.event_data_is_json);
    let known = sql::known_types();
    let amount = sql::is_amount(&format!("{data} ->> 'amount'"));
    let product = sql::is_product_id(&format!("{data} ->> 'product_id'"));
    let product_kinds = EventKind::KNOWN
        .iter()
        .filter(|k| k.is_product_event())
        .map(|k| format!("'{}'", k.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    // checked first in each content rule's filter, so the rule's own test (jsonb,
    // regular expressions) runs only on the events the refresh did not read
    let only = match over {
        Over::Every => "",
        Over::Unread => {
            "NOT coalesce(us.readable AND ev.created_at::timestamptz <= $1
                          AND ev.created_at::timestamptz > '-infinity', false) AND "
        }
    };
    format!(
        r#"WITH us AS (
    SELECT src.id::bigint AS id,
           coalesce(bool_or(src.registered_at::timestamptz < $1
                            AND src.registered_at::timestamptz > '-infinity'), false) AS readable
    FROM {users} src
    WHERE src.id IS NOT NULL
    GROUP BY 1
),
e AS (
    SELECT count(*) FILTER (WHERE ev.user_id IS NULL) AS null_user,
           count(*) FILTER (WHERE ev.created_at IS NULL) AS null_time,
           count(*) FILTER (WHERE ev.created_at::timestamptz IN ('infinity', '-infinity')) AS infinite_time,
           count(*) FILTER (WHERE ev.created_at::timestamptz >= $1) AS after_as_of,
           count(*) FILTER (WHERE ev.created_at::timestamptz > clock_timestamp()
                              AND ev.created_at::timestamptz < 'infinity') AS future,
           count(*) FILTER (WHERE ev.user_id IS NOT NULL AND us.id IS NULL) AS orphans,
           count(*) FILTER (WHERE {only}(ev.event_type IS NULL OR ev.event_type::text NOT IN ({known}))) AS unknown_type,
           count(*) FILTER (WHERE ev.event_data IS NULL OR {unreadable}
                              OR jsonb_typeof({data}) <> 'object') AS bad_data,
           count(*) FILTER (WHERE {only}ev.event_type::text = 'purchase'
                              AND coalesce(NOT ({amount}), true)) AS bad_amount,
           count(*) FILTER (WHERE {only}ev.event_type::text IN ({product_kinds})
                              AND coalesce(NOT ({product}), true)) AS bad_product
    FROM {events} ev LEFT JOIN us ON us.id = ev.user_id::bigint
),
u AS (
    SELECT count(*) FILTER (WHERE registered_at IS NULL) AS null_registration,
           count(*) FILTER (WHERE registered_at::timestamptz IN ('infinity', '-infinity')) AS infinite_registration,
           count(*) FILTER (WHERE id IS NULL) AS null_id
    FROM {users}
)
SELECT e.null_user, e.null_time, e.infinite_time, e.after_as_of, e.future, e.orphans,
       e.unknown_type, e.bad_data, e.bad_amount, e.bad_product,
       u.null_registration, u.infinite_registration, u.null_id
FROM e, u"#
    )
}

/// The counts of every rule as of `as_of`, adding `read` (what a full refresh's read
/// found among the events it read) to SQL's counts over the rest.
pub(crate) fn counts(
    client: &SpiClient<'_>,
    as_of: TimestampWithTimeZone,
    read: Option<SetAside>,
) -> Result<Vec<(&'static str, i64, &'static str)>> {
    const WHAT: &str = "checking data quality";
    let s = source::load(client)?;
    let over = if read.is_some() {
        Over::Unread
    } else {
        Over::Every
    };
    // the hash of every user id is 50-60 MB per process: with the default work_mem it
    // would spill every event to disk, so the feature query's work_mem, restored after
    let setting = |value: &str| -> Result<String> {
        client
            .select(
                "SELECT pg_catalog.set_config('work_mem', $1, true)",
                None,
                &[value.into()],
            )
            .ctx(WHAT)?
            .first()
            .get_one::<String>()
            .ctx(WHAT)
            .map(Option::unwrap_or_default)
    };
    let caller = client
        .select("SELECT pg_catalog.current_setting('work_mem')", None, &[])
        .ctx(WHAT)?
        .first()
        .get_one::<String>()
        .ctx(WHAT)?
        .unwrap_or_default();
    setting(&format!("{}kB", gucs::feature_work_mem_kb()))?;
    // a one-off statement, so that PostgreSQL may scan the events in parallel (it
    // plans no parallel scan for a prepared one)
    let rows = client
        .select(&counts_query(&s, over), None, &[as_of.into()])
        .ctx(WHAT)?;
    let row = rows.first();
    let n = RULES
        .iter()
        .enumerate()
        .map(|(i, _)| Ok(row.get::<i64>(i + 1).ctx(WHAT)?.unwrap_or(0)))
        .collect::<Result<Vec<i64>>>()?;
    setting(&caller)?;
    let read = read.unwrap_or_default();
    Ok(RULES
        .iter()
        .zip(n)
        .map(|(&(name, rule), n)| (name, n + read_count(&read, name), rule))
        .collect())
}

/// What a full refresh's read found, kept for the one report that follows it in the same
/// transaction (`refresh_features()` calls `_refresh_store`, then
/// `_notice_data_quality` with the same as_of). Used once: a later report in the same
/// transaction (after a savepoint rolled back and the events changed, say) counts anew.
#[derive(Clone, Copy)]
struct StoreRead {
    as_of: i64,
    transaction: u32,
    set_aside: SetAside,
    used: bool,
}

thread_local! {
    static LAST_STORE_READ: Cell<Option<StoreRead>> = const { Cell::new(None) };
}

/// Keeps what the full refresh as of `as_of`, which has just read every user's events in
/// this transaction, found among them.
pub(crate) fn record_store_read(as_of: TimestampWithTimeZone, set_aside: SetAside) {
    let read = StoreRead {
        as_of: to_unix_micros(as_of),
        transaction: statement::transaction(),
        set_aside,
        used: false,
    };
    LAST_STORE_READ.with(|last| last.set(Some(read)));
}

/// This transaction's read as of `as_of`, if its full refresh left one.
fn this_transactions_read(as_of: TimestampWithTimeZone) -> Option<StoreRead> {
    let transaction = statement::transaction();
    LAST_STORE_READ.with(|last| {
        last.get()
            .filter(|r| r.transaction == transaction && r.as_of == to_unix_micros(as_of))
    })
}

/// What this transaction's full refresh as of `as_of` found among the events it read, if
/// there was one and no report has used it yet; marks it used.
fn take_store_read(as_of: TimestampWithTimeZone) -> Option<SetAside> {
    let read = this_transactions_read(as_of).filter(|r| !r.used)?;
    LAST_STORE_READ.with(|last| last.set(Some(StoreRead { used: true, ..read })));
    Some(read.set_aside)
}

/// Counts the rows each documented data rule sets aside.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn data_quality(
    as_of: default!(Option<TimestampWithTimeZone>, "now()"),
) -> Result<
    TableIterator<
        'static,
        (
            name!(check_name, String),
            name!(rows, i64),
            name!(rule, String),
        ),
    >,
> {
    let as_of = as_of.ok_or_else(|| error::null_argument("as_of"))?;
    let rows = Spi::connect(|client| counts(client, as_of, None))?;
    Ok(TableIterator::new(rows.into_iter().map(
        |(name, n, rule)| (name.to_string(), n, rule.to_string()),
    )))
}

/// Raises one NOTICE that lists every non-zero data-quality count, after a full refresh
/// as of `as_of` (whose read counted the events it read) or on its own.
#[pg_extern(stable, name = "_notice_data_quality")]
#[search_path(pg_catalog, pg_temp)]
fn notice_data_quality(as_of: TimestampWithTimeZone) -> Result<i64> {
    let rows = Spi::connect(|client| report(client, as_of))?;
    let flagged: Vec<String> = rows
        .iter()
        .filter(|(name, n, _)| *n > 0 && *name != "events_at_or_after_as_of")
        .map(|(name, n, rule)| format!("{name}: {n} ({rule})"))
        .collect();
    if !flagged.is_empty() {
        pgrx::notice!(
            "customer_analyzer: some source rows are set aside by the data rules: {}",
            flagged.join("; ")
        );
    }
    Ok(flagged.len() as i64)
}

/// The counts the report after a refresh lists: from the refresh's read and SQL over the
/// rest when this transaction's full refresh was as of `as_of` and no report has used its
/// read yet, else all from SQL.
pub(crate) fn report(
    client: &SpiClient<'_>,
    as_of: TimestampWithTimeZone,
) -> Result<Vec<(&'static str, i64, &'static str)>> {
    counts(client, as_of, take_store_read(as_of))
}

/// Whether this transaction's full refresh as of `as_of` left its counts for the report
/// (`None`: it left none), and whether a report has used them.
#[cfg(any(test, feature = "pg_test"))]
pub(crate) fn store_read_used(as_of: TimestampWithTimeZone) -> Option<bool> {
    this_transactions_read(as_of).map(|r| r.used)
}
