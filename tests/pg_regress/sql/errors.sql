-- Bad input: each case shows the message, the HINT and the SQLSTATE (after \echo), and
-- writes nothing.
\set VERBOSITY default
\set SHOW_CONTEXT never

-- the shop's tables
CREATE TABLE bad_users (id text, registered_at timestamptz);
SELECT customer_analyzer.configure('public.no_such_table', 'public.events', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT customer_analyzer.configure('public.products', 'public.events', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT customer_analyzer.configure('public.bad_users', 'public.events', NULL);
\echo :LAST_ERROR_SQLSTATE
DROP TABLE bad_users;

-- times and users
SELECT count(*) FROM customer_analyzer.user_features(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM customer_analyzer.user_features('infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT customer_analyzer.refresh_features(987654::bigint);
\echo :LAST_ERROR_SQLSTATE
SELECT customer_analyzer.predict_churn(987654);
\echo :LAST_ERROR_SQLSTATE
SELECT customer_analyzer.predict_churn(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.labels('churn', now() - interval '10 days');
\echo :LAST_ERROR_SQLSTATE

-- the demo generator
SELECT * FROM customer_analyzer.generate_demo_data(0, 10, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.generate_demo_data(10, 10, 1);
\echo :LAST_ERROR_SQLSTATE

-- training parameters
SELECT * FROM customer_analyzer.train('revenue');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.train(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.train('churn', 'xgboost');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.train('churn', 'gbm', '{"iterations": "many"}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.train('churn', 'gbm', '{"iterations": 0}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.train('churn', 'gbm', '{"trees": 5}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.train('churn', 'gbm', '[1, 2]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.train('churn', 'gbm', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.train('churn', 'gbm', '{}', 'infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.train('churn', 'logistic', '{"pca": 500}', '2026-06-01 00:00:00+00');
\echo :LAST_ERROR_SQLSTATE

-- models
SELECT * FROM customer_analyzer.explain('churn', 5, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT customer_analyzer.deploy(987654);
\echo :LAST_ERROR_SQLSTATE
SELECT customer_analyzer.deploy(3);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.purge_models(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.purge_models('1 day', -1);
\echo :LAST_ERROR_SQLSTATE

-- segmentation
SELECT * FROM customer_analyzer.segment_users('kmeans', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.segment_users('spectral');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.segment_users('dbscan', NULL, '{"eps": 0}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.segment_users('kmeans', 3, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.segment_users('agglomerative', 3, '{"sample_size": 6000}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.segment_users('kmeans', 3, '{"view": "colour"}');
\echo :LAST_ERROR_SQLSTATE

-- budgets: a model that would pass the size cap stops growing and says so
SET customer_analyzer.max_model_mb = 1;
SELECT deployed FROM customer_analyzer.train('purchase', 'gbm',
    '{"iterations": 3000, "max_depth": 10, "min_leaf_weight": 0, "snapshots": 4, "deploy": "never"}',
    '2026-06-01 00:00:00+00');
SELECT size_bytes <= 1048576 AS within_cap, metrics -> 'growth' ->> 'stopped_at_size_limit' AS stopped
FROM customer_analyzer.models ORDER BY id DESC LIMIT 1;
RESET customer_analyzer.max_model_mb;
SET customer_analyzer.max_threads = -1;
\echo :LAST_ERROR_SQLSTATE
