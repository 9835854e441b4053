//! retrain(): the serving model's recipe trained again, deployed only when better (a new
//! model that wins is deployed by train()'s own rule, tested in models.rs), and
//! recorded in retrain_log. The lock against a concurrent retrain, the retraining worker
//! and pg_cron need other sessions: tests/integration/tests/lifecycle.rs.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::support::*;

    #[pg_test]
    fn retrain_repeats_the_recipe_and_keeps_a_model_that_is_not_better() {
        small_demo();
        assert_fails("SELECT * FROM customer_analyzer.retrain('churn')", "55000");
        let first = train("churn", "logistic", r#"{"snapshots": 4}"#);
        assert_eq!(serving("churn"), Some(first));
        // the same data again: the same model, as good and no better, so it is kept back
        let (new, deployed) = one::<String>(
            "SELECT model_id || ',' || deployed FROM customer_analyzer.retrain('churn')",
        )
        .and_then(|s| {
            let (a, b) = s.split_once(',')?;
            Some((a.parse::<i64>().ok()?, b.to_string()))
        })
        .unwrap_or((-1, String::new()));
        assert!(new > first);
        assert_eq!(deployed, "false");
        assert_eq!(serving("churn"), Some(first));
        // the recipe: algorithm and parameters as asked for the serving model
        assert_eq!(
            one::<String>(&format!(
                "SELECT algorithm || ' ' || (metrics -> 'requested' -> 'params' ->> 'snapshots')
                        || ' ' || (metrics -> 'requested' -> 'params' ->> 'deploy')
                 FROM customer_analyzer.models WHERE id = {new}"
            )),
            Some("logistic 4 if_better".into())
        );
        // recorded, with both AUCs (equal: the same recipe on the same data)
        assert_eq!(
            one::<String>(&format!(
                "SELECT trigger || ' | ' || reason || ' | ' || previous_model_id || ' | ' || deployed
                        || ' | ' || (abs(previous_auc - new_auc) < 1e-9)
                 FROM customer_analyzer.retrain_log WHERE new_model_id = {new}"
            )),
            Some(format!(
                "call | retrain() called by {} | {first} | false | true",
                one::<String>("SELECT coalesce(nullif(current_setting('application_name'), ''), session_user::text)")
                    .unwrap_or_default()
            ))
        );
        // a recipe that said "always" is retrained as "if better": the same model again
        // is not deployed
        let always = train(
            "churn",
            "logistic",
            r#"{"snapshots": 4, "deploy": "always"}"#,
        );
        assert_eq!(serving("churn"), Some(always));
        assert_eq!(
            one::<bool>("SELECT deployed FROM customer_analyzer.retrain('churn')"),
            Some(false)
        );
        assert_eq!(serving("churn"), Some(always));
        // retrain_log is pruned with the logs
        run("SET customer_analyzer.prediction_retention = 1");
        run("UPDATE customer_analyzer.retrain_log SET finished_at = now() - interval '1 hour'");
        assert_eq!(
            one::<i64>("SELECT rows_deleted FROM customer_analyzer.prune() WHERE table_name = 'retrain_log'"),
            Some(2)
        );
    }

    #[pg_test]
    fn retrain_refuses_bad_calls() {
        small_demo();
        assert_fails("SELECT * FROM customer_analyzer.retrain(NULL)", "22004");
        assert_fails(
            "SELECT * FROM customer_analyzer.retrain('segmentation')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.retrain('purchase')",
            "55000",
        );
    }
}
