-- Features: the catalog, the conventions, and point-in-time features of a demo shop
-- whose history ends at a pinned time, so every figure below is the same on every run.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS customer_analyzer CASCADE;
CREATE EXTENSION customer_analyzer;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT users, events, products, history_from, history_to
FROM customer_analyzer.generate_demo_data(1500, 365, 7, ends_at => '2026-06-01 00:00:00+00', replace => true);

-- the catalog: 68 features in 8 groups
SELECT feature_group, count(*) AS features FROM customer_analyzer.feature_catalog
GROUP BY feature_group ORDER BY min(position);
SELECT position, name, sql_type, unit FROM customer_analyzer.feature_catalog WHERE position <= 5;
SELECT catalog_version FROM customer_analyzer.feature_conventions();

-- one row per user registered before as_of, from events strictly before it
SELECT count(*) AS users FROM customer_analyzer.user_features('2026-06-01 00:00:00+00');
SELECT count(*) AS users FROM customer_analyzer.user_features('2026-03-01 00:00:00+00');
SELECT user_id, round(days_since_registration::numeric, 2) AS registered_days,
       round(days_since_last_activity::numeric, 2) AS last_seen_days, events_last_30_days,
       purchase_count, round(total_spent::numeric, 2) AS spent, favourite_category
FROM customer_analyzer.user_features('2026-06-01 00:00:00+00') ORDER BY user_id LIMIT 5;

-- a feature with no value is NULL: days since last purchase of users who never bought
SELECT count(*) FILTER (WHERE purchase_count = 0) AS never_bought,
       count(*) FILTER (WHERE purchase_count = 0 AND days_since_last_purchase IS NULL) AS with_null
FROM customer_analyzer.user_features('2026-06-01 00:00:00+00');

-- nothing after as_of is read: the same user seen at three times
SELECT as_of, events_total, purchase_count
FROM (VALUES (timestamptz '2026-04-01 00:00:00+00'), ('2026-05-01 00:00:00+00'), ('2026-06-01 00:00:00+00')) t(as_of),
     LATERAL (SELECT * FROM customer_analyzer.user_features(t.as_of) WHERE user_id = 3) f;
