//! How long work runs inside a database backend.
//!
//! A backend is one process whose signal handlers and memory belong to one thread. So:
//! - parallel work runs on a bounded rayon pool whose threads block every signal (a
//!   cancel or a timeout is always delivered to the calling thread) and never call into
//!   the database;
//! - long loops are cut into chunks, and between chunks the calling thread runs the
//!   interrupt check (in the extension, PostgreSQL's `CHECK_FOR_INTERRUPTS`), never while
//!   a pool thread is still working;
//! - what a call will allocate is estimated first and refused when it exceeds the budget,
//!   since a failed allocation aborts the process.

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};

use crate::Error;

/// The interrupt check: returns Err to stop (tests), or does not return at all (the
/// extension raises the database error from inside it).
pub type Check = Box<dyn Fn() -> Result<(), Error>>;

/// Threads, interrupt check and budgets for one call.
pub struct Work {
    pool: rayon::ThreadPool,
    threads: usize,
    check: Check,
    /// Bytes a call may estimate it needs before it is refused or sampled.
    pub memory_limit: usize,
    /// Bytes a stored model may take.
    pub model_limit: usize,
}

pub const MB: usize = 1024 * 1024;

impl Work {
    /// A pool of `threads` threads (at least 1) started with every signal blocked.
    pub fn new(
        threads: usize,
        memory_limit: usize,
        model_limit: usize,
        check: Check,
    ) -> Result<Work, Error> {
        let threads = threads.max(1);
        let pool = with_signals_blocked(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("customer_analyzer worker {i}"))
                .build()
        })?
        .map_err(|e| Error::Internal(format!("starting threads: {e}")))?;
        Ok(Work {
            pool,
            threads,
            check,
            memory_limit,
            model_limit,
        })
    }

    /// Work with no interrupt check and generous budgets: tests and benchmarks.
    pub fn unbounded(threads: usize) -> Work {
        Work::new(threads, usize::MAX / 4, usize::MAX / 4, Box::new(|| Ok(())))
            .unwrap_or_else(|e| panic!("starting a thread pool: {e}"))
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Whether library calls should use their parallel code paths.
    pub fn parallel(&self) -> bool {
        self.threads > 1
    }

    /// Runs the interrupt check. Called between chunks on the calling thread only; on a
    /// pool thread it does nothing, because the database must not be entered there.
    pub fn checkpoint(&self) -> Result<(), Error> {
        if rayon::current_thread_index().is_some() {
            debug_assert!(false, "checkpoint() called on a pool thread");
            return Ok(());
        }
        (self.check)()
    }

    /// Runs `op` on the pool and waits for it. Every rayon call a library makes inside
    /// `op` uses this pool, never rayon's global one.
    pub fn install<R: Send>(&self, op: impl FnOnce() -> R + Send) -> R {
        self.pool.install(op)
    }

    /// Starts `op` on the pool and returns at once, so that the calling (backend) thread
    /// can go on, typically reading the next batch from PostgreSQL while the pool works on
    /// this one; [`Work::wait`] collects the result. Rayon calls inside `op` use the pool.
    pub fn start<R: Send + 'static>(&self, op: impl FnOnce() -> R + Send + 'static) -> Pending<R> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.pool.spawn(move || {
            // a panic travels to the waiting thread; a spawned job's panic would abort
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(op)));
        });
        Pending { rx }
    }

    /// Waits for a job of [`Work::start`], checking for interrupts while it runs; a panic
    /// in the job resumes here.
    pub fn wait<R>(&self, job: Pending<R>) -> Result<R, Error> {
        use std::sync::mpsc::RecvTimeoutError;
        loop {
            match job.rx.recv_timeout(std::time::Duration::from_millis(50)) {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(panic)) => std::panic::resume_unwind(panic),
                Err(RecvTimeoutError::Timeout) => self.checkpoint()?,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::Internal("a pool job ended without a result".into()))
                }
            }
        }
    }

    /// `f(start..end)` for consecutive chunks of `0..n`, run in parallel on the pool, with
    /// an interrupt check between rounds of chunks. `f` must be cheap enough per chunk that
    /// a round takes well under a second.
    pub fn for_chunks<T: Send>(
        &self,
        n: usize,
        chunk: usize,
        f: impl Fn(std::ops::Range<usize>) -> T + Sync,
    ) -> Result<Vec<T>, Error> {
        use rayon::prelude::*;
        let chunk = chunk.max(1);
        let starts: Vec<usize> = (0..n).step_by(chunk).collect();
        let mut out = Vec::with_capacity(starts.len());
        for round in starts.chunks(self.threads * 4) {
            self.checkpoint()?;
            let part: Vec<T> = self.install(|| {
                round
                    .par_iter()
                    .map(|&s| f(s..(s + chunk).min(n)))
                    .collect()
            });
            out.extend(part);
        }
        Ok(out)
    }

    /// Refuses (54000 in the extension) when `bytes` exceeds the memory budget.
    pub fn reserve(&self, what: &str, bytes: usize) -> Result<(), Error> {
        if bytes > self.memory_limit {
            return Err(Error::TooLarge {
                what: what.to_string(),
                needed_mb: bytes.div_ceil(MB),
                limit_mb: self.memory_limit / MB,
                setting: "customer_analyzer.max_memory_mb",
            });
        }
        Ok(())
    }
}

