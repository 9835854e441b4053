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
