//! What the tests inside PostgreSQL share: running SQL, reading one value, checking an
//! error's SQLSTATE and hint, loading random shops and the small demo shop.

use customer_analyzer_core::catalog::{Kind, FEATURES};
use customer_analyzer_core::features::{FeatureValue, FeatureVector};
use customer_analyzer_core::testkit::RawShop;
use pgrx::prelude::*;

pub(crate) fn run(sql: &str) {
    if let Err(e) = Spi::run(sql) {
        panic!("{sql}: {e}");
    }
}

pub(crate) fn one<T: FromDatum + IntoDatum>(sql: &str) -> Option<T> {
    match Spi::get_one::<T>(sql) {
        Ok(v) => v,
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// Runs `sql` in a subtransaction and returns "SQLSTATE|hint|message", or "ok".
pub(crate) fn outcome(sql: &str) -> String {
    // created once per transaction, so that it also runs after SET ROLE
    if one::<bool>("SELECT to_regprocedure('pg_temp.outcome(text)') IS NULL") == Some(true) {
        run(
            "CREATE FUNCTION pg_temp.outcome(q text) RETURNS text LANGUAGE plpgsql AS $$
             DECLARE h text;
             BEGIN
                 EXECUTE q;
                 RETURN 'ok';
             EXCEPTION WHEN OTHERS THEN
                 GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
                 RETURN SQLSTATE || '|' || coalesce(h, '') || '|' || SQLERRM;
             END $$",
        );
    }
    one::<String>(&format!(
        "SELECT pg_temp.outcome({})",
        pgrx::spi::quote_literal(sql)
    ))
    .unwrap_or_default()
}

/// Asserts that `sql` fails with `state` (PostgreSQL's own refusals, which carry no
/// hint); returns the message.
pub(crate) fn assert_state(sql: &str, state: &str) -> String {
    let got = outcome(sql);
    let mut parts = got.splitn(3, '|');
    assert_eq!(parts.next(), Some(state), "{sql} gave {got}");
    parts.nth(1).unwrap_or_default().to_string()
}

/// Asserts that `sql` fails with `state` and a hint; returns the message.
pub(crate) fn assert_fails(sql: &str, state: &str) -> String {
    let got = outcome(sql);
    let mut parts = got.splitn(3, '|');
    let (code, hint, message) = (parts.next(), parts.next(), parts.next());
    assert_eq!(code, Some(state), "{sql} gave {got}");
    assert!(
        hint.is_some_and(|h| !h.is_empty()),
        "{sql} failed without a hint: {got}"
    );
    message.unwrap_or_default().to_string()
}

pub(crate) fn ts(micros: i64) -> String {
    format!("(timestamptz 'epoch' + {micros} * interval '1 microsecond')")
}

/// Creates schema `s` with the shop's tables (every column nullable) and fills it.
pub(crate) fn load_shop(s: &str, shop: &RawShop) {
    run(&format!(
        "CREATE SCHEMA {s};
         CREATE TABLE {s}.users (id bigint, registered_at timestamptz, status text, username text);
         CREATE TABLE {s}.events (id bigserial, user_id bigint, event_type text, created_at timestamptz, event_data jsonb);
         CREATE TABLE {s}.products (id bigint, category text, price float8);
         CREATE INDEX ON {s}.events (user_id, created_at);"
    ));
    let ids: Vec<i64> = shop.users.iter().map(|u| u.id).collect();
    let reg: Vec<i64> = shop.users.iter().map(|u| u.registered_at).collect();
    let status: Vec<Option<String>> = shop.users.iter().map(|u| u.status.clone()).collect();
    let names: Vec<Option<String>> = shop.users.iter().map(|u| u.username.clone()).collect();
    if let Err(e) = Spi::run_with_args(
        &format!(
            "INSERT INTO {s}.users SELECT i, timestamptz 'epoch' + r * interval '1 microsecond', st, n
             FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]) AS x(i, r, st, n)"
        ),
        &[ids.into(), reg.into(), status.into(), names.into()],
    ) {
        panic!("inserting users: {e}");
    }
    let uid: Vec<Option<i64>> = shop.events.iter().map(|e| e.user_id).collect();
    let kind: Vec<String> = shop.events.iter().map(|e| e.event_type.clone()).collect();
    let at: Vec<Option<i64>> = shop.events.iter().map(|e| e.at).collect();
    let data: Vec<Option<String>> = shop.events.iter().map(|e| e.data.clone()).collect();
    if let Err(e) = Spi::run_with_args(
        &format!(
            "INSERT INTO {s}.events (user_id, event_type, created_at, event_data)
             SELECT u, k, timestamptz 'epoch' + a * interval '1 microsecond', d::jsonb
             FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[]) AS x(u, k, a, d)"
        ),
        &[uid.into(), kind.into(), at.into(), data.into()],
    ) {
        panic!("inserting events: {e}");
    }
    let pid: Vec<i64> = shop.products.iter().map(|p| p.id).collect();
    let cat: Vec<Option<String>> = shop.products.iter().map(|p| p.category.clone()).collect();
    let price: Vec<Option<f64>> = shop.products.iter().map(|p| p.price).collect();
    if let Err(e) = Spi::run_with_args(
        &format!(
            "INSERT INTO {s}.products SELECT * FROM unnest($1::bigint[], $2::text[], $3::float8[])"
        ),
        &[pid.into(), cat.into(), price.into()],
    ) {
        panic!("inserting products: {e}");
    }
}

