//! Champion/challenger tests: the split follows the core's hash exactly in every way of
//! scoring, the log records model and arm, one test per task, bad calls are refused, and
//! promoting, stopping, retiring the challenger or changing the champion end the test.

#[pgrx::pg_schema]
mod tests {
    use customer_analyzer_core::abtest::{arm_of, Arm};
    use pgrx::prelude::*;

    use crate::tests::support::*;

    fn test_row(id: i64) -> String {
        one::<String>(&format!(
            "SELECT running || ',' || coalesce(end_reason, '') FROM customer_analyzer.ab_tests WHERE test_id = {id}"
        ))
        .unwrap_or_default()
    }

    #[pg_test]
    fn a_test_routes_its_share_logs_the_arm_and_ends_cleanly() {
        small_demo();
        let champion = train("churn", "gbm", QUICK);
        let challenger = train("churn", "logistic", r#"{"deploy": "never"}"#);
        let other = train(
            "churn",
            "random_forest",
            r#"{"deploy": "never", "snapshots": 4}"#,
        );
        assert_eq!(serving("churn"), Some(champion));
        run("SELECT customer_analyzer.refresh_features()");
        run("SELECT customer_analyzer.segment_users('kmeans', 3)");
        let segmentation = serving("segmentation").unwrap_or(-1);

        // refusals, before anything runs
        assert_fails(
            &format!("SELECT customer_analyzer.start_ab_test('churn', {challenger}, 0)"),
            "22023",
        );
        assert_fails(
            &format!("SELECT customer_analyzer.start_ab_test('churn', {challenger}, 1)"),
            "22023",
        );
        assert_fails(
            &format!("SELECT customer_analyzer.start_ab_test('churn', {challenger}, 'NaN')"),
            "22023",
        );
        assert_fails(
            &format!("SELECT customer_analyzer.start_ab_test('churn', {challenger}, NULL)"),
            "22004",
        );
        assert_fails(
            "SELECT customer_analyzer.start_ab_test('churn', NULL)",
            "22004",
        );
        assert_fails(
            &format!("SELECT customer_analyzer.start_ab_test('churn', {champion})"),
            "22023",
        );
        assert_fails(
            &format!("SELECT customer_analyzer.start_ab_test('churn', {segmentation})"),
            "22023",
        );
        assert_fails(
            "SELECT customer_analyzer.start_ab_test('churn', 999999)",
            "22023",
        );
        assert_fails(
            &format!("SELECT customer_analyzer.start_ab_test('sales', {challenger})"),
            "22023",
        );
        assert_fails(
            &format!("SELECT customer_analyzer.start_ab_test('purchase', {challenger})"),
            "22023",
        );
        assert_fails("SELECT customer_analyzer.stop_ab_test('churn')", "55000");
        assert_fails("SELECT customer_analyzer.promote('churn')", "55000");

        let test = one::<i64>(&format!(
            "SELECT customer_analyzer.start_ab_test('churn', {challenger}, 0.4)"
        ))
        .unwrap_or(-1);
        assert_eq!(test_row(test), "true,");
        assert_fails(
            &format!("SELECT customer_analyzer.start_ab_test('churn', {other})"),
            "55000",
        );

        // every way of scoring routes each user exactly as the core's hash says
        let users: Vec<i64> = (1..=200).collect();
        let expected = |u: i64| match arm_of(test, u, 0.4) {
            Arm::Challenger => (challenger, "challenger"),
            Arm::Champion => (champion, "champion"),
        };
        let challenged = users
            .iter()
            .filter(|&&u| expected(u).1 == "challenger")
            .count();
        assert!((50..110).contains(&challenged), "{challenged} of 200");
        for &u in &users {
            let served = one::<i64>(&format!(
                "SELECT model_id FROM customer_analyzer.predict('churn', {u})"
            ));
            assert_eq!(served, Some(expected(u).0), "user {u}");
        }
        let u = users
            .iter()
            .copied()
            .find(|&u| expected(u).1 == "challenger")
            .unwrap_or(1);
        let direct = one::<f64>(&format!("SELECT customer_analyzer.predict_churn({u})"));
        let routed = one::<f64>(&format!(
            "SELECT score FROM customer_analyzer.predict('churn', {u})"
        ));
        assert_eq!(direct, routed);
        let n = one::<i64>("SELECT customer_analyzer.score_all('churn')").unwrap_or(0);
        let wrong = one::<i64>(&format!(
            "SELECT count(*) FROM customer_analyzer.predictions
             WHERE (arm = 'challenger') <> (model_id = {challenger})"
        ));
        assert_eq!(wrong, Some(0));
        for &u in &users {
            let logged = one::<String>(&format!(
                "SELECT model_id || ',' || arm FROM customer_analyzer.predictions WHERE user_id = {u}"
            ));
            let (m, arm) = expected(u);
            assert_eq!(logged, Some(format!("{m},{arm}")), "user {u}");
        }
        assert_eq!(
            one::<i64>(&format!(
                "SELECT champion_predictions + challenger_predictions FROM customer_analyzer.ab_tests WHERE test_id = {test}"
            )),
            Some(n)
        );
        // score_all skipped the log's row-by-row foreign-key check for its own writes only
        assert_eq!(
            one::<String>("SELECT current_setting('session_replication_role')"),
            Some("origin".into())
        );
        assert_state(
            "INSERT INTO customer_analyzer.predictions (user_id, task, model_id, score, label, as_of)
             VALUES (1, 'churn', 987654321, 0.5, true, now())",
            "23503",
        );
        // a trigger of the shop's on the log keeps every check and trigger on
        run("CREATE TABLE public.audited (n bigint);
             CREATE FUNCTION public.audit() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN INSERT INTO public.audited SELECT count(*) FROM added; RETURN NULL; END $$;
             CREATE TRIGGER shop_audit AFTER INSERT ON customer_analyzer.predictions
             REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION public.audit()");
        let before = one::<i64>("SELECT max(id) FROM customer_analyzer.predictions").unwrap_or(0);
        let again = one::<i64>("SELECT customer_analyzer.score_all('churn')");
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM customer_analyzer.predictions WHERE id > {before}"
            )),
            again
        );
        assert_eq!(
            one::<String>("SELECT string_agg(n::text, ',') FROM public.audited"),
            again.map(|n| n.to_string())
        );

