//! The rescoring worker: a background worker, started when the library is in
//! `shared_preload_libraries`, that drains `customer_analyzer.rescore_queue` in the
//! database `customer_analyzer.database`. For each queued user it refreshes the stored
//! features, rescores every deployed task into the prediction log, reassigns the user's
//! segment and sends `pg_notify('customer_analyzer_scores', …)`.
//!
//! A batch is two transactions. The first reads up to `customer_analyzer.batch_size`
//! queued users with their generations and locks nothing (the worker is the queue's only
//! consumer), so the shop's trigger, which bumps a queued user's generation, never waits
//! on the work, and the read needs no commit record. The second rescores the batch in a
//! few statements (features, scores and segments of all its users at once);
//! when that fails, it goes user by user, each in its own subtransaction (a failing user
//! is recorded in `worker_errors` and the others go on). An error that is no user's own
//! (the configured events table dropped, a broken configuration) leaves the batch queued
//! and the worker waits and tries again. It deletes each row only at the generation it
//! claimed, skipping rows the shop holds: an event that arrived meanwhile keeps
//! its user queued for another pass. A crash anywhere rolls the second transaction back
//! and leaves every claimed row queued, so each user is rescored exactly once after
//! recovery. The worker commits without waiting for its WAL to reach the disk
//! (`synchronous_commit = off` for its session): everything it writes is derived from the
//! shop's events, and a crash that loses a batch's commit loses the queue's deletions with
//! it, so those users are simply rescored again; meanwhile the shop's commits do not
//! queue behind the flush of a whole batch's writes.
//!
//! After each transaction the worker reports its statistics, as PostgreSQL's own workers
//! do: without that its writes never reach `pg_stat_user_tables`, and autovacuum would
//! not see the tables it churns.
//!
//! The worker keeps the event histories it read (`customer_analyzer.worker_histories_mb`,
//! core `history_cache`): when the queue says a user's new events all come after the
//! newest kept one, only those are read.
//!
//! Every few minutes it also prunes the logs to `customer_analyzer.prediction_retention`,
//! and every `customer_analyzer.monitor_interval` it starts the retraining worker
//! (`retraining.rs`), a dynamic worker of its own, so that no training ever holds up the
//! queue.
//!
//! SIGTERM is PostgreSQL's own `die`: a fast shutdown or `pg_terminate_backend()` ends the
//! worker at its next interrupt check, even inside a query. It then exits with code 1,
//! and the postmaster starts it again five seconds later (not on a standby: it starts only
//! once recovery has finished).

use std::cell::RefCell;
use std::time::{Duration, Instant};

use customer_analyzer_core::history_cache::HistoryCache;
use customer_analyzer_core::task::Task;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::error::{Result, SpiContext};
use crate::feature_store::Kept;
use crate::plans::types::{FLOAT8_ARRAY, INT8, INT8_ARRAY, TEXT, TEXT_ARRAY, TIMESTAMPTZ_ARRAY};
use crate::time::to_unix_micros;
use crate::{feature_store, gucs, plans, segments, serving, source};

/// The channel every fresh score is announced on.
pub const CHANNEL: &str = "customer_analyzer_scores";
/// How often an idle worker writes its heartbeat.
const IDLE_HEARTBEAT: Duration = Duration::from_secs(5);
/// How long the postmaster waits before starting the worker again after it exited (a
/// crash, a termination, or a database that does not exist yet, which would otherwise
/// fill the log every second).
const RESTART_AFTER: Duration = Duration::from_secs(5);
/// How often the worker applies `customer_analyzer.prediction_retention` (`prune()`).
const PRUNE_EVERY: Duration = Duration::from_secs(300);
/// How long the worker waits before trying a stalled batch again.
const STALL_NAP: Duration = Duration::from_secs(5);
/// How often a lasting stall is reported again (log and worker_errors).
const STALL_REPORT_EVERY: Duration = Duration::from_secs(60);
/// How long the worker sleeps while the extension is missing from its database.
const NOT_INSTALLED_NAP: Duration = Duration::from_secs(5);

