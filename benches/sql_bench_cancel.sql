-- How fast a cancel lands in long Rust work: each call runs under a 1-second
-- statement_timeout, and the time from the timeout to the error reaching the session is
-- printed. The last step of benches/sql_bench.sh (it needs the shop and a churn model).
-- step: cancel
SET customer_analyzer.max_model_mb = 1024;
CREATE TEMP TABLE long_calls (what text, call text);
INSERT INTO long_calls VALUES
    ('train gbm, 5000 rounds of depth 12', $$SELECT * FROM customer_analyzer.train('purchase', 'gbm', '{"iterations": 5000, "max_depth": 12, "learning_rate": 0.01, "deploy": "never"}')$$),
    ('train random_forest with search and CV', $$SELECT * FROM customer_analyzer.train('churn', 'random_forest', '{"search": true, "validation": "cv", "n_trees": 300, "deploy": "never"}')$$),
    ('train logistic, 100000 iterations', $$SELECT * FROM customer_analyzer.train('churn', 'logistic', '{"max_iterations": 100000, "alpha": 0.000001, "deploy": "never"}')$$),
    ('segment_users kmeans, k by silhouette on 20000', $$SELECT * FROM customer_analyzer.segment_users('kmeans', NULL, '{"silhouette_sample": 20000}')$$),
    ('segment_users dbscan on 20000', $$SELECT * FROM customer_analyzer.segment_users('dbscan', NULL, '{"sample_size": 20000}')$$),
    ('segment_users agglomerative on 5000', $$SELECT * FROM customer_analyzer.segment_users('agglomerative', NULL, '{"sample_size": 5000}')$$),
    ('score_all churn', $$SELECT customer_analyzer.score_all('churn')$$);

CREATE FUNCTION pg_temp.landing(call text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    EXECUTE call;
    RETURN NULL;  -- finished within the timeout
EXCEPTION WHEN query_canceled THEN
    RETURN extract(epoch FROM clock_timestamp() - t0) * 1000 - 1000;
END $$;

-- one top-level statement per call: statement_timeout is armed once per statement, so a
-- single SELECT over every call would cancel only the first
SELECT format('SET statement_timeout = %L; SELECT %L AS what, round(pg_temp.landing(%L)::numeric, 0) AS "cancel landed after timeout (ms)"; RESET statement_timeout',
              '1s', what, call)
FROM long_calls \gexec
