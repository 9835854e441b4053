//! The shop's own tables: which ones to read (`configure()`), and the check that each
//! column the features need exists with a usable type.

use std::cell::RefCell;

use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::error::{self, Result, SpiContext};
use crate::plans;
use crate::plans::types::TEXT;

/// What a column must hold, and the SQL types that qualify.
#[derive(Clone, Copy)]
enum Expect {
    Integer,
    Time,
    Text,
    Json,
    Number,
    Any,
}

impl Expect {
    fn accepts(self, type_oid: i64, category: &str) -> bool {
        match self {
            Expect::Integer => matches!(type_oid, 20 | 21 | 23),
            Expect::Time => matches!(type_oid, 1184 | 1114 | 1082),
            Expect::Text => category == "S" || category == "E",
            Expect::Json => matches!(type_oid, 3802 | JSON_OID),
            Expect::Number => category == "N",
            Expect::Any => true,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Expect::Integer => "smallint, integer or bigint",
            Expect::Time => "timestamptz, timestamp or date",
            Expect::Text => "text, varchar, char or an enum",
            Expect::Json => "jsonb or json",
            Expect::Number => "a numeric type",
            Expect::Any => "any type",
        }
    }
}

struct ColumnSpec {
    name: &'static str,
    expect: Expect,
    required: bool,
    meaning: &'static str,
}

const fn col(
    name: &'static str,
    expect: Expect,
    required: bool,
    meaning: &'static str,
) -> ColumnSpec {
    ColumnSpec {
        name,
        expect,
        required,
        meaning,
    }
}

const JSON_OID: i64 = 114;

const USERS: &[ColumnSpec] = &[
    col(
        "id",
        Expect::Integer,
        true,
        "the user's id, referenced by events.user_id",
    ),
    col(
        "registered_at",
        Expect::Time,
        true,
        "when the user registered",
    ),
    col(
        "status",
        Expect::Any,
        false,
        "the user's status, a category",
    ),
    col(
        "username",
        Expect::Any,
        false,
        "the user's name; only whether it is set is used",
    ),
];
const EVENTS: &[ColumnSpec] = &[
    col(
        "user_id",
        Expect::Integer,
        true,
        "the user the event belongs to",
    ),
    col(
        "event_type",
        Expect::Text,
        true,
        "page_view, product_view, add_to_cart, purchase or bot_command",
    ),
    col("created_at", Expect::Time, true, "when the event happened"),
    col(
        "event_data",
        Expect::Json,
        true,
        "product_id, quantity, amount, command",
    ),
];
const PRODUCTS: &[ColumnSpec] = &[
    col(
        "id",
        Expect::Integer,
        true,
        "the product's id, referenced by event_data->>'product_id'",
    ),
    col("category", Expect::Text, true, "the product's category"),
    col("price", Expect::Number, true, "the product's current price"),
];

/// The resolved source tables, as quoted qualified names ready to splice into SQL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sources {
    pub users: String,
    pub events: String,
    pub products: Option<String>,
    pub has_status: bool,
    pub has_username: bool,
    /// `events.event_data` is `json`, not `jsonb` (see `events::sql::event_data`).
    pub event_data_is_json: bool,
    /// The events table has a valid btree or hash index whose first column is `user_id`,
    /// so one user's events are an index scan away (see `features_sql::history_query`).
    pub events_by_user: bool,
    /// The products source stores rows (a table or materialized view, not a view), so
    /// the per-backend products table can watch their xmin (see `products`).
    pub products_store_rows: bool,
}

/// Whether relation `oid` has a usable index that starts with its `user_id` column.
fn indexed_by_user(client: &SpiClient<'_>, oid: pg_sys::Oid) -> Result<bool> {
    catalog_says(
        client,
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_index i \
         JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
         JOIN pg_catalog.pg_am am ON am.oid = ic.relam \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
         WHERE i.indrelid = $1 AND i.indisvalid AND i.indpred IS NULL \
           AND am.amname IN ('btree', 'hash') AND a.attname = 'user_id')",
        oid,
    )
}

/// A yes-or-no question to the catalog about relation `oid` (`$1`); no row is a no.
fn catalog_says(client: &SpiClient<'_>, sql: &str, oid: pg_sys::Oid) -> Result<bool> {
    let rows = client
        .select(sql, Some(1), &[oid.into()])
        .ctx("reading the catalog")?;
    if rows.is_empty() {
        return Ok(false);
    }
    Ok(rows
        .first()
        .get_one::<bool>()
        .ctx("reading the catalog")?
        .unwrap_or(false))
}