/// Registers the worker; called from `_PG_init`, which only counts while the postmaster
/// loads `shared_preload_libraries`.
#[allow(unsafe_code)] // reads the postmaster's flag, in _PG_init on the postmaster's thread
pub fn register() {
    // SAFETY: a plain bool PostgreSQL sets while it loads shared_preload_libraries.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    BackgroundWorkerBuilder::new("customer_analyzer rescoring worker")
        .set_type("customer_analyzer rescoring")
        .set_library("customer_analyzer")
        .set_function("customer_analyzer_rescore_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(RESTART_AFTER))
        .load();
}

extern "C-unwind" {
    /// PostgreSQL's own SIGTERM handler for backends (tcop/postgres.c); pgrx's binding
    /// of it is a Rust function, which cannot be a signal handler.
    #[link_name = "die"]
    fn postgres_die(signal: std::ffi::c_int);
}

/// Runs `f` in a transaction of its own, then reports the transaction's statistics
/// (table counts, WAL) as a backend does when it goes idle, which a background worker
/// must do itself.
#[allow(unsafe_code)] // pgstat_report_stat, between transactions on the worker's thread
pub(crate) fn transaction<R, F>(f: F) -> R
where
    F: FnOnce() -> R + std::panic::UnwindSafe + std::panic::RefUnwindSafe,
{
    let r = BackgroundWorker::transaction(f);
    // SAFETY: called outside any transaction, on the worker's own thread, as worker_spi
    // does after its commit; `false` lets PostgreSQL rate-limit the flush to once a second.
    unsafe { pg_sys::pgstat_report_stat(false) };
    r
}

/// Sets a worker up the way a backend is: PostgreSQL's SIGTERM handling, a connection to
/// `customer_analyzer.database` and a pinned search_path. Returns the database's name.
#[allow(unsafe_code)] // installs PostgreSQL's own SIGTERM handler, on the worker's thread
pub(crate) fn start_session() -> String {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP);
    // SAFETY: `die` is PostgreSQL's standard SIGTERM handler for backends; it only sets
    // the interrupt flags the next CHECK_FOR_INTERRUPTS acts on.
    unsafe {
        pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(postgres_die));
    }
    let database = gucs::worker_database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    // the workers run as the bootstrap superuser: pin the path for the whole session, as
    // every function of the extension pins it, so that nothing planted in a schema on the
    // default path (public) is ever called
    transaction(|| {
        Spi::run("SET search_path = pg_catalog, pg_temp")
            .unwrap_or_else(|e| panic!("pinning search_path: {e}"))
    });
    database
}

/// One queued user, as claimed.
struct Claimed {
    user_id: i64,
    generation: i64,
    event_at: Option<TimestampWithTimeZone>,
    /// The earliest `created_at` of the events queued since (Unix microseconds; the
    /// smallest value after an update or delete).
    earliest: i64,
}

/// How long a kept history serves before it is read in full again, whatever the queue
/// says (it bounds what a change the queue never saw can cost: a session that turned
/// real time off while it backfilled events).
const HISTORIES_MAX_AGE: Duration = Duration::from_secs(600);

thread_local! {
    /// The histories this worker read, kept for the same users' next events, with the
    /// sources and the events' storage they were read from (a change of either, such as
    /// a TRUNCATE or a partition dropped, empties it).
    static HISTORIES: RefCell<Option<(source::Sources, String, HistoryCache)>> =
        const { RefCell::new(None) };
}

/// Refreshes the features of `ids` with the kept histories, when the worker keeps any.
fn refresh_with_histories(
    client: &mut SpiClient<'_>,
    s: &source::Sources,
    ids: &[i64],
    earliest: &[i64],
) -> Result<feature_store::StoredRows> {
    let budget = gucs::worker_histories_bytes();
    if budget == 0 {
        forget_histories();
        return feature_store::refresh_users(client, s, ids, None);
    }
    let storage = source::events_storage(client, s)?;
    HISTORIES.with(|h| {
        let mut h = h.borrow_mut();
        let max_age = HISTORIES_MAX_AGE.as_micros() as i64;
        // kept while the sources, the events' storage and the budget stay as they were
        let kept = match h.take() {
            Some((src, st, cache)) if src == *s && st == storage && cache.budget() == budget => {
                (src, st, cache)
            }
            _ => (s.clone(), storage, HistoryCache::new(budget, max_age)),
        };
        let (_, _, cache) = h.insert(kept);
        feature_store::refresh_users(client, s, ids, Some(Kept { cache, earliest }))
    })
}

/// Forgets the kept histories (real time is off: the trigger no longer says what
/// changed).
fn forget_histories() {
    HISTORIES.with(|h| *h.borrow_mut() = None);
}

