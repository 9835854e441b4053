//! The model lifecycle across sessions, against the test server (which preloads pg_cron
//! and the library, the workers serving database `ca_it_realtime`; see
//! `scripts/test-cluster.sh`): a second retrain of a task fails at once while one runs
//! and nothing is half-written; a deploy rolled back leaves every session and the
//! rescoring worker on the old model; the retraining worker retrains on its schedule and
//! records a failed attempt, and records matured outcomes; it retrains once when the
//! scores drift and once when the live AUC falls, one worker at a time, and never with
//! `monitor_interval = 0`; pg_cron's jobs call retrain(), and a failing job leaves
//! nothing behind.

use std::time::{Duration, Instant};

use customer_analyzer_integration::*;

/// The database the test server's workers serve.
const DB: &str = "ca_it_realtime";
/// Generous bounds that only catch a hang.
const WAIT: Duration = Duration::from_secs(120);
/// pg_cron runs a `* * * * *` job at the start of the next minute.
const CRON_WAIT: Duration = Duration::from_secs(200);

fn exec(c: &mut Client, sql: &str) {
    c.batch_execute(sql)
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
}

#[test]
fn lifecycle() {
    fresh_shop(DB, 1500, 240);
    let mut c = connect(DB);
    exec(
        &mut c,
        "SET client_min_messages = warning;
         SELECT customer_analyzer.train('churn', 'gbm');
         SELECT customer_analyzer.configure();",
    );
    a_second_retrain_fails_at_once_and_nothing_is_half_written(&mut c);
    a_deploy_rolled_back_leaves_every_session_on_the_old_model(&mut c);
    the_retraining_worker_retrains_on_schedule_and_records_failures(&mut c);
    the_retraining_worker_retrains_on_drift_and_on_live_auc_once_each(&mut c);
    monitor_interval_zero_starts_no_retraining_worker(&mut c);
    pg_cron_calls_retrain_and_a_failing_job_leaves_nothing_behind(&mut c);
}

fn counts(c: &mut Client) -> (i64, i64, i64) {
    (
        value(c, "SELECT count(*) FROM customer_analyzer.models"),
        value(c, "SELECT count(*) FROM customer_analyzer.retrain_log"),
        value(c, "SELECT count(*) FROM customer_analyzer.deployments"),
    )
}

fn a_second_retrain_fails_at_once_and_nothing_is_half_written(c: &mut Client) {
    let before = counts(c);
    let mut first = connect(DB);
    exec(
        &mut first,
        "BEGIN; SELECT * FROM customer_analyzer.retrain('churn')",
    );
    // the first holds the task's retrain lock until it ends
    let t0 = Instant::now();
    let r = c.batch_execute("SELECT * FROM customer_analyzer.retrain('churn')");
    assert_eq!(
        sqlstate(&r),
        "55P03",
        "{:?}",
        r.as_ref().err().map(describe)
    );
    assert!(t0.elapsed() < WAIT, "the second retrain waited");
    exec(&mut first, "ROLLBACK");
    assert_eq!(counts(c), before, "a rolled-back retrain left rows behind");
    // once the first is gone the lock is free
    let ok: bool = value(
        c,
        "SELECT previous_model_id IS NOT NULL FROM customer_analyzer.retrain('churn')",
    );
    assert!(ok);
}

