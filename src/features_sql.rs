//! The set-based SQL that computes every catalogued feature over the shop's tables.
//!
//! It implements the rules of `customer_analyzer_core::events` (their SQL spelling comes
//! from `events::sql`, shared with `data_quality()`) and the definitions of
//! `customer_analyzer_core::features` (the reference); the agreement test in
//! `tests.rs` runs both on random shops. `$1` is `as_of`; with [`Scope::OneUser`], `$2`
//! is the user id and every scan goes through an index on the user id.

use customer_analyzer_core::events::sql;

use crate::source::Sources;

/// Which users a query computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    AllUsers,
    OneUser,
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
    let one_user = |col: &str| match scope {
        Scope::AllUsers => String::new(),
        Scope::OneUser => format!(" AND {col} = $2"),
    };
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
    let product_table = match &s.products {
        Some(products) => format!(
            "SELECT DISTINCT ON (p.id) p.id::bigint AS product_id, p.category::text AS category,
           CASE WHEN p.price::float8 > 0 AND p.price::float8 < 'Infinity' THEN p.price::float8 END AS price
    FROM {products} p WHERE p.id IS NOT NULL ORDER BY p.id"
        ),
        None => "SELECT NULL::bigint AS product_id, NULL::text AS category, NULL::float8 AS price WHERE false"
            .to_string(),
    };
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
    let user_filter = one_user("src.id");
    let event_filter = one_user("e.user_id");
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
            ("status", status),
            ("has_username", has_username),
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
