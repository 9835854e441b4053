//! Reading a cursor batch by batch without keeping every batch. pgrx leaves each fetched
//! `SPITupleTable` in the SPI connection's memory until the connection ends, so a loop
//! over a big cursor held the whole result: training on a 1,000,000-user shop reached a
//! 14.5 GB backend. `fetch_each` hands each row to `each` and frees the batch's table
//! before the next fetch. `fetch_each_in_place` also reads values where they lie
//! (see [`InPlace`]).

use pgrx::datum::{Array, FromDatum, IntoDatum, UnboxDatum};
use pgrx::pg_sys;
use pgrx::spi::{SpiCursor, SpiHeapTupleData};

use crate::error::{self, Result, SpiContext};

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

/// One fetched row whose values are read where they lie in the batch. pgrx's `get`
/// copies every value into the memory context above the SPI connection, which lives
/// until the calling function returns: reading every user's event arrays that way grew
/// the backend by the size of all the events read. Here an array borrows the batch
/// (freed after the row's callback), and only what the caller converts is kept.
pub struct InPlace {
    tuple: pg_sys::HeapTuple,
    tupdesc: pg_sys::TupleDesc,
}

impl InPlace {
    /// Column `i` (from 1) as an owned `T` (a scalar, `String`, `Vec`), which must match
    /// the column's type. Arrays to read in place go through [`InPlace::array`].
    #[allow(unsafe_code)] // converting a value `datum` checked
    pub fn get<T: FromDatum + IntoDatum>(&self, i: usize, what: &'static str) -> Result<Option<T>> {
        // SAFETY: see `datum`; T is converted at once.
        self.datum::<T>(i, what)
            .map(|(datum, is_null, type_oid)| unsafe {
                T::from_polymorphic_datum(datum, is_null, type_oid)
            })
    }

    /// Array column `i` read where it lies, valid while this row is (the borrow keeps
    /// it from outliving the callback the row is lent to).
    #[allow(unsafe_code)] // converting a value `datum` checked
    pub fn array<'r, T>(&'r self, i: usize, what: &'static str) -> Result<Option<Array<'r, T>>>
    where
        T: UnboxDatum + IntoDatum + 'r,
    {
        // SAFETY: see `datum`; the array borrows the row for 'r.
        self.datum::<Array<'r, T>>(i, what)
            .map(|(datum, is_null, type_oid)| unsafe {
                Array::<'r, T>::from_polymorphic_datum(datum, is_null, type_oid)
            })
    }

    /// The raw value of column `i`, checked to have a type `T` reads.
    #[allow(unsafe_code)] // SPI's own accessor on a row of the batch being read
    fn datum<T: IntoDatum>(
        &self,
        i: usize,
        what: &'static str,
    ) -> Result<(pg_sys::Datum, bool, pg_sys::Oid)> {
        let type_oid = self.column_type::<T>(i, what)?;
        let mut is_null = false;
        // SAFETY: tuple and tupdesc come from the current SPI_tuptable, which stays
        // allocated until `fetch_each_in_place` frees it after the callback that borrows
        // this row returns; `i` was checked against the descriptor.
        let datum =
            unsafe { pg_sys::SPI_getbinval(self.tuple, self.tupdesc, i as i32, &mut is_null) };
        Ok((datum, is_null, type_oid))
    }

    /// The type of column `i` (from 1), checked to be one `T` reads.
    #[allow(unsafe_code)] // reading the descriptor of the batch being read
    fn column_type<T: IntoDatum>(&self, i: usize, what: &'static str) -> Result<pg_sys::Oid> {
        // SAFETY: tupdesc is the current SPI_tuptable's (see `datum`); `i` is checked
        // against its column count before SPI reads the column's type.
        let type_oid = unsafe {
            let natts = (*self.tupdesc).natts as usize;
            if i < 1 || i > natts {
                return Err(error::internal(what, format!("no column {i}")));
            }
            pg_sys::SPI_gettypeid(self.tupdesc, i as i32)
        };
        if !T::is_compatible_with(type_oid) {
            return Err(error::internal(
                what,
                format!(
                    "column {i} has type oid {type_oid:?}, not {:?}",
                    T::type_oid()
                ),
            ));
        }
        Ok(type_oid)
    }