/// The worker's entry point (named in `register`).
#[pg_guard]
#[no_mangle]
#[allow(unsafe_code)] // re-reads the configuration on SIGHUP
pub extern "C-unwind" fn customer_analyzer_rescore_main(_arg: pg_sys::Datum) {
    let database = start_session();
    // see the module comment: derived data, recomputed after a crash
    transaction(|| {
        Spi::run("SET synchronous_commit = off")
            .unwrap_or_else(|e| panic!("committing without waiting: {e}"))
    });
    log!("customer_analyzer rescoring worker started in database {database}");
    let mut monitor = crate::retraining::Monitor::default();
    let mut last_heartbeat: Option<Instant> = None;
    let mut last_prune: Option<Instant> = None;
    let mut last_stall: Option<(String, Instant)> = None;
    let mut nap = gucs::naptime();
    while BackgroundWorker::wait_latch(Some(nap)) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: re-reads postgresql.conf as every backend does on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        nap = gucs::naptime();
        if !transaction(installed) {
            nap = NOT_INSTALLED_NAP;
            continue;
        }
        monitor.tick();
        if !gucs::realtime() {
            forget_histories();
            continue;
        }
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            transaction(|| logged("pruning logs", prune_logs));
            last_prune = Some(Instant::now());
        }
        let claimed = transaction(|| logged("claiming queued users", claim));
        let idle = claimed.as_ref().is_none_or(Vec::is_empty);
        let full = claimed
            .as_ref()
            .is_some_and(|c| c.len() as i64 >= gucs::batch_size());
        let beat = last_heartbeat.is_none_or(|t| t.elapsed() >= IDLE_HEARTBEAT);
        if idle && !beat {
            continue;
        }
        let users = claimed.unwrap_or_default();
        let outcome =
            transaction(move || logged("rescoring queued users", || rescore_batch(&users)));
        last_heartbeat = Some(Instant::now());
        match outcome {
            Some(Batch::Stalled { state, message }) => {
                // the source or the catalog is broken, not a user: keep the queue and wait
                if last_stall
                    .as_ref()
                    .is_none_or(|(m, t)| *m != message || t.elapsed() >= STALL_REPORT_EVERY)
                {
                    warning!(
                        "customer_analyzer rescoring worker: waiting, the queue is kept: {message} (SQLSTATE {state})"
                    );
                    transaction(|| {
                        logged("recording an error", || {
                            Spi::connect_mut(|c| record_error(c, None, &state, &message))
                        })
                    });
                    last_stall = Some((message, Instant::now()));
                }
                nap = STALL_NAP;
            }
            Some(Batch::Rescored) if !idle => {
                last_stall = None;
                // a full batch: more are waiting, look again at once. Otherwise the next
                // batch gathers for a naptime: a steady trickle of events is rescored a
                // batch at a time (a few statements and two commits per batch, not per
                // event), which leaves the shop's inserts most of the cores, for at most
                // a naptime's delay
                if full {
                    nap = Duration::from_millis(1);
                }
            }
            Some(Batch::Rescored) => {}
            None => nap = STALL_NAP,
        }
    }
}

/// What became of a claimed batch.
enum Batch {
    Rescored,
    /// An error that is not one user's (a missing table, a broken configuration): the
    /// batch stays queued.
    Stalled {
        state: String,
        message: String,
    },
}

/// Whether an error is about one user's own data (an unknown user, a value out of
/// range): recorded for that user, whose queue entry is then done. Anything else means
/// the source or the catalog is broken, and the users wait in the queue until it is
/// mended.
fn users_own(state: &str) -> bool {
    state.starts_with("22") || state == "P0002"
}

/// Runs `f` in a subtransaction; an error (ours or PostgreSQL's) is rolled back with it
/// and returned as its SQLSTATE and message instead of ending the worker.
pub(crate) fn attempt<R>(
    f: impl FnOnce() -> Result<R>,
) -> std::result::Result<R, (String, String)> {
    PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
        match crate::subxact::guarded(f) {
            Ok(r) => Ok(r),
            // raised, so that it arrives below with its SQLSTATE like PostgreSQL's own
            Err(e) => {
                e.report(PgLogLevel::ERROR);
                unreachable!("an ERROR report returns only by unwinding")
            }
        }
    }))
    .catch_others(|e| {
        Err(match e {
            pg_sys::panic::CaughtError::PostgresError(r)
            | pg_sys::panic::CaughtError::ErrorReport(r)
            | pg_sys::panic::CaughtError::RustPanic { ereport: r, .. } => {
                (sqlstate(r.sql_error_code()), r.message().to_string())
            }
        })
    })
    .execute()
}