/// Whether relation `oid` keeps its own rows (a table, partitioned table or
/// materialized view), which have an xmin.
fn stores_rows(client: &SpiClient<'_>, oid: pg_sys::Oid) -> Result<bool> {
    catalog_says(
        client,
        "SELECT relkind IN ('r', 'p', 'm') FROM pg_catalog.pg_class WHERE oid = $1",
        oid,
    )
}

/// A relation's quoted qualified name, or None when the oid names no table-like relation.
fn relation_name(client: &SpiClient<'_>, oid: pg_sys::Oid) -> Result<Option<String>> {
    let rows = client
        .select(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = $1 AND c.relkind IN ('r', 'v', 'm', 'p', 'f')",
            Some(1),
            &[oid.into()],
        )
        .ctx("reading pg_class")?;
    // a dropped table leaves no row (reading the first row of none is an error)
    if rows.is_empty() {
        return Ok(None);
    }
    rows.first().get_one::<String>().ctx("reading pg_class")
}

/// Checks `table`'s columns against `specs`; returns each column's type oid, None for
/// an optional column that is missing.
fn check_columns(
    client: &SpiClient<'_>,
    role: &str,
    oid: pg_sys::Oid,
    table: &str,
    specs: &[ColumnSpec],
) -> Result<Vec<Option<i64>>> {
    let rows = client
        .select(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
                    bt.oid::int8, bt.typcategory::text \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             JOIN pg_catalog.pg_type bt ON bt.oid = CASE WHEN t.typbasetype <> 0 THEN t.typbasetype ELSE t.oid END \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
            None,
            &[oid.into()],
        )
        .ctx("reading pg_attribute")?;
    let mut columns = Vec::new();
    for row in rows {
        let name: Option<String> = row.get(1).ctx("reading pg_attribute")?;
        let shown: Option<String> = row.get(2).ctx("reading pg_attribute")?;
        let type_oid: Option<i64> = row.get(3).ctx("reading pg_attribute")?;
        let category: Option<String> = row.get(4).ctx("reading pg_attribute")?;
        columns.push((
            name.unwrap_or_default(),
            shown.unwrap_or_default(),
            type_oid.unwrap_or_default(),
            category.unwrap_or_default(),
        ));
    }
    let mut present = Vec::with_capacity(specs.len());
    for spec in specs {
        match columns.iter().find(|c| c.0 == spec.name) {
            None if spec.required => {
                return Err(error::undefined_column(
                    format!("{role} table {table} has no column \"{}\"", spec.name),
                    &format!(
                        "customer_analyzer reads {role}.{} ({}): {}. Add the column, or configure() a view that provides it.",
                        spec.name,
                        spec.expect.describe(),
                        spec.meaning
                    ),
                ))
            }
            None => present.push(None),
            Some((_, shown, type_oid, category)) => {
                if !spec.expect.accepts(*type_oid, category) {
                    return Err(error::wrong_type(
                        format!(
                            "column {table}.{} has type {shown}, expected {}",
                            spec.name,
                            spec.expect.describe()
                        ),
                        &format!(
                            "{role}.{} is {}. Cast it in a view and configure() the view.",
                            spec.name, spec.meaning
                        ),
                    ));
                }
                present.push(Some(*type_oid));
            }
        }
    }
    Ok(present)
}

fn require_table(
    client: &SpiClient<'_>,
    role: &str,
    oid: Option<pg_sys::Oid>,
    default: &str,
) -> Result<(pg_sys::Oid, String)> {
    let missing = || {
        error::undefined_table(
            format!("the {role} table is missing (default {default})"),
            "Create it, run customer_analyzer.generate_demo_data(), or call customer_analyzer.configure() with your tables.",
        )
    };
    let oid = oid.ok_or_else(missing)?;
    let name = relation_name(client, oid)?.ok_or_else(missing)?;
    Ok((oid, name))
}

/// Validates a choice of tables and returns what the features will read.
pub fn validate(
    client: &SpiClient<'_>,
    users: Option<pg_sys::Oid>,
    events: Option<pg_sys::Oid>,
    products: Option<pg_sys::Oid>,
) -> Result<Sources> {
    let (users_oid, users) = require_table(client, "users", users, "public.users")?;
    let (events_oid, events) = require_table(client, "events", events, "public.events")?;
    let user_cols = check_columns(client, "users", users_oid, &users, USERS)?;
    let event_cols = check_columns(client, "events", events_oid, &events, EVENTS)?;
    let (products, products_store_rows) = match products {
        None => (None, false),
        Some(oid) => {
            let (oid, name) = require_table(client, "products", Some(oid), "public.products")?;
            check_columns(client, "products", oid, &name, PRODUCTS)?;
            (Some(name), stores_rows(client, oid)?)
        }
    };
    Ok(Sources {
        users,
        events,
        products,
        has_status: user_cols[2].is_some(),
        has_username: user_cols[3].is_some(),
        event_data_is_json: event_cols[3] == Some(JSON_OID),
        events_by_user: indexed_by_user(client, events_oid)?,
        products_store_rows,
    })
}

