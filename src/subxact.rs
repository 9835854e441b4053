//! An internal subtransaction around work that runs SPI queries, so that an error
//! raised deep inside them leaves the backend clean.
//!
//! pgrx turns a PostgreSQL error into a Rust panic, and while the panic unwinds,
//! `SpiClient`'s destructor calls `SPI_finish()`. When the error came from inside a
//! function that opened its own SPI connection (a PL/pgSQL function such as
//! `user_features()` called by our query), that call finishes the inner connection
//! instead of ours and makes a freed memory context current; the next error report then
//! crashes the backend (seen with a cancel landing inside `user_features()` during
//! training). Rolling back a subtransaction opened inside our SPI connection closes
//! every connection, cursor and memory context the failed work opened, as PL/pgSQL's
//! exception blocks do, before the error goes on to our own `SPI_finish()`.

use pgrx::pg_sys;

use crate::error::Result;

/// Runs `f` in an internal subtransaction: released when `f` succeeds, rolled back when
/// it returns an error or a PostgreSQL error unwinds through it (which then goes on).
#[allow(unsafe_code)] // PostgreSQL's subtransaction API, on the backend's own thread
pub fn guarded<R>(f: impl FnOnce() -> Result<R>) -> Result<R> {
    // SAFETY: called from a SQL function on the backend's thread, inside a transaction;
    // the calls mirror what PL/pgSQL does around an exception block.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        // keep allocating where the caller did, as PL/pgSQL does
        pg_sys::CurrentMemoryContext = context;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        if matches!(outcome, Ok(Ok(_))) {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::CurrentMemoryContext = context;
        pg_sys::CurrentResourceOwner = owner;
        match outcome {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