/// The five-character SQLSTATE of a packed error code (PostgreSQL's unpack_sql_state).
fn sqlstate(code: pg_sys::errcodes::PgSqlErrorCode) -> String {
    let mut packed = code as i32;
    (0..5)
        .map(|_| {
            let c = char::from(b'0' + (packed & 0x3F) as u8);
            packed >>= 6;
            c
        })
        .collect()
}

/// Runs `f` like [`attempt`], logging a failure as a warning.
pub(crate) fn logged<R>(what: &str, f: impl FnOnce() -> Result<R>) -> Option<R> {
    match attempt(f) {
        Ok(r) => Some(r),
        Err((state, message)) => {
            let worker = BackgroundWorker::get_name();
            warning!("{worker}: {what}: {message} (SQLSTATE {state})");
            None
        }
    }
}

/// `prune()`, in its own transaction.
fn prune_logs() -> Result<()> {
    Spi::connect_mut(|client| crate::retention::prune_logs(client).map(|_| ()))
}

/// Whether this database has the extension at this library's version (the newest
/// schema's mark exists: the feature_store table): between
/// installing a new build and `ALTER EXTENSION customer_analyzer UPDATE` the workers
/// wait.
pub(crate) fn installed() -> bool {
    Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'customer_analyzer')
            AND pg_catalog.to_regclass('customer_analyzer.feature_store') IS NOT NULL",
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// Claims the oldest queued users (see the module comment).
fn claim() -> Result<Vec<Claimed>> {
    Spi::connect(|client| {
        let rows = plans::select(
            client,
            "SELECT user_id, generation, last_event_at, earliest_event_at
             FROM customer_analyzer.rescore_queue
             ORDER BY first_enqueued_at, user_id LIMIT $1",
            &[INT8],
            &[gucs::batch_size().into()],
        )?;
        rows.map(|r| {
            Ok(Claimed {
                user_id: r.get::<i64>(1).ctx("claiming")?.unwrap_or_default(),
                generation: r.get::<i64>(2).ctx("claiming")?.unwrap_or_default(),
                event_at: r.get::<TimestampWithTimeZone>(3).ctx("claiming")?,
                earliest: r
                    .get::<TimestampWithTimeZone>(4)
                    .ctx("claiming")?
                    .map_or(i64::MIN, to_unix_micros),
            })
        })
        .collect()
    })
}

/// Rescores `users`, deletes their rows at the claimed generations and writes the
/// heartbeat (also while stalled: the worker is alive and says so). A batch that fails is
/// done again user by user, so that one bad user is recorded and the others are still
/// rescored; an error that is not a user's own stalls the batch instead (nothing is
/// deleted).
fn rescore_batch(users: &[Claimed]) -> Result<Batch> {
    Spi::connect_mut(|client| {
        let (rescored, outcome) = if users.is_empty() {
            (0, Batch::Rescored)
        } else {
            rescore_claimed(client, users)?
        };
        plans::update(
            client,
            "INSERT INTO customer_analyzer.worker_status AS w
                 (singleton, pid, started_at, last_seen, users_rescored, last_batch_at)
             VALUES (true, pg_catalog.pg_backend_pid(), pg_catalog.pg_postmaster_start_time(),
                     pg_catalog.clock_timestamp(), $1,
                     CASE WHEN $1 > 0 THEN pg_catalog.clock_timestamp() END)
             ON CONFLICT (singleton) DO UPDATE SET
                 started_at = CASE WHEN w.pid = EXCLUDED.pid THEN w.started_at
                                   ELSE pg_catalog.clock_timestamp() END,
                 pid = EXCLUDED.pid,
                 last_seen = EXCLUDED.last_seen,
                 users_rescored = w.users_rescored + $1,
                 last_batch_at = coalesce(EXCLUDED.last_batch_at, w.last_batch_at)",
            &[INT8],
            &[rescored.into()],
        )?;
        Ok(outcome)
    })
}

