//! The products table as the features read it (each product's category, valid price and
//! price level within its category), kept per backend. Building it reads and converts
//! every product, which was most of a single-user refresh; a kept table serves while the
//! products' fingerprint — their row count and the sums of their rows' `xmin` and
//! `cmin` — is unchanged. An insert, update or delete replaces rows by rows of a newer
//! transaction (a larger xmin) or, within one transaction, of a later command (a larger
//! cmin), or changes the count, so no change goes unseen; a false alarm (a table
//! rewrite) only costs a rebuild.

use customer_analyzer_core::features::{Product, ProductTable};
use pgrx::spi::SpiClient;
use std::cell::RefCell;
use std::sync::Arc;

use crate::error::{Result, SpiContext};
use crate::features_sql::product_rows;
use crate::plans;
use crate::source::Sources;

/// What a kept table was built from: the products relation and its fingerprint.
type Key = (String, i64, String, String);

thread_local! {
    static KEPT: RefCell<Option<(Key, Arc<Option<ProductTable>>)>> = const { RefCell::new(None) };
}

/// The products table of `s` (None without one), from this backend's copy when the
/// products have not changed since it was built.
pub fn table(client: &SpiClient<'_>, s: &Sources) -> Result<Arc<Option<ProductTable>>> {
    let Some(products) = &s.products else {
        return Ok(Arc::new(None));
    };
    // a view or foreign table has no xmin to watch: read it every time
    if !s.products_store_rows {
        return Ok(Arc::new(Some(read(client, s)?)));
    }
    let key = fingerprint(client, products)?;
    if let Some(kept) = KEPT.with(|k| {
        k.borrow()
            .as_ref()
            .filter(|(kept, _)| *kept == key)
            .map(|(_, t)| t.clone())
    }) {
        return Ok(kept);
    }
    let fresh = Arc::new(Some(read(client, s)?));
    KEPT.with(|k| *k.borrow_mut() = Some((key, fresh.clone())));
    Ok(fresh)
}

/// The relation's name, row count and sums of its rows' xmin and cmin (as text: they
/// are numerics).
fn fingerprint(client: &SpiClient<'_>, products: &str) -> Result<Key> {
    let rows = plans::select(
        client,
        &format!(
            "SELECT count(*), coalesce(sum(p.xmin::text::bigint), 0)::text,
                    coalesce(sum(p.cmin::text::bigint), 0)::text
             FROM {products} p"
        ),
        &[],
        &[],
    )?;
    let row = rows.first();
    let count = row.get::<i64>(1).ctx("reading the products")?.unwrap_or(0);
    let xmins = row
        .get::<String>(2)
        .ctx("reading the products")?
        .unwrap_or_default();
    let cmins = row
        .get::<String>(3)
        .ctx("reading the products")?
        .unwrap_or_default();
    Ok((products.to_string(), count, xmins, cmins))
}

/// Reads every product and builds the table.
fn read(client: &SpiClient<'_>, s: &Sources) -> Result<ProductTable> {
    let mut rows = Vec::new();
    for row in plans::select(client, &product_rows(s), &[], &[])? {
        let id = row.get::<i64>(1).ctx("reading the products")?;
        let category = row.get::<String>(2).ctx("reading the products")?;
        let price = row.get::<f64>(3).ctx("reading the products")?;
        if let Some(id) = id {
            rows.push((id, Product { category, price }));
        }
    }
    Ok(ProductTable::new(rows))
}
