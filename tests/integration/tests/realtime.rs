//! The real-time path end to end, against the test server, which preloads the library
//! and points the rescoring worker at database `ca_it_realtime`
//! (`scripts/test-cluster.sh`): an inserted event comes back as a NOTIFY with a fresh
//! score; a killed worker and a server restarted with `-m immediate` leave every queued
//! user rescored exactly once; a user who cannot be rescored is recorded and the others
//! are not held up; the histories the worker keeps give the features a full read gives,
//! after new, late, updated, deleted and truncated events; the worker follows a renamed events table and waits, the queue
//! kept, while the configured one is dropped; the worker's writes reach the statistics views;
//! and `DROP EXTENSION` takes the triggers off the shop's table.

use std::time::Duration;

use customer_analyzer_integration::*;
use postgres::fallible_iterator::FallibleIterator;

/// The database the test server's worker serves.
const DB: &str = "ca_it_realtime";
/// Generous bounds that only catch a hang: the worker naps 100 ms and restarts in 1 s.
const WAIT: Duration = Duration::from_secs(60);

/// The demo shop with a deployed churn model and real time on.
fn shop() -> Client {
    fresh_shop(DB, 1500, 240);
    let mut c = connect(DB);
    c.batch_execute(
        "SET client_min_messages = warning;
         SELECT customer_analyzer.train('churn', 'gbm');
         SELECT customer_analyzer.configure();",
    )
    .unwrap_or_else(|e| panic!("setting up: {}", describe(&e)));
    assert_eq!(
        value::<i64>(
            &mut c,
            "SELECT count(*) FROM customer_analyzer.deployed_models WHERE task = 'churn'"
        ),
        1
    );
    c
}

fn worker_pid(c: &mut Client) -> Option<i32> {
    c.query_opt(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'customer_analyzer rescoring'",
        &[],
    )
    .unwrap_or_else(|e| panic!("finding the worker: {}", describe(&e)))
    .map(|r| r.get(0))
}

#[test]
fn real_time() {
    let mut c = shop();
    an_inserted_event_comes_back_as_a_fresh_score(&mut c);
    kept_histories_follow_new_late_updated_deleted_and_truncated_events(&mut c);
    a_killed_worker_comes_back_and_rescores_each_user_once(&mut c);
    one_failing_user_is_recorded_and_the_others_are_rescored(&mut c);
    let mut c = a_server_restart_mid_queue_rescores_each_user_once(c);
    the_events_table_renamed_or_dropped_under_the_worker(&mut c);
    drop_extension_takes_the_triggers_along(&mut c);
}

