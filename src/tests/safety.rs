//! Safety under any caller: nothing planted on the search_path is ever called, and the
//! reader and operator roles get exactly their rights.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::support::*;

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
        "SELECT count(*) FROM customer_analyzer.user_predictions(3)",
        "SELECT count(*) FROM customer_analyzer.recent_events(3)",
        "SELECT count(*) FROM customer_analyzer.segment_map()",
        "SELECT count(*) FROM customer_analyzer.user_overview",
        "SELECT count(*) FROM customer_analyzer.segment_transitions",
        "SELECT count(*) FROM customer_analyzer.model_roc",
        "SELECT customer_analyzer.rename_segment((SELECT max(segmentation_id) FROM customer_analyzer.segments), 0, 'Renamed')",
        "SELECT count(*) FROM customer_analyzer.drift_report('churn')",
        "SELECT count(*) FROM customer_analyzer.drift",
        "SELECT * FROM customer_analyzer.retrain('churn')",
        "SELECT count(*) FROM customer_analyzer.retrain_log",
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
        "SELECT * FROM customer_analyzer.generate_demo_data(200, 240, 5, replace => true)",
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
            "SELECT count(*) FROM customer_analyzer.drift_report('churn')",
            "SELECT count(*) FROM customer_analyzer.drift",
            "SELECT count(*) FROM customer_analyzer.retrain_log",
        ] {
            assert_eq!(outcome(ok), "ok", "reader: {ok}");
        }
        for refused in [
            "SELECT customer_analyzer.deploy(1)",
            "SELECT * FROM customer_analyzer.train('churn')",
            "SELECT * FROM customer_analyzer.retrain('churn')",
            "SELECT count(*) FROM customer_analyzer.model_baselines",
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
        assert_eq!(
            outcome("SELECT * FROM customer_analyzer.retrain('churn')"),
            "ok"
        );
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
}
