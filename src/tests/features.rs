//! Features, sources and data rules inside PostgreSQL: the SQL feature query agrees with
//! the core on random shops, is point in time, and every data rule and bad input is kept.

#[pgrx::pg_schema]
mod tests {
    use customer_analyzer_core::catalog::FEATURES;
    use customer_analyzer_core::testkit::random_shop;
    use pgrx::prelude::*;

    use crate::tests::support::*;

    #[pg_test]
    fn feature_row_matches_the_catalog() {
        let n = one::<i64>("SELECT count(*) FROM customer_analyzer.feature_catalog");
        assert_eq!(n, Some(FEATURES.len() as i64));
        assert!(FEATURES.len() >= 60);
        for (i, f) in FEATURES.iter().enumerate() {
            let got = one::<String>(&format!(
                "SELECT attname || ' ' || format_type(atttypid, atttypmod) FROM pg_attribute
                 WHERE attrelid = 'customer_analyzer.feature_row'::regclass AND attnum = {}",
                i + 2
            ));
            assert_eq!(got, Some(format!("{} {}", f.name, f.kind.sql_type())));
        }
        let store = one::<i64>(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'customer_analyzer.customer_features'::regclass AND attnum > 0",
        );
        assert_eq!(store, Some(FEATURES.len() as i64 + 3));
    }

    #[pg_test]
    fn sql_and_core_agree_on_random_shops() {
        for seed in 0..6u64 {
            let shop = random_shop(seed, 60);
            let s = format!("agree_{seed}");
            load_shop(&s, &shop);
            let with_products = seed % 3 != 2;
            configure_shop(&s, with_products);
            for as_of in [
                shop.as_of,
                shop.as_of - 3 * 86_400_000_000 - 12_345,
                shop.as_of - 40 * 86_400_000_000,
            ] {
                let reference = shop.reference_features(as_of, with_products);
                assert!(!reference.is_empty());
                assert_agree(
                    &sql_features(as_of),
                    &reference,
                    &format!("seed {seed}, as_of {as_of}"),
                );
            }
        }
    }

    /// The refresh of some users (one-user refresh, the real-time worker) computes in the
    /// core from their histories: it gives the rows of `user_features(T)` for exactly the
    /// users asked for that exist and registered before T, with and without products and
    /// an index on the events' user_id.
    #[pg_test]
    fn some_users_from_histories_equal_the_sql() {
        for seed in 0..4u64 {
            let shop = random_shop(seed + 20, 60);
            let s = format!("some_{seed}");
            load_shop(&s, &shop);
            let with_products = seed % 2 == 0;
            configure_shop(&s, with_products);
            if seed >= 2 {
                run(&format!("DROP INDEX {s}.events_user_id_created_at_idx"));
            }
            // two users in three, two that register at or after as_of, and ids nobody has
            let asked: Vec<i64> = (1..=60)
                .filter(|u| u % 3 != 0)
                .chain([10, 20, 999_999, -5])
                .collect();
            for as_of in [shop.as_of, shop.as_of - 30 * 86_400_000_000 - 777] {
                let want: Vec<_> = sql_features(as_of)
                    .into_iter()
                    .filter(|f| asked.contains(&f.user_id))
                    .collect();
                assert!(
                    want.len() >= 20,
                    "seed {seed}: {} users prove little",
                    want.len()
                );
                let got = features_from_histories(&asked, as_of);
                assert_agree(&got, &want, &format!("seed {seed}, as_of {as_of}"));
            }
        }
    }