/// How many churn predictions each of `users` got after `since`.
fn rescored(c: &mut Client, users: &[i64], since: &str) -> Vec<(i64, i64)> {
    c.query(
        "SELECT u.user_id, count(p.user_id)
         FROM unnest($1::bigint[]) AS u(user_id)
         LEFT JOIN customer_analyzer.predictions p
           ON p.user_id = u.user_id AND p.task = 'churn' AND p.predicted_at > $2::text::timestamptz
         GROUP BY u.user_id ORDER BY u.user_id",
        &[&users, &since],
    )
    .unwrap_or_else(|e| panic!("counting: {}", describe(&e)))
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn users(c: &mut Client, offset: i64, n: i64) -> Vec<i64> {
    c.query(
        "SELECT user_id FROM customer_analyzer.user_metrics ORDER BY user_id OFFSET $1 LIMIT $2",
        &[&offset, &n],
    )
    .unwrap_or_else(|e| panic!("listing users: {}", describe(&e)))
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn queue_empties(c: &mut Client) {
    wait_until("the queue to empty", WAIT, || {
        value::<i64>(c, "SELECT count(*) FROM customer_analyzer.rescore_queue") == 0
    });
}

/// The catalogued features of `user` where the stored row (written by the worker)
/// differs from `user_features()` at the row's as_of (floats within 1e-9, relative).
fn differing_features(c: &mut Client, user: i64) -> Vec<String> {
    let columns: Vec<(String, String)> = c
        .query(
            "SELECT name, sql_type FROM customer_analyzer.feature_catalog ORDER BY position",
            &[],
        )
        .unwrap_or_else(|e| panic!("reading the catalog: {}", describe(&e)))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let checks: Vec<String> = columns
        .iter()
        .map(|(name, ty)| {
            let same = if ty == "double precision" {
                format!(
                    "(s.{name} IS NULL AND f.{name} IS NULL)
                     OR abs(s.{name} - f.{name}) <= 1e-9 * greatest(1, abs(f.{name}))"
                )
            } else {
                format!("s.{name} IS NOT DISTINCT FROM f.{name}")
            };
            format!("CASE WHEN coalesce({same}, false) THEN NULL ELSE '{name}' END")
        })
        .collect();
    let sql = format!(
        "SELECT coalesce(array_remove(ARRAY[{}], NULL), '{{}}')::text[]
         FROM customer_analyzer.user_metrics s
         JOIN customer_analyzer.user_features((SELECT as_of FROM customer_analyzer.user_metrics
                                               WHERE user_id = $1)) f USING (user_id)
         WHERE s.user_id = $1",
        checks.join(", ")
    );
    c.query_one(&sql, &[&user])
        .unwrap_or_else(|e| panic!("comparing user {user}: {}", describe(&e)))
        .get(0)
}

/// Runs `change`, waits for the worker, and checks every one of `users` against a full
/// read of their histories.
fn after_change_features_are_right(c: &mut Client, users: &[i64], change: &str) {
    let since: String = value(c, "SELECT clock_timestamp()::text");
    c.batch_execute(change)
        .unwrap_or_else(|e| panic!("{change}: {}", describe(&e)));
    queue_empties(c);
    for (user, n) in rescored(c, users, &since) {
        assert!(n >= 1, "{change}: user {user} was not rescored");
        let differ = differing_features(c, user);
        assert!(
            differ.is_empty(),
            "{change}: user {user}: {differ:?} differ from a full read"
        );
    }
}

fn kept_histories_follow_new_late_updated_deleted_and_truncated_events(c: &mut Client) {
    let u = users(c, 300, 5);
    let list = u.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
    let new_events = format!(
        "INSERT INTO public.events (user_id, event_type, created_at, event_data)
         SELECT id, 'purchase', now(), '{{\"amount\": 12.5, \"product_id\": 3}}'
         FROM unnest(ARRAY[{list}]::bigint[]) AS id"
    );
    // the first read of each user is a full one, the next ones read only what is new
    after_change_features_are_right(c, &u, &new_events);
    after_change_features_are_right(c, &u, &new_events);
    // a late event, an updated one, a deleted one, and a new one, one user each
    let oldest = |user: i64| {
        format!(
            "(SELECT ctid FROM public.events WHERE user_id = {user} ORDER BY created_at LIMIT 1)"
        )
    };
    after_change_features_are_right(
        c,
        &u[..4],
        &format!(
            "INSERT INTO public.events (user_id, event_type, created_at, event_data)
             VALUES ({}, 'purchase', now() - interval '3 days', '{{\"amount\": 77}}');
             UPDATE public.events SET event_type = 'purchase', event_data = '{{\"amount\": 55}}'
             WHERE ctid = {};
             DELETE FROM public.events WHERE ctid = {};
             INSERT INTO public.events (user_id, event_type, created_at, event_data)
             VALUES ({}, 'page_view', now(), '{{}}');",
            u[0],
            oldest(u[1]),
            oldest(u[2]),
            u[3],
        ),
    );
    // and new events again after those full reads
    after_change_features_are_right(c, &u, &new_events);
    // a TRUNCATE replaces the table's storage: the kept histories go with it, so these
    // users' old events, gone now, do not come back with their next event
    after_change_features_are_right(
        c,
        &u,
        &format!(
            "CREATE TEMP TABLE others AS
                 SELECT * FROM public.events WHERE user_id <> ALL (ARRAY[{list}]::bigint[]);
             TRUNCATE public.events;
             INSERT INTO public.events SELECT * FROM others;
             DROP TABLE others;
             {new_events};"
        ),
    );
}

fn one_failing_user_is_recorded_and_the_others_are_rescored(c: &mut Client) {
    let t0: String = value(c, "SELECT clock_timestamp()::text");
    let good = users(c, 300, 2);
    // a queued user who has left the users table since, between two who have not
    c.execute(
        "INSERT INTO customer_analyzer.rescore_queue (user_id)
         VALUES ($1), (-42), ($2)",
        &[&good[0], &good[1]],
    )
    .unwrap_or_else(|e| panic!("queueing: {}", describe(&e)));
    queue_empties(c);
    assert_eq!(rescored(c, &good, &t0), vec![(good[0], 1), (good[1], 1)]);
    let recorded: String = value(
        c,
        &format!(
            "SELECT string_agg(source || ' ' || sqlstate, ',') FROM customer_analyzer.worker_errors
             WHERE user_id = -42 AND occurred_at > '{t0}'"
        ),
    );
    assert_eq!(recorded, "worker P0002");
}

/// `pg_ctl restart -m immediate` while the worker holds a batch: after recovery every
/// queued user is rescored exactly once. Returns a connection to the restarted server.
fn a_server_restart_mid_queue_rescores_each_user_once(mut c: Client) -> Client {
    let started = postmaster_start(&mut c);
    let t0: String = value(&mut c, "SELECT clock_timestamp()::text");
    let queued = users(&mut c, 400, 200);
    let mut locker = connect(DB);
    locker
        .batch_execute(
            "BEGIN; LOCK TABLE customer_analyzer.predictions IN SHARE ROW EXCLUSIVE MODE",
        )
        .unwrap_or_else(|e| panic!("locking: {}", describe(&e)));
    c.execute(
        "INSERT INTO public.events (user_id, event_type, created_at, event_data)
         SELECT u, 'page_view', now(), '{}' FROM unnest($1::bigint[]) AS u",
        &[&queued],
    )
    .unwrap_or_else(|e| panic!("queueing: {}", describe(&e)));
    let pid = worker_pid(&mut c).expect("the worker runs");
    wait_until("the worker to wait on the log", WAIT, || {
        value::<bool>(
            &mut c,
            &format!("SELECT coalesce((SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = {pid}), false)"),
        )
    });
    restart_immediately(&mut c);
    drop((c, locker));
    let mut c = connect(DB);
    assert_ne!(
        postmaster_start(&mut c),
        started,
        "the server did not restart"
    );
    queue_empties(&mut c);
    let counts = rescored(&mut c, &queued, &t0);
    let wrong: Vec<&(i64, i64)> = counts.iter().filter(|(_, n)| *n != 1).collect();
    assert!(
        counts.len() == 200 && wrong.is_empty(),
        "users not rescored exactly once: {wrong:?}"
    );
    c
}

/// The events table renamed under the worker: the configuration names it by oid, so
/// the worker follows it. Then the configured events table dropped: the worker says so
/// and waits with the queue kept, the server stays up, and once configure() names a
/// table again every queued user is rescored.
fn the_events_table_renamed_or_dropped_under_the_worker(c: &mut Client) {
    let started = postmaster_start(c);
    let t0: String = value(c, "SELECT clock_timestamp()::text");
    let queue_up = |c: &mut Client, users: &[i64]| {
        c.execute(
            "INSERT INTO customer_analyzer.rescore_queue (user_id) SELECT unnest($1::bigint[])",
            &[&users],
        )
        .unwrap_or_else(|e| panic!("queueing: {}", describe(&e)));
    };
    let renamed = users(c, 700, 20);
    c.batch_execute("ALTER TABLE public.events RENAME TO events_away")
        .unwrap_or_else(|e| panic!("renaming: {}", describe(&e)));
    queue_up(c, &renamed);
    queue_empties(c);
    assert!(rescored(c, &renamed, &t0).iter().all(|(_, n)| *n == 1));
    c.batch_execute("ALTER TABLE public.events_away RENAME TO events")
        .unwrap_or_else(|e| panic!("renaming back: {}", describe(&e)));

    let dropped = users(c, 800, 20);
    c.batch_execute(
        "SET client_min_messages = warning;
         CREATE TABLE public.events_scratch AS SELECT * FROM public.events;
         SELECT customer_analyzer.configure('public.users', 'public.events_scratch', 'public.products');
         DROP TABLE public.events_scratch;",
    )
    .unwrap_or_else(|e| panic!("dropping the configured table: {}", describe(&e)));
    queue_up(c, &dropped);
    wait_until("the worker to report the missing table", WAIT, || {
        value::<bool>(
            c,
            &format!(
                "SELECT EXISTS (SELECT FROM customer_analyzer.worker_errors
                 WHERE source = 'worker' AND user_id IS NULL AND sqlstate = '42P01'
                   AND occurred_at > '{t0}')"
            ),
        )
    });
    assert_eq!(
        value::<i64>(c, "SELECT count(*) FROM customer_analyzer.rescore_queue"),
        20,
        "the queue is kept while the table is away"
    );
    assert!(worker_pid(c).is_some(), "the worker waits");
    c.batch_execute(
        "SELECT customer_analyzer.configure('public.users', 'public.events', 'public.products')",
    )
    .unwrap_or_else(|e| panic!("configuring again: {}", describe(&e)));
    queue_empties(c);
    let counts = rescored(c, &dropped, &t0);
    assert!(
        counts.iter().all(|(_, n)| *n == 1),
        "users not rescored exactly once: {counts:?}"
    );
    assert_eq!(postmaster_start(c), started, "the server restarted");
}

fn an_inserted_event_comes_back_as_a_fresh_score(c: &mut Client) {
    let mut listener = connect(DB);
    listener
        .batch_execute("LISTEN customer_analyzer_scores")
        .unwrap_or_else(|e| panic!("LISTEN: {}", describe(&e)));
    let user: i64 = value(
        c,
        "SELECT user_id FROM customer_analyzer.user_metrics ORDER BY user_id LIMIT 1 OFFSET 7",
    );
    let model: i64 = value(
        c,
        "SELECT model_id FROM customer_analyzer.deployed_models WHERE task = 'churn'",
    );
    let feature_writes = "SELECT n_tup_upd + n_tup_ins FROM pg_stat_user_tables
                          WHERE relid = 'customer_analyzer.feature_store'::regclass";
    let written_before: i64 = value(c, feature_writes);
    c.execute(
        "INSERT INTO public.events (user_id, event_type, created_at, event_data)
         VALUES ($1, 'page_view', now(), '{}')",
        &[&user],
    )
    .unwrap_or_else(|e| panic!("inserting an event: {}", describe(&e)));
    let note = {
        let mut notes = listener.notifications();
        let mut it = notes.timeout_iter(WAIT);
        it.next()
            .unwrap_or_else(|e| panic!("waiting for the NOTIFY: {e}"))
            .unwrap_or_else(|| panic!("no NOTIFY within {WAIT:?}"))
    };
    assert_eq!(note.channel(), "customer_analyzer_scores");
    let row = c
        .query_one(
            "SELECT (j->>'user_id')::bigint, j->>'task', (j->>'score')::float8,
                    (j->>'model_id')::bigint, j ? 'previous_score', (j->>'event_at')::timestamptz > now() - interval '5 minutes'
             FROM (SELECT $1::text::json::jsonb AS j) p",
            &[&note.payload()],
        )
        .unwrap_or_else(|e| panic!("reading the payload {}: {}", note.payload(), describe(&e)));
    let (u, task, score, m, has_previous, fresh): (i64, String, f64, i64, bool, bool) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    );
    assert_eq!(
        (u, task.as_str(), m),
        (user, "churn", model),
        "{}",
        note.payload()
    );
    assert!(
        (0.0..=1.0).contains(&score) && has_previous && fresh,
        "{}",
        note.payload()
    );
    // the score is the one predict_churn gives from the refreshed store, and it is logged
    let served: f64 = value(
        c,
        &format!("SELECT customer_analyzer.predict_churn({user})"),
    );
    assert!(
        (served - score).abs() < 1e-12,
        "logged {score}, served {served}"
    );
    wait_until("the queue to empty", WAIT, || {
        value::<i64>(c, "SELECT count(*) FROM customer_analyzer.rescore_queue") == 0
    });
    assert!(value::<bool>(
        c,
        "SELECT last_seen > now() - interval '1 minute' AND users_rescored >= 1 FROM customer_analyzer.worker_status"
    ));
    // the worker reports its statistics as a backend does, so that autovacuum sees the
    // tables it writes
    wait_until("the worker's writes in pg_stat_user_tables", WAIT, || {
        value::<i64>(c, feature_writes) > written_before
    });
}