        // retiring the challenger ends the test; the champion serves everyone again
        run(&format!(
            "SELECT customer_analyzer.retire_model({challenger}, 'worse')"
        ));
        assert!(test_row(test).starts_with("false,") && test_row(test).contains("retired"));
        assert_eq!(
            one::<i64>(&format!(
                "SELECT model_id FROM customer_analyzer.predict('churn', {u})"
            )),
            Some(champion)
        );

        // promote deploys the challenger and ends the test
        let t2 = one::<i64>(&format!(
            "SELECT customer_analyzer.start_ab_test('churn', {other}, 0.5)"
        ))
        .unwrap_or(-1);
        assert_eq!(
            one::<i64>("SELECT customer_analyzer.promote('churn')"),
            Some(other)
        );
        assert_eq!(serving("churn"), Some(other));
        assert_eq!(test_row(t2), "false,promoted");
        assert_fails("SELECT customer_analyzer.stop_ab_test('churn')", "55000");

        // a rollback changes the champion: the running test ends, with the reason
        let t3 = one::<i64>(&format!(
            "SELECT customer_analyzer.start_ab_test('churn', {champion}, 0.5)"
        ))
        .unwrap_or(-1);
        run("SELECT customer_analyzer.rollback('churn')");
        assert!(
            test_row(t3).starts_with("false,") && test_row(t3).contains("rollback"),
            "{}",
            test_row(t3)
        );
        // and stop ends a test without touching what serves
        let t4 = one::<i64>(&format!(
            "SELECT customer_analyzer.start_ab_test('churn', {other}, 0.5)"
        ))
        .unwrap_or(-1);
        let before = serving("churn");
        assert_eq!(
            one::<i64>("SELECT customer_analyzer.stop_ab_test('churn')"),
            Some(t4)
        );
        assert_eq!(test_row(t4), "false,stopped");
        assert_eq!(serving("churn"), before);
    }
}
