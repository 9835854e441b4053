-- Models: labels, snapshots, training on a pinned history, versioned rows, deploy,
-- rollback (one step further back per call), retire and purge. One thread, so that
-- every figure is the same on every run.
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT label, count(*) FROM customer_analyzer.labels('churn', '2026-03-01 00:00:00+00')
GROUP BY label ORDER BY label;
SELECT as_of, role FROM customer_analyzer.training_snapshots('purchase', '2026-06-01 00:00:00+00',
    '{"snapshots": 4}');

SELECT model_id, task, algorithm, round(auc::numeric, 3) AS auc, deployed
FROM customer_analyzer.train('churn', 'gbm', '{"iterations": 40, "snapshots": 4}', '2026-06-01 00:00:00+00');
SELECT model_id, task, algorithm, round(auc::numeric, 3) AS auc, deployed
FROM customer_analyzer.train('churn', 'logistic', '{"snapshots": 4, "deploy": "always"}', '2026-06-01 00:00:00+00');
SELECT model_id, task, algorithm, round(auc::numeric, 3) AS auc, deployed
FROM customer_analyzer.train('churn', 'random_forest', '{"n_trees": 10, "snapshots": 4, "deploy": "always"}', '2026-06-01 00:00:00+00');
SELECT model_id, task, algorithm, round(auc::numeric, 3) AS auc, deployed
FROM customer_analyzer.train('purchase', 'gbm', '{"iterations": 40, "snapshots": 4}', '2026-06-01 00:00:00+00');

SELECT model_id, task, algorithm, round(auc::numeric, 3) AS auc, holdout_rows, train_rows, deployed
FROM customer_analyzer.model_metrics ORDER BY model_id;
SELECT task, model_id, algorithm FROM customer_analyzer.deployed_models ORDER BY task;

-- rollback walks back through the history, one deployment per call: 2, then 1, then
-- nothing is left
SELECT customer_analyzer.rollback('churn');
SELECT customer_analyzer.rollback('churn');
SELECT customer_analyzer.rollback('churn');
\echo :LAST_ERROR_SQLSTATE
SELECT customer_analyzer.deploy(3);

-- retiring the serving model goes back to the one before it; it never serves again
SELECT customer_analyzer.retire_model(3, 'worse on the new data');
SELECT model_id, reason FROM customer_analyzer.retired_models;
SELECT customer_analyzer.deploy(3);
\echo :LAST_ERROR_SQLSTATE
SELECT task, model_id, reason, previous_id FROM customer_analyzer.deployments ORDER BY id;
SELECT task, model_id FROM customer_analyzer.deployed_models ORDER BY task;

-- history is append-only
UPDATE customer_analyzer.models SET algorithm = 'x' WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM customer_analyzer.deployments;
\echo :LAST_ERROR_SQLSTATE
TRUNCATE customer_analyzer.deployments;
\echo :LAST_ERROR_SQLSTATE

-- a model that never served and is not among the newest of its task can be purged
SELECT model_id, deployed FROM customer_analyzer.train('purchase', 'logistic',
    '{"snapshots": 4, "deploy": "never"}', '2026-06-01 00:00:00+00') t(model_id, task, algorithm, auc, f1, p, r, b, deployed);
SELECT model_id, deployed FROM customer_analyzer.train('purchase', 'logistic',
    '{"snapshots": 4, "deploy": "never", "seed": 8}', '2026-06-01 00:00:00+00') t(model_id, task, algorithm, auc, f1, p, r, b, deployed);
SELECT model_id, task FROM customer_analyzer.purge_models('0 seconds', 1);
SELECT id, task, algorithm FROM customer_analyzer.models ORDER BY id;
