//! An events table partitioned by month (native partitioning): configure() accepts it,
//! the features over it equal those over the same rows in a plain table, training and
//! scoring read it, the real-time triggers sit on the parent and on every partition (so
//! rows inserted straight into a partition are queued too), dropping an old partition,
//! as retention does, gives the features of the rows that remain, and a foreign
//! partition leaves real time off.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::support::*;

    /// Every feature of every user at the transaction's now(), as one digest.
    fn features_digest() -> String {
        one::<String>(
            "SELECT md5(string_agg(f::text, '|' ORDER BY f.user_id))
             FROM customer_analyzer.user_features(now()) f",
        )
        .unwrap_or_default()
    }

    fn configure(events: &str) {
        run(&format!(
            "SELECT customer_analyzer.configure('public.users', '{events}', 'public.products')"
        ));
    }

    fn queued(user_id: i64) -> bool {
        one::<bool>(&format!(
            "SELECT EXISTS (SELECT FROM customer_analyzer.rescore_queue WHERE user_id = {user_id})"
        ))
        .unwrap_or(false)
    }

    #[pg_test]
    fn a_table_partitioned_by_month_works_like_a_plain_one() {
        small_demo();
        configure("public.events");
        let plain = features_digest();
        // the same rows in monthly partitions, with a default partition for the rest
        run("CREATE TABLE public.events_by_month (LIKE public.events INCLUDING DEFAULTS)
                 PARTITION BY RANGE (created_at);
             DO $$
             DECLARE m timestamptz;
             BEGIN
                 FOR m IN SELECT generate_series(date_trunc('month', min(created_at)),
                                                 date_trunc('month', now()), interval '1 month')
                          FROM public.events LOOP
                     EXECUTE format('CREATE TABLE public.%I PARTITION OF public.events_by_month FOR VALUES FROM (%L) TO (%L)',
                                    'events_' || to_char(m, 'YYYY_MM'), m, m + interval '1 month');
                 END LOOP;
             END $$;
             CREATE TABLE public.events_other PARTITION OF public.events_by_month DEFAULT;
             CREATE INDEX ON public.events_by_month (user_id, created_at);
             INSERT INTO public.events_by_month SELECT * FROM public.events;");
        let partitions = one::<i64>(
            "SELECT count(*) FROM pg_partition_tree('public.events_by_month') WHERE isleaf",
        )
        .unwrap_or(0);
        assert!(partitions > 12, "{partitions} partitions");
        configure("public.events_by_month");
        assert_eq!(features_digest(), plain);

        // the triggers: on the parent and on every partition
        assert_eq!(triggers_on("public.events_by_month"), 3);
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM pg_partition_tree('public.events_by_month') p
                 WHERE p.isleaf AND (SELECT count(*) FROM pg_trigger t
                                     WHERE t.tgrelid = p.relid
                                       AND t.tgname LIKE 'customer\\_analyzer\\_rescore\\_%') <> 3"
            ),
            Some(0)
        );
        assert_eq!(triggers_on("public.events"), 0);

        // training and scoring read it
        let model = train("churn", "gbm", QUICK);
        assert!(model > 0);
        run("SELECT customer_analyzer.refresh_features()");
        assert!(one::<i64>("SELECT customer_analyzer.score_all('churn')").unwrap_or(0) > 0);

        // retention: dropping the oldest month is deleting its rows
        let oldest = one::<String>(
            "SELECT 'public.events_' || to_char(min(created_at), 'YYYY_MM') FROM public.events",
        )
        .unwrap_or_default();
        run(&format!("DROP TABLE {oldest}"));
        let dropped = features_digest();
        assert_ne!(dropped, plain, "the oldest month held no events");
        configure("public.events");
        run("DELETE FROM public.events WHERE created_at < date_trunc('month', (SELECT min(created_at) FROM public.events)) + interval '1 month'");
        assert_eq!(features_digest(), dropped);

        // real time: an insert through the parent and one straight into a partition
        configure("public.events_by_month");
        run("DELETE FROM customer_analyzer.rescore_queue");
        run("INSERT INTO public.events_by_month (user_id, event_type, created_at) VALUES (5, 'page_view', now() - interval '1 minute')");
        assert!(queued(5));
        let current = one::<String>(
            "SELECT 'public.events_' || to_char(now() - interval '1 minute', 'YYYY_MM')",
        )
        .unwrap_or_default();
        run(&format!("INSERT INTO {current} (user_id, event_type, created_at) VALUES (7, 'page_view', now() - interval '1 minute')"));
        assert!(queued(7));
        assert!(!queued(9));

        // a foreign partition: PostgreSQL would refuse the writes routed to it once the
        // parent has triggers with transition tables, so real time stays off
        run("CREATE FOREIGN DATA WRAPPER ca_test_wrapper;
             CREATE SERVER ca_test_nowhere FOREIGN DATA WRAPPER ca_test_wrapper;
             CREATE FOREIGN TABLE public.events_far PARTITION OF public.events_by_month
                 FOR VALUES FROM ('1990-01-01') TO ('1990-02-01') SERVER ca_test_nowhere;");
        let answer = one::<pgrx::JsonB>(
            "SELECT customer_analyzer.configure('public.users', 'public.events_by_month', 'public.products')",
        )
        .map(|j| j.0);
        let realtime = answer
            .as_ref()
            .and_then(|j| j.get("realtime"))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        assert!(
            realtime.starts_with("off: ") && realtime.contains("foreign partition"),
            "{realtime}"
        );
        assert_eq!(triggers_on("public.events_by_month"), 0);
        assert_eq!(triggers_on(&current), 0);
    }
}
