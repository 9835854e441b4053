//! Drift: train() stores a baseline of the task's population at the end of its data;
//! drift_report() finds nothing on the same data and finds a feature moved, values gone
//! missing and a category replaced, each at the right level.

#[pgrx::pg_schema]
mod tests {
    use customer_analyzer_core::catalog::FEATURES;
    use pgrx::prelude::*;

    use crate::tests::support::*;

    fn level(feature: &str) -> String {
        one::<String>(&format!(
            "SELECT level FROM customer_analyzer.drift_report('churn') WHERE feature = '{feature}'"
        ))
        .unwrap_or_default()
    }

    #[pg_test]
    fn drift_report_finds_nothing_on_the_training_data_and_each_kind_of_shift_after() {
        small_demo();
        let model = train("churn", "gbm", QUICK);
        // the baseline: the churn population at the newest event, as the model was trained
        assert_eq!(
            one::<bool>(&format!(
                "SELECT b.as_of = m.trained_as_of AND b.users > 100
                        AND jsonb_array_length(b.baseline -> 'numeric') + jsonb_array_length(b.baseline -> 'categorical') = {}
                 FROM customer_analyzer.model_baselines b JOIN customer_analyzer.models m ON m.id = b.model_id
                 WHERE b.model_id = {model}",
                FEATURES.len()
            )),
            Some(true)
        );
        // nothing in the store yet
        assert_fails(
            "SELECT * FROM customer_analyzer.drift_report('churn')",
            "55000",
        );
        run("SELECT customer_analyzer.refresh_features()");
        // the score first, then every feature once
        assert_eq!(
            one::<String>(
                "SELECT string_agg(feature, ',') FROM (SELECT feature FROM customer_analyzer.drift_report('churn') LIMIT 1) s"
            ),
            Some("(score)".into())
        );
        assert_eq!(
            one::<i64>(
                "SELECT count(DISTINCT feature) FROM customer_analyzer.drift_report('churn') WHERE kind <> 'score'"
            ),
            Some(FEATURES.len() as i64)
        );
        // the same shop a moment later: the scores and (nearly) every feature are stable
        assert_eq!(level("(score)"), "stable");
        let unstable = one::<String>(
            "SELECT string_agg(feature || ' ' || level || ' psi ' || round(psi::numeric, 3), ', ')
             FROM customer_analyzer.drift_report('churn') WHERE level <> 'stable'",
        );
        assert_eq!(unstable, None, "unstable on the training data itself");
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM customer_analyzer.drift WHERE task = 'churn' AND model_id = {model}"
            )),
            Some(FEATURES.len() as i64 + 1)
        );

        // a feature moved far, one lost its values, a category replaced
        run("UPDATE customer_analyzer.feature_store SET total_spent = total_spent * 10 + 1000");
        run("UPDATE customer_analyzer.feature_store SET avg_order_value = NULL WHERE user_id % 2 = 0");
        run("UPDATE customer_analyzer.feature_store SET favourite_category = 'never seen'");
        assert_eq!(level("total_spent"), "major");
        let ks = one::<f64>(
            "SELECT ks FROM customer_analyzer.drift_report('churn') WHERE feature = 'total_spent'",
        )
        .unwrap_or(0.0);
        assert!(ks > 0.5, "{ks}");
        assert_eq!(level("avg_order_value"), "major");
        assert_eq!(
            one::<bool>(
                "SELECT missing_now - missing_then > 0.3 FROM customer_analyzer.drift_report('churn')
                 WHERE feature = 'avg_order_value'"
            ),
            Some(true)
        );
        assert_eq!(level("favourite_category"), "major");
        assert_eq!(
            one::<bool>(
                "SELECT ks IS NULL AND kind = 'category' FROM customer_analyzer.drift_report('churn')
                 WHERE feature = 'favourite_category'"
            ),
            Some(true)
        );
        // untouched features stay as they were
        assert_eq!(level("events_last_30_days"), "stable");

        // a model without a baseline (trained before 0.6.0): the function says how to
        // mend it, the view leaves the task out
        run("DELETE FROM customer_analyzer.model_baselines");
        let message = assert_fails(
            "SELECT * FROM customer_analyzer.drift_report('churn')",
            "55000",
        );
        assert!(message.contains("no drift baseline"), "{message}");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.drift"),
            Some(0)
        );
        // the hint's remedy: a retrain that keeps the serving model (the same data gives
        // no better one) still leaves it with a baseline
        assert_eq!(
            one::<bool>("SELECT deployed FROM customer_analyzer.retrain('churn')"),
            Some(false)
        );
        assert_eq!(serving("churn"), Some(model));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.drift_report('churn')"),
            Some(FEATURES.len() as i64 + 1)
        );
    }

    #[pg_test]
    fn drift_report_refuses_bad_calls() {
        small_demo();
        assert_fails(
            "SELECT * FROM customer_analyzer.drift_report(NULL)",
            "22004",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.drift_report('nonsense')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.drift_report('purchase')",
            "55000",
        );
    }
}