/// Rescores claimed users (see `rescore_batch`); returns how many, and whether the batch
/// stalled, in which case nothing was deleted from the queue.
fn rescore_claimed(client: &mut SpiClient<'_>, users: &[Claimed]) -> Result<(i64, Batch)> {
    let stalled = |state, message| Ok((0, Batch::Stalled { state, message }));
    let s = match attempt(|| source::load(client)) {
        Ok(s) => s,
        Err((state, message)) => return stalled(state, message),
    };
    let mut rescored = 0i64;
    match attempt(|| rescore_users(client, &s, users)) {
        Ok(()) => rescored = users.len() as i64,
        Err((state, message)) if !users_own(&state) => return stalled(state, message),
        Err(_) => {
            for u in users {
                match attempt(|| rescore_users(client, &s, std::slice::from_ref(u))) {
                    Ok(()) => rescored += 1,
                    Err((state, message)) => {
                        record_error(client, Some(u.user_id), &state, &message)?
                    }
                }
            }
        }
    }
    let ids: Vec<i64> = users.iter().map(|u| u.user_id).collect();
    let generations: Vec<i64> = users.iter().map(|u| u.generation).collect();
    plans::update(
        client,
        "WITH held AS (
             SELECT user_id, generation FROM customer_analyzer.rescore_queue
             WHERE user_id = ANY($1) ORDER BY user_id FOR UPDATE SKIP LOCKED)
         DELETE FROM customer_analyzer.rescore_queue q
         USING held, unnest($1, $2) AS done(user_id, generation)
         WHERE q.user_id = held.user_id AND held.user_id = done.user_id
           AND held.generation = done.generation",
        &[INT8_ARRAY, INT8_ARRAY],
        &[ids.into(), generations.into()],
    )?;
    Ok((rescored, Batch::Rescored))
}

/// Records a user the worker could not rescore (None: a whole batch that waits).
fn record_error(
    client: &mut SpiClient<'_>,
    user_id: Option<i64>,
    state: &str,
    message: &str,
) -> Result<()> {
    plans::update(
        client,
        "INSERT INTO customer_analyzer.worker_errors (source, user_id, sqlstate, message)
         VALUES ('worker', $1, $2, $3)",
        &[INT8, TEXT, TEXT],
        &[user_id.into(), state.into(), message.into()],
    )?;
    Ok(())
}

/// Some users: features, a prediction per deployed task (each announced), segments;
/// a few statements for the whole batch. Errors when one of them is unknown.
fn rescore_users(client: &mut SpiClient<'_>, s: &source::Sources, users: &[Claimed]) -> Result<()> {
    let ids: Vec<i64> = users.iter().map(|u| u.user_id).collect();
    let earliest: Vec<i64> = users.iter().map(|u| u.earliest).collect();
    let rows = refresh_with_histories(client, s, &ids, &earliest)?;
    if rows.user_ids.len() < ids.len() {
        // a user registered after now has no features yet and is simply skipped; one
        // missing from the users table is an error, recorded for that user
        feature_store::check_users_exist(client, s, &ids)?;
    }
    let event_at: std::collections::HashMap<i64, Option<TimestampWithTimeZone>> =
        users.iter().map(|u| (u.user_id, u.event_at)).collect();
    let (mut user_ids, mut tasks, mut scores, mut previous, mut models, mut times) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for task in Task::ALL {
        for p in serving::score_and_log(client, task, &rows)? {
            user_ids.push(p.user_id);
            tasks.push(task.name());
            scores.push(p.score);
            previous.push(p.previous);
            models.push(p.model_id);
            times.push(event_at.get(&p.user_id).copied().flatten());
        }
    }
    segments::reassign_users(client, &rows)?;
    if !user_ids.is_empty() {
        plans::update(
            client,
            "SELECT count(pg_catalog.pg_notify($1, pg_catalog.json_build_object(
                 'user_id', u, 'task', t, 'score', s, 'previous_score', p,
                 'model_id', m, 'event_at', e)::text))
             FROM unnest($2::bigint[], $3::text[], $4::float8[], $5::float8[], $6::bigint[],
                         $7::timestamptz[]) AS x(u, t, s, p, m, e)",
            &[
                TEXT,
                INT8_ARRAY,
                TEXT_ARRAY,
                FLOAT8_ARRAY,
                FLOAT8_ARRAY,
                INT8_ARRAY,
                TIMESTAMPTZ_ARRAY,
            ],
            &[
                CHANNEL.into(),
                user_ids.into(),
                tasks.into(),
                scores.into(),
                previous.into(),
                models.into(),
                times.into(),
            ],
        )?;
    }
    Ok(())
}
