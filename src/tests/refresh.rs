//! The incremental refresh: after any mix of changes, at any later time, the store it
//! leaves is the one a full refresh makes, to the bit.

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use customer_analyzer_core::testkit::random_shop;
    use pgrx::prelude::*;

    use crate::tests::support::*;

    const DAY: i64 = 86_400_000_000;

    /// A refresh as of `t`, incremental whenever it may be (however many users it must
    /// read again); returns its mode and why it was full.
    fn refresh_at(t: i64) -> String {
        refresh_done(t);
        one::<String>("SELECT mode || coalesce(': ' || full_because, '') FROM customer_analyzer.refresh_state")
            .unwrap_or_default()
    }

    /// What a refresh as of `t` (as [`refresh_at`]) did.
    fn refresh_done(t: i64) -> crate::refresh::Done {
        let at = crate::time::from_unix_micros(t).unwrap_or_else(|| panic!("time {t}"));
        crate::refresh::refresh_as_of(at, f64::INFINITY)
            .unwrap_or_else(|e| panic!("refresh as of {t}: {}", e.message()))
    }

    fn all_users(s: &str) -> Vec<i64> {
        Spi::connect(|client| {
            client
                .select(
                    &format!("SELECT array_agg(DISTINCT id ORDER BY id) FROM {s}.users"),
                    None,
                    &[],
                )?
                .first()
                .get_one::<Vec<i64>>()
        })
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default()
    }

    /// Random shops, refreshed in full once and then incrementally at uneven later
    /// times, with late events, updates, deletes, new, changed and deleted users and
    /// events crossing every window's edge in between: each incremental store equals
    /// what the full refresh computes at the same time (the core on every history),
    /// bit for bit, and agrees with the set-based SQL of user_features().
    #[pg_test]
    fn incremental_refresh_equals_a_full_one() {
        for seed in 0..3u64 {
            let shop = random_shop(seed + 70, 70);
            let s = format!("inc_{seed}");
            load_shop(&s, &shop);
            configure_shop(&s, seed != 1);
            let t0 = shop.as_of - 95 * DAY - 5_432_100;
            assert_eq!(refresh_at(t0), "full: no earlier refresh", "seed {seed}");
            // uneven steps: a few hours, a day and a bit, a week, then past the 90-day edge
            let steps = [
                3 * 3_600_000_000 + 17,
                DAY + 777_777,
                7 * DAY - 1,
                40 * DAY + 12_345,
                46 * DAY,
            ];
            let mut t = t0;
            // users read from their last 90 days only, moved from their stored rows
            let mut recent = 0;
            for (i, step) in steps.iter().enumerate() {
                let before = t;
                t += step;
                let u = |k: i64| 2 + (i as i64 * 7 + k) % 60;
                run(&format!(
                    "INSERT INTO {s}.events (user_id, event_type, created_at, event_data) VALUES
                         ({late}, 'purchase', {old}, '{{\"amount\": 12.5, \"product_id\": 3}}'),
                         ({fresh}, 'product_view', {recent}, '{{\"product_id\": 4}}'),
                         ({fresh}, 'page_view', {recent2}, '{{}}');
                     UPDATE {s}.events SET event_data = '{{\"amount\": 99.25}}'
                      WHERE id = (SELECT min(id) FROM {s}.events WHERE user_id = {upd} AND event_type = 'purchase');
                     DELETE FROM {s}.events WHERE id = (SELECT max(id) FROM {s}.events WHERE user_id = {del});
                     UPDATE {s}.users SET status = 'vip', username = NULL WHERE id = {changed};
                     UPDATE {s}.users SET registered_at = registered_at - interval '1 day 3 hours'
                      WHERE id = {registered};
                     DELETE FROM {s}.users WHERE id = {gone};
                     INSERT INTO {s}.users VALUES ({new_id}, {new_reg}, 'member', 'newcomer');",
                    late = u(1),
                    old = ts(before - 40 * DAY - 999),
                    fresh = u(2),
                    recent = ts(t - 3_600_000_000),
                    recent2 = ts(t - 1),
                    upd = u(3),
                    del = u(4),
                    changed = u(5),
                    gone = u(6),
                    registered = u(7),
                    new_id = 1000 + i as i64,
                    new_reg = ts(before + 1),
                ));
                let done = refresh_done(t);
                assert_eq!(done.full_because, None, "seed {seed} step {i}");
                recent += done.recent;
                let (computed, moved) = (
                    one::<i64>("SELECT users_computed FROM customer_analyzer.refresh_state")
                        .unwrap_or(0),
                    one::<i64>("SELECT users_moved FROM customer_analyzer.refresh_state")
                        .unwrap_or(0),
                );
                assert!(
                    moved > 0 && computed > 0,
                    "seed {seed} step {i}: {computed} computed, {moved} moved"
                );
                // the rows not written are read as of the refresh's time
                assert_eq!(
                    one::<i64>(&format!(
                        "SELECT count(*) FROM customer_analyzer.user_metrics
                         WHERE as_of <> {}",
                        ts(t)
                    )),
                    Some(0),
                    "seed {seed} step {i}"
                );
                let stored = stored_features();
                let full = features_from_histories(&all_users(&s), t);
                assert_eq!(stored.len(), full.len(), "seed {seed} step {i}: users");
                // the serving path reads the table and carries a row forward itself
                Spi::connect(|client| {
                    for row in &stored {
                        let (values, as_of) =
                            crate::feature_store::features_for_user(client, row.user_id)
                                .unwrap_or_else(|e| panic!("{}", e.message()));
                        assert_eq!(
                            format!("{values:?}"),
                            format!("{:?}", row.values),
                            "seed {seed} step {i}: user {}",
                            row.user_id
                        );
                        assert_eq!(crate::time::to_unix_micros(as_of), t);
                    }
                });
                for (a, b) in stored.iter().zip(&full) {
                    assert_eq!(a, b, "seed {seed} step {i}: user {}", b.user_id);
                }
                assert_agree(&sql_features(t), &stored, &format!("seed {seed} step {i}"));
            }
            assert!(
                recent > 0,
                "seed {seed}: no user was read from its last 90 days"
            );
            // prune() trimming the worker's failures leaves what the store reads as it was
            // (its rows carried forward still read at the last refresh's time), and makes
            // the next refresh a full one
            let store = "SELECT md5(string_agg(m::text, ';' ORDER BY m.user_id))
                         FROM customer_analyzer.user_metrics m";
            let read = one::<String>(store);
            run("INSERT INTO customer_analyzer.worker_errors (source, sqlstate, message, occurred_at)
                 VALUES ('worker', 'P0002', 'old', now() - interval '10 years')");
            run("SET LOCAL customer_analyzer.prediction_retention = '7d'");
            assert_eq!(
                one::<i64>(
                    "SELECT rows_deleted FROM customer_analyzer.prune() WHERE table_name = 'worker_errors'"
                ),
                Some(1),
                "seed {seed}"
            );
            run("RESET customer_analyzer.prediction_retention");
            assert_eq!(one::<String>(store), read, "seed {seed}");
            let t = t + 3_600_000_000;
            assert_eq!(
                refresh_at(t),
                "full: prune() trimmed the real-time queue or the worker's failures",
                "seed {seed}"
            );
            // a change of the products is a change of every user's product features
            run(&format!(
                "UPDATE {s}.products SET price = price * 2 WHERE id = 3"
            ));
            let expected = if seed != 1 {
                "full: the products changed"
            } else {
                "incremental"
            };
            assert_eq!(refresh_at(t + DAY), expected, "seed {seed}");
            // a load that was not queued (real time off in the writing session)
            let t = t + 3 * DAY;
            run("SET LOCAL customer_analyzer.realtime = off");
            run(&format!(
                "INSERT INTO {s}.events (user_id, event_type, created_at, event_data)
                 VALUES (5, 'purchase', {}, '{{\"amount\": 7}}')",
                ts(t - 200 * DAY)
            ));
            run("SET LOCAL customer_analyzer.realtime = on");
            assert!(
                refresh_at(t).starts_with("full: some changes were not queued"),
                "seed {seed}"
            );
            assert_eq!(refresh_at(t + 1), "incremental", "seed {seed}");
            // off, and before the last refresh, read everyone
            run("SET LOCAL customer_analyzer.incremental_refresh = off");
            assert_eq!(
                refresh_at(t + 2 * DAY),
                "full: customer_analyzer.incremental_refresh is off"
            );
            run("SET LOCAL customer_analyzer.incremental_refresh = on");
            assert_eq!(
                refresh_at(t + DAY),
                "full: as_of is before the last refresh's"
            );
            run(&format!("DROP SCHEMA {s} CASCADE"));
            run("DELETE FROM customer_analyzer.refresh_state");
        }
    }

    /// Without the real-time triggers nothing says which users changed: every refresh
    /// is full, and says why.
    #[pg_test]
    fn without_triggers_every_refresh_is_full() {
        let shop = random_shop(91, 30);
        load_shop("notrig", &shop);
        configure_shop("notrig", true);
        run("DROP TRIGGER customer_analyzer_rescore_insert ON notrig.events");
        let why = "full: the real-time triggers are not on the events table and all its partitions (configure() puts them there)";
        assert_eq!(refresh_at(shop.as_of - DAY), why);
        assert_eq!(refresh_at(shop.as_of), why);
    }
}
