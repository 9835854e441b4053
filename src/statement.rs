//! Which statement the backend is running, so that per-statement decisions (the model
//! that serves a task) are taken once per statement and kept for all of its rows.

use std::cell::Cell;

use pgrx::pg_sys;

thread_local! {
    /// Bumped whenever this backend changes what serves a task, so that a deploy inside
    /// a statement is seen by the rest of that statement.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
}

/// Identifies the current statement of the current transaction, as of the last change
/// this backend made to what serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Key {
    local_xid: u32,
    /// A subtransaction that deployed and then aborted leaves its own id behind.
    subtransaction: u32,
    started_at: i64,
    command: u32,
    generation: u64,
}

/// The current transaction's local id: unique in this backend while it runs, whether or
/// not the transaction has written.
#[allow(unsafe_code)] // reads the backend's own transaction state, on its own thread
pub fn transaction() -> u32 {
    // SAFETY: a plain read; MyProc is set for every backend that can run SQL
    unsafe { pg_sys::MyProc.as_ref().map_or(0, |p| p.lxid) }
}

/// The current statement's key.
#[allow(unsafe_code)] // reads the backend's own transaction state, on its own thread
pub fn key() -> Key {
    // SAFETY: plain reads of the backend's transaction state; MyProc is set for every
    // backend that can run SQL.
    unsafe {
        Key {
            local_xid: transaction(),
            subtransaction: pg_sys::GetCurrentSubTransactionId(),
            started_at: pg_sys::GetCurrentStatementStartTimestamp(),
            command: pg_sys::GetCurrentCommandId(false),
            generation: GENERATION.with(|g| g.get()),
        }
    }
}

/// Records that this backend changed what serves a task.
pub fn serving_changed() {
    GENERATION.with(|g| g.set(g.get() + 1));
}