    /// The products table each backend keeps follows every insert, update and delete of
    /// the products (a table: by its fingerprint; a view: read every time).
    #[pg_test]
    fn kept_products_follow_every_change() {
        let shop = random_shop(31, 60);
        load_shop("kept", &shop);
        run("CREATE VIEW kept.products_view AS SELECT * FROM kept.products");
        let as_of = shop.as_of;
        let asked: Vec<i64> = (1..=60).collect();
        let core = || features_from_histories(&asked, as_of);
        for source in ["kept.products", "kept.products_view"] {
            run(&format!(
                "SELECT customer_analyzer.configure('kept.users', 'kept.events', '{source}')"
            ));
            let mut last = core();
            assert_agree(&last, &sql_features(as_of), source);
            for change in [
                "UPDATE kept.products SET price = price * 3 WHERE id IN (SELECT min(id) FROM kept.products WHERE price > 0 GROUP BY category)",
                "DELETE FROM kept.products WHERE id IN (SELECT max(id) FROM kept.products WHERE price > 0 GROUP BY category)",
                "UPDATE kept.products SET category = category || '+' WHERE id % 4 = 0",
                "INSERT INTO kept.products SELECT id + (SELECT max(id) FROM kept.products), category, 0.01 FROM kept.products",
            ] {
                run(change);
                let now = core();
                assert_agree(&now, &sql_features(as_of), &format!("{source}: {change}"));
                assert_ne!(now, last, "{source}: {change} changed no feature, so proves nothing");
                last = now;
            }
        }
    }

    /// Training's one read of the events gives, at every snapshot, exactly the rows of
    /// `user_features(T)` joined with `labels(task, T)`.
    #[pg_test]
    fn one_pass_snapshots_equal_separate_calls() {
        use customer_analyzer_core::snapshots::Row;
        use customer_analyzer_core::task::Task;
        const DAY: i64 = 86_400_000_000;
        for seed in 0..4u64 {
            let shop = random_shop(seed + 10, 50);
            let s = format!("one_pass_{seed}");
            load_shop(&s, &shop);
            let products = if seed % 2 == 0 {
                format!("'{s}.products'")
            } else {
                "NULL".into()
            };
            run(&format!(
                "SELECT customer_analyzer.configure('{s}.users', '{s}.events', {products})"
            ));
            // both forms of the history query: one index scan per user, and (without an
            // index on the events' user_id) one scan grouped by user
            let by_user = seed < 2;
            if !by_user {
                run(&format!("DROP INDEX {s}.events_user_id_created_at_idx"));
            }
            let sources = Spi::connect(|c| crate::source::load(c).map(|s| s.events_by_user));
            assert_eq!(sources.ok(), Some(by_user), "seed {seed}: index detection");
            // unsorted, days apart and a day apart, some on the microsecond of events
            let times: Vec<i64> = [35, 10, 36, 90, 60]
                .iter()
                .map(|d| shop.as_of - d * DAY - 12_345 * (d % 2))
                .collect();
            for task in Task::ALL {
                let end =
                    times.iter().max().copied().unwrap_or_default() + task.horizon_days() * DAY;
                let mut rows: Vec<Row> = Vec::new();
                let read = Spi::connect_mut(|client| {
                    let sources = crate::source::load(client)?;
                    let work = crate::work::work()?;
                    let want = crate::training_set::Snapshots {
                        task,
                        times: &times,
                        end,
                    };
                    crate::training_set::read_rows(
                        client,
                        &work,
                        &sources,
                        &want,
                        &|_| true,
                        &mut |r| {
                            rows.extend(r);
                            Ok(())
                        },
                    )
                });
                if let Err(e) = read {
                    panic!("reading the snapshots: {}", e.message());
                }
                let (mut positives, mut filled) = (0, 0);
                for (i, &t) in times.iter().enumerate() {
                    let labels: std::collections::HashMap<i64, bool> = Spi::connect(|client| {
                        client
                            .select(
                                &format!(
                                    "SELECT user_id, label FROM customer_analyzer.labels('{}', {})",
                                    task.name(),
                                    ts(t)
                                ),
                                None,
                                &[],
                            )
                            .map(|table| {
                                table
                                    .map(|r| {
                                        (
                                            r.get::<i64>(1).ok().flatten().unwrap_or(-1),
                                            r.get::<bool>(2).ok().flatten().unwrap_or(false),
                                        )
                                    })
                                    .collect()
                            })
                    })
                    .unwrap_or_else(|e| panic!("labels: {e}"));
                    let want: Vec<_> = sql_features(t)
                        .into_iter()
                        .filter(|f| labels.contains_key(&f.user_id))
                        .collect();
                    let mut got: Vec<&Row> = rows.iter().filter(|r| r.snapshot == i).collect();
                    got.sort_by_key(|r| r.features.user_id);
                    let context = format!("seed {seed}, {task:?}, snapshot {i}");
                    filled += usize::from(!want.is_empty());
                    let got_features: Vec<_> = got.iter().map(|r| r.features.clone()).collect();
                    assert_agree(&got_features, &want, &context);
                    for r in &got {
                        assert_eq!(
                            Some(&r.label),
                            labels.get(&r.features.user_id),
                            "{context}: user {}",
                            r.features.user_id
                        );
                        positives += usize::from(r.label);
                    }
                }
                assert!(positives > 0, "seed {seed}, {task:?}: no positive label");
                assert!(
                    filled >= 2,
                    "seed {seed}, {task:?}: {filled} non-empty snapshots prove little"
                );
            }
        }
    }

