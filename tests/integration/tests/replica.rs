//! Predictions from a hot standby: `scripts/replica.sh start` (with `CA_REPLICA_OF=test`)
//! makes a streaming replica of the test server. After replay the standby answers
//! `predict_churn`, `predict_purchase`, `explain`, `segment_of` and `user_predictions`
//! exactly as the primary does for users in the feature store; a deploy and a rollback
//! on the primary are served by the standby once replayed, by a session that stays
//! connected (its model cache follows); every function that writes refuses with 25006
//! and a hint to use the primary, every reading one answers; the extension's worker,
//! preloaded there too, does not start on the standby; and on the primary a read-only
//! transaction is refused the same way before any work.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use customer_analyzer_integration::*;

const DB: &str = "ca_it_replica";
/// Generous bounds that only catch a hang.
const WAIT: Duration = Duration::from_secs(120);

/// The database error of `call`'s result, which must be 25006 (read-only transaction).
fn read_only_error<'r, T: std::fmt::Debug>(
    r: &'r Result<T, postgres::Error>,
    call: &str,
) -> &'r postgres::error::DbError {
    let e = r
        .as_ref()
        .err()
        .and_then(|e| e.as_db_error())
        .unwrap_or_else(|| panic!("{call}: expected a database error, got {r:?}"));
    assert_eq!(e.code().code(), "25006", "{call}: {}", e.message());
    e
}

/// Runs `scripts/replica.sh` for the test server; whether it succeeded, and its output.
fn replica_sh(action: &str) -> Result<(), String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/replica.sh");
    let primary_port = dsn()
        .split_whitespace()
        .find_map(|p| p.strip_prefix("port=").map(str::to_string))
        .unwrap_or_else(|| "5499".into());
    let out = Command::new("bash")
        .arg(&script)
        .arg(action)
        .env("CA_REPLICA_OF", "test")
        .env("CA_IT_PORT", primary_port)
        .env("CA_REPLICA_PORT", replica_port())
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "replica.sh {action}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn replica_port() -> String {
    std::env::var("CA_REPLICA_PORT").unwrap_or_else(|_| "5498".into())
}

/// Removes the replica however the test ends (without a panic of its own, which during
/// an unwind would abort the run and hide the first failure).
struct Replica;
impl Drop for Replica {
    fn drop(&mut self) {
        if let Err(e) = replica_sh("stop") {
            eprintln!("{e}");
        }
    }
}

fn connect_replica() -> Client {
    let dsn = format!(
        "host=127.0.0.1 port={} user=postgres dbname={DB} application_name=customer_analyzer_it",
        replica_port()
    );
    Client::connect(&dsn, NoTls).unwrap_or_else(|e| panic!("connecting to the replica: {e}"))
}

fn exec(c: &mut Client, sql: &str) {
    c.batch_execute(sql)
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
}

/// Waits until the standby has replayed everything the primary has written so far.
fn wait_for_replay(primary: &mut Client, standby: &mut Client) {
    let lsn: String = value(primary, "SELECT pg_current_wal_lsn()::text");
    let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
    wait_until("the standby's replay", WAIT, || {
        value::<bool>(standby, &sql)
    });
}

/// Every answer the standby must give exactly as the primary, one line per user.
const ANSWERS: &str = "
    SELECT format('%s churn %s purchase %s explain %s segment %s overview %s', u,
                  customer_analyzer.predict_churn(u), customer_analyzer.predict_purchase(u),
                  (SELECT json_agg(e)::text FROM customer_analyzer.explain('churn', u, 5) e),
                  (SELECT row_to_json(s)::text FROM customer_analyzer.segment_of(u) s),
                  (SELECT json_agg(p)::text FROM customer_analyzer.user_predictions(u, 3) p))
    FROM unnest($1::bigint[]) u ORDER BY u";

