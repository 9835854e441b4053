use pgrx::prelude::*;

#[pg_test]
fn catalog_view_lists_every_feature() {
    let n = Spi::get_one::<i64>("SELECT count(*) FROM customer_analyzer.feature_catalog").unwrap();
    assert_eq!(
        n,
        Some(customer_analyzer_core::catalog::FEATURES.len() as i64)
    );
}
