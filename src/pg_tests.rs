//! Tests that need a database: the SQL surface, SQL/core agreement on random shops,
//! point-in-time correctness and every bad-input rule. Run by `cargo pgrx test`.

#[pgrx::pg_schema]
mod tests {
    use customer_analyzer_core::catalog::{Kind, FEATURES};
    use customer_analyzer_core::features::{FeatureValue, FeatureVector};
    use customer_analyzer_core::testkit::{random_shop, RawShop};
    use pgrx::prelude::*;

    fn run(sql: &str) {
        if let Err(e) = Spi::run(sql) {
            panic!("{sql}: {e}");
        }
    }

    fn one<T: FromDatum + IntoDatum>(sql: &str) -> Option<T> {
        match Spi::get_one::<T>(sql) {
            Ok(v) => v,
            Err(e) => panic!("{sql}: {e}"),
        }
    }

    /// Runs `sql` in a subtransaction and returns "SQLSTATE|hint|message", or "ok".
    fn outcome(sql: &str) -> String {
        // created once per transaction, so that it also runs after SET ROLE
        if one::<bool>("SELECT to_regprocedure('pg_temp.outcome(text)') IS NULL") == Some(true) {
            run(
                "CREATE FUNCTION pg_temp.outcome(q text) RETURNS text LANGUAGE plpgsql AS $$
                 DECLARE h text;
                 BEGIN
                     EXECUTE q;
                     RETURN 'ok';
                 EXCEPTION WHEN OTHERS THEN
                     GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
                     RETURN SQLSTATE || '|' || coalesce(h, '') || '|' || SQLERRM;
                 END $$",
            );
        }
        one::<String>(&format!(
            "SELECT pg_temp.outcome({})",
            pgrx::spi::quote_literal(sql)
        ))
        .unwrap_or_default()
    }

    /// Asserts that `sql` fails with `state` (PostgreSQL's own refusals, which carry no
    /// hint); returns the message.
    fn assert_state(sql: &str, state: &str) -> String {
        let got = outcome(sql);
        let mut parts = got.splitn(3, '|');
        assert_eq!(parts.next(), Some(state), "{sql} gave {got}");
        parts.nth(1).unwrap_or_default().to_string()
    }

    /// Asserts that `sql` fails with `state` and a hint; returns the message.
    fn assert_fails(sql: &str, state: &str) -> String {
        let got = outcome(sql);
        let mut parts = got.splitn(3, '|');
        let (code, hint, message) = (parts.next(), parts.next(), parts.next());
        assert_eq!(code, Some(state), "{sql} gave {got}");
        assert!(
            hint.is_some_and(|h| !h.is_empty()),
            "{sql} failed without a hint: {got}"
        );
        message.unwrap_or_default().to_string()
    }

    fn ts(micros: i64) -> String {
        format!("(timestamptz 'epoch' + {micros} * interval '1 microsecond')")
    }

