//! customer_analyzer's database-free core: the feature catalog and the reference feature
//! maths, and the demo shop generator. Everything here is plain Rust, tested with
//! `cargo test -p customer_analyzer_core` and benchmarked with criterion.

pub mod abtest;
pub mod calibration;
pub mod catalog;
pub mod codec;
pub mod demo;
pub mod drift;
pub mod events;
pub mod features;
pub mod frame;
pub mod history_cache;
pub mod metrics;
pub mod model;
pub mod outcomes;
pub mod params;
pub mod preprocess;
pub mod retrain;
pub mod schedule;
pub mod segment;
pub mod snapshots;
pub mod task;
pub mod testkit;
pub mod trees;
pub mod work;

/// Errors the core reports; the extension maps each to a SQLSTATE.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// A caller's argument is out of its documented range (SQLSTATE 22023).
    #[error("{message}")]
    InvalidParameter { name: &'static str, message: String },
    /// Too few rows, or a single class, to train or evaluate (SQLSTATE 55000).
    #[error("not enough data: {0}")]
    NotEnoughData(String),
    /// A stored model blob that does not decode (SQLSTATE XX001).
    #[error("corrupt model: {0}")]
    CorruptModel(String),
    /// A stored model written in a newer format than this build reads.
    #[error("model format {0} is newer than this extension reads")]
    FutureModelVersion(u16),
    /// A failure inside a library that is not the caller's fault.
    #[error("{0}")]
    Internal(String),
    /// The interrupt check asked the work to stop (SQLSTATE 57014).
    #[error("canceled")]
    Cancelled,
    /// A call would need more than a budget allows (SQLSTATE 54000).
    #[error("{what} would need about {needed_mb} MB, more than {setting} = {limit_mb} MB")]
    TooLarge {
        what: String,
        needed_mb: usize,
        limit_mb: usize,
        setting: &'static str,
    },
    /// The allocator refused a buffer (SQLSTATE 53200).
    #[error("out of memory allocating {0}")]
    OutOfMemory(String),
}