fn a_deploy_rolled_back_leaves_every_session_on_the_old_model(c: &mut Client) {
    let champion: i64 = value(
        c,
        "SELECT model_id FROM customer_analyzer.deployed_models WHERE task = 'churn'",
    );
    let other: i64 = value(
        c,
        "SELECT model_id FROM customer_analyzer.train('churn', 'logistic', '{\"deploy\": \"never\"}')",
    );
    let user: i64 = value(
        c,
        "SELECT user_id FROM customer_analyzer.user_metrics ORDER BY user_id LIMIT 1 OFFSET 11",
    );
    let predict = format!("SELECT customer_analyzer.predict_churn({user})");
    let before: f64 = value(c, &predict);
    let mut deployer = connect(DB);
    // warm the deployer's cache with the champion first
    assert_eq!(value::<f64>(&mut deployer, &predict), before);
    exec(
        &mut deployer,
        &format!("BEGIN; SELECT customer_analyzer.deploy({other})"),
    );
    let inside: f64 = value(&mut deployer, &predict);
    assert_ne!(inside, before, "the other model scores this user the same");
    assert_eq!(
        value::<f64>(c, &predict),
        before,
        "an uncommitted deploy was seen"
    );
    exec(&mut deployer, "ROLLBACK");
    assert_eq!(value::<f64>(&mut deployer, &predict), before);
    assert_eq!(value::<f64>(c, &predict), before);
    let serving: i64 = value(
        c,
        "SELECT model_id FROM customer_analyzer.deployed_models WHERE task = 'churn'",
    );
    assert_eq!(serving, champion);
    // and the rescoring worker scores with the champion
    let since: String = value(c, "SELECT clock_timestamp()::text");
    c.execute(
        "INSERT INTO public.events (user_id, event_type, created_at, event_data)
         VALUES ($1, 'page_view', now(), '{}')",
        &[&user],
    )
    .unwrap_or_else(|e| panic!("inserting an event: {}", describe(&e)));
    let logged = format!(
        "SELECT model_id FROM customer_analyzer.predictions
         WHERE user_id = {user} AND task = 'churn' AND predicted_at > '{since}'"
    );
    wait_until("the worker to rescore the user", WAIT, || {
        c.query_opt(&logged, &[]).ok().flatten().is_some()
    });
    assert_eq!(value::<i64>(c, &logged), champion);
}

