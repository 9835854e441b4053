//! The feature catalog as SQL rows (behind the `feature_catalog` view).

use customer_analyzer_core::catalog::{CATALOG_VERSION, CONVENTIONS, FEATURES};
use pgrx::prelude::*;

#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn feature_definitions() -> TableIterator<
    'static,
    (
        name!(position, i32),
        name!(name, String),
        name!(feature_group, String),
        name!(sql_type, String),
        name!(unit, String),
        name!(description, String),
    ),
> {
    TableIterator::new(FEATURES.iter().enumerate().map(|(i, f)| {
        (
            i as i32 + 1,
            f.name.to_string(),
            f.group.to_string(),
            f.kind.sql_type().to_string(),
            f.unit.to_string(),
            f.description.to_string(),
        )
    }))
}

/// The conventions every feature follows, and the catalog's version.
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn feature_conventions(
) -> TableIterator<'static, (name!(catalog_version, i32), name!(conventions, String))> {
    TableIterator::once((CATALOG_VERSION, CONVENTIONS.to_string()))
}
