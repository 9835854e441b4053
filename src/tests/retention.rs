//! The prediction log and what the extension keeps: the log is append-only, `prune()`
//! keeps `customer_analyzer.prediction_retention`, `forget_user()` erases one user
//! everywhere and nobody else.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::support::*;

    fn rows_of(table: &str, user_id: i64) -> i64 {
        one::<i64>(&format!(
            "SELECT count(*) FROM customer_analyzer.{table} WHERE user_id = {user_id}"
        ))
        .unwrap_or(-1)
    }

    #[pg_test]
    fn the_log_is_append_only_pruned_and_forgets_a_user() {
        small_demo();
        train("churn", "logistic", "{}");
        run("SELECT customer_analyzer.refresh_features()");
        run("SELECT customer_analyzer.segment_users('kmeans', 3)");
        // two batches for the same as_of are both kept: a log, not a table of answers
        let n = one::<i64>("SELECT customer_analyzer.score_all('churn')").unwrap_or(0);
        run("SELECT customer_analyzer.score_all('churn')");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.predictions"),
            Some(2 * n)
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.latest_predictions"),
            Some(n)
        );
        // ... and the latest are the second batch's rows
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM customer_analyzer.latest_predictions l
                 WHERE l.id = (SELECT max(id) FROM customer_analyzer.predictions p
                               WHERE p.task = l.task AND p.user_id = l.user_id)"
            ),
            Some(n)
        );
        assert_eq!(
            one::<String>(
                "SELECT string_agg(DISTINCT arm, ',') FROM customer_analyzer.predictions"
            ),
            Some("champion".into())
        );
        assert_fails(
            "UPDATE customer_analyzer.predictions SET score = 0",
            "55000",
        );

        // prune(): rows older than the retention go, newer ones stay
        run("DELETE FROM customer_analyzer.predictions WHERE user_id % 2 = 0");
        run("INSERT INTO customer_analyzer.predictions (user_id, task, model_id, score, label, as_of, predicted_at)
             SELECT user_id, task, model_id, score, label, as_of, now() - interval '10 days'
             FROM customer_analyzer.predictions");
        run("INSERT INTO customer_analyzer.worker_errors (source, user_id, sqlstate, message, occurred_at)
             VALUES ('worker', 1, 'P0002', 'old', now() - interval '10 days'),
                    ('worker', 1, 'P0002', 'new', now())");
        run(
            "INSERT INTO customer_analyzer.rescore_queue (user_id, first_enqueued_at)
             VALUES (1, now() - interval '10 days'), (2, now())",
        );
        let before = one::<i64>("SELECT count(*) FROM customer_analyzer.predictions").unwrap_or(0);
        run("SET LOCAL customer_analyzer.prediction_retention = '7d'");
        let pruned = one::<String>(
            "SELECT string_agg(table_name || '=' || rows_deleted, ',' ORDER BY table_name)
             FROM customer_analyzer.prune()",
        );
        assert_eq!(
            pruned,
            Some(format!(
                "predictions={},rescore_queue=1,retrain_log=0,worker_errors=1",
                before / 2
            ))
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.predictions WHERE predicted_at < now() - interval '7 days'"),
            Some(0)
        );
        // the users whose rows went have no latest score; the others keep theirs
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM customer_analyzer.latest_scores l
                 WHERE NOT EXISTS (SELECT FROM customer_analyzer.predictions p WHERE p.id = l.prediction_id)"
            ),
            Some(0)
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.latest_predictions"),
            one::<i64>("SELECT count(DISTINCT (task, user_id)) FROM customer_analyzer.predictions")
        );
        // 0 keeps everything
        run(
            "INSERT INTO customer_analyzer.worker_errors (source, sqlstate, message, occurred_at)
             VALUES ('worker', 'P0002', 'old', now() - interval '10 years')",
        );
        run("SET LOCAL customer_analyzer.prediction_retention = 0");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.prune()"),
            Some(0)
        );

        // forget_user(): one user's rows go from every table, everyone else's stay
        let user = one::<i64>(
            "SELECT min(user_id) FROM customer_analyzer.predictions WHERE user_id % 2 = 1",
        )
        .unwrap_or(-1);
        run(&format!(
            "INSERT INTO customer_analyzer.rescore_queue (user_id) VALUES ({user}) ON CONFLICT DO NOTHING"
        ));
        let tables = [
            "user_metrics",
            "latest_scores",
            "predictions",
            "user_segments",
            "rescore_queue",
        ];
        for t in tables {
            assert!(rows_of(t, user) > 0, "{t} holds user {user}");
        }
        let others = one::<i64>(&format!(
            "SELECT count(*) FROM customer_analyzer.predictions WHERE user_id <> {user}"
        ));
        let erased = one::<i64>(&format!(
            "SELECT sum(rows_deleted)::bigint FROM customer_analyzer.forget_user({user})"
        ))
        .unwrap_or(0);
        assert!(erased >= 5, "{erased}");
        for t in tables {
            assert_eq!(rows_of(t, user), 0, "{t} still holds user {user}");
        }
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM customer_analyzer.predictions WHERE user_id <> {user}"
            )),
            others
        );
        assert_fails("SELECT * FROM customer_analyzer.forget_user(NULL)", "22004");
    }
}