/// Configures the shop loaded into schema `s`, with or without its products table.
pub(crate) fn configure_shop(s: &str, with_products: bool) {
    let products = if with_products {
        format!("'{s}.products'")
    } else {
        "NULL".into()
    };
    run(&format!(
        "SELECT customer_analyzer.configure('{s}.users', '{s}.events', {products})"
    ));
}

/// The features of `users` as of `as_of` by the path of the one-user refresh and the
/// real-time worker: their histories read and computed by the core.
pub(crate) fn features_from_histories(users: &[i64], as_of: i64) -> Vec<FeatureVector> {
    Spi::connect(|client| {
        let sources = crate::source::load(client)?;
        let t = crate::time::from_unix_micros(as_of)
            .ok_or_else(|| crate::error::internal("test", "time"))?;
        crate::feature_store::compute_users(client, &sources, users, t)
    })
    .unwrap_or_else(|e| panic!("computing users from their histories: {}", e.message()))
}

/// user_features(as_of) read back into the core's representation.
pub(crate) fn sql_features(as_of: i64) -> Vec<FeatureVector> {
    feature_rows(&format!(
        "SELECT * FROM customer_analyzer.user_features({}) ORDER BY user_id",
        ts(as_of)
    ))
}

/// The feature store's rows, in user id order, in the core's representation.
pub(crate) fn stored_features() -> Vec<FeatureVector> {
    feature_rows("SELECT * FROM customer_analyzer.user_metrics ORDER BY user_id")
}

/// Rows of `sql` laid out as user_id then the catalog's features, read as the core's.
fn feature_rows(sql: &str) -> Vec<FeatureVector> {
    let result = Spi::connect(|client| -> Result<Vec<FeatureVector>, pgrx::spi::Error> {
        let mut out = Vec::new();
        for row in client.select(sql, None, &[])? {
            let user_id = row.get::<i64>(1)?.unwrap_or_default();
            let mut values = Vec::with_capacity(FEATURES.len());
            for (i, f) in FEATURES.iter().enumerate() {
                values.push(match f.kind {
                    Kind::Count => FeatureValue::Num(row.get::<i64>(i + 2)?.map(|v| v as f64)),
                    Kind::Real => FeatureValue::Num(row.get::<f64>(i + 2)?),
                    Kind::Category => FeatureValue::Text(row.get::<String>(i + 2)?),
                });
            }
            out.push(FeatureVector { user_id, values });
        }
        Ok(out)
    });
    match result {
        Ok(v) => v,
        Err(e) => panic!("{sql}: {e}"),
    }
}

pub(crate) fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-7 * a.abs().max(b.abs()).max(1.0)
}

pub(crate) fn assert_agree(sql: &[FeatureVector], reference: &[FeatureVector], context: &str) {
    let ids = |v: &[FeatureVector]| v.iter().map(|f| f.user_id).collect::<Vec<_>>();
    assert_eq!(ids(sql), ids(reference), "{context}: different users");
    for (s, r) in sql.iter().zip(reference) {
        for ((sv, rv), def) in s.values.iter().zip(&r.values).zip(FEATURES) {
            let same = match (sv, rv) {
                (FeatureValue::Num(Some(a)), FeatureValue::Num(Some(b))) => close(*a, *b),
                (a, b) => a == b,
            };
            assert!(
                same,
                "{context}: user {} feature {}: SQL {:?} vs core {:?}",
                s.user_id, def.name, sv, rv
            );
        }
    }
}

/// A small demo shop in public tables, configured as the default.
pub(crate) fn small_demo() {
    run(
        "DROP TABLE IF EXISTS public.events, public.users, public.products CASCADE;
         DELETE FROM customer_analyzer.config;
         SELECT * FROM customer_analyzer.generate_demo_data(800, 365, 3, replace => true);",
    );
}

pub(crate) const QUICK: &str = r#"{"iterations": 30, "snapshots": 4}"#;

pub(crate) fn train(task: &str, algorithm: &str, params: &str) -> i64 {
    one::<i64>(&format!(
        "SELECT model_id FROM customer_analyzer.train('{task}', '{algorithm}', '{params}')"
    ))
    .unwrap_or(-1)
}

pub(crate) fn serving(task: &str) -> Option<i64> {
    one::<i64>(&format!(
        "SELECT model_id FROM customer_analyzer.deployed_models WHERE task = '{task}'"
    ))
}

/// How many of the real-time triggers `table` carries.
pub(crate) fn triggers_on(table: &str) -> i64 {
    one::<i64>(&format!(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = '{table}'::regclass
           AND tgname LIKE 'customer\\_analyzer\\_rescore\\_%'"
    ))
    .unwrap_or(-1)
}