/// A job running on the pool; see [`Work::start`]. Dropping it leaves the job to finish
/// on its own (it holds only its own data).
pub struct Pending<R> {
    rx: std::sync::mpsc::Receiver<std::thread::Result<R>>,
}

/// Runs `f` (which starts threads) with every signal blocked on this thread. New threads
/// inherit the creating thread's mask, so they never run a signal handler, and no window
/// is left before a start handler could block them.
fn with_signals_blocked<R>(f: impl FnOnce() -> R) -> Result<R, Error> {
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut old))
        .map_err(|e| Error::Internal(format!("blocking signals: {e}")))?;
    let r = f();
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None)
        .map_err(|e| Error::Internal(format!("restoring the signal mask: {e}")))?;
    Ok(r)
}

/// Makes rayon's global pool one thread with every signal blocked, so that a library
/// call that reaches it outside `Work::install` still cannot take a signal meant for
/// the backend. Does nothing when the global pool already exists.
pub fn tame_global_pool() {
    let _ = with_signals_blocked(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "customer_analyzer global".into())
            .build_global()
    });
}

/// A vector of `n` copies of `value`, or an error instead of an abort when the allocator
/// refuses.
pub fn try_filled<T: Clone>(n: usize, value: T) -> Result<Vec<T>, Error> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Error::OutOfMemory(format!("{n} values")))?;
    v.resize(n, value);
    Ok(v)
}

/// Reserves room for `extra` more items, or an error instead of an abort.
pub fn try_grow<T>(v: &mut Vec<T>, extra: usize) -> Result<(), Error> {
    v.try_reserve(extra)
        .map_err(|_| Error::OutOfMemory(format!("{extra} more values")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn pool_threads_block_every_signal() {
        let work = Work::unbounded(2);
        let blocked = work.install(|| {
            let mut mask = SigSet::empty();
            pthread_sigmask(SigmaskHow::SIG_BLOCK, None, Some(&mut mask)).unwrap();
            [
                nix::sys::signal::SIGINT,
                nix::sys::signal::SIGALRM,
                nix::sys::signal::SIGTERM,
            ]
            .iter()
            .all(|s| mask.contains(*s))
        });
        assert!(blocked);
        // and the calling thread's own mask is back as it was
        let mut mine = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, None, Some(&mut mine)).unwrap();
        assert!(!mine.contains(nix::sys::signal::SIGINT));
    }

    #[test]
    fn chunks_cover_everything_and_stop_at_the_check() {
        let work = Work::unbounded(2);
        let sums = work.for_chunks(1000, 7, |r| r.sum::<usize>()).unwrap();
        assert_eq!(sums.iter().sum::<usize>(), (0..1000).sum::<usize>());

        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        let work = Work::new(
            2,
            usize::MAX,
            usize::MAX,
            Box::new(move || {
                c.set(c.get() + 1);
                if c.get() > 3 {
                    Err(Error::Cancelled)
                } else {
                    Ok(())
                }
            }),
        )
        .unwrap();
        let r = work.for_chunks(100_000, 10, |r| r.len());
        assert_eq!(r, Err(Error::Cancelled));
        assert_eq!(calls.get(), 4);
    }

    #[test]
    fn started_jobs_overlap_the_caller_and_report_panics_and_interrupts() {
        let work = Work::unbounded(1);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // the job waits for the caller, so it must be running while the caller goes on
        let job = work.start(move || {
            rx.recv().unwrap();
            21 * 2
        });
        tx.send(()).unwrap();
        assert_eq!(work.wait(job), Ok(42));

        let job = work.start(|| -> i32 { panic!("inside the job") });
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work.wait(job)));
        assert!(caught.is_err(), "the panic was lost");
        assert_eq!(work.wait(work.start(|| 7)), Ok(7));

        let stopping = Work::new(
            1,
            usize::MAX,
            usize::MAX,
            Box::new(|| Err(Error::Cancelled)),
        )
        .unwrap();
        let job = stopping.start(|| std::thread::sleep(std::time::Duration::from_secs(5)));
        let t = std::time::Instant::now();
        assert_eq!(stopping.wait(job), Err(Error::Cancelled));
        assert!(
            t.elapsed() < std::time::Duration::from_secs(4),
            "the wait ignored the check"
        );
    }

    #[test]
    fn a_panic_on_a_pool_thread_reaches_the_caller() {
        let work = Work::unbounded(2);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            work.install(|| {
                use rayon::prelude::*;
                (0..100)
                    .into_par_iter()
                    .for_each(|i| assert!(i < 50, "row {i}"));
            })
        }));
        assert!(caught.is_err(), "the panic was lost");
        // and the pool still works
        assert_eq!(work.install(|| 2 + 2), 4);
    }

    #[test]
    fn budgets_refuse_before_allocating() {
        let work = Work::new(1, 10 * MB, MB, Box::new(|| Ok(()))).unwrap();
        assert!(work.reserve("a table", 5 * MB).is_ok());
        match work.reserve("a table", 50 * MB) {
            Err(Error::TooLarge {
                needed_mb,
                limit_mb,
                ..
            }) => assert_eq!((needed_mb, limit_mb), (50, 10)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            try_filled(usize::MAX / 2, 0u64),
            Err(Error::OutOfMemory(_))
        ));
    }
}
