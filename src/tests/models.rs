//! Models inside PostgreSQL: training, labels, stored preprocessing, serving, the model
//! cache, the append-only history and the budgets.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::support::*;

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
    fn auto_is_the_default_with_honest_roles_and_calibration() {
        small_demo();
        let id = one::<i64>(
            "SELECT model_id FROM customer_analyzer.train('churn', params => '{\"snapshots\": 4}')",
        )
        .unwrap_or(-1);
        // three candidates tried on the validation snapshot, the best one chosen
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(algorithm || ':' || chosen, ',' ORDER BY tried)
                 FROM customer_analyzer.model_candidates WHERE model_id = {id}"
            ))
            .map(|s| s.replace(":true", "").replace(":false", "")),
            Some("gbm,random_forest,logistic".into())
        );
        assert_eq!(
            one::<bool>(&format!(
                "SELECT c.algorithm = m.algorithm AND c.validation_auc = (SELECT max(validation_auc)
                     FROM customer_analyzer.model_candidates WHERE model_id = {id})
                 FROM customer_analyzer.model_candidates c JOIN customer_analyzer.models m ON m.id = c.model_id
                 WHERE c.model_id = {id} AND c.chosen"
            )),
            Some(true)
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT metrics -> 'requested' ->> 'algorithm' FROM customer_analyzer.models WHERE id = {id}"
            )),
            Some("auto".into())
        );
        // gbm stopped early and said after how many rounds
        assert!(
            one::<i32>(&format!(
                "SELECT rounds FROM customer_analyzer.model_candidates WHERE model_id = {id} AND algorithm = 'gbm'"
            ))
            .unwrap_or(0)
                > 0
        );
        // a reliability table of ten deciles over the whole holdout; both Brier scores kept
        assert_eq!(
            one::<String>(&format!(
                "SELECT count(*) || ',' || (sum(c.users) = max(mm.holdout_rows)) || ',' || (max(mm.brier_uncalibrated) > 0)
                 FROM customer_analyzer.model_calibration c
                 JOIN customer_analyzer.model_metrics mm USING (model_id) WHERE model_id = {id}"
            )),
            Some("10,true,true".into())
        );
        // roles a horizon apart: no label window reaches into a later role's period
        let gaps = one::<String>(
            "WITH s AS (SELECT * FROM customer_analyzer.training_snapshots('churn', NULL, '{\"snapshots\": 4}')),
                  r AS (SELECT role, min(as_of) AS first, max(as_of) AS last, count(*) AS n FROM s GROUP BY role)
             SELECT concat_ws(',',
                 (SELECT n FROM r WHERE role = 'train'),
                 (SELECT last FROM r WHERE role = 'train') + interval '60 days' <= (SELECT first FROM r WHERE role = 'validation'),
                 (SELECT first FROM r WHERE role = 'validation') + interval '60 days' <= (SELECT first FROM r WHERE role = 'holdout'),
                 (SELECT first FROM r WHERE role = 'holdout') + interval '60 days'
                     = (SELECT max(created_at) FROM public.events WHERE created_at <= now()),
                 (SELECT last FROM r WHERE role = 'refit') = (SELECT first FROM r WHERE role = 'holdout'),
                 (SELECT n FROM r WHERE role = 'refit'))",
        );
        assert_eq!(gaps, Some("4,t,t,t,t,4".into()));
        // the serving model learnt from the refit snapshots, up to the holdout time
        assert_eq!(
            one::<bool>(&format!(
                "SELECT m.training_to = (SELECT as_of FROM customer_analyzer.training_snapshots('churn', NULL, '{{\"snapshots\": 4}}') WHERE role = 'holdout')
                    AND (m.metrics ->> 'refit_rows')::int > (m.metrics ->> 'train_rows')::int
                 FROM customer_analyzer.models m WHERE m.id = {id}"
            )),
            Some(true)
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
        let outside = one::<i64>(
            "SELECT count(*) FROM customer_analyzer.labels('churn', now() - interval '70 days') l
             JOIN customer_analyzer.user_features(now() - interval '70 days') f USING (user_id)
             WHERE f.events_last_30_days = 0",
        );
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
        // purge removes only old models that never served, scored nobody and are not kept
        let never = train(
            "churn",
            "gbm",
            r#"{"iterations": 2, "snapshots": 4, "deploy": "never"}"#,
        );
        let scored = train(
            "churn",
            "gbm",
            r#"{"iterations": 2, "snapshots": 4, "deploy": "never"}"#,
        );
        let log = |model: i64| {
            format!(
                "INSERT INTO customer_analyzer.predictions (user_id, task, model_id, score, label, as_of)
                 VALUES (1, 'churn', {model}, 0.5, true, now())"
            )
        };
        run(&log(scored));
        // the log names stored models only
        assert_state(&log(987_654_321), "23503");
        let purged =
            one::<i64>("SELECT count(*) FROM customer_analyzer.purge_models('0 seconds', 0)");
        assert_eq!(purged, Some(1));
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM customer_analyzer.models WHERE id = {scored}"
            )),
            Some(1)
        );
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
            "INSERT INTO customer_analyzer.feature_store (user_id, as_of, refreshed_at)
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
}