    /// Every column of the row, taken apart once. Reading column after column with
    /// `SPI_getbinval` walks the tuple from its start for each one (a row with NULLs has
    /// no cached offsets): quadratic in the columns, it was most of the time spent
    /// reading a million stored feature rows of 70 columns.
    #[allow(unsafe_code)] // PostgreSQL's own deforming of a row of the batch being read
    pub fn deform(&self) -> Deformed<'_> {
        // SAFETY: see `datum`; the arrays have one slot per column of the descriptor
        let natts = unsafe { (*self.tupdesc).natts as usize };
        let mut values = vec![pg_sys::Datum::from(0usize); natts];
        let mut nulls = vec![true; natts];
        unsafe {
            pg_sys::heap_deform_tuple(
                self.tuple,
                self.tupdesc,
                values.as_mut_ptr(),
                nulls.as_mut_ptr(),
            )
        };
        Deformed {
            row: self,
            values,
            nulls,
        }
    }
}

/// A row of the batch with every column taken apart ([`InPlace::deform`]); values of
/// variable length still point into the row.
pub struct Deformed<'r> {
    row: &'r InPlace,
    values: Vec<pg_sys::Datum>,
    nulls: Vec<bool>,
}

impl Deformed<'_> {
    /// Column `i` (from 1) as an owned `T`, which must match the column's type.
    #[allow(unsafe_code)] // converting a value whose type was checked
    pub fn get<T: FromDatum + IntoDatum>(&self, i: usize, what: &'static str) -> Result<Option<T>> {
        let type_oid = self.row.column_type::<T>(i, what)?;
        // SAFETY: the value was deformed from a row of the batch, which outlives this
        // borrow of it; its type was checked above and T copies what it keeps.
        Ok(unsafe { T::from_polymorphic_datum(self.values[i - 1], self.nulls[i - 1], type_oid) })
    }
}

/// [`fetch_each`] with rows read in place ([`InPlace`]).
#[allow(unsafe_code)] // walking the SPI_tuptable the fetch filled, on the backend's thread
pub fn fetch_each_in_place(
    cursor: &mut SpiCursor<'_>,
    n: i64,
    what: &'static str,
    mut each: impl FnMut(&InPlace) -> Result<()>,
) -> Result<usize> {
    let len = cursor.fetch(n).ctx(what)?.len();
    // SAFETY: the fetch left its result in SPI_tuptable (pgrx's wrapper only points at
    // it and is gone); `len` rows are in `vals`. Rows are handed out by reference to a
    // callback that cannot keep them, and the table is freed only after the last one.
    unsafe {
        let table = pg_sys::SPI_tuptable;
        if len > 0 && table.is_null() {
            return Err(error::internal(what, "the fetch left no rows to read"));
        }
        for k in 0..len {
            let row = InPlace {
                tuple: *(*table).vals.add(k),
                tupdesc: (*table).tupdesc,
            };
            each(&row)?;
        }
    }
    free_last_batch();
    Ok(len)
}

/// Frees the result of the last SPI statement (pgrx never does: in a loop of
/// statements each result would stay until the call returns). Call it only once every
/// row read from that result is copied into Rust values and its table dropped.
#[allow(unsafe_code)] // SPI's own call to free a result, on the backend's own thread
pub fn free_last_batch() {
    // SAFETY: SPI_tuptable is the table the last statement or fetch filled (pgrx reads
    // it without taking it, and clears the pointer only before the next one). Its rows
    // were all consumed and copied into Rust values, so nothing points into it; pgrx
    // never frees it itself, so this is the only free.
    unsafe {
        if !pg_sys::SPI_tuptable.is_null() {
            pg_sys::SPI_freetuptable(pg_sys::SPI_tuptable);
            pg_sys::SPI_tuptable = std::ptr::null_mut();
        }
    }
}
