//! A cancel or a statement timeout during long Rust work ends the call with 57014
//! quickly, writes nothing, and never restarts the server. Each call below would run far
//! longer uncancelled: the test first shows that (it is still running at the probe, or
//! it runs to the end much later), then stops it with a 2-second statement_timeout and
//! with pg_cancel_backend from a second session.

use std::sync::Once;
use std::time::Duration;

use customer_analyzer_integration::*;

const DB: &str = "ca_it_cancel";
/// When the timeout or the cancel strikes.
const STOP_AFTER: Duration = Duration::from_secs(2);
/// The generous bound a stopped call must end within (the cancel itself lands in
/// well under a second; benches/README.md has the figures).
const BOUND: Duration = Duration::from_secs(6);
/// How long the uncancelled call is given to show that it runs long.
const PROBE: Duration = Duration::from_secs(30);

static SHOP: Once = Once::new();

fn shop() {
    SHOP.call_once(|| {
        fresh_shop(DB, 20_000, 240);
        let mut c = connect(DB);
        c.batch_execute("SELECT * FROM customer_analyzer.train('churn', 'logistic')")
            .unwrap_or_else(|e| panic!("training the churn model: {}", describe(&e)));
    });
}

/// What must not change when a call is stopped.
fn state(c: &mut Client) -> (String, i64, i64, i64) {
    (
        postmaster_start(c),
        value(c, "SELECT count(*) FROM customer_analyzer.models"),
        value(c, "SELECT count(*) FROM customer_analyzer.deployments"),
        value(c, "SELECT count(*) FROM customer_analyzer.predictions"),
    )
}

/// Shows that `call` runs long, then that a timeout and a cancel stop it within BOUND.
fn stops_quickly(call: &str, settings: &str) {
    shop();
    let mut c = connect(DB);
    c.batch_execute(settings)
        .unwrap_or_else(|e| panic!("{settings}: {}", describe(&e)));
    let before = state(&mut c);

    let (probe_state, uncancelled) = run_with_timeout(&mut c, call, PROBE);
    if probe_state == "ok" {
        // it finished: undo what it wrote, so that "nothing written" can be checked
        c.batch_execute("DELETE FROM customer_analyzer.predictions")
            .unwrap_or_else(|e| panic!("cleaning up: {}", describe(&e)));
    } else {
        assert_eq!(probe_state, "57014", "{call} under the probe");
    }
    assert!(
        uncancelled >= 3 * BOUND,
        "{call} took only {uncancelled:?} uncancelled: choose heavier arguments"
    );

    let (s, took) = run_with_timeout(&mut c, call, STOP_AFTER);
    assert_eq!(
        s, "57014",
        "{call} under a {STOP_AFTER:?} statement_timeout"
    );
    assert!(took < BOUND, "{call}: the timeout landed after {took:?}");
    eprintln!("{call}: timeout after {STOP_AFTER:?} ended the call at {took:?} (uncancelled: {uncancelled:?}+)");

    let (s, took) = run_and_cancel(DB, &mut c, call, STOP_AFTER);
    assert_eq!(s, "57014", "{call} cancelled by pg_cancel_backend");
    assert!(took < BOUND, "{call}: the cancel landed after {took:?}");
    eprintln!("{call}: pg_cancel_backend after {STOP_AFTER:?} ended the call at {took:?}");

    let mut fresh = connect(DB);
    let after = state(&mut fresh);
    if probe_state == "ok" {
        assert_eq!(
            (&after.0, after.1, after.2),
            (&before.0, before.1, before.2)
        );
    } else {
        assert_eq!(
            after, before,
            "{call}: the server restarted or something was written"
        );
    }
    // the session that was cancelled still works
    assert_eq!(value::<i32>(&mut c, "SELECT 1"), 1);
}

#[test]
fn a_long_training_stops() {
    stops_quickly(
        "SELECT * FROM customer_analyzer.train('purchase', 'gbm', \
         '{\"iterations\": 5000, \"max_depth\": 12, \"learning_rate\": 0.01, \"early_stopping_rounds\": 0, \"deploy\": \"never\"}')",
        // so that the model-size cap does not end the training first
        "SET customer_analyzer.max_model_mb = 1024",
    );
}

#[test]
fn a_hyperparameter_search_stops() {
    stops_quickly(
        "SELECT * FROM customer_analyzer.train('churn', 'random_forest', \
         '{\"search\": true, \"validation\": \"cv\", \"n_trees\": 1000, \"deploy\": \"never\"}')",
        "SET customer_analyzer.max_model_mb = 1024",
    );
}

#[test]
fn a_segmentation_stops() {
    stops_quickly(
        "SELECT * FROM customer_analyzer.segment_users('kmeans', NULL, '{\"silhouette_sample\": 20000}')",
        "RESET ALL",
    );
}

/// Removes the copies `a_batch_scoring_stops` adds, however that test ends.
struct Shrink;
impl Drop for Shrink {
    fn drop(&mut self) {
        let mut c = connect(DB);
        let _ = c
            .batch_execute("DELETE FROM customer_analyzer.feature_store WHERE user_id > 100000000");
    }
}

#[test]
fn a_batch_scoring_stops() {
    shop();
    let _shrink = Shrink;
    let mut c = connect(DB);
    // a feature store sixty times the shop: copies of every user under new ids
    c.batch_execute(
        "CREATE TEMP TABLE copy AS SELECT * FROM customer_analyzer.feature_store;
         DO $$ BEGIN
             FOR k IN 1..59 LOOP
                 UPDATE copy SET user_id = user_id + 100000000;
                 INSERT INTO customer_analyzer.feature_store SELECT * FROM copy;
             END LOOP;
         END $$;
         ANALYZE customer_analyzer.feature_store;",
    )
    .unwrap_or_else(|e| panic!("growing the feature store: {}", describe(&e)));
    stops_quickly("SELECT customer_analyzer.score_all('churn')", "RESET ALL");
}

#[test]
fn a_terminated_training_ends_its_session_only() {
    shop();
    let mut c = connect(DB);
    c.batch_execute("SET customer_analyzer.max_model_mb = 1024")
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    let before = postmaster_start(&mut c);
    let pid: i32 = value(&mut c, "SELECT pg_backend_pid()");
    let killer = std::thread::spawn(move || {
        let mut other = connect(DB);
        std::thread::sleep(STOP_AFTER);
        value::<bool>(&mut other, &format!("SELECT pg_terminate_backend({pid})"))
    });
    let t0 = std::time::Instant::now();
    let r = c.batch_execute(
        "SELECT * FROM customer_analyzer.train('purchase', 'gbm', \
         '{\"iterations\": 5000, \"max_depth\": 12, \"early_stopping_rounds\": 0, \"deploy\": \"never\"}')",
    );
    let took = t0.elapsed();
    assert!(
        killer.join().unwrap_or(false),
        "pg_terminate_backend failed"
    );
    assert!(r.is_err(), "the training survived pg_terminate_backend");
    assert!(took < BOUND, "termination landed after {took:?}");
    let mut fresh = connect(DB);
    assert_eq!(postmaster_start(&mut fresh), before, "the server restarted");
}
