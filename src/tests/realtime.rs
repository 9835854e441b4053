//! The real-time trigger: configure() puts it on the events table, it queues changed
//! users once each (a generation for a user already queued), honours the kill switch,
//! never fails the shop's write, and leaves views alone. The worker itself needs a
//! preloaded library and committed rows: `tests/integration/tests/realtime.rs`.

#[pgrx::pg_schema]
mod tests {
    use customer_analyzer_core::testkit::random_shop;
    use pgrx::prelude::*;

    use crate::tests::support::*;

    fn queue() -> Vec<(i64, i64)> {
        Spi::connect(|c| {
            c.select(
                "SELECT user_id, generation FROM customer_analyzer.rescore_queue ORDER BY user_id",
                None,
                &[],
            )
            .map(|t| {
                t.map(|r| {
                    (
                        r.get::<i64>(1).ok().flatten().unwrap_or(-1),
                        r.get::<i64>(2).ok().flatten().unwrap_or(-1),
                    )
                })
                .collect()
            })
        })
        .unwrap_or_else(|e| panic!("reading the queue: {e}"))
    }

    #[pg_test]
    fn changed_users_are_queued_once_with_a_generation() {
        let shop = random_shop(3, 20);
        load_shop("rt", &shop);
        let answer = one::<pgrx::JsonB>(
            "SELECT customer_analyzer.configure('rt.users', 'rt.events', 'rt.products')",
        )
        .map(|j| j.0);
        assert_eq!(
            answer.as_ref().and_then(|j| j.get("realtime")),
            Some(&serde_json::json!(true))
        );
        assert_eq!(triggers_on("rt.events"), 3);
        // tied to the extension, so that DROP EXTENSION takes them along
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM pg_depend d JOIN pg_trigger t ON t.oid = d.objid
                 WHERE d.classid = 'pg_trigger'::regclass AND d.deptype = 'x'
                   AND t.tgrelid = 'rt.events'::regclass"
            ),
            Some(3)
        );
        run("DELETE FROM customer_analyzer.rescore_queue");

        // one statement, many events of two users: two rows
        run(
            "INSERT INTO rt.events (user_id, event_type, created_at, event_data)
             SELECT u, 'page_view', now() - g * interval '1 minute', '{}'
             FROM unnest(ARRAY[1, 2]) u, generate_series(1, 5) g",
        );
        assert_eq!(queue(), vec![(1, 1), (2, 1)]);
        // a user already queued is not queued again: the generation counts the change
        run("INSERT INTO rt.events (user_id, event_type, created_at, event_data) VALUES (2, 'purchase', now(), '{\"amount\": 5}')");
        assert_eq!(queue(), vec![(1, 1), (2, 2)]);
        assert_eq!(
            one::<bool>("SELECT last_event_at > now() - interval '1 second' FROM customer_analyzer.rescore_queue WHERE user_id = 2"),
            Some(true)
        );
        // the earliest inserted event stays, so that the worker knows which of the
        // user's events it may already hold
        assert_eq!(
            one::<bool>("SELECT earliest_event_at = now() - interval '5 minutes' FROM customer_analyzer.rescore_queue WHERE user_id = 2"),
            Some(true)
        );
        // updates and deletes queue their users too (both sides of a moved event)
        run("DELETE FROM customer_analyzer.rescore_queue");
        let a = one::<i64>("SELECT min(user_id) FROM rt.events WHERE user_id > 2").unwrap_or(-1);
        let b = one::<i64>(&format!(
            "SELECT min(user_id) FROM rt.events WHERE user_id > {a}"
        ))
        .unwrap_or(-1);
        run(&format!("UPDATE rt.events SET user_id = 1000 WHERE id = (SELECT min(id) FROM rt.events WHERE user_id = {a})"));
        assert_eq!(queue(), vec![(a, 1), (1000, 1)]);
        run(&format!("DELETE FROM rt.events WHERE user_id = {b}"));
        assert_eq!(queue(), vec![(a, 1), (b, 1), (1000, 1)]);
        // after an update or delete the worker reads the users' whole histories
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.rescore_queue WHERE earliest_event_at = '-infinity'"),
            Some(3)
        );
        // a statement that changes nothing queues nobody
        run("DELETE FROM rt.events WHERE false");
        assert_eq!(queue().len(), 3);

        // the kill switch
        run("DELETE FROM customer_analyzer.rescore_queue");
        run("SET LOCAL customer_analyzer.realtime = off");
        run("INSERT INTO rt.events (user_id, event_type, created_at, event_data) VALUES (1, 'page_view', now(), '{}')");
        assert_eq!(queue(), vec![]);
        // ... and notes that it did not (the next bulk refresh then reads every user)
        assert_eq!(
            one::<String>("SELECT message FROM customer_analyzer.worker_errors WHERE source = 'trigger' AND sqlstate = '00000'"),
            Some("INSERT on events: not queued, customer_analyzer.realtime is off".into())
        );
        run("SET LOCAL customer_analyzer.realtime = on");
        run("INSERT INTO rt.events (user_id, event_type, created_at, event_data) VALUES (1, 'page_view', now(), '{}')");
        assert_eq!(queue(), vec![(1, 1)]);
    }

    #[pg_test]
    fn a_failing_trigger_never_fails_the_shops_write() {
        let shop = random_shop(4, 10);
        load_shop("rtf", &shop);
        run("SELECT customer_analyzer.configure('rtf.users', 'rtf.events', NULL)");
        let before = one::<i64>("SELECT count(*) FROM rtf.events").unwrap_or(0);
        // the queue is gone: the trigger's insert fails, the shop's insert does not
        run("ALTER TABLE customer_analyzer.rescore_queue RENAME TO rescore_queue_away");
        run("INSERT INTO rtf.events (user_id, event_type, created_at, event_data) VALUES (1, 'page_view', now(), '{}')");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM rtf.events"),
            Some(before + 1)
        );
        assert_eq!(
            one::<String>("SELECT sqlstate FROM customer_analyzer.worker_errors WHERE source = 'trigger' ORDER BY id DESC LIMIT 1"),
            Some("42P01".into())
        );
        run("ALTER TABLE customer_analyzer.rescore_queue_away RENAME TO rescore_queue");
    }

    #[pg_test]
    fn a_view_leaves_real_time_off_and_configure_moves_the_triggers() {
        let shop = random_shop(5, 10);
        load_shop("rtv", &shop);
        run("SELECT customer_analyzer.configure('rtv.users', 'rtv.events', NULL)");
        assert_eq!(triggers_on("rtv.events"), 3);
        run("CREATE VIEW rtv.events_view AS SELECT * FROM rtv.events");
        let answer = one::<pgrx::JsonB>(
            "SELECT customer_analyzer.configure('rtv.users', 'rtv.events_view', NULL)",
        )
        .map(|j| j.0);
        let realtime = answer
            .as_ref()
            .and_then(|j| j.get("realtime"))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        assert!(
            realtime.starts_with("off: ") && realtime.contains("not a base table"),
            "{realtime}"
        );
        // moved off the old table, and nowhere else
        assert_eq!(triggers_on("rtv.events"), 0);
        assert_eq!(
            one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'customer\\_analyzer\\_rescore\\_%'"),
            Some(0)
        );
    }
}