    /// Creates schema `s` with the shop's tables (every column nullable) and fills it.
    fn load_shop(s: &str, shop: &RawShop) {
        run(&format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.users (id bigint, registered_at timestamptz, status text, username text);
             CREATE TABLE {s}.events (id bigserial, user_id bigint, event_type text, created_at timestamptz, event_data jsonb);
             CREATE TABLE {s}.products (id bigint, category text, price float8);
             CREATE INDEX ON {s}.events (user_id, created_at);"
        ));
        let ids: Vec<i64> = shop.users.iter().map(|u| u.id).collect();
        let reg: Vec<i64> = shop.users.iter().map(|u| u.registered_at).collect();
        let status: Vec<Option<String>> = shop.users.iter().map(|u| u.status.clone()).collect();
        let names: Vec<Option<String>> = shop.users.iter().map(|u| u.username.clone()).collect();
        if let Err(e) = Spi::run_with_args(
            &format!(
                "INSERT INTO {s}.users SELECT i, timestamptz 'epoch' + r * interval '1 microsecond', st, n
                 FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]) AS x(i, r, st, n)"
            ),
            &[ids.into(), reg.into(), status.into(), names.into()],
        ) {
            panic!("inserting users: {e}");
        }
        let uid: Vec<Option<i64>> = shop.events.iter().map(|e| e.user_id).collect();
        let kind: Vec<String> = shop.events.iter().map(|e| e.event_type.clone()).collect();
        let at: Vec<Option<i64>> = shop.events.iter().map(|e| e.at).collect();
        let data: Vec<Option<String>> = shop.events.iter().map(|e| e.data.clone()).collect();
        if let Err(e) = Spi::run_with_args(
            &format!(
                "INSERT INTO {s}.events (user_id, event_type, created_at, event_data)
                 SELECT u, k, timestamptz 'epoch' + a * interval '1 microsecond', d::jsonb
                 FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[]) AS x(u, k, a, d)"
            ),
            &[uid.into(), kind.into(), at.into(), data.into()],
        ) {
            panic!("inserting events: {e}");
        }
        let pid: Vec<i64> = shop.products.iter().map(|p| p.id).collect();
        let cat: Vec<Option<String>> = shop.products.iter().map(|p| p.category.clone()).collect();
        let price: Vec<Option<f64>> = shop.products.iter().map(|p| p.price).collect();
        if let Err(e) = Spi::run_with_args(
            &format!("INSERT INTO {s}.products SELECT * FROM unnest($1::bigint[], $2::text[], $3::float8[])"),
            &[pid.into(), cat.into(), price.into()],
        ) {
            panic!("inserting products: {e}");
        }
    }

    /// user_features(as_of) read back into the core's representation.
    fn sql_features(as_of: i64) -> Vec<FeatureVector> {
        let sql = format!(
            "SELECT * FROM customer_analyzer.user_features({}) ORDER BY user_id",
            ts(as_of)
        );
        let result = Spi::connect(|client| -> Result<Vec<FeatureVector>, pgrx::spi::Error> {
            let mut out = Vec::new();
            for row in client.select(&sql, None, &[])? {
                let user_id = row.get::<i64>(1)?.unwrap_or_default();
                let mut values = Vec::with_capacity(FEATURES.len());
                for (i, f) in FEATURES.iter().enumerate() {
                    values.push(match f.kind {
                        Kind::Count => FeatureValue::Num(row.get::<i64>(i + 2)?.map(|v| v as f64)),
                        Kind::Real => FeatureValue::Num(row.get::<f64>(i + 2)?),
                        Kind::Category => FeatureValue::Text(row.get::<String>(i + 2)?),
                    });
                }
                out.push(FeatureVector { user_id, values });
            }
            Ok(out)
        });
        match result {
            Ok(v) => v,
            Err(e) => panic!("{sql}: {e}"),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-7 * a.abs().max(b.abs()).max(1.0)
    }

    fn assert_agree(sql: &[FeatureVector], reference: &[FeatureVector], context: &str) {
        let ids = |v: &[FeatureVector]| v.iter().map(|f| f.user_id).collect::<Vec<_>>();
        assert_eq!(ids(sql), ids(reference), "{context}: different users");
        for (s, r) in sql.iter().zip(reference) {
            for ((sv, rv), def) in s.values.iter().zip(&r.values).zip(FEATURES) {
                let same = match (sv, rv) {
                    (FeatureValue::Num(Some(a)), FeatureValue::Num(Some(b))) => close(*a, *b),
                    (a, b) => a == b,
                };
                assert!(
                    same,
                    "{context}: user {} feature {}: SQL {:?} vs core {:?}",
                    s.user_id, def.name, sv, rv
                );
            }
        }
    }

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
            let products = if with_products {
                format!("'{s}.products'")
            } else {
                "NULL".into()
            };
            run(&format!(
                "SELECT customer_analyzer.configure('{s}.users', '{s}.events', {products})"
            ));
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
        // the stored rows equal user_features as of the stored as_of, column for column
        let cols: Vec<&str> = FEATURES.iter().map(|f| f.name).collect();
        let cols = cols.join(", ");
        let differing = one::<i64>(&format!(
            "SELECT count(*) FROM (
                SELECT user_id, {cols} FROM customer_analyzer.user_features((SELECT max(as_of) FROM customer_analyzer.user_metrics))
                EXCEPT SELECT user_id, {cols} FROM customer_analyzer.user_metrics) d"
        ));
        assert_eq!(differing, Some(0));
        // one-user refresh: new event, then only that user's row changes
        run(&format!(
            "INSERT INTO store.events (user_id, event_type, created_at, event_data)
             VALUES (3, 'purchase', now() - interval '1 minute', '{{\"amount\": 1000}}')"
        ));
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

    /// A small demo shop in public tables, configured as the default.
    fn small_demo() {
        run(
            "DROP TABLE IF EXISTS public.events, public.users, public.products CASCADE;
             DELETE FROM customer_analyzer.config;
             SELECT * FROM customer_analyzer.generate_demo_data(500, 150, 3, replace => true);",
        );
    }

    const QUICK: &str = r#"{"iterations": 30, "snapshots": 4}"#;

    fn train(task: &str, algorithm: &str, params: &str) -> i64 {
        one::<i64>(&format!(
            "SELECT model_id FROM customer_analyzer.train('{task}', '{algorithm}', '{params}')"
        ))
        .unwrap_or(-1)
    }

    #[pg_test]
    fn train_predict_explain_and_score() {
        small_demo();
        let id = train("churn", "gbm", QUICK);
        assert!(id > 0);
        let (auc, deployed) = (
            one::<f64>(&format!(
                "SELECT auc FROM customer_analyzer.model_metrics WHERE model_id = {id}"
            )),
            one::<bool>(&format!(
                "SELECT deployed FROM customer_analyzer.model_metrics WHERE model_id = {id}"
            )),
        );
        let auc = auc.unwrap_or(0.0);
        assert!(auc > 0.6 && auc < 1.0, "holdout AUC {auc}");
        assert_eq!(deployed, Some(true), "the first model is deployed");
        // champion-challenger: a weaker model is stored but does not replace it
        let weak = train(
            "churn",
            "gbm",
            r#"{"iterations": 1, "max_depth": 1, "snapshots": 4}"#,
        );
        let weak_row = one::<String>(&format!(
            "SELECT deployed::text || ',' || (metrics -> 'compared_with' ->> 'model_id')
             FROM customer_analyzer.model_metrics mm JOIN customer_analyzer.models m ON m.id = mm.model_id
             WHERE model_id = {weak}"
        ));
        assert_eq!(weak_row, Some(format!("false,{id}")));
        let p = one::<f64>("SELECT customer_analyzer.predict_churn(7)").unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&p));
        let served = one::<i64>("SELECT model_id FROM customer_analyzer.predict('churn', 7)");
        assert_eq!(served, Some(id));
        // explanations name catalog features and are ordered by magnitude
        let n = one::<i64>(
            "SELECT count(*) FROM customer_analyzer.explain('churn', 7, 3) e
             JOIN customer_analyzer.feature_catalog c ON c.name = e.feature",
        );
        assert_eq!(n, Some(3));
        let ordered = one::<bool>(
            "SELECT bool_and(ok) FROM (SELECT abs(contribution) <= lag(abs(contribution), 1, 'Infinity') OVER () AS ok
             FROM customer_analyzer.explain('churn', 7, 5)) x",
        );
        assert_eq!(ordered, Some(true));
        // batch scoring writes one row per user, point in time as well
        let users = one::<i64>("SELECT count(*) FROM public.users WHERE registered_at < now()");
        assert_eq!(
            one::<i64>("SELECT customer_analyzer.score_all('churn', now())"),
            users
        );
        let past =
            one::<i64>("SELECT customer_analyzer.score_all('churn', now() - interval '20 days')");
        assert!(past < users);
        assert_eq!(
            one::<i64>("SELECT count(DISTINCT as_of) FROM customer_analyzer.predictions WHERE task = 'churn'"),
            Some(2)
        );
        // importance view lists the deployed model's features
        assert!(
            one::<i64>(
                "SELECT count(*) FROM customer_analyzer.feature_importance WHERE task = 'churn'"
            )
            .unwrap_or(0)
                > 10
        );
    }

    #[pg_test]
    fn every_algorithm_trains_and_validations_are_stored() {
        small_demo();
        for (algo, params) in [
            (
                "random_forest",
                r#"{"n_trees": 15, "snapshots": 4, "validation": "split"}"#,
            ),
            ("logistic", r#"{"snapshots": 4, "validation": "cv"}"#),
        ] {
            let id = train("purchase", algo, params);
            let auc = one::<f64>(&format!(
                "SELECT auc FROM customer_analyzer.model_metrics WHERE model_id = {id}"
            ));
            assert!(auc.unwrap_or(0.0) > 0.6, "{algo} AUC {auc:?}");
        }
        assert_eq!(
            one::<i64>("SELECT jsonb_array_length(metrics -> 'cross_validation') FROM customer_analyzer.models WHERE algorithm = 'logistic'"),
            Some(5)
        );
        assert_eq!(
            one::<bool>("SELECT metrics -> 'split' ->> 'auc' IS NOT NULL FROM customer_analyzer.models WHERE algorithm = 'random_forest'"),
            Some(true)
        );
        let searched = train(
            "purchase",
            "logistic",
            r#"{"snapshots": 4, "search": true, "deploy": "never"}"#,
        );
        let tuned = one::<i64>(&format!(
            "SELECT jsonb_array_length(metrics -> 'search') FROM customer_analyzer.models WHERE id = {searched}"
        ));
        assert_eq!(tuned, Some(4));
    }

    #[pg_test]
    fn labels_only_read_the_horizon() {
        small_demo();
        let t = "now() - interval '40 days'";
        let label = |user: i64| {
            one::<bool>(&format!(
                "SELECT label FROM customer_analyzer.labels('purchase', {t}) WHERE user_id = {user}"
            ))
        };
        let buyer_free = one::<i64>(&format!(
            "SELECT user_id FROM customer_analyzer.labels('purchase', {t}) WHERE NOT label ORDER BY user_id LIMIT 2"
        ))
        .unwrap_or(-1);
        assert_eq!(label(buyer_free), Some(false));
        // a purchase after the 30-day horizon does not count
        run(&format!(
            "INSERT INTO public.events (user_id, event_type, created_at, event_data)
             VALUES ({buyer_free}, 'purchase', {t} + interval '31 days', '{{\"amount\": 5}}')"
        ));
        assert_eq!(label(buyer_free), Some(false));
        // one inside (as_of, as_of + 30 days] does; one exactly at as_of does not
        run(&format!(
            "INSERT INTO public.events (user_id, event_type, created_at, event_data)
             VALUES ({buyer_free}, 'purchase', {t}, '{{\"amount\": 5}}')"
        ));
        assert_eq!(label(buyer_free), Some(false));
        run(&format!(
            "INSERT INTO public.events (user_id, event_type, created_at, event_data)
             VALUES ({buyer_free}, 'purchase', {t} + interval '29 days', '{{\"amount\": 5}}')"
        ));
        assert_eq!(label(buyer_free), Some(true));
        // churn's population: only users active in the 30 days before as_of
        let outside = one::<i64>(&format!(
            "SELECT count(*) FROM customer_analyzer.labels('churn', now() - interval '70 days') l
             JOIN customer_analyzer.user_features(now() - interval '70 days') f USING (user_id)
             WHERE f.events_last_30_days = 0"
        ));
        assert_eq!(outside, Some(0));
        // a horizon that has not passed yet is refused
        assert_fails(
            "SELECT * FROM customer_analyzer.labels('churn', now() - interval '10 days')",
            "22023",
        );
    }

    #[pg_test]
    fn scoring_uses_the_stored_preprocessing() {
        small_demo();
        train("purchase", "logistic", r#"{"snapshots": 4}"#);
        run("SELECT customer_analyzer.refresh_features()");
        let before = one::<f64>("SELECT customer_analyzer.predict_purchase(11)");
        // shift the whole population: a refit would move every scaling constant
        run(
            "INSERT INTO public.events (user_id, event_type, created_at, event_data)
             SELECT id, 'purchase', now() - interval '1 hour', '{\"amount\": 99999}'
             FROM public.users WHERE id <> 11;
             SELECT customer_analyzer.refresh_features();",
        );
        let after = one::<f64>("SELECT customer_analyzer.predict_purchase(11)");
        assert_eq!(before, after);
        let inputs = one::<i64>(
            "SELECT jsonb_array_length(preprocessing -> 'inputs') FROM customer_analyzer.models WHERE algorithm = 'logistic'",
        );
        assert!(inputs.unwrap_or(0) > 40);
    }

    #[pg_test]
    fn a_rolled_back_deploy_never_serves_from_the_cache() {
        small_demo();
        let a = train("churn", "gbm", QUICK);
        let b = train(
            "churn",
            "logistic",
            r#"{"snapshots": 4, "deploy": "always"}"#,
        );
        assert_eq!(
            one::<i64>("SELECT model_id FROM customer_analyzer.predict('churn', 5)"),
            Some(b)
        );
        // deploy A and score with it inside a subtransaction that then fails
        let inner = one::<i64>(&format!(
            "CREATE OR REPLACE FUNCTION pg_temp.try_deploy() RETURNS bigint LANGUAGE plpgsql AS $$
             DECLARE served bigint;
             BEGIN
                 BEGIN
                     PERFORM customer_analyzer.deploy({a});
                     SELECT model_id INTO served FROM customer_analyzer.predict('churn', 5);
                     RAISE EXCEPTION 'undo';
                 EXCEPTION WHEN raise_exception THEN
                     RETURN served;
                 END;
             END $$;
             SELECT pg_temp.try_deploy()"
        ));
        assert_eq!(inner, Some(a), "inside the subtransaction A served");
        // A is still cached, but the deployment was rolled back: B serves
        let cached =
            one::<Vec<i64>>("SELECT customer_analyzer.cached_models()").unwrap_or_default();
        assert!(cached.contains(&a) && cached.contains(&b));
        assert_eq!(
            one::<i64>("SELECT model_id FROM customer_analyzer.predict('churn', 5)"),
            Some(b)
        );
        // rollback() returns to the previous model
        assert_eq!(
            one::<i64>("SELECT customer_analyzer.rollback('churn')"),
            Some(a)
        );
        assert_eq!(
            one::<i64>("SELECT model_id FROM customer_analyzer.predict('churn', 5)"),
            Some(a)
        );
        assert_fails(
            "UPDATE customer_analyzer.models SET algorithm = 'x'",
            "55000",
        );
    }

    #[pg_test]
    fn model_bad_input_is_refused() {
        small_demo();
        assert_fails("SELECT customer_analyzer.predict_churn(1)", "55000");
        assert_fails("SELECT * FROM customer_analyzer.train('revenue')", "22023");
        assert_fails("SELECT * FROM customer_analyzer.train(NULL)", "22004");
        assert_fails(
            "SELECT * FROM customer_analyzer.train('churn', 'xgboost')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.train('churn', 'gbm', '{\"iterations\": \"many\"}')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.train('churn', 'gbm', '{\"iterations\": 0}')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.train('churn', 'gbm', '{\"trees\": 5}')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.train('churn', 'gbm', '[1]')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.train('churn', 'gbm', '{}', now() + interval '1 day')",
            "22023",
        );
        // too little history for two matured snapshots
        assert_fails(
            "SELECT * FROM customer_analyzer.train('churn', 'gbm', '{}', (SELECT min(registered_at) FROM public.users) + interval '70 days')",
            "55000",
        );
        // a single class: nobody ever purchases
        let nothing_written = one::<i64>("SELECT count(*) FROM customer_analyzer.models");
        run("DELETE FROM public.events WHERE event_type = 'purchase'");
        assert_fails(
            "SELECT * FROM customer_analyzer.train('purchase', 'logistic', '{\"snapshots\": 4}')",
            "55000",
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.models"),
            nothing_written
        );
        let id = train("churn", "gbm", QUICK);
        assert_fails("SELECT customer_analyzer.predict_churn(987654)", "P0002");
        assert_fails("SELECT customer_analyzer.predict_churn(NULL)", "22004");
        assert_fails(
            "SELECT * FROM customer_analyzer.explain('churn', 1, 0)",
            "22023",
        );
        assert_fails("SELECT customer_analyzer.deploy(987654)", "22023");
        assert_fails("SELECT customer_analyzer.rollback('churn')", "55000");
        // corrupted and future-format blobs are refused at deploy time
        let copy = |blob: &str| {
            one::<i64>(&format!(
                "INSERT INTO customer_analyzer.models (task, algorithm, params, preprocessing, feature_names,
                     catalog_version, trained_as_of, training_from, training_to, metrics, size_bytes, format_version, model)
                 SELECT task, algorithm, params, preprocessing, feature_names, catalog_version, trained_as_of,
                        training_from, training_to, metrics, size_bytes, format_version, {blob}
                 FROM customer_analyzer.models WHERE id = {id} RETURNING id"
            ))
            .unwrap_or(-1)
        };
        let corrupt = copy("substring(model FROM 1 FOR 40)");
        assert_fails(
            &format!("SELECT customer_analyzer.deploy({corrupt})"),
            "XX001",
        );
        let future = copy("overlay(model PLACING '\\x63'::bytea FROM 5 FOR 1)");
        assert_fails(
            &format!("SELECT customer_analyzer.deploy({future})"),
            "0A000",
        );
        // and a corrupt model deployed behind the extension's back fails cleanly
        run(&format!(
            "INSERT INTO customer_analyzer.deployments (task, model_id, reason) VALUES ('churn', {corrupt}, 'test')"
        ));
        assert_fails("SELECT customer_analyzer.predict_churn(1)", "XX001");
    }

    #[pg_test]
    fn segmentation_names_stores_and_assigns() {
        small_demo();
        run("SELECT customer_analyzer.refresh_features()");
        let users = one::<i64>("SELECT count(*) FROM customer_analyzer.user_metrics").unwrap_or(0);
        let total = one::<i64>(
            "SELECT sum(size)::bigint FROM customer_analyzer.segment_users('kmeans', 4)",
        );
        assert_eq!(total, Some(users));
        let seg = one::<i64>(
            "SELECT segmentation_id FROM customer_analyzer.segmentation_quality WHERE serving",
        )
        .unwrap_or(-1);
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM customer_analyzer.user_segments WHERE segmentation_id = {seg}")),
            Some(users)
        );
        assert_eq!(
            one::<i32>("SELECT segments FROM customer_analyzer.segmentation_quality WHERE serving"),
            Some(4)
        );
        let q = one::<bool>(
            "SELECT silhouette BETWEEN -1 AND 1 AND inertia > 0 AND davies_bouldin > 0 AND silhouette_sample > 0
             FROM customer_analyzer.segmentation_quality WHERE serving",
        );
        assert_eq!(q, Some(true));
        // names come from the documented rule and are unique within a segmentation
        let named = one::<bool>(&format!(
            "SELECT bool_and(name ~ '^(Champions|Loyal|Promising new|Needs attention|At risk|Hibernating|Bargain hunters|Window shoppers|Outliers)( [0-9]+)?$')
                    AND count(DISTINCT name) = count(*)
             FROM customer_analyzer.segments WHERE segmentation_id = {seg}"
        ));
        assert_eq!(named, Some(true));
        // segment_of agrees with the stored assignment, without re-clustering
        let agree = one::<bool>(&format!(
            "SELECT bool_and(s.segment_id = us.segment_id)
             FROM customer_analyzer.user_segments us, LATERAL customer_analyzer.segment_of(us.user_id) s
             WHERE us.segmentation_id = {seg} AND us.user_id <= 40"
        ));
        assert_eq!(agree, Some(true));
        let models_before = one::<i64>("SELECT count(*) FROM customer_analyzer.models");
        run("INSERT INTO public.users VALUES (90001, 1, 'new', now() - interval '2 days', 'member');
             INSERT INTO public.events (user_id, event_type, created_at, event_data)
             VALUES (90001, 'product_view', now() - interval '1 day', '{\"product_id\": 3}')");
        assert!(one::<i32>("SELECT segment_id FROM customer_analyzer.segment_of(90001)").is_some());
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.models"),
            models_before
        );
        // renaming reaches every place the name is shown
        run(&format!(
            "SELECT customer_analyzer.rename_segment({seg}, 0, 'Our biggest group')"
        ));
        assert_eq!(
            one::<String>(&format!(
                "SELECT segment_name FROM customer_analyzer.user_segments WHERE segmentation_id = {seg} AND segment_id = 0 LIMIT 1"
            )),
            Some("Our biggest group".into())
        );
        assert_fails(
            &format!("SELECT customer_analyzer.rename_segment({seg}, 99, 'x')"),
            "22023",
        );
        assert_fails(
            &format!("SELECT customer_analyzer.rename_segment({seg}, 0, '  ')"),
            "22023",
        );
    }

    #[pg_test]
    fn dbscan_and_agglomerative_with_churn_rates() {
        small_demo();
        run("SELECT customer_analyzer.refresh_features()");
        train("churn", "gbm", QUICK);
        let n =
            one::<i64>("SELECT count(*) FROM customer_analyzer.segment_users('agglomerative', 3)");
        assert_eq!(n, Some(3));
        assert_eq!(
            one::<bool>("SELECT bool_and(churn_rate BETWEEN 0 AND 1) FROM customer_analyzer.current_segments"),
            Some(true)
        );
        // DBSCAN, eps from the k-distance curve: noise, if any, is its own named segment
        let rows = one::<i64>("SELECT count(*) FROM customer_analyzer.segment_users('dbscan', NULL, '{\"min_points\": 5}')");
        assert!(rows.unwrap_or(0) >= 1);
        let noise_named = one::<bool>(
            "SELECT coalesce(bool_and(name = 'Outliers'), true) FROM customer_analyzer.current_segments WHERE is_noise",
        );
        assert_eq!(noise_named, Some(true));
        assert!(
            one::<f64>("SELECT eps FROM customer_analyzer.segmentation_quality WHERE serving")
                .unwrap_or(0.0)
                > 0.0
        );
        // k chosen by silhouette when k is NULL
        run("SELECT * FROM customer_analyzer.segment_users('kmeans')");
        assert_eq!(
            one::<i64>("SELECT jsonb_array_length(k_scores) FROM customer_analyzer.segmentation_quality WHERE serving"),
            Some(9)
        );
    }

    #[pg_test]
    fn segmentation_bad_input_is_refused() {
        small_demo();
        assert_fails("SELECT * FROM customer_analyzer.segment_users()", "55000");
        assert_fails("SELECT * FROM customer_analyzer.segment_of(1)", "55000");
        run("SELECT customer_analyzer.refresh_features()");
        assert_fails(
            "SELECT * FROM customer_analyzer.segment_users('kmeans', 1)",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.segment_users('kmeans', 100000)",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.segment_users('spectral')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.segment_users('dbscan', NULL, '{\"eps\": 0}')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.segment_users('dbscan', NULL, '{\"eps\": -2}')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.segment_users('dbscan', NULL, '{\"min_points\": 0}')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.segment_users('kmeans', NULL, '{\"colour\": 1}')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.segment_users(NULL)",
            "22004",
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.segments"),
            Some(0)
        );
    }

    // ---- safety under any caller ----------------------------------------------------

    /// Every public function, called with arguments that work on the small demo shop.
    const EVERY_CALL: &[&str] = &[
        "SELECT customer_analyzer.configure()",
        "SELECT count(*) FROM customer_analyzer.user_features()",
        "SELECT customer_analyzer.refresh_features()",
        "SELECT customer_analyzer.refresh_features(3)",
        "SELECT count(*) FROM customer_analyzer.data_quality()",
        "SELECT count(*) FROM customer_analyzer.labels('churn', now() - interval '70 days')",
        "SELECT count(*) FROM customer_analyzer.training_snapshots('churn')",
        "SELECT * FROM customer_analyzer.train('churn', 'gbm', '{\"iterations\": 20, \"snapshots\": 4}')",
        "SELECT * FROM customer_analyzer.train('purchase', 'logistic', '{\"snapshots\": 4}')",
        "SELECT * FROM customer_analyzer.tune('churn', 'logistic')",
        "SELECT * FROM customer_analyzer.train('churn', 'logistic', '{\"snapshots\": 4, \"deploy\": \"always\"}')",
        "SELECT customer_analyzer.predict_churn(3)",
        "SELECT customer_analyzer.predict_purchase(3)",
        "SELECT * FROM customer_analyzer.predict('churn', 3)",
        "SELECT * FROM customer_analyzer.explain('churn', 3, 3)",
        "SELECT customer_analyzer.score_all('churn')",
        "SELECT customer_analyzer.score_all('purchase', now() - interval '3 days')",
        "SELECT count(*) FROM customer_analyzer.segment_users('kmeans', 3)",
        "SELECT count(*) FROM customer_analyzer.segment_users('dbscan', NULL, '{\"min_points\": 5}')",
        "SELECT count(*) FROM customer_analyzer.segment_users('agglomerative', 3)",
        "SELECT * FROM customer_analyzer.segment_of(3)",
        "SELECT customer_analyzer.rename_segment((SELECT max(segmentation_id) FROM customer_analyzer.segments), 0, 'Renamed')",
        "SELECT customer_analyzer.rollback('churn')",
        "SELECT customer_analyzer.deploy((SELECT max(id) FROM customer_analyzer.models WHERE task = 'churn'))",
        "SELECT customer_analyzer.retire_model((SELECT min(id) FROM customer_analyzer.models WHERE task = 'churn'))",
        "SELECT count(*) FROM customer_analyzer.purge_models('0 seconds', 0)",
        "SELECT count(*) FROM customer_analyzer.feature_catalog",
        "SELECT count(*) FROM customer_analyzer.feature_conventions()",
        "SELECT count(*) FROM customer_analyzer.customer_features",
        "SELECT count(*) FROM customer_analyzer.model_metrics",
        "SELECT count(*) FROM customer_analyzer.feature_importance",
        "SELECT count(*) FROM customer_analyzer.latest_predictions",
        "SELECT count(*) FROM customer_analyzer.segmentation_quality",
        "SELECT count(*) FROM customer_analyzer.current_segments",
        "SELECT count(*) FROM customer_analyzer.demo_users(50, 30, 1, now())",
        "SELECT count(*) FROM customer_analyzer.demo_events(5, 30, 1, now())",
        "SELECT count(*) FROM customer_analyzer.demo_products(1)",
        "SELECT customer_analyzer.cached_models()",
        "SELECT customer_analyzer.clear_model_cache()",
        "SELECT customer_analyzer.grant_reader('pg_monitor')",
        "SELECT customer_analyzer.revoke_reader('pg_monitor')",
        "SELECT * FROM customer_analyzer.generate_demo_data(200, 120, 5, replace => true)",
    ];

    #[pg_test]
    fn objects_planted_on_the_search_path_are_never_called() {
        small_demo();
        // what an attacker who can create objects in a schema on the path would plant:
        // each records who called it
        run(r#"
            CREATE TABLE public.hijack_log (who text, what text);
            CREATE FUNCTION public.hijack_div(float8, int4) RETURNS float8 LANGUAGE plpgsql AS $$
                BEGIN INSERT INTO public.hijack_log VALUES (current_user, '/(float8,int4)');
                      RETURN $1 OPERATOR(pg_catalog./) $2; END $$;
            CREATE OPERATOR public./ (LEFTARG = float8, RIGHTARG = int4, FUNCTION = public.hijack_div);
            CREATE FUNCTION public.hijack_div2(bigint, numeric) RETURNS numeric LANGUAGE plpgsql AS $$
                BEGIN INSERT INTO public.hijack_log VALUES (current_user, '/(bigint,numeric)');
                      RETURN $1 OPERATOR(pg_catalog./) $2; END $$;
            CREATE OPERATOR public./ (LEFTARG = bigint, RIGHTARG = numeric, FUNCTION = public.hijack_div2);
            CREATE FUNCTION public.hijack_div3(float8, float8) RETURNS float8 LANGUAGE plpgsql AS $$
                BEGIN INSERT INTO public.hijack_log VALUES (current_user, '/(float8,float8)');
                      RETURN $1 OPERATOR(pg_catalog./) $2; END $$;
            CREATE OPERATOR public./ (LEFTARG = float8, RIGHTARG = float8, FUNCTION = public.hijack_div3);
            CREATE FUNCTION public.format(text, name, name) RETURNS text LANGUAGE plpgsql AS $$
                BEGIN INSERT INTO public.hijack_log VALUES (current_user, 'format');
                      RETURN pg_catalog.format($1, $2, $3); END $$;
            CREATE FUNCTION public.format(text, text) RETURNS text LANGUAGE plpgsql AS $$
                BEGIN INSERT INTO public.hijack_log VALUES (current_user, 'format');
                      RETURN pg_catalog.format($1, $2); END $$;
            CREATE FUNCTION public.cardinality(anyarray) RETURNS integer LANGUAGE plpgsql AS $$
                BEGIN INSERT INTO public.hijack_log VALUES (current_user, 'cardinality');
                      RETURN pg_catalog.cardinality($1); END $$;
            CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE plpgsql AS $$
                BEGIN INSERT INTO public.hijack_log VALUES (current_user, 'lower');
                      RETURN pg_catalog.lower($1); END $$;
            CREATE FUNCTION public.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE plpgsql AS $$
                BEGIN INSERT INTO public.hijack_log VALUES (current_user, 'unnest');
                      RETURN QUERY SELECT pg_catalog.unnest($1); END $$;
            CREATE FUNCTION public.to_regclass(text) RETURNS regclass LANGUAGE plpgsql AS $$
                BEGIN INSERT INTO public.hijack_log VALUES (current_user, 'to_regclass');
                      RETURN pg_catalog.to_regclass($1); END $$;
        "#);
        run("SET search_path = public, pg_catalog");
        // the plants work: an unqualified call made with this path reaches them
        run("SELECT 1.5::float8 / 3, format('%s', 'x'), lower('A')");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM public.hijack_log"),
            Some(3)
        );
        run("DELETE FROM public.hijack_log");
        for call in EVERY_CALL {
            let got = outcome(call);
            assert!(got == "ok", "{call}: {got}");
        }
        run("RESET search_path");
        let calls = one::<String>(
            "SELECT coalesce(string_agg(DISTINCT what, ', '), 'none') FROM public.hijack_log",
        );
        assert_eq!(calls, Some("none".to_string()));
        // and every function the extension made pins its search_path
        let unpinned = one::<String>(
            "SELECT coalesce(string_agg(p.oid::regprocedure::text, ', '), 'none')
             FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
             JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'customer_analyzer'
             WHERE p.pronamespace <> 'tests'::regnamespace
               AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)",
        );
        assert_eq!(unpinned, Some("none".to_string()));
    }

    #[pg_test]
    fn readers_and_operators_get_exactly_their_rights() {
        small_demo();
        train("churn", "gbm", QUICK);
        run("SELECT customer_analyzer.refresh_features()");
        run(
            "CREATE ROLE ca_test_reader; CREATE ROLE ca_test_operator; CREATE ROLE ca_test_nobody;
             SELECT customer_analyzer.grant_reader('ca_test_reader');
             SELECT customer_analyzer.grant_operator('ca_test_operator');",
        );
        // nothing is open to PUBLIC
        run("SET ROLE ca_test_nobody");
        assert_state("SELECT customer_analyzer.predict_churn(3)", "42501");
        run("RESET ROLE");
        // a reader predicts, explains, reads views and features, and nothing more
        run("SET ROLE ca_test_reader");
        for ok in [
            "SELECT customer_analyzer.predict_churn(3)",
            "SELECT * FROM customer_analyzer.explain('churn', 3)",
            "SELECT count(*) FROM customer_analyzer.user_features()",
            "SELECT count(*) FROM customer_analyzer.customer_features",
            "SELECT count(*) FROM customer_analyzer.model_metrics",
            "SELECT count(*) FROM customer_analyzer.feature_catalog",
        ] {
            assert_eq!(outcome(ok), "ok", "reader: {ok}");
        }
        for refused in [
            "SELECT customer_analyzer.deploy(1)",
            "SELECT * FROM customer_analyzer.train('churn')",
            "SELECT customer_analyzer.refresh_features()",
            "SELECT count(*) FROM customer_analyzer.models",
            "SELECT count(*) FROM public.events",
            "SET customer_analyzer.max_memory_mb = 100000",
        ] {
            assert_state(refused, "42501");
        }
        run("RESET ROLE");
        // an operator trains and deploys but cannot configure, purge or grant
        run("SET ROLE ca_test_operator");
        let trained = outcome(
            "SELECT * FROM customer_analyzer.train('churn', 'logistic', '{\"snapshots\": 4, \"deploy\": \"always\"}')",
        );
        assert_eq!(trained, "ok");
        assert_eq!(outcome("SELECT customer_analyzer.rollback('churn')"), "ok");
        assert_eq!(outcome("SELECT customer_analyzer.refresh_features()"), "ok");
        for refused in [
            "SELECT customer_analyzer.configure()",
            "SELECT * FROM customer_analyzer.generate_demo_data(10, 10, 1, replace => true)",
            "SELECT * FROM customer_analyzer.purge_models('1 day')",
            "SELECT customer_analyzer.grant_operator('ca_test_nobody')",
            "DELETE FROM customer_analyzer.predictions",
            "INSERT INTO customer_analyzer.deployments (task, model_id, reason) VALUES ('churn', 1, 'x')",
        ] {
            assert_state(refused, "42501");
        }
        run("RESET ROLE");
        // revoking takes it back
        run("SELECT customer_analyzer.revoke_operator('ca_test_operator')");
        run("SET ROLE ca_test_operator");
        assert_state("SELECT * FROM customer_analyzer.train('churn')", "42501");
        assert_eq!(outcome("SELECT customer_analyzer.predict_churn(3)"), "ok");
        run("RESET ROLE");
        run("SELECT customer_analyzer.revoke_reader('ca_test_operator')");
        run("SET ROLE ca_test_operator");
        assert_state("SELECT customer_analyzer.predict_churn(3)", "42501");
        run("RESET ROLE");
    }

    fn serving(task: &str) -> Option<i64> {
        one::<i64>(&format!(
            "SELECT model_id FROM customer_analyzer.deployed_models WHERE task = '{task}'"
        ))
    }

    #[pg_test]
    fn history_is_append_only_and_rollback_walks_back() {
        small_demo();
        let always = r#"{"iterations": 5, "snapshots": 4, "deploy": "always"}"#;
        let ids: Vec<i64> = (0..4).map(|_| train("churn", "gbm", always)).collect();
        assert_eq!(serving("churn"), Some(ids[3]));
        // three rollbacks go three models back, then there is nothing left
        for back in [2, 1, 0] {
            assert_eq!(
                one::<i64>("SELECT customer_analyzer.rollback('churn')"),
                Some(ids[back])
            );
            assert_eq!(serving("churn"), Some(ids[back]));
        }
        assert_fails("SELECT customer_analyzer.rollback('churn')", "55000");
        // history cannot be rewritten, by the owner either
        for sql in [
            "UPDATE customer_analyzer.models SET algorithm = 'x'",
            "DELETE FROM customer_analyzer.models",
            "TRUNCATE customer_analyzer.models CASCADE",
            "UPDATE customer_analyzer.deployments SET reason = 'x'",
            "DELETE FROM customer_analyzer.deployments",
            "TRUNCATE customer_analyzer.deployments",
        ] {
            let msg = assert_fails(sql, "55000");
            assert!(msg.contains("append-only"), "{sql}: {msg}");
        }
        // retiring the serving model goes back to the one before it, and it is never
        // deployed again
        let serving_now = serving("churn").unwrap_or_default();
        let after = one::<i64>(&format!(
            "SELECT customer_analyzer.retire_model({})",
            ids[3]
        ));
        assert_eq!(
            after,
            Some(serving_now),
            "retiring a model that does not serve changes nothing"
        );
        run(&format!("SELECT customer_analyzer.deploy({})", ids[2]));
        let back = one::<i64>(&format!(
            "SELECT customer_analyzer.retire_model({})",
            ids[2]
        ));
        assert_eq!(back, Some(serving_now));
        assert_eq!(serving("churn"), Some(serving_now));
        assert_fails(
            &format!("SELECT customer_analyzer.deploy({})", ids[2]),
            "55000",
        );
        assert_fails(
            &format!("SELECT customer_analyzer.retire_model({})", ids[2]),
            "55000",
        );
        assert_fails(
            "UPDATE customer_analyzer.retired_models SET reason = 'x'",
            "55000",
        );
        // purge removes only old models that never served and are not kept
        let never = train(
            "churn",
            "gbm",
            r#"{"iterations": 2, "snapshots": 4, "deploy": "never"}"#,
        );
        let purged =
            one::<i64>("SELECT count(*) FROM customer_analyzer.purge_models('0 seconds', 0)");
        assert_eq!(purged, Some(1));
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM customer_analyzer.models WHERE id = {never}"
            )),
            Some(0)
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.purge_models('0 seconds', 0)"),
            Some(0)
        );
        // and after purging, the trigger guards again
        assert_fails("DELETE FROM customer_analyzer.models", "55000");
        assert_fails(
            "SELECT * FROM customer_analyzer.purge_models(NULL)",
            "22004",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.purge_models('1 day', -1)",
            "22023",
        );
    }

    #[pg_test]
    fn deploy_refuses_other_catalogs_and_corrupt_boosters() {
        use customer_analyzer_core::codec::{decode, encode, Payload};
        use customer_analyzer_core::model::Estimator;
        small_demo();
        let id = train("churn", "gbm", QUICK);
        let copy_with = |blob: &str, version: &str| {
            one::<i64>(&format!(
                "INSERT INTO customer_analyzer.models (task, algorithm, params, preprocessing, feature_names,
                     catalog_version, trained_as_of, training_from, training_to, metrics, size_bytes, format_version, model)
                 SELECT task, algorithm, params, preprocessing, feature_names, {version}, trained_as_of,
                        training_from, training_to, metrics, size_bytes, format_version, {blob}
                 FROM customer_analyzer.models WHERE id = {id} RETURNING id"
            ))
            .unwrap_or(-1)
        };
        let old = copy_with("model", "catalog_version - 1");
        let msg = assert_fails(&format!("SELECT customer_analyzer.deploy({old})"), "55000");
        assert!(msg.contains("catalog version"), "{msg}");
        // a blob that decodes, holding a booster that does not parse
        let blob = one::<Vec<u8>>(&format!(
            "SELECT model FROM customer_analyzer.models WHERE id = {id}"
        ))
        .unwrap_or_default();
        let Ok(Payload::Classifier(mut model)) = decode(&blob) else {
            panic!("model {id} does not decode")
        };
        model.estimator = Estimator::Gbm {
            booster: "{\"not\": \"a booster\"}".into(),
        };
        let Ok(bad) = encode(&Payload::Classifier(model)) else {
            panic!("encoding")
        };
        let hex: String = bad.iter().map(|b| format!("{b:02x}")).collect();
        let broken = copy_with(&format!("'\\x{hex}'::bytea"), "catalog_version");
        assert_fails(
            &format!("SELECT customer_analyzer.deploy({broken})"),
            "XX001",
        );
        assert_eq!(serving("churn"), Some(id));
    }

    #[pg_test]
    fn null_params_and_pca_failures_are_refused() {
        small_demo();
        assert_fails(
            "SELECT * FROM customer_analyzer.train('churn', 'gbm', NULL)",
            "22004",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.training_snapshots('churn', NULL, NULL)",
            "22004",
        );
        run("SELECT customer_analyzer.refresh_features()");
        assert_fails(
            "SELECT * FROM customer_analyzer.segment_users('kmeans', 3, NULL)",
            "22004",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.segment_users('kmeans', 3, '{\"pca\": 100}')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.train('churn', 'logistic', '{\"pca\": 1000, \"snapshots\": 4}')",
            "22023",
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.models"),
            Some(0)
        );
    }

    #[pg_test]
    fn model_size_and_memory_budgets_hold() {
        small_demo();
        // a model that would pass the size cap stops growing and says so
        run("SET customer_analyzer.max_model_mb = 1");
        let id = train(
            "purchase",
            "gbm",
            r#"{"iterations": 3000, "max_depth": 10, "min_leaf_weight": 0, "snapshots": 4, "deploy": "never"}"#,
        );
        let grown = one::<String>(&format!(
            "SELECT (metrics -> 'growth' ->> 'stopped_at_size_limit') || ',' || (metrics -> 'growth' ->> 'trees_grown')
                    || ',' || (size_bytes <= 1024 * 1024)::text
             FROM customer_analyzer.models WHERE id = {id}"
        ))
        .unwrap_or_default();
        let parts: Vec<&str> = grown.split(',').collect();
        assert_eq!(parts[0], "true", "{grown}");
        assert!(parts[1].parse::<i64>().unwrap_or(3000) < 3000, "{grown}");
        assert_eq!(parts[2], "true", "{grown}");
        run("RESET customer_analyzer.max_model_mb");
        // training more rows than the memory budget allows samples users, and says so
        run("SET customer_analyzer.max_memory_mb = 16");
        let id = train(
            "purchase",
            "logistic",
            r#"{"snapshots": 52, "snapshot_days": 2, "deploy": "never"}"#,
        );
        let fraction = one::<f64>(&format!(
            "SELECT (metrics -> 'sample' ->> 'users_fraction')::float8 FROM customer_analyzer.models WHERE id = {id}"
        ))
        .unwrap_or(1.0);
        assert!(fraction < 1.0, "no sampling: {fraction}");
        // a segmentation too large for the budget is refused with 54000 before reading
        run(
            "INSERT INTO customer_analyzer.user_metrics (user_id, as_of, refreshed_at)
             SELECT 1000000 + g, now(), now() FROM generate_series(1, 9000) g",
        );
        let msg = assert_fails(
            "SELECT * FROM customer_analyzer.segment_users('kmeans', 3)",
            "54000",
        );
        assert!(msg.contains("customer_analyzer.max_memory_mb"), "{msg}");
        run("RESET customer_analyzer.max_memory_mb");
        assert_state("SET customer_analyzer.max_threads = -1", "22023");
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
