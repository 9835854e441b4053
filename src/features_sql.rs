//! The set-based SQL that computes every catalogued feature over the shop's tables.
//!
//! It implements the rules of `customer_analyzer_core::events` (their SQL spelling comes
//! from `events::sql`, shared with `data_quality()`) and the definitions of
//! `customer_analyzer_core::features` (the reference); the agreement test in
//! `tests.rs` runs both on random shops. `$1` is `as_of`; with [`Scope::SomeUsers`], `$2`
//! is an array of user ids and every scan goes through an index on the user id.

use customer_analyzer_core::events::sql;

use crate::source::Sources;

/// Which users a query computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    AllUsers,
    /// The users in the bigint[] `$2` (one for a single user, a batch for the worker).
    SomeUsers,
}

/// The start of the N-day window, `$1 - N days` in 24-hour days (daylight-saving changes
/// do not move windows), read from the one-row `bounds` CTE so that PostgreSQL computes
/// it once per query rather than once per event.
fn since(days: u32) -> String {
    format!("(SELECT w{days} FROM bounds)")
}

/// The `bounds` CTE that [`since`] reads.
fn bounds() -> String {
    let cols: Vec<String> = [7, 14, 30, 60, 90]
        .iter()
        .map(|d| format!("$1 - interval '{} hours' AS w{d}", d * 24))
        .collect();
    format!("bounds AS (SELECT {})", cols.join(", "))
}

/// The feature query: one row per user registered before `$1`, columns `user_id` then
/// the catalog in order.
pub fn feature_query(s: &Sources, scope: Scope) -> String {
    let only_some = |col: &str| match scope {
        Scope::AllUsers => String::new(),
        Scope::SomeUsers => format!(" AND {col} = ANY($2)"),
    };
    let (status, has_username) = user_columns(s);
    let product_table = product_rows(s);
    let has_products = s.products.is_some();
    let product_count = |expr: &str| {
        if has_products {
            format!("coalesce({expr}, 0)")
        } else {
            "NULL::bigint".to_string()
        }
    };
    let (w7, w14, w30, w60, w90) = (since(7), since(14), since(30), since(60), since(90));
    let bounds = bounds();
    let user_filter = only_some("src.id");
    let event_filter = only_some("e.user_id");
    let data = format!(
        "({})",
        sql::event_data("e.event_data", s.event_data_is_json)
    );
    let valid_amount = sql::is_amount(&format!("{data} ->> 'amount'"));
    let valid_product = sql::is_product_id("seq.raw_product");
    let distinct_cats_viewed = product_count("a.categories_viewed");
    let distinct_cats_bought = product_count("a.categories_bought");
    fill(
        include_str!("../sql/features.sql"),
        &[
            ("bounds", &bounds),
            ("users", &s.users),
            ("events", &s.events),
            ("status", &status),
            ("has_username", &has_username),
            ("user_filter", &user_filter),
            ("event_filter", &event_filter),
            ("product_table", &product_table),
            ("data", &data),
            ("valid_amount", &valid_amount),
            ("valid_product", &valid_product),
            ("w7", &w7),
            ("w14", &w14),
            ("w30", &w30),
            ("w60", &w60),
            ("w90", &w90),
            ("distinct_cats_viewed", &distinct_cats_viewed),
            ("distinct_cats_bought", &distinct_cats_bought),
        ],
    )
}

/// The SQL of `status` and `has_username` over the users table as `src`.
pub fn user_columns(s: &Sources) -> (String, String) {
    let status = if s.has_status {
        "src.status::text"
    } else {
        "NULL::text"
    };
    let has_username = if s.has_username {
        "(src.username IS NOT NULL AND src.username::text <> '')::int::bigint"
    } else {
        "NULL::bigint"
    };
    (status.into(), has_username.into())
}

/// The products as the features read them: one row per id (product_id, category,
/// price), the price only when finite and positive; no rows without a products table.
pub fn product_rows(s: &Sources) -> String {
    match &s.products {
        Some(products) => format!(
            "SELECT DISTINCT ON (p.id) p.id::bigint AS product_id, p.category::text AS category,
           CASE WHEN p.price::float8 > 0 AND p.price::float8 < 'Infinity' THEN p.price::float8 END AS price
    FROM {products} p WHERE p.id IS NOT NULL ORDER BY p.id"
        ),
        None => "SELECT NULL::bigint AS product_id, NULL::text AS category, NULL::float8 AS price WHERE false"
            .to_string(),
    }
}