    #[pg_test]
    fn features_are_point_in_time() {
        let shop = random_shop(42, 80);
        load_shop("pit", &shop);
        run("SELECT customer_analyzer.configure('pit.users', 'pit.events', 'pit.products')");
        let t = shop.as_of - 10 * 86_400_000_000;
        let before = sql_features(t);
        // Everything that happens at or after t: new events of every kind, new users, a
        // purchase exactly at t. None of it may change features as of t.
        run(&format!(
            "INSERT INTO pit.events (user_id, event_type, created_at, event_data)
             SELECT u.id, k, {t0} + (g * interval '1 hour'), '{{\"amount\": 99, \"product_id\": 3, \"command\": \"/x\"}}'
             FROM pit.users u, unnest(ARRAY['purchase', 'page_view', 'bot_command', 'add_to_cart']) k, generate_series(0, 3) g;
             INSERT INTO pit.users VALUES (100000, {t0}, 'member', 'late'), (100001, {t0} + interval '1 day', 'member', 'later');",
            t0 = ts(t)
        ));
        let after = sql_features(t);
        // equal up to float summation order, which may follow the plan
        assert_agree(&after, &before, "events at or after as_of changed features");
        assert!(after.iter().all(|f| f.user_id < 100000));
        assert_agree(&after, &shop.reference_features(t, true), "after inserts");
    }

