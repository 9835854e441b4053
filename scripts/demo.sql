-- The demo: a fresh demo shop, its features, and a short look at them.
\pset footer off
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS customer_analyzer CASCADE;
CREATE EXTENSION customer_analyzer;
RESET client_min_messages;

\echo
\echo '== Demo shop (customer_analyzer.generate_demo_data)'
SELECT * FROM customer_analyzer.generate_demo_data(:n_users, :days, 42, replace => true);

\echo '== Events by type'
SELECT event_type, count(*) AS events, count(DISTINCT user_id) AS users
FROM public.events GROUP BY event_type ORDER BY events DESC;

\echo '== Hidden customer types the generator simulated (the models never see these)'
SELECT customer_type, count(*) AS users
FROM customer_analyzer.demo_users(:n_users, :days, 42, now())  -- types do not depend on the end time
GROUP BY customer_type ORDER BY users DESC;

\echo '== Feature catalog: features per group'
SELECT feature_group, count(*) AS features, (array_agg(name ORDER BY position))[1:3] AS first_features
FROM customer_analyzer.feature_catalog GROUP BY feature_group ORDER BY min(position);

\echo '== Feature store (customer_analyzer.refresh_features)'
\timing on
SELECT customer_analyzer.refresh_features() AS users_refreshed;
\timing off

\echo '== What the features say, by activity in the last 30 days'
SELECT CASE WHEN events_last_30_days = 0 THEN 'inactive 30d'
            WHEN events_last_7_days = 0 THEN 'quiet this week'
            ELSE 'active this week' END AS activity,
       count(*) AS users,
       round(avg(days_since_last_activity)::numeric, 1) AS avg_days_since_activity,
       round(avg(purchase_count)::numeric, 2) AS avg_purchases,
       round(avg(total_spent)::numeric, 2) AS avg_spent,
       round(avg(engagement_trend)::numeric, 2) AS avg_engagement_trend
FROM customer_analyzer.customer_features GROUP BY 1 ORDER BY 2 DESC;

\echo '== Five users, a few of their 68 features'
SELECT user_id, round(days_since_registration::numeric, 1) AS registered_days,
       round(days_since_last_activity::numeric, 1) AS last_seen_days,
       events_last_30_days, purchase_count, round(total_spent::numeric, 2) AS spent,
       favourite_category, round(activity_trend_7d_vs_14d::numeric, 2) AS trend_7_14
FROM customer_analyzer.customer_features ORDER BY total_spent DESC LIMIT 5;

\echo '== Data quality of the source tables'
SELECT coalesce(string_agg(check_name || ': ' || rows, ', '), 'every check clean') AS data_quality
FROM customer_analyzer.data_quality() WHERE rows > 0;

\echo
\echo '== Training: churn (no event in the next 60 days) and purchase (a purchase in the next 30 days)'
\echo '   each single algorithm, then auto (the default: the best of the three on a validation snapshot);'
\echo '   train, validation and holdout snapshots are a label horizon apart (training_snapshots())'
\timing on
SELECT t.model_id, t.task, t.algorithm, round(t.auc::numeric, 3) AS auc, round(t.f1::numeric, 3) AS f1,
       round(t.precision::numeric, 3) AS precision, round(t.recall::numeric, 3) AS recall,
       round(t.brier::numeric, 4) AS brier, t.deployed
FROM (VALUES ('churn', 'gbm'), ('churn', 'random_forest'), ('churn', 'logistic'), ('churn', 'auto'),
             ('purchase', 'gbm'), ('purchase', 'random_forest'), ('purchase', 'logistic'), ('purchase', 'auto'))
         AS j(task, algorithm),
     LATERAL customer_analyzer.train(j.task, j.algorithm) t;
\timing off

\echo '== What auto tried (customer_analyzer.model_candidates), by AUC on the validation snapshot'
SELECT c.model_id, c.task, c.algorithm, round(c.validation_auc::numeric, 3) AS validation_auc, c.rounds, c.chosen
FROM customer_analyzer.model_candidates c
JOIN customer_analyzer.models m ON m.id = c.model_id AND m.metrics -> 'requested' ->> 'algorithm' = 'auto'
ORDER BY c.model_id, c.tried;

\echo '== Calibration of the serving churn model on its holdout (customer_analyzer.model_calibration)'
SELECT decile, round(mean_predicted::numeric, 3) AS mean_predicted, round(observed_rate::numeric, 3) AS observed_rate, users
FROM customer_analyzer.model_calibration
WHERE model_id = (SELECT model_id FROM customer_analyzer.deployed_models WHERE task = 'churn')
ORDER BY decile;

\echo '== Metrics of every model (customer_analyzer.model_metrics), deployed = serving its task'
SELECT model_id, task, algorithm, round(auc::numeric, 3) AS auc, round(f1::numeric, 3) AS f1,
       round(precision::numeric, 3) AS precision, round(recall::numeric, 3) AS recall,
       round(brier::numeric, 4) AS brier, round(brier_uncalibrated::numeric, 4) AS brier_uncalibrated,
       round(log_loss::numeric, 4) AS log_loss,
       train_rows, validation_rows, holdout_rows, refit_rows, pg_size_pretty(size_bytes::bigint) AS size, deployed
