-- A short SQL tour. The README shows this file as it is, and the regression suite runs
-- it, so it cannot drift: the demo history ends at a pinned time, and what depends on
-- now() is shown as a check.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS customer_analyzer CASCADE;
RESET client_min_messages;
CREATE EXTENSION customer_analyzer;            -- everything lives in schema customer_analyzer

-- a demo shop in public.users / public.events / public.products, history ending 1 June
SELECT users, events, products
FROM customer_analyzer.generate_demo_data(3000, 240, 42, ends_at => '2026-06-01 00:00:00+00', replace => true);

-- or your own tables (products may be NULL: product features are then NULL)
SELECT customer_analyzer.configure('public.users', 'public.events', 'public.products') ->> 'events' AS events;

-- what every feature means
SELECT name, unit, description FROM customer_analyzer.feature_catalog WHERE feature_group = 'recency';

-- features as they were on 1 May: only events before that instant are read
SELECT user_id, round(days_since_last_activity::numeric, 1) AS last_seen_days,
       events_last_30_days, purchase_count, round(total_spent::numeric, 2) AS spent
FROM customer_analyzer.user_features('2026-05-01 00:00:00+00') ORDER BY user_id LIMIT 3;

-- the feature store: all users (incremental after the first time), or one user
SELECT customer_analyzer.refresh_features();
SELECT customer_analyzer.refresh_features(42);
SELECT user_id, events_total, purchase_count FROM customer_analyzer.customer_features WHERE user_id = 42;

-- what the data rules set aside (nothing, in the demo shop)
SELECT count(*) AS rules_that_set_rows_aside FROM customer_analyzer.data_quality() WHERE rows > 0;

-- models: train on the history up to 1 June (auto: the best of gbm, random forest and
-- logistic on a validation snapshot; deploys when it beats the serving model), then
-- predict and explain
SELECT model_id, algorithm, round(auc::numeric, 3) AS auc, deployed
FROM customer_analyzer.train('churn', as_of => '2026-06-01 00:00:00+00');
SELECT model_id, algorithm, round(auc::numeric, 3) AS auc, deployed
FROM customer_analyzer.train('purchase', 'logistic', '{"validation": "cv"}', '2026-06-01 00:00:00+00');
-- what auto tried for churn, and whether its probabilities match the observed rates
SELECT tried, algorithm, chosen FROM customer_analyzer.model_candidates WHERE model_id = 1 ORDER BY tried;
SELECT count(*) AS deciles, sum(users) AS holdout_users,
       max(abs(mean_predicted - observed_rate)) < 0.15 AS calibrated
FROM customer_analyzer.model_calibration WHERE model_id = 1;
SELECT customer_analyzer.predict_churn(42) BETWEEN 0 AND 1 AS churn_probability,
       customer_analyzer.predict_purchase(42) BETWEEN 0 AND 1 AS purchase_probability;
SELECT model_id FROM customer_analyzer.predict('churn', 42);                -- also: score, label, as_of
SELECT count(*) AS reasons FROM customer_analyzer.explain('churn', 42, 5);  -- feature, value, contribution
SELECT customer_analyzer.score_all('purchase', '2026-06-01 00:00:00+00');   -- every user, point in time
SELECT model_id, task, algorithm, round(auc::numeric, 3) AS auc, round(brier::numeric, 3) AS brier
FROM customer_analyzer.model_metrics ORDER BY model_id;

-- segments: who the customers are, in words
SELECT count(*) AS segments, sum(size) AS users FROM customer_analyzer.segment_users('kmeans', 5);
SELECT segment_name IS NOT NULL AS named FROM customer_analyzer.segment_of(42);   -- no re-clustering
SELECT algorithm, segments FROM customer_analyzer.segmentation_quality WHERE serving;

-- history is kept: deploy, roll back (one step per call), retire
SELECT customer_analyzer.train('churn', 'logistic', '{"deploy": "always"}', '2026-06-01 00:00:00+00') IS NOT NULL AS trained;
SELECT customer_analyzer.rollback('churn');
SELECT task, model_id, reason FROM customer_analyzer.deployments ORDER BY id;