fn a_killed_worker_comes_back_and_rescores_each_user_once(c: &mut Client) {
    let started = postmaster_start(c);
    let t0: String = value(c, "SELECT clock_timestamp()::text");
    // hold the worker in the middle of a batch: the prediction log is locked, so it
    // waits at its first write, with some users of the batch already done
    let mut locker = connect(DB);
    locker
        .batch_execute(
            "BEGIN; LOCK TABLE customer_analyzer.predictions IN SHARE ROW EXCLUSIVE MODE",
        )
        .unwrap_or_else(|e| panic!("locking: {}", describe(&e)));
    c.batch_execute(
        "INSERT INTO public.events (user_id, event_type, created_at, event_data)
         SELECT user_id, 'product_view', now(), '{\"product_id\": 1}'
         FROM customer_analyzer.user_metrics ORDER BY user_id LIMIT 200",
    )
    .unwrap_or_else(|e| panic!("queueing: {}", describe(&e)));
    let old = worker_pid(c).expect("the worker runs");
    wait_until("the worker to wait on the log", WAIT, || {
        value::<bool>(
            c,
            &format!("SELECT coalesce((SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = {old}), false)"),
        )
    });
    let killed: bool = value(c, &format!("SELECT pg_terminate_backend({old})"));
    assert!(killed);
    wait_until("the worker to come back", WAIT, || {
        worker_pid(c).is_some_and(|p| p != old)
    });
    locker
        .batch_execute("COMMIT")
        .unwrap_or_else(|e| panic!("unlocking: {}", describe(&e)));
    wait_until("the queue to empty", WAIT, || {
        value::<i64>(c, "SELECT count(*) FROM customer_analyzer.rescore_queue") == 0
    });
    let counts: Vec<(i64, i64)> = c
        .query(
            "SELECT u.user_id, count(p.user_id)
             FROM (SELECT user_id FROM customer_analyzer.user_metrics ORDER BY user_id LIMIT 200) u
             LEFT JOIN customer_analyzer.predictions p
               ON p.user_id = u.user_id AND p.task = 'churn' AND p.predicted_at > $1::text::timestamptz
             GROUP BY u.user_id",
            &[&t0],
        )
        .unwrap_or_else(|e| panic!("counting: {}", describe(&e)))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(counts.len(), 200);
    let wrong: Vec<&(i64, i64)> = counts.iter().filter(|(_, n)| *n != 1).collect();
    assert!(
        wrong.is_empty(),
        "users not rescored exactly once: {wrong:?}"
    );
    assert_eq!(postmaster_start(c), started, "the server restarted");
}

fn drop_extension_takes_the_triggers_along(c: &mut Client) {
    let triggers = "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.events'::regclass AND NOT tgisinternal";
    assert_eq!(value::<i64>(c, triggers), 3);
    c.batch_execute("DROP EXTENSION customer_analyzer")
        .unwrap_or_else(|e| panic!("DROP EXTENSION: {}", describe(&e)));
    assert_eq!(value::<i64>(c, triggers), 0);
    // and the shop writes on
    c.batch_execute(
        "INSERT INTO public.events (user_id, event_type, created_at, event_data)
         SELECT min(id), 'page_view', now(), '{}' FROM public.users",
    )
    .unwrap_or_else(|e| panic!("writing after DROP EXTENSION: {}", describe(&e)));
}