/// Every user registered before `$1` (with [`Scope::SomeUsers`], only those in the
/// bigint[] `$3`; when `bounded`, and with an index on the events' user_id, only their
/// events after the matching time of the timestamptz[] `$4`) with their events up to
/// `$2`, one row per user:
/// user_id, registered_at, status, has_username, then the events as parallel arrays
/// (at, kind code, amount text, product id text, command; NULL arrays for a user
/// without events). Each event's kind is worked out once and only the `event_data`
/// field its kind reads is extracted, as the text `->>` gives: the core validates it
/// (`events::amount_from_text`, `events::product_id_from_text`, the rules `events::sql`
/// spells as patterns), far cheaper than a regular expression per event. Training
/// computes every snapshot from these rows (see `customer_analyzer_core::snapshots`).
///
/// With an index on the events' user_id, each user's events are one index scan (no
/// sort or hash of all events, which spills to disk at a few million); without one,
/// one scan grouped by user. Users come in id order whatever the plan, so the same data
/// gives the same training rows in the same order, and so the same model.
pub fn history_query(s: &Sources, scope: Scope, bounded: bool) -> String {
    use customer_analyzer_core::events::EventKind;
    let (status, has_username) = user_columns(s);
    let data = sql::event_data("e.event_data", s.event_data_is_json);
    let kind = sql::kind_code("e.event_type::text");
    let purchase = EventKind::Purchase.code();
    let bot_command = EventKind::BotCommand.code();
    let product_kinds = EventKind::KNOWN
        .iter()
        .filter(|k| k.is_product_event())
        .map(|k| k.code().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let (users, events) = (&s.users, &s.events);
    // without bounds the plain filter on the ids: its plan is kept generic, where the
    // join with the bounds is planned for every call (1 ms more for one user)
    let (from, after) = match (scope, bounded) {
        (Scope::AllUsers, _) => (format!("{users} src"), "'-infinity'::timestamptz"),
        (Scope::SomeUsers, false) => (
            format!("{users} src"),
            "'-infinity'::timestamptz",
        ),
        (Scope::SomeUsers, true) => (
            format!("unnest($3::bigint[], $4::timestamptz[]) AS b(id, after) JOIN {users} src ON src.id = b.id"),
            "b.after",
        ),
    };
    let some_users = match (scope, bounded) {
        (Scope::SomeUsers, false) => " AND src.id = ANY($3)",
        _ => "",
    };
    let users_cte = format!(
        "WITH u AS (
    SELECT src.id::bigint AS user_id, src.registered_at::timestamptz AS registered_at,
           {status} AS status, {has_username} AS has_username, {after} AS after
    FROM {from}
    WHERE src.id IS NOT NULL AND src.registered_at::timestamptz < $1
      AND src.registered_at::timestamptz > '-infinity'{some_users}
)"
    );
    // OFFSET 0 keeps the kind computed once per event instead of once per use
    let events_where = |which: &str| {
        format!(
            "(SELECT e.user_id::bigint AS user_id, e.created_at::timestamptz AS at, {data} AS data, {kind} AS kind
          FROM {events} e
          WHERE {which} AND e.created_at::timestamptz <= $2 AND e.created_at::timestamptz > '-infinity'
          OFFSET 0) k"
        )
    };
    let event_columns = format!(
        "k.user_id, k.at, k.kind,
           CASE WHEN k.kind = {purchase} THEN k.data ->> 'amount' END AS amount,
           CASE WHEN k.kind IN ({product_kinds}) THEN k.data ->> 'product_id' END AS product_id,
           CASE WHEN k.kind = {bot_command} THEN k.data ->> 'command' END AS command"
    );
    let arrays =
        "array_agg(ev.at) AS at, array_agg(ev.kind) AS kind, array_agg(ev.amount) AS amount,
           array_agg(ev.product_id) AS product_id, array_agg(ev.command) AS command";
    let outputs = "u.user_id, u.registered_at, u.status, u.has_username,
       h.at, h.kind, h.amount, h.product_id, h.command";
    if s.events_by_user {
        let scan = events_where(if bounded {
            "e.user_id = u.user_id AND e.created_at::timestamptz > u.after"
        } else {
            "e.user_id = u.user_id"
        });
        format!(
            "{users_cte}
SELECT {outputs}
FROM u LEFT JOIN LATERAL (
    SELECT {arrays}
    FROM (SELECT {event_columns} FROM {scan}) ev
) h ON true
ORDER BY u.user_id"
        )
    } else {
        let scan = events_where("e.user_id IS NOT NULL AND e.user_id IN (SELECT user_id FROM u)");
        format!(
            "{users_cte},
h AS (
    SELECT ev.user_id, {arrays}
    FROM (SELECT {event_columns} FROM {scan}) ev
    GROUP BY ev.user_id
)
SELECT {outputs}
FROM u LEFT JOIN h ON h.user_id = u.user_id
ORDER BY u.user_id"
        )
    }
}

/// Fills each `{name}` of `template`; every placeholder must be given (any SQL the
/// values bring in is not scanned again).
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        if !name.is_empty() && after[name_len..].starts_with('}') {
            let value = values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
            debug_assert!(value.is_some(), "sql/features.sql: {{{name}}} has no value");
            out.push_str(value.unwrap_or_default());
            rest = &after[name_len + 1..];
        } else {
            out.push('{');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}