fn answers(c: &mut Client, users: &[i64]) -> Vec<String> {
    c.query(ANSWERS, &[&users])
        .unwrap_or_else(|e| panic!("answers: {}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn serving(c: &mut Client) -> i64 {
    value(
        c,
        "SELECT model_id FROM customer_analyzer.deployed_models WHERE task = 'churn'",
    )
}

#[test]
fn a_standby_serves_the_primarys_predictions_and_writes_nothing() {
    fresh_shop(DB, 1500, 240);
    let mut primary = connect(DB);
    exec(
        &mut primary,
        "SET client_min_messages = warning;
         SELECT customer_analyzer.train('churn', 'gbm');
         SELECT customer_analyzer.train('purchase', 'gbm');
         SELECT customer_analyzer.segment_users('kmeans', 4);",
    );
    let _replica = Replica;
    replica_sh("start").unwrap_or_else(|e| panic!("{e}"));
    let mut standby = connect_replica();
    assert!(value::<bool>(&mut standby, "SELECT pg_is_in_recovery()"));
    wait_for_replay(&mut primary, &mut standby);

    // users in the feature store, spread over the ids
    let users: Vec<i64> = primary
        .query(
            "SELECT user_id FROM customer_analyzer.user_metrics WHERE user_id % 37 = 1 ORDER BY user_id",
            &[],
        )
        .unwrap_or_else(|e| panic!("users: {}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(users.len() > 20, "{} users", users.len());
    let first = answers(&mut primary, &users);
    assert_eq!(answers(&mut standby, &users), first);
    let first_model = serving(&mut primary);
    assert_eq!(serving(&mut standby), first_model);

    // a user the store has not seen is computed at now() on the standby: it answers
    // without writing (the score may differ from the primary's by the clock)
    exec(
        &mut primary,
        "INSERT INTO public.users (id, telegram_id, username, registered_at, status)
         VALUES (900001, 900001, 'new', now() - interval '3 days', 'active');
         INSERT INTO public.events (user_id, event_type, created_at, event_data)
         VALUES (900001, 'page_view', now() - interval '1 day', '{}');",
    );
    wait_for_replay(&mut primary, &mut standby);
    let p: f64 = value(
        &mut standby,
        "SELECT customer_analyzer.predict_churn(900001)",
    );
    assert!((0.0..=1.0).contains(&p), "{p}");

    // a deploy on the primary is served by the same standby session once replayed
    exec(
        &mut primary,
        r#"SET client_min_messages = warning;
           SELECT customer_analyzer.train('churn', 'logistic', '{"deploy": "always"}');"#,
    );
    let second_model = serving(&mut primary);
    assert_ne!(second_model, first_model);
    let second = answers(&mut primary, &users);
    assert_ne!(second, first, "the new model scores like the old one");
    wait_for_replay(&mut primary, &mut standby);
    assert_eq!(serving(&mut standby), second_model);
    assert_eq!(answers(&mut standby, &users), second);

    // and so is a rollback
    exec(&mut primary, "SELECT customer_analyzer.rollback('churn')");
    assert_eq!(serving(&mut primary), first_model);
    wait_for_replay(&mut primary, &mut standby);
    assert_eq!(serving(&mut standby), first_model);
    assert_eq!(answers(&mut standby, &users), first);

    every_write_is_refused_and_every_read_answers(&mut standby);
    a_read_only_transaction_on_the_primary_is_refused_at_once(&mut primary);
    the_worker_runs_on_the_primary_only(&mut primary, &mut standby);
}

fn every_write_is_refused_and_every_read_answers(standby: &mut Client) {
    const WRITES: &[&str] = &[
        "SELECT customer_analyzer.configure()",
        "SELECT customer_analyzer.refresh_features()",
        "SELECT customer_analyzer.refresh_features(3)",
        "SELECT * FROM customer_analyzer.train('churn', 'gbm')",
        "SELECT * FROM customer_analyzer.tune('churn', 'logistic')",
        "SELECT customer_analyzer.score_all('churn')",
        "SELECT count(*) FROM customer_analyzer.segment_users('kmeans', 3)",
        "SELECT customer_analyzer.rename_segment(1, 0, 'Renamed')",
        "SELECT * FROM customer_analyzer.retrain('churn')",
        "SELECT customer_analyzer.rollback('churn')",
        "SELECT customer_analyzer.deploy(1)",
        "SELECT customer_analyzer.retire_model(1)",
        "SELECT count(*) FROM customer_analyzer.purge_models('0 seconds', 0)",
        "SELECT * FROM customer_analyzer.start_ab_test('churn', 1)",
        "SELECT customer_analyzer.stop_ab_test('churn')",
        "SELECT customer_analyzer.promote('churn')",
        "SELECT count(*) FROM customer_analyzer.evaluate_matured('churn')",
        "SELECT count(*) FROM customer_analyzer.prune()",
        "SELECT count(*) FROM customer_analyzer.forget_user(3)",
        "SELECT * FROM customer_analyzer.generate_demo_data(200, 240, 5, replace => true)",
    ];
    for call in WRITES {
        let r = standby.batch_execute(call);
        let e = read_only_error(&r, call);
        assert!(
            e.message().contains("read-only standby")
                && e.hint().is_some_and(|h| h.contains("on the primary")),
            "{call}: {} / {:?}",
            e.message(),
            e.hint()
        );
    }
    const READS: &[&str] = &[
        "SELECT count(*) FROM customer_analyzer.user_features()",
        "SELECT count(*) FROM customer_analyzer.data_quality()",
        "SELECT count(*) FROM customer_analyzer.labels('churn', now() - interval '70 days')",
        "SELECT count(*) FROM customer_analyzer.training_snapshots('churn')",
        "SELECT * FROM customer_analyzer.predict('churn', 3)",
        "SELECT count(*) FROM customer_analyzer.recent_events(3)",
        "SELECT count(*) FROM customer_analyzer.segment_map()",
        "SELECT count(*) FROM customer_analyzer.drift_report('churn')",
        "SELECT count(*) FROM customer_analyzer.user_overview",
        "SELECT count(*) FROM customer_analyzer.latest_predictions",
        "SELECT count(*) FROM customer_analyzer.model_metrics",
        "SELECT count(*) FROM customer_analyzer.current_segments",
        "SELECT count(*) FROM customer_analyzer.drift",
        "SELECT customer_analyzer.cached_models()",
        "SELECT customer_analyzer.clear_model_cache()",
    ];
    for call in READS {
        if let Err(e) = standby.batch_execute(call) {
            panic!("{call} on the standby: {}", describe(&e));
        }
    }
}

/// A read-only transaction on the primary is refused before any work, not after minutes
/// of training at the first INSERT.
fn a_read_only_transaction_on_the_primary_is_refused_at_once(primary: &mut Client) {
    let models: i64 = value(primary, "SELECT count(*) FROM customer_analyzer.models");
    for call in [
        "SELECT * FROM customer_analyzer.train('churn', 'gbm')",
        "SELECT customer_analyzer.score_all('churn')",
        "SELECT customer_analyzer.refresh_features(3)",
    ] {
        exec(primary, "BEGIN READ ONLY");
        let r = primary.batch_execute(call);
        exec(primary, "ROLLBACK");
        let e = read_only_error(&r, call);
        assert!(
            e.message().contains("this transaction is read-only"),
            "{call}: {}",
            e.message()
        );
    }
    assert_eq!(
        value::<i64>(primary, "SELECT count(*) FROM customer_analyzer.models"),
        models
    );
}

fn the_worker_runs_on_the_primary_only(primary: &mut Client, standby: &mut Client) {
    const WORKERS: &str =
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'customer_analyzer rescoring'";
    // the library is preloaded on both sides
    for c in [&mut *primary, &mut *standby] {
        let preload: String = value(c, "SHOW shared_preload_libraries");
        assert!(preload.contains("customer_analyzer"), "{preload}");
    }
    wait_until("the primary's rescoring worker", WAIT, || {
        value::<i64>(primary, WORKERS) == 1
    });
    assert_eq!(value::<i64>(standby, WORKERS), 0);
    let any: i64 = value(
        standby,
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'customer_analyzer%'",
    );
    assert_eq!(any, 0, "an extension worker runs on the standby");
}
