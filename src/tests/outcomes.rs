//! Outcome tracking: evaluate_matured() gives logged predictions exactly the labels
//! training would give (population included), once, and keeps live metrics per model and
//! week; ab_report() compares the arms of a test on them.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::support::*;

    #[pg_test]
    fn matured_predictions_get_trainings_labels_and_feed_live_metrics_and_ab_report() {
        small_demo();
        let champion = train("churn", "gbm", QUICK);
        let challenger = train("churn", "logistic", r#"{"deploy": "never"}"#);
        assert_fails(
            "SELECT * FROM customer_analyzer.ab_report('churn')",
            "55000",
        );
        let test = one::<i64>(&format!(
            "SELECT customer_analyzer.start_ab_test('churn', {challenger}, 0.5)"
        ))
        .unwrap_or(-1);
        // scored 90 days ago: the 60-day horizon has passed
        run("CREATE TEMP TABLE t AS SELECT now() - interval '90 days' AS at");
        let n = one::<i64>("SELECT customer_analyzer.score_all('churn', (SELECT at FROM t))")
            .unwrap_or(0);
        // and once now, which has not matured
        run("SELECT customer_analyzer.refresh_features()");
        run("SELECT customer_analyzer.score_all('churn')");
        assert!(n > 100, "{n}");

        let weeks = one::<String>(
            "SELECT string_agg(model_id || ':' || predictions, ',' ORDER BY model_id)
             FROM customer_analyzer.evaluate_matured('churn')",
        )
        .unwrap_or_default();
        // exactly the labels training gives at that time, for exactly its population
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM customer_analyzer.matured_predictions o
                 FULL JOIN customer_analyzer.labels('churn', (SELECT at FROM t)) l USING (user_id)
                 WHERE o.outcome IS DISTINCT FROM l.label"
            ),
            Some(0)
        );
        let matured =
            one::<i64>("SELECT count(*) FROM customer_analyzer.matured_predictions").unwrap_or(0);
        assert!(matured > 50 && matured <= n, "{matured} of {n}");
        // one week of as_of, both models, the counts adding up
        let champion_n = one::<i64>(&format!(
            "SELECT count(*) FROM customer_analyzer.matured_predictions WHERE model_id = {champion}"
        ))
        .unwrap_or(-1);
        assert_eq!(
            weeks,
            format!(
                "{champion}:{champion_n},{challenger}:{}",
                matured - champion_n
            )
        );
        // a second call adds nothing
        run("SELECT * FROM customer_analyzer.evaluate_matured('churn')");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.matured_predictions"),
            Some(matured)
        );
        // live metrics beside the holdout for both serving roles
        assert_eq!(
            one::<String>(
                "SELECT string_agg(role || ':' || (live_auc BETWEEN 0 AND 1)::text || ':' || live_predictions, ',' ORDER BY role)
                 FROM customer_analyzer.model_health WHERE task = 'churn'"
            ),
            Some(format!(
                "challenger:true:{},champion:true:{champion_n}",
                matured - champion_n
            ))
        );
        assert_eq!(
            one::<bool>(
                "SELECT bool_and(squared_error BETWEEN 0 AND 1) FROM customer_analyzer.prediction_outcomes"
            ),
            Some(true)
        );

        // the arms compared: each user once, intervals around their values, a p-value
        let report = one::<String>(
            "SELECT string_agg(arm || ':' || model_id || ':' || users, ',' ORDER BY arm)
             FROM customer_analyzer.ab_report('churn')",
        );
        assert_eq!(
            report,
            Some(format!(
                "challenger:{challenger}:{},champion:{champion}:{champion_n}",
                matured - champion_n
            ))
        );
        assert_eq!(
            one::<bool>(
                "SELECT bool_and(auc BETWEEN auc_low AND auc_high AND brier BETWEEN brier_low AND brier_high
                        AND positive_rate BETWEEN positive_rate_low AND positive_rate_high
                        AND top_decile_lift BETWEEN lift_low AND lift_high
                        AND p_value BETWEEN 0 AND 1)
                 FROM customer_analyzer.ab_report('churn')"
            ),
            Some(true)
        );
        assert!(test > 0);
        // erasure takes the outcomes along
        let user = one::<i64>("SELECT min(user_id) FROM customer_analyzer.matured_predictions")
            .unwrap_or(-1);
        run(&format!(
            "SELECT * FROM customer_analyzer.forget_user({user})"
        ));
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM customer_analyzer.matured_predictions WHERE user_id = {user}"
            )),
            Some(0)
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.evaluate_matured('sales')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.evaluate_matured(NULL)",
            "22004",
        );
    }
}
