//! customer_analyzer: customer features, models and segments inside PostgreSQL.
//!
//! This crate is the thin pgrx layer: SQL functions, SPI access to the shop's tables and
//! the extension's catalog, and error mapping. The maths lives in
//! `crates/customer_analyzer_core`.

// Every SQL function returns pgrx's ErrorReport (SQLSTATE, message, detail, hint) as its
// error; it is large by design and returned only on the error path.
#![allow(clippy::result_large_err)]

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

mod abtests;
mod catalog;
mod cursor;
mod data_quality;
mod demo;
mod drift;
mod error;
mod feature_store;
mod features_sql;
mod gucs;
mod models;
mod outcomes;
mod plans;
mod products;
mod realtime;
mod recent_events;
mod refresh;
mod retention;
mod retraining;
mod segments;
mod serving;
mod source;
mod statement;
mod subxact;
mod time;
mod training;
mod training_set;
mod work;
mod worker;

/// Loads the settings and makes sure no library thread can take the backend's signals.
#[pg_guard]
#[allow(unsafe_code)] // the entry point PostgreSQL calls when it loads the library
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    customer_analyzer_core::work::tame_global_pool();
    worker::register();
}

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/api.sql", name = "api", finalize);

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
