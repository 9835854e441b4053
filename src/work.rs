//! The core's `Work` for one call: threads and budgets from the settings, and the
//! interrupt check run on the backend's own thread between chunks.
//!
//! A pending cancel, timeout or termination does not raise PostgreSQL's error in the
//! middle of the work: the check returns `Cancelled`, the work returns through every
//! Rust frame normally (its SPI connection and cursors closed the ordinary way), and
//! `finish()` then raises PostgreSQL's own error (57014, or FATAL for a termination)
//! from the SQL function's outermost frame. Raising it deep inside the work, under an
//! open SPI connection, left the backend with a freed memory context as current and
//! crashed the next error report.

use std::cell::Cell;

use customer_analyzer_core::work::Work;
use customer_analyzer_core::Error as CoreError;
use pgrx::pg_sys;

use crate::error::{self, Result};
use crate::gucs;

thread_local! {
    /// The check saw a cancel, timeout or termination that `finish()` must raise.
    static STOPPED: Cell<bool> = const { Cell::new(false) };
}

/// Stops the work for a pending cancel, timeout or termination; lets PostgreSQL handle
/// any other pending interrupt (a barrier, a memory-context log request) in place.
#[allow(unsafe_code)] // reads PostgreSQL's interrupt flags, on the backend's own thread
fn check() -> std::result::Result<(), CoreError> {
    // SAFETY: sig_atomic_t flags set by the signal handlers of this thread's process.
    unsafe {
        if pg_sys::QueryCancelPending != 0
            || pg_sys::ProcDiePending != 0
            || pg_sys::ClientConnectionLost != 0
        {
            STOPPED.with(|s| s.set(true));
            return Err(CoreError::Cancelled);
        }
    }
    pgrx::check_for_interrupts!();
    Ok(())
}

/// Work for one call under the current settings.
pub fn work() -> Result<Work> {
    STOPPED.with(|s| s.set(false));
    Work::new(
        gucs::max_threads(),
        gucs::max_memory_bytes(),
        gucs::max_model_bytes(),
        Box::new(check),
    )
    .map_err(error::from_core)
}

/// The result of a call that used `work()`. When the work stopped for an interrupt,
/// PostgreSQL's own error is raised here, outside every SPI connection; should the
/// interrupt have been cleared meanwhile, the call still fails with 57014.
#[allow(unsafe_code)] // the macro reads PostgreSQL's InterruptPending flag
pub fn finish<T>(r: Result<T>) -> Result<T> {
    if STOPPED.with(|s| s.replace(false)) {
        pgrx::check_for_interrupts!();
        return Err(error::from_core(CoreError::Cancelled));
    }
    r
}
