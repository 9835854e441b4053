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
use std::sync::Arc;
use std::time::{Duration, Instant};

use customer_analyzer_core::work::{Pending, Work};
use customer_analyzer_core::Error as CoreError;
use pgrx::spi::SpiClient;
use pgrx::{pg_sys, PgMemoryContexts};

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

/// Runs batches through the pool while this (the backend's) thread works on their
/// neighbours: `read` gives the next batch's input (None at the end), the pool runs
/// `compute` on it, and `sink` takes each result in order while the pool computes the
/// batch read after it. Each step starts in a memory context reset between batches, so
/// the arguments and arrays made before a step's first statement go with its batch (in
/// the SPI connection's context they would stay until the call returns: a gigabyte at a
/// million users). SPI returns from each statement in its own context, and keeps the
/// results of selects there: a step that reads with a select frees it
/// (`cursor::free_last_batch`; cursors read with `fetch_each_in_place` free theirs).
#[allow(unsafe_code)] // switching to and resetting a memory context this function owns
pub fn pipeline<'conn, I: Send + 'static, O: Send + 'static>(
    client: &mut SpiClient<'conn>,
    work: &Work,
    mut read: impl FnMut(&mut SpiClient<'conn>) -> Result<Option<I>>,
    compute: impl Fn(I) -> O + Send + Sync + 'static,
    mut sink: impl FnMut(&mut SpiClient<'conn>, O) -> Result<()>,
) -> Result<()> {
    let compute = Arc::new(compute);
    let mut batch_memory = PgMemoryContexts::new("customer_analyzer batch");
    let mut computing: Option<Pending<O>> = None;
    // where the backend's time went, for the log (DEBUG1): the slowest step sets the pace
    let (mut reading, mut waiting, mut sinking) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    loop {
        work.checkpoint().map_err(error::from_core)?;
        // SAFETY: what `read` returns is Send, so it points into no PostgreSQL memory, and
        // `sink` returns nothing; the statements they run are done when they return, so
        // nothing made in batch_memory is used after the reset of the next round
        unsafe { batch_memory.reset() };
        let started = Instant::now();
        let input = unsafe { batch_memory.switch_to(|_| read(client)) }?;
        reading += started.elapsed();
        let next = input.map(|input| {
            let compute = compute.clone();
            work.start(move || compute(input))
        });
        if let Some(done) = std::mem::replace(&mut computing, next) {
            let started = Instant::now();
            let out = work.wait(done).map_err(error::from_core)?;
            waiting += started.elapsed();
            let started = Instant::now();
            // SAFETY: see above
            unsafe { batch_memory.switch_to(|_| sink(client, out)) }?;
            sinking += started.elapsed();
        }
        if computing.is_none() {
            pgrx::debug1!(
                "customer_analyzer: batches read in {:.1} s, waited for the pool {:.1} s, written in {:.1} s",
                reading.as_secs_f64(),
                waiting.as_secs_f64(),
                sinking.as_secs_f64()
            );
            return Ok(());
        }
    }
}