FROM customer_analyzer.model_metrics ORDER BY task, model_id;

\echo '== Most important features of the deployed churn model'
SELECT rank, feature, round(importance::numeric, 4) AS importance
FROM customer_analyzer.feature_importance WHERE task = 'churn' AND rank <= 8 ORDER BY rank;

\echo '== Batch scoring of every user (customer_analyzer.score_all)'
\timing on
SELECT customer_analyzer.score_all('churn') AS churn_scored, customer_analyzer.score_all('purchase') AS purchase_scored;
\timing off

\echo '== The 10 active customers most at risk of churning'
SELECT p.user_id, round(p.score::numeric, 3) AS churn_risk,
       round(customer_analyzer.predict_purchase(p.user_id)::numeric, 3) AS purchase_chance,
       f.events_last_30_days, round(f.days_since_last_activity::numeric, 1) AS last_seen_days,
       round(f.total_spent::numeric, 2) AS spent
FROM customer_analyzer.latest_predictions p
JOIN customer_analyzer.customer_features f USING (user_id)
WHERE p.task = 'churn' AND f.events_last_30_days > 0
ORDER BY p.score DESC LIMIT 10;

\echo '== Why the riskiest one? (customer_analyzer.explain)'
SELECT feature, value, round(contribution::numeric, 4) AS contribution, direction
FROM customer_analyzer.explain('churn',
       (SELECT p.user_id FROM customer_analyzer.latest_predictions p
        JOIN customer_analyzer.customer_features f USING (user_id)
        WHERE p.task = 'churn' AND f.events_last_30_days > 0 ORDER BY p.score DESC LIMIT 1), 5);

\echo
\echo '== Customer segments (customer_analyzer.segment_users: k-means with k = 6; k => NULL picks k by silhouette)'
\timing on
SELECT segment_id, name, size, round((share * 100)::numeric, 1) AS "share %",
       round(mean_recency_days::numeric, 1) AS recency_days, round(mean_frequency::numeric, 1) AS purchases,
       round(mean_monetary::numeric, 0) AS spent, round(churn_rate::numeric, 3) AS churn_rate
FROM customer_analyzer.segment_users('kmeans', 6);
\timing off
SELECT segment_id, name, description FROM customer_analyzer.current_segments ORDER BY segment_id;

\echo '== Segmentation quality (customer_analyzer.segmentation_quality)'
SELECT algorithm, segments, round(silhouette::numeric, 3) AS silhouette, silhouette_sample,
       round(inertia::numeric, 0) AS inertia, round(davies_bouldin::numeric, 3) AS davies_bouldin, sizes
FROM customer_analyzer.segmentation_quality WHERE serving;

\echo '== One user, assigned without re-clustering (customer_analyzer.segment_of)'
SELECT * FROM customer_analyzer.segment_of(42);

\echo
\echo '== Real time: configure() puts the trigger on public.events; an event comes back as a NOTIFY'
SELECT customer_analyzer.configure() ->> 'realtime' AS realtime;
SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'customer_analyzer rescoring') AS rescoring_workers;
LISTEN customer_analyzer_scores;
INSERT INTO public.events (user_id, event_type, created_at, event_data) VALUES (42, 'page_view', now(), '{}');
\echo '   (psql prints the worker''s notification after the next statement)'
SELECT pg_sleep(2);
SELECT task, round(score::numeric, 4) AS score, model_id, predicted_at
FROM customer_analyzer.predictions WHERE user_id = 42 ORDER BY predicted_at DESC LIMIT 2;
UNLISTEN customer_analyzer_scores;

\echo
\echo '== Drift: today''s feature store against what the churn model was trained on (customer_analyzer.drift_report)'
SELECT feature, kind, round(psi::numeric, 3) AS psi, round(ks::numeric, 3) AS ks, level
FROM customer_analyzer.drift_report('churn') ORDER BY psi DESC LIMIT 5;

\echo '== Retraining: the serving recipe again on fresh data, deployed only if better (customer_analyzer.retrain)'
\timing on
SELECT task, algorithm, round(auc::numeric, 4) AS auc, previous_model_id,
       round(previous_auc::numeric, 4) AS previous_auc, deployed
FROM customer_analyzer.retrain('churn');
\timing off
\echo '   pg_cron runs it every Sunday at 03:00; the retraining worker also retrains on its own (see README)'
CREATE EXTENSION IF NOT EXISTS pg_cron;
SELECT cron.schedule('customer_analyzer-retrain-churn', '0 3 * * 0',
                     'SELECT * FROM customer_analyzer.retrain(''churn'')') AS cron_job;
SELECT task, trigger, reason, previous_model_id, new_model_id, deployed FROM customer_analyzer.retrain_log ORDER BY id;

\echo
\echo '== Segments again, as a nightly pg_cron job would, and who moved where (customer_analyzer.segment_transitions)'
SELECT count(*) AS segments FROM customer_analyzer.segment_users('kmeans', 6);
SELECT from_segment, to_segment, users FROM customer_analyzer.segment_transitions ORDER BY users DESC LIMIT 8;