    #[pg_test]
    fn store_refreshes_all_and_one_user() {
        let shop = random_shop(9, 40);
        load_shop("store", &shop);
        run("SELECT customer_analyzer.configure('store.users', 'store.events', 'store.products')");
        let n = one::<i64>("SELECT customer_analyzer.refresh_features()");
        let expected = one::<i64>("SELECT count(*) FROM store.users WHERE registered_at < now()");
        assert_eq!(n, expected);
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.user_metrics"),
            expected
        );
        // the stored rows (computed by the core) agree with user_features as of the stored
        // as_of, column for column
        let as_of = one::<i64>(
            "SELECT (extract(epoch FROM max(as_of)) * 1000000)::bigint FROM customer_analyzer.user_metrics",
        )
        .unwrap_or_default();
        assert_agree(
            &stored_features(),
            &sql_features(as_of),
            "refresh_features()",
        );
        // one-user refresh: new event, then only that user's row changes
        run(
            "INSERT INTO store.events (user_id, event_type, created_at, event_data)
             VALUES (3, 'purchase', now() - interval '1 minute', '{\"amount\": 1000}')",
        );
        let before =
            one::<f64>("SELECT total_spent FROM customer_analyzer.user_metrics WHERE user_id = 3");
        assert_eq!(
            one::<bool>("SELECT customer_analyzer.refresh_features(3::bigint)"),
            Some(true)
        );
        let after =
            one::<f64>("SELECT total_spent FROM customer_analyzer.user_metrics WHERE user_id = 3");
        assert!(close(after.unwrap_or(0.0) - before.unwrap_or(0.0), 1000.0));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.user_metrics"),
            expected
        );
        let fresh = one::<bool>(
            "SELECT (SELECT total_spent FROM customer_analyzer.user_metrics WHERE user_id = 3)
                  = (SELECT total_spent FROM customer_analyzer.user_features(now()) WHERE user_id = 3)",
        );
        assert_eq!(fresh, Some(true));
        // a user registered in the future has no features yet
        run("INSERT INTO store.users VALUES (5000, now() + interval '1 day', 'member', 'soon')");
        assert_eq!(
            one::<bool>("SELECT customer_analyzer.refresh_features(5000::bigint)"),
            Some(false)
        );
    }

    #[pg_test]
    fn configure_checks_tables_and_columns() {
        run("CREATE SCHEMA c;
             CREATE TABLE c.users (id bigint, registered_at timestamptz);
             CREATE TABLE c.events (user_id int, event_type text, created_at timestamp, event_data json);
             CREATE TABLE c.no_reg (id bigint);
             CREATE TABLE c.text_reg (id bigint, registered_at text);
             CREATE TABLE c.bad_events (user_id bigint, event_type text, created_at timestamptz, event_data text);
             CREATE TABLE c.products_no_price (id bigint, category text);");
        // minimal tables, no products: accepted
        assert_eq!(
            outcome("SELECT customer_analyzer.configure('c.users', 'c.events', NULL)"),
            "ok"
        );
        let before = one::<String>("SELECT users::text FROM customer_analyzer.config");
        assert_fails(
            "SELECT customer_analyzer.configure('c.no_reg', 'c.events', NULL)",
            "42703",
        );
        assert_fails(
            "SELECT customer_analyzer.configure('c.text_reg', 'c.events', NULL)",
            "42804",
        );
        assert_fails(
            "SELECT customer_analyzer.configure('c.users', 'c.bad_events', NULL)",
            "42804",
        );
        assert_fails(
            "SELECT customer_analyzer.configure('c.users', 'c.events', 'c.products_no_price')",
            "42703",
        );
        assert_fails(
            "SELECT customer_analyzer.configure(NULL, 'c.events', NULL)",
            "42P01",
        );
        // a failed configure() leaves the previous configuration
        assert_eq!(
            one::<String>("SELECT users::text FROM customer_analyzer.config"),
            before
        );
        // the message names table, column and what was expected
        let msg = assert_fails(
            "SELECT customer_analyzer.configure('c.text_reg', 'c.events', NULL)",
            "42804",
        );
        assert!(
            msg.contains("c.text_reg.registered_at") && msg.contains("timestamptz"),
            "{msg}"
        );
        let msg = assert_fails(
            "SELECT customer_analyzer.configure('c.no_reg', 'c.events', NULL)",
            "42703",
        );
        assert!(
            msg.contains("c.no_reg") && msg.contains("registered_at"),
            "{msg}"
        );
        // features over minimal tables: optional columns and products give NULLs
        run("INSERT INTO c.users VALUES (1, now() - interval '3 days');
             INSERT INTO c.events VALUES (1, 'product_view', now() - interval '1 day', '{\"product_id\": 1}')");
        run("SELECT customer_analyzer.configure('c.users', 'c.events', NULL)");
        let row = one::<String>(
            "SELECT concat_ws(',', status, has_username, distinct_categories_viewed, favourite_category, distinct_products_viewed)
             FROM customer_analyzer.user_features()",
        );
        assert_eq!(
            row.as_deref(),
            Some("1"),
            "only distinct_products_viewed is set"
        );
    }

    #[pg_test]
    fn missing_default_tables_are_reported() {
        run("DROP TABLE IF EXISTS public.events, public.users, public.products CASCADE; DELETE FROM customer_analyzer.config");
        assert_fails("SELECT * FROM customer_analyzer.user_features()", "42P01");
        assert_fails("SELECT customer_analyzer.refresh_features()", "42P01");
        assert_fails("SELECT customer_analyzer.configure()", "42P01");
    }

    #[pg_test]
    fn as_of_and_user_arguments_are_checked() {
        let shop = random_shop(5, 20);
        load_shop("args", &shop);
        run("SELECT customer_analyzer.configure('args.users', 'args.events', 'args.products')");
        assert_fails(
            "SELECT * FROM customer_analyzer.user_features(NULL)",
            "22004",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.user_features(now() + interval '1 day')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.user_features('infinity')",
            "22023",
        );
        assert_fails(
            "SELECT customer_analyzer.refresh_features(123456789::bigint)",
            "P0002",
        );
        assert_fails(
            "SELECT customer_analyzer.refresh_features(NULL::bigint)",
            "22004",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.data_quality(NULL)",
            "22004",
        );
        // before any data: no rows, not an error
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.user_features('1990-01-01')"),
            Some(0)
        );
    }

    #[pg_test]
    fn data_rules_are_counted() {
        let shop = random_shop(11, 30);
        load_shop("dq", &shop);
        run(
            "SELECT customer_analyzer.configure('dq.users', 'dq.events', 'dq.products');
             INSERT INTO dq.events (user_id, event_type, created_at, event_data) VALUES
                (1, 'purchase', now() + interval '2 days', '{\"amount\": 5}'),
                (1, 'purchase', now() - interval '2 days', '{\"amount\": -5}'),
                (1, 'purchase', now() - interval '2 days', '{\"amount\": \"NaN\"}'),
                (1, 'teleport', now() - interval '2 days', '{}'),
                (1, 'page_view', now() - interval '2 days', '[1]'),
                (NULL, 'page_view', now() - interval '2 days', '{}');
             INSERT INTO dq.users VALUES (777, NULL, 'member', 'x');",
        );
        let count = |check: &str| {
            one::<i64>(&format!(
                "SELECT rows FROM customer_analyzer.data_quality() WHERE check_name = '{check}'"
            ))
            .unwrap_or(-1)
        };
        let expect = |check: &str,
                      pred: &dyn Fn(&customer_analyzer_core::testkit::RawEvent) -> bool,
                      extra: i64| {
            let n = shop.events.iter().filter(|e| pred(e)).count() as i64 + extra;
            assert_eq!(count(check), n, "{check}");
        };
        expect("events_in_the_future", &|_| false, 1);
        expect("events_without_user_id", &|e| e.user_id.is_none(), 1);
        expect("events_without_created_at", &|e| e.at.is_none(), 0);
        expect(
            "events_of_unknown_type",
            &|e| {
                ![
                    "page_view",
                    "product_view",
                    "add_to_cart",
                    "purchase",
                    "bot_command",
                ]
                .contains(&e.event_type.as_str())
            },
            1,
        );
        assert!(count("purchases_without_valid_amount") >= 2);
        assert!(count("events_with_malformed_event_data") >= 1);
        assert_eq!(count("users_without_registered_at"), 1);
        assert_eq!(count("events_of_unknown_users"), 1);
        // the future event is never read; the negative and NaN amounts add no money
        let spent = one::<f64>(
            "SELECT total_spent FROM customer_analyzer.user_features() WHERE user_id = 1",
        );
        let before = one::<f64>(&format!(
            "SELECT total_spent FROM customer_analyzer.user_features({}) WHERE user_id = 1",
            ts(shop.as_of)
        ));
        let between = one::<f64>(&format!(
            "SELECT coalesce(sum((event_data->>'amount')::float8), 0) FROM dq.events
             WHERE user_id = 1 AND event_type = 'purchase' AND created_at >= {} AND created_at < now()
               AND event_data->>'amount' ~ '^\\s*[0-9]{{1,15}}(\\.[0-9]+)?\\s*$'",
            ts(shop.as_of)
        ));
        assert!(close(
            spent.unwrap_or(-1.0),
            before.unwrap_or(0.0) + between.unwrap_or(0.0)
        ));
        // refresh_features reports the set-aside rows in one NOTICE and still succeeds
        assert!(
            one::<i64>("SELECT customer_analyzer._notice_data_quality(now())").unwrap_or(0) >= 6
        );
        assert_eq!(outcome("SELECT customer_analyzer.refresh_features()"), "ok");
    }

    /// The report after a full refresh takes the content rules of the events the
    /// refresh read from that read and counts only the rest in SQL: its counts are
    /// `data_quality()`'s, with bad rows among the events read and those not read (future,
    /// infinite and NULL times, unknown, unregistered and NULL users) and a user listed
    /// twice.
    #[pg_test]
    fn the_report_after_a_full_refresh_counts_what_data_quality_counts() {
        use customer_analyzer_core::events::SetAside;
        let shop = random_shop(23, 40);
        load_shop("dr", &shop);
        run(r#"
            SELECT customer_analyzer.configure('dr.users', 'dr.events', 'dr.products');
            SET LOCAL customer_analyzer.incremental_refresh = off;
            INSERT INTO dr.users VALUES
                (777, NULL, 'member', 'x'), (778, 'infinity', NULL, NULL),
                (NULL, now() - interval '9 days', NULL, NULL), (1, NULL, 'member', 'again'),
                (1, now() - interval '20 days', 'vip', 'third');
            INSERT INTO dr.events (user_id, event_type, created_at, event_data) VALUES
                (1, 'purchase', now() - interval '2 days', '{"amount": -5, "product_id": "007"}'),
                (1, 'teleport', now() - interval '2 days', '[1]'),
                (1, 'product_view', now() - interval '1 hour', '{"product_id": "x"}'),
                (1, 'purchase', now() + interval '2 days', '{"amount": "NaN"}'),
                (1, 'add_to_cart', 'infinity', '{}'),
                (1, 'add_to_cart', '-infinity', '{"product_id": 1}'),
                (1, 'page_view', NULL, '{}'),
                (777, 'purchase', now() - interval '1 day', '{"amount": "x"}'),
                (778, 'signup', now() - interval '1 day', '{}'),
                (999999, 'product_view', now() - interval '1 day', '{}'),
                (NULL, 'purchase', now() - interval '1 day', 'null');
        "#);
        let now = one::<TimestampWithTimeZone>("SELECT now()").expect("now()");
        let t = one::<TimestampWithTimeZone>("SELECT now() - interval '1 hour'").expect("t");
        crate::refresh::refresh_as_of(t, 0.5).unwrap_or_else(|e| panic!("{}", e.message()));
        assert_eq!(crate::data_quality::store_read_used(t), Some(false));
        assert_eq!(crate::data_quality::store_read_used(now), None);
        Spi::connect(|client| {
            let counts = |read| {
                crate::data_quality::counts(client, t, read)
                    .unwrap_or_else(|e| panic!("{}", e.message()))
            };
            let every = counts(None);
            let report = crate::data_quality::report(client, t)
                .unwrap_or_else(|e| panic!("{}", e.message()));
            assert_eq!(report, every);
            // used once: a second report counts everything anew, to the same numbers
            assert_eq!(crate::data_quality::store_read_used(t), Some(true));
            let again = crate::data_quality::report(client, t)
                .unwrap_or_else(|e| panic!("{}", e.message()));
            assert_eq!(again, every);
            // the content rules found bad rows both in what the refresh read and in the rest
            let unread = counts(Some(SetAside::default()));
            for rule in [
                "events_of_unknown_type",
                "purchases_without_valid_amount",
                "product_events_without_valid_product_id",
            ] {
                let n = |rows: &[(&str, i64, &str)]| {
                    rows.iter().find(|r| r.0 == rule).map_or(-1, |r| r.1)
                };
                assert!(
                    n(&unread) > 0 && n(&every) > n(&unread),
                    "{rule}: {every:?} {unread:?}"
                );
            }
            assert!(every.iter().filter(|r| r.1 > 0).count() >= 11, "{every:?}");
        });
        // refresh_features() hands its own read to the report it raises
        run("SELECT customer_analyzer.refresh_features()");
        assert_eq!(crate::data_quality::store_read_used(now), Some(true));
    }

    #[pg_test]
    fn demo_generator_checks_arguments() {
        for (args, state) in [
            ("0", "22023"),
            ("-5", "22023"),
            ("10, 0", "22023"),
            ("10, -1", "22023"),
            ("10, 100000", "22023"),
            ("2000000000", "22023"),
            ("1000000, 3650", "22023"),
            ("NULL", "22004"),
            ("10, 10, NULL", "22004"),
            ("10, 10, 1, now() + interval '1 hour'", "22023"),
            ("10, 10, 1, 'infinity'", "22023"),
        ] {
            assert_fails(
                &format!("SELECT * FROM customer_analyzer.generate_demo_data({args})"),
                state,
            );
        }
    }

    #[pg_test]
    fn demo_shop_is_deterministic_and_refuses_to_overwrite() {
        run("DROP TABLE IF EXISTS public.events, public.users, public.products CASCADE; DELETE FROM customer_analyzer.config");
        let gen = "SELECT events FROM customer_analyzer.generate_demo_data(300, 60, 7, '2025-06-01 12:00+00', replace => true)";
        let digest = "SELECT md5(string_agg(concat_ws(',', user_id, event_type, created_at, event_data), ';' ORDER BY user_id, created_at, id))
                      FROM public.events";
        let n1 = one::<i64>(gen);
        let d1 = one::<String>(digest);
        let n2 = one::<i64>(gen);
        let d2 = one::<String>(digest);
        assert!(
            n1.unwrap_or(0) > 1000,
            "300 users x 60 days gave {n1:?} events"
        );
        assert_eq!((n1, d1.clone()), (n2, d2));
        // all history lies before ends_at and after registration
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM public.events e JOIN public.users u ON u.id = e.user_id
                 WHERE e.created_at >= '2025-06-01 12:00+00' OR e.created_at < u.registered_at"
            ),
            Some(0)
        );
        // without replace, existing data is never touched
        assert_fails(
            "SELECT * FROM customer_analyzer.generate_demo_data(10, 10, 1, '2025-06-01 12:00+00')",
            "55000",
        );
        assert_eq!(one::<String>(digest), d1);
        // features work on the demo with the default configuration
        let rows = one::<i64>("SELECT count(*) FROM customer_analyzer.user_features('2025-05-15')");
        assert!(rows.unwrap_or(0) > 100);
        let cols = one::<i64>(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'customer_analyzer.feature_row'::regclass AND attnum > 1",
        );
        assert!(cols.unwrap_or(0) >= 60);
    }

    #[pg_test]
    fn one_bad_row_never_breaks_everyone() {
        small_demo();
        // event_data stored as json, which can hold what jsonb cannot
        run(r#"
            ALTER TABLE public.events ALTER COLUMN event_data DROP DEFAULT;
            ALTER TABLE public.events ALTER COLUMN event_data TYPE json USING event_data::json;
            INSERT INTO public.users (id, telegram_id, username, registered_at, status) VALUES
                (70001, 70001, 'past', '-infinity', 'member'),
                (70002, 70002, 'never', 'infinity', 'member');
            INSERT INTO public.events (user_id, event_type, created_at, event_data) VALUES
                (3, 'page_view', '-infinity', '{}'),
                (3, 'page_view', 'infinity', '{}'),
                (70001, 'purchase', now() - interval '3 days', '{"amount": 5, "product_id": 2}'),
                (4, 'purchase', now() - interval '2 days', '{"amount": "12\u0000", "product_id": 1}'),
                (5, 'product_view', now() - interval '2 days', '{"product_id": "007"}');
        "#);
        run("SELECT customer_analyzer.configure()");
        let checks = one::<String>(
            "SELECT string_agg(check_name || '=' || rows, ',' ORDER BY check_name)
             FROM customer_analyzer.data_quality()
             WHERE check_name IN ('events_at_infinite_time', 'users_with_infinite_registered_at',
                                  'events_with_malformed_event_data', 'product_events_without_valid_product_id')",
        );
        assert_eq!(
            checks,
            Some("events_at_infinite_time=2,events_with_malformed_event_data=1,product_events_without_valid_product_id=2,users_with_infinite_registered_at=2".into())
        );
        let users = one::<i64>(
            "SELECT count(*) FROM public.users WHERE registered_at < now() AND registered_at > '-infinity'",
        );
        assert_eq!(
            one::<i64>("SELECT customer_analyzer.refresh_features()"),
            users
        );
        // the \u0000 purchase is read as an empty object: a purchase without money
        assert_eq!(
            one::<f64>(
                "SELECT total_spent FROM customer_analyzer.user_features() WHERE user_id = 4"
            ),
            one::<f64>(
                "SELECT coalesce(sum((event_data->>'amount')::float8), 0) FROM public.events
                        WHERE user_id = 4 AND event_type = 'purchase' AND created_at < now()
                          AND event_data::text NOT LIKE '%u0000%'"
            )
        );
        assert!(train("churn", "gbm", QUICK) > 0);
        assert!(one::<f64>("SELECT customer_analyzer.predict_churn(3)").is_some());
        assert!(one::<f64>("SELECT customer_analyzer.predict_churn(5)").is_some());
        assert_fails("SELECT customer_analyzer.predict_churn(70001)", "55000");
        assert_eq!(
            one::<i64>("SELECT customer_analyzer.score_all('churn')"),
            users
        );
    }
}
