//! Helpers for the client-side tests: a database per test binary on the server named by
//! `CA_IT_DSN` (scripts/test.sh starts one), a demo shop in it, and the error and timing
//! checks the tests share. These tests need committed settings, several sessions and
//! real cancels, which a `#[pg_test]` (one rolled-back transaction) cannot give.

use std::time::{Duration, Instant};

pub use postgres::{Client, NoTls};

/// The project's build and test tree (scripts/env.sh), where the test server runs from.
pub fn pg_tree() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var("CA_PG_TREE").unwrap_or_else(|_| {
        panic!("CA_PG_TREE is not set: run these tests through scripts/test.sh")
    }))
}

/// A PostgreSQL program of the build and test tree.
pub fn pg_bin(name: &str) -> std::path::PathBuf {
    pg_tree().join("lib/postgresql/15/bin").join(name)
}

/// Restarts the test server with `pg_ctl restart -m immediate` (a crash, for its data:
/// every backend is killed and the server recovers from the WAL), as the postgres user,
/// and waits until it accepts connections again.
pub fn restart_immediately(c: &mut Client) {
    let data: String = value(c, "SHOW data_directory");
    let log = format!("{data}/server.log");
    // the server's output goes to its log: a restarted postmaster that inherited our
    // pipes would keep them open and output() would never return
    let out = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(pg_bin("pg_ctl"))
        .args([
            "-D",
            &data,
            "-l",
            &log,
            "-m",
            "immediate",
            "-w",
            "-t",
            "120",
            "restart",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("pg_ctl restart: {e}"));
    assert!(
        out.status.success(),
        "pg_ctl restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The server's connection string, e.g. `host=127.0.0.1 port=5499 user=postgres`.
pub fn dsn() -> String {
    std::env::var("CA_IT_DSN").unwrap_or_else(|_| {
        panic!("CA_IT_DSN is not set: run these tests through scripts/test.sh, which starts a server for them")
    })
}

/// A connection to database `db` of the test server.
pub fn connect(db: &str) -> Client {
    let dsn = format!(
        "{} dbname={db} application_name=customer_analyzer_it",
        dsn()
    );
    Client::connect(&dsn, NoTls).unwrap_or_else(|e| panic!("connecting to {db}: {e}"))
}

/// Creates database `db` afresh with the extension and a demo shop of `users` users over
/// `days` days ending now, its feature store filled.
pub fn fresh_shop(db: &str, users: i32, days: i32) {
    let mut admin = connect("postgres");
    // one statement each: neither may run inside the implicit transaction of a batch
    for sql in [
        format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        format!("CREATE DATABASE {db}"),
    ] {
        admin
            .batch_execute(&sql)
            .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    }
    let mut c = connect(db);
    c.batch_execute(&format!(
        "SET client_min_messages = warning;
         CREATE EXTENSION customer_analyzer;
         SELECT customer_analyzer.generate_demo_data({users}, {days}, 42);
         SELECT customer_analyzer.refresh_features();"
    ))
    .unwrap_or_else(|e| panic!("setting up the demo shop in {db}: {}", describe(&e)));
}

/// An error with the server's SQLSTATE and message, which `Display` leaves out.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {}", d.code().code(), d.message()),
        None => e.to_string(),
    }
}

/// The SQLSTATE of a failed statement, or "ok".
pub fn sqlstate<T>(r: &Result<T, postgres::Error>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| format!("no SQLSTATE: {e}")),
    }
}

/// When the postmaster started: a restart after a crashed backend changes it.
pub fn postmaster_start(c: &mut Client) -> String {
    c.query_one("SELECT pg_postmaster_start_time()::text", &[])
        .map(|r| r.get(0))
        .unwrap_or_else(|e| panic!("reading the postmaster start time: {e}"))
}

/// One value of a query.
pub fn value<T: for<'a> postgres::types::FromSql<'a>>(c: &mut Client, sql: &str) -> T {
    c.query_one(sql, &[])
        .map(|r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
}

/// Runs `sql` under `statement_timeout = timeout`; returns its SQLSTATE and duration.
pub fn run_with_timeout(c: &mut Client, sql: &str, timeout: Duration) -> (String, Duration) {
    c.batch_execute(&format!("SET statement_timeout = {}", timeout.as_millis()))
        .unwrap_or_else(|e| panic!("setting statement_timeout: {e}"));
    let t0 = Instant::now();
    let r = c.batch_execute(sql);
    let took = t0.elapsed();
    c.batch_execute("RESET statement_timeout")
        .unwrap_or_else(|e| panic!("resetting statement_timeout: {e}"));
    (sqlstate(&r), took)
}

/// Runs `sql` in `c` while a second session of `db` calls pg_cancel_backend on it after
/// `after`; returns its SQLSTATE and duration.
pub fn run_and_cancel(db: &str, c: &mut Client, sql: &str, after: Duration) -> (String, Duration) {
    let pid: i32 = value(c, "SELECT pg_backend_pid()");
    let db = db.to_string();
    let canceller = std::thread::spawn(move || {
        let mut other = connect(&db);
        std::thread::sleep(after);
        let ok: bool = value(&mut other, &format!("SELECT pg_cancel_backend({pid})"));
        ok
    });
    let t0 = Instant::now();
    let r = c.batch_execute(sql);
    let took = t0.elapsed();
    let sent = canceller
        .join()
        .unwrap_or_else(|_| panic!("the cancelling session panicked"));
    assert!(sent, "pg_cancel_backend found no backend {pid}");
    (sqlstate(&r), took)
}

/// Polls `done` every 100 ms until it holds; fails after `bound` (generous: it only
/// catches a hang).
pub fn wait_until(what: &str, bound: Duration, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < bound, "waited {bound:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
