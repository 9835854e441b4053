//! Tests that run inside PostgreSQL (`cargo pgrx test`), one module per concept. Each
//! test runs in one transaction that is rolled back at its end, so tests that need
//! committed settings, several sessions or restarts live in `tests/integration`.

mod abtests;
mod drift;
mod features;
mod models;
mod outcomes;
mod partitions;
mod realtime;
mod refresh;
mod retention;
mod retraining;
mod safety;
mod segments;
mod support;
