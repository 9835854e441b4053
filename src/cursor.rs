//! Reading a cursor batch by batch without keeping every batch. pgrx leaves each fetched
//! `SPITupleTable` in the SPI connection's memory until the connection ends, so a loop
//! over a big cursor held the whole result: training on a 1,000,000-user shop reached a
//! 14.5 GB backend. `fetch_each` hands each row to `each` and frees the batch's table
//! before the next fetch.

use pgrx::pg_sys;
use pgrx::spi::{SpiCursor, SpiHeapTupleData};

use crate::error::{Result, SpiContext};

/// Fetches up to `n` rows, calls `each` on every one, frees them; returns how many there
/// were (0 at the end of the cursor).
pub fn fetch_each(
    cursor: &mut SpiCursor<'_>,
    n: i64,
    what: &'static str,
    mut each: impl FnMut(&SpiHeapTupleData<'_>) -> Result<()>,
) -> Result<usize> {
    let batch = cursor.fetch(n).ctx(what)?;
    let len = batch.len();
    for row in batch {
        each(&row)?;
    }
    free_last_batch();
    Ok(len)
}

#[allow(unsafe_code)] // SPI's own call to free a result, on the backend's own thread
fn free_last_batch() {
    // SAFETY: SPI_tuptable is the table the fetch above filled (pgrx reads it without
    // taking it, and clears the pointer only before the next fetch). Its rows were all
    // consumed, and what `each` kept was copied into Rust values, so nothing points into
    // it; pgrx never frees it itself, so this is the only free.
    unsafe {
        if !pg_sys::SPI_tuptable.is_null() {
            pg_sys::SPI_freetuptable(pg_sys::SPI_tuptable);
            pg_sys::SPI_tuptable = std::ptr::null_mut();
        }
    }
}