/// Applies server settings for the workers and takes them back when dropped, also when
/// an assertion fails.
struct ServerSettings(Vec<&'static str>);

impl ServerSettings {
    fn set(c: &mut Client, settings: &[(&'static str, &str)]) -> ServerSettings {
        for (name, v) in settings {
            exec(c, &format!("ALTER SYSTEM SET {name} = '{v}'"));
        }
        exec(c, "SELECT pg_reload_conf()");
        ServerSettings(settings.iter().map(|s| s.0).collect())
    }
}

impl Drop for ServerSettings {
    fn drop(&mut self) {
        let mut c = connect("postgres");
        for name in &self.0 {
            let _ = c.batch_execute(&format!("ALTER SYSTEM RESET {name}"));
        }
        let _ = c.batch_execute("SELECT pg_reload_conf()");
    }
}

fn retraining_workers(c: &mut Client) -> i64 {
    value(
        c,
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'customer_analyzer retraining'",
    )
}

fn the_retraining_worker_retrains_on_schedule_and_records_failures(c: &mut Client) {
    // predictions made 90 days ago, whose 60-day horizon has passed
    exec(
        c,
        "SELECT customer_analyzer.score_all('churn', now() - interval '90 days')",
    );
    assert_eq!(
        value::<i64>(c, "SELECT count(*) FROM customer_analyzer.model_live"),
        0
    );
    let since: String = value(c, "SELECT clock_timestamp()::text");
    let settings = ServerSettings::set(
        c,
        &[
            ("customer_analyzer.monitor_interval", "1s"),
            ("customer_analyzer.retrain_interval", "1s"),
        ],
    );
    let scheduled = format!(
        "SELECT count(*) FROM customer_analyzer.retrain_log
         WHERE trigger = 'schedule' AND sqlstate IS NULL AND started_at > '{since}'"
    );
    wait_until("a scheduled retrain", WAIT, || {
        value::<i64>(c, &scheduled) > 0
    });
    let (reason, model_exists): (String, bool) = c
        .query_one(
            &format!(
                "SELECT r.reason, EXISTS (SELECT FROM customer_analyzer.models m WHERE m.id = r.new_model_id)
                 FROM customer_analyzer.retrain_log r
                 WHERE trigger = 'schedule' AND started_at > '{since}' ORDER BY id LIMIT 1"
            ),
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap_or_else(|e| panic!("reading retrain_log: {}", describe(&e)));
    assert!(reason.contains("retrain_interval"), "{reason}");
    assert!(model_exists);
    // the same worker recorded the outcomes of the predictions that matured
    assert!(value::<i64>(c, "SELECT count(*) FROM customer_analyzer.model_live") > 0);

    // a source the retrain cannot read: the attempt is recorded with its SQLSTATE
    exec(
        c,
        "ALTER TABLE public.events RENAME COLUMN created_at TO happened_at",
    );
    let failed = format!(
        "SELECT count(*) FROM customer_analyzer.retrain_log
         WHERE trigger = 'schedule' AND sqlstate = '42703' AND message <> '' AND new_model_id IS NULL
           AND started_at > '{since}'"
    );
    let waited = Instant::now();
    while value::<i64>(c, &failed) == 0 && waited.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(200));
    }
    exec(
        c,
        "ALTER TABLE public.events RENAME COLUMN happened_at TO created_at",
    );
    assert!(
        value::<i64>(c, &failed) > 0,
        "no failed retrain was recorded"
    );

    drop(settings);
    wait_until("the retraining worker to stop", WAIT, || {
        retraining_workers(c) == 0
    });
}

/// Deploys the serving churn model again, so that drift and live AUC may call for a
/// retrain of it (they call once per deployment); returns its id.
fn redeploy_churn(c: &mut Client) -> i64 {
    let serving: i64 = value(
        c,
        "SELECT model_id FROM customer_analyzer.deployed_models WHERE task = 'churn'",
    );
    exec(c, &format!("SELECT customer_analyzer.deploy({serving})"));
    serving
}

/// Waits for a retrain_log row of `trigger` since `since`, checking on the way that no
/// more than one retraining worker ever runs; returns how many such rows there are and
/// the first one's reason.
fn wait_for_retrain(c: &mut Client, trigger: &str, since: &str) -> (i64, String) {
    let rows = format!(
        "SELECT count(*) FROM customer_analyzer.retrain_log
         WHERE task = 'churn' AND trigger = '{trigger}' AND sqlstate IS NULL AND started_at > '{since}'"
    );
    wait_until(&format!("a retrain for {trigger}"), WAIT, || {
        assert!(retraining_workers(c) <= 1, "two retraining workers at once");
        value::<i64>(c, &rows) > 0
    });
    // the worker looks again every second: the same deployment is not retrained again
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        assert!(retraining_workers(c) <= 1, "two retraining workers at once");
        std::thread::sleep(Duration::from_millis(200));
    }
    let reason = value(
        c,
        &format!(
            "SELECT reason FROM customer_analyzer.retrain_log
             WHERE task = 'churn' AND trigger = '{trigger}' AND started_at > '{since}'
             ORDER BY id LIMIT 1"
        ),
    );
    (value(c, &rows), reason)
}

fn the_retraining_worker_retrains_on_drift_and_on_live_auc_once_each(c: &mut Client) {
    // the schedule is far off; drift and live AUC wait a tenth of it (30 s) after a deploy
    let settings = ServerSettings::set(
        c,
        &[
            ("customer_analyzer.monitor_interval", "1s"),
            ("customer_analyzer.retrain_interval", "300s"),
        ],
    );
    redeploy_churn(c);
    let since: String = value(c, "SELECT clock_timestamp()::text");
    // every user of the store looks idle for a week: the churn scores move a long way
    exec(
        c,
        "UPDATE customer_analyzer.feature_store
         SET days_since_last_activity = days_since_last_activity + 7,
             last_event_at = last_event_at - interval '7 days', events_last_7_days = 0,
             active_days_last_7_days = 0, page_views_last_7_days = 0, purchases_last_7_days = 0,
             activity_trend_7d_vs_14d = 0, sessions_last_30_days = 1",
    );
    assert_eq!(
        value::<String>(
            c,
            "SELECT level FROM customer_analyzer.drift_report('churn') WHERE feature = '(score)'"
        ),
        "major",
        "the test's change should move the scores a major amount"
    );
    let (retrains, reason) = wait_for_retrain(c, "drift", &since);
    assert_eq!(retrains, 1);
    assert!(reason.contains("drifted"), "{reason}");

    // the store back as the events say; then a serving model whose matured predictions
    // rank the outcomes backwards
    exec(c, "SELECT customer_analyzer.refresh_features()");
    let serving = redeploy_churn(c);
    let since: String = value(c, "SELECT clock_timestamp()::text");
    exec(
        c,
        &format!(
            "INSERT INTO customer_analyzer.matured_predictions
                 (prediction_id, task, user_id, model_id, arm, as_of, predicted_at, score, outcome)
             SELECT 9000000000 + g, 'churn', g, {serving}, 'champion', now() - interval '90 days',
                    now() - interval '90 days', CASE WHEN g % 3 = 0 THEN 0.1 ELSE 0.9 END, g % 3 = 0
             FROM generate_series(1, 3000) g"
        ),
    );
    let (retrains, reason) = wait_for_retrain(c, "live_auc", &since);
    assert_eq!(retrains, 1);
    assert!(reason.contains("below the holdout AUC"), "{reason}");
    exec(
        c,
        "DELETE FROM customer_analyzer.matured_predictions WHERE prediction_id > 9000000000",
    );
    drop(settings);
    wait_until("the retraining worker to stop", WAIT, || {
        retraining_workers(c) == 0
    });
}

fn monitor_interval_zero_starts_no_retraining_worker(c: &mut Client) {
    let before: i64 = value(c, "SELECT count(*) FROM customer_analyzer.retrain_log");
    // with monitor_interval 0 even a one-second schedule starts nothing
    let settings = ServerSettings::set(
        c,
        &[
            ("customer_analyzer.monitor_interval", "0"),
            ("customer_analyzer.retrain_interval", "1s"),
        ],
    );
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        assert_eq!(retraining_workers(c), 0);
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(settings);
    assert_eq!(
        value::<i64>(c, "SELECT count(*) FROM customer_analyzer.retrain_log"),
        before
    );
}

fn pg_cron_calls_retrain_and_a_failing_job_leaves_nothing_behind(c: &mut Client) {
    let mut cron = connect("postgres");
    exec(&mut cron, "CREATE EXTENSION IF NOT EXISTS pg_cron");
    let before_purchase: i64 = value(
        c,
        "SELECT count(*) FROM customer_analyzer.models WHERE task = 'purchase'",
    );
    let since: String = value(c, "SELECT clock_timestamp()::text");
    struct Jobs(Vec<i64>);
    impl Drop for Jobs {
        fn drop(&mut self) {
            let mut cron = connect("postgres");
            for id in &self.0 {
                let _ = cron.batch_execute(&format!("SELECT cron.unschedule({id})"));
            }
        }
    }
    let schedule = |cron: &mut Client, name: &str, task: &str| -> i64 {
        value(
            cron,
            &format!(
                "SELECT cron.schedule_in_database('{name}', '* * * * *',
                     'SELECT * FROM customer_analyzer.retrain(''{task}'')', '{DB}')"
            ),
        )
    };
    // churn has a model; purchase has none, so its job fails
    let churn = schedule(&mut cron, "ca_it_retrain_churn", "churn");
    let purchase = schedule(&mut cron, "ca_it_retrain_purchase", "purchase");
    let jobs = Jobs(vec![churn, purchase]);
    let done = |cron: &mut Client, job: i64| -> Option<(String, String)> {
        cron.query_opt(
            "SELECT status, coalesce(return_message, '') FROM cron.job_run_details
             WHERE jobid = $1 AND end_time IS NOT NULL ORDER BY runid LIMIT 1",
            &[&job],
        )
        .unwrap_or_else(|e| panic!("reading cron.job_run_details: {}", describe(&e)))
        .map(|r| (r.get(0), r.get(1)))
    };
    wait_until("both pg_cron jobs to run", CRON_WAIT, || {
        done(&mut cron, churn).is_some() && done(&mut cron, purchase).is_some()
    });
    drop(jobs);
    let (status, message) = done(&mut cron, churn).unwrap_or_default();
    assert_eq!(status, "succeeded", "{message}");
    let reason: String = value(
        c,
        &format!(
            "SELECT reason FROM customer_analyzer.retrain_log
             WHERE task = 'churn' AND trigger = 'call' AND started_at > '{since}' ORDER BY id LIMIT 1"
        ),
    );
    assert_eq!(reason, "retrain() called by pg_cron");
    let (status, message) = done(&mut cron, purchase).unwrap_or_default();
    assert_eq!(status, "failed");
    assert!(
        message.contains("no purchase model is deployed"),
        "{message}"
    );
    // the failed job wrote nothing
    assert_eq!(
        value::<i64>(
            c,
            "SELECT count(*) FROM customer_analyzer.models WHERE task = 'purchase'"
        ),
        before_purchase
    );
    assert_eq!(
        value::<i64>(
            c,
            "SELECT count(*) FROM customer_analyzer.retrain_log WHERE task = 'purchase'"
        ),
        0
    );
}
