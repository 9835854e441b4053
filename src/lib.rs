//! customer_analyzer: customer features, models and segments inside PostgreSQL.
//!
//! This crate is the thin pgrx layer: SQL functions, SPI access to the shop's tables and
//! the extension's catalog, and error mapping. The maths lives in
//! `crates/customer_analyzer_core`.

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

mod catalog;
mod demo;
mod error;
mod feature_store;
mod features_sql;
mod models;
mod plans;
mod segments;
mod serving;
mod source;
mod time;
mod training;

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/api.sql", name = "api", finalize);

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