thread_local! {
    /// The last checked sources and the `source_version` they were checked at.
    static CHECKED: RefCell<Option<(i64, Sources)>> = const { RefCell::new(None) };
}

/// The configured tables (or the public defaults when configure() was never called),
/// checked. The checks are kept per backend until `source_version` moves: configure()
/// and any DDL on a table, view or type (an event trigger) move it, so the hot paths
/// (one-user refresh, the prediction fallback) read one row instead of the catalog.
pub fn load(client: &SpiClient<'_>) -> Result<Sources> {
    let version = plans::select(
        client,
        "SELECT version FROM customer_analyzer.source_version",
        &[],
        &[],
    )?
    .first()
    .get_one::<i64>()
    .ctx("reading customer_analyzer.source_version")?
    .unwrap_or(-1);
    if let Some(s) = CHECKED.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(v, _)| *v == version)
            .map(|(_, s)| s.clone())
    }) {
        return Ok(s);
    }
    let s = check_configured(client)?;
    CHECKED.with(|c| *c.borrow_mut() = Some((version, s.clone())));
    Ok(s)
}

/// Reads the configuration and checks its tables.
fn check_configured(client: &SpiClient<'_>) -> Result<Sources> {
    let row = client
        .select(
            "SELECT users, events, products FROM customer_analyzer.config \
             UNION ALL SELECT to_regclass('public.users'), to_regclass('public.events'), to_regclass('public.products') \
             LIMIT 1",
            Some(1),
            &[],
        )
        .ctx("reading customer_analyzer.config")?
        .first();
    let users: Option<pg_sys::Oid> = row.get(1).ctx("reading config")?;
    let events: Option<pg_sys::Oid> = row.get(2).ctx("reading config")?;
    let products: Option<pg_sys::Oid> = row.get(3).ctx("reading config")?;
    validate(client, users, events, products)
}

/// Chooses the shop's tables. Nothing is written unless every check passes.
#[pg_extern(name = "_configure", volatile)]
#[search_path(pg_catalog, pg_temp)]
fn configure(
    users: Option<pg_sys::Oid>,
    events: Option<pg_sys::Oid>,
    products: Option<pg_sys::Oid>,
) -> Result<pgrx::JsonB> {
    error::require_primary("configure()")?;
    Spi::connect_mut(|client| {
        let s = validate(client, users, events, products)?;
        client
            .update(
                "INSERT INTO customer_analyzer.config AS c (singleton, users, events, products, configured_at) \
                 VALUES (true, $1::oid::regclass, $2::oid::regclass, $3::oid::regclass, now()) \
                 ON CONFLICT (singleton) DO UPDATE SET users = EXCLUDED.users, events = EXCLUDED.events, \
                 products = EXCLUDED.products, configured_at = EXCLUDED.configured_at",
                None,
                &[users.into(), events.into(), products.into()],
            )
            .ctx("writing customer_analyzer.config")?;
        client
            .update(
                "UPDATE customer_analyzer.source_version SET version = version + 1",
                None,
                &[],
            )
            .ctx("writing customer_analyzer.source_version")?;
        let realtime = match events {
            Some(events) => crate::realtime::attach(client, events)?,
            None => crate::realtime::Realtime::Off("no events table".into()),
        };
        Ok(pgrx::JsonB(serde_json::json!({
            "users": s.users,
            "events": s.events,
            "products": s.products,
            "optional_user_columns": {"status": s.has_status, "username": s.has_username},
            "realtime": match realtime {
                crate::realtime::Realtime::On(_) => serde_json::Value::Bool(true),
                crate::realtime::Realtime::Off(why) => serde_json::Value::String(format!("off: {why}")),
            },
        })))
    })
}

/// The events' storage as kept histories and the incremental refresh depend on it: the
/// file nodes of the table and its partitions (pg_partition_tree has no rows for a plain table, whose
/// TRUNCATE went unnoticed before it was named on its own).
pub fn events_storage(client: &SpiClient<'_>, s: &Sources) -> Result<String> {
    Ok(plans::select(
        client,
        "SELECT coalesce(string_agg(pg_catalog.pg_relation_filenode(t.relid)::text, ','
                                    ORDER BY t.relid), '')
         FROM (SELECT $1::regclass AS relid
               UNION SELECT relid FROM pg_catalog.pg_partition_tree($1::regclass)) t",
        &[TEXT],
        &[s.events.as_str().into()],
    )?
    .first()
    .get_one::<String>()
    .ctx("reading the events' storage")?
    .unwrap_or_default())
}
