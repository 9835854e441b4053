//! customer_analyzer's database-free core: the feature catalog and the reference feature
//! maths, and the demo shop generator. Everything here is plain Rust, tested with
//! `cargo test -p customer_analyzer_core` and benchmarked with criterion.

pub mod catalog;
pub mod demo;
pub mod events;
pub mod features;
pub mod metrics;
pub mod testkit;

/// Errors the core reports; the extension maps each to a SQLSTATE.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// A caller's argument is out of its documented range (SQLSTATE 22023).
    #[error("{message}")]
    InvalidParameter { name: &'static str, message: String },
}
