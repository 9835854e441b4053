-- customer_analyzer 0.13.0 -> 0.14.0: the feature store's table is now feature_store,
-- read through the view user_metrics, which brings a row older than the last store-wide
-- refresh to that refresh's as_of from its stored activity and registration times. An
-- incremental refresh_features() then writes only the rows it recomputes. The rows kept
-- have no registration time yet and are read as stored; the next refresh is full (the
-- extension's version is part of its basis).

ALTER TABLE customer_analyzer.user_metrics RENAME TO feature_store;
ALTER INDEX customer_analyzer.user_metrics_pkey RENAME TO feature_store_pkey;
ALTER TABLE customer_analyzer.feature_store ADD COLUMN registered_at timestamptz;
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.refresh_state', '');

-- The feature store as read: a row older than the last store-wide refresh (one whose
-- events did not change since it was computed) has its time-relative features brought
-- to that refresh's as_of from its activity and registration times, with the core's
-- formulas (features::TimeRelative) in the same float operations on exact microsecond
-- differences; a test checks that the rows equal a full refresh's. The refresh's time
-- comes from a one-row subquery evaluated once per query (OFFSET 0: pulled up, its
-- scalar subqueries would be planned again at every use, 14 ms for one user's row).
CREATE VIEW customer_analyzer.user_metrics AS
SELECT
       m.user_id,
       CASE WHEN m.as_of < r.as_of AND m.registered_at IS NOT NULL
            THEN (r.t - (extract(epoch FROM m.registered_at) * 1000000)::bigint)::float8 / 86400000000
            ELSE m.days_since_registration END AS days_since_registration,
       CASE WHEN m.as_of < r.as_of AND m.registered_at IS NOT NULL
            THEN (r.t - (extract(epoch FROM m.last_event_at) * 1000000)::bigint)::float8 / 86400000000
            ELSE m.days_since_last_activity END AS days_since_last_activity,
       CASE WHEN m.as_of < r.as_of AND m.registered_at IS NOT NULL
            THEN (r.t - (extract(epoch FROM m.last_purchase_at) * 1000000)::bigint)::float8 / 86400000000
            ELSE m.days_since_last_purchase END AS days_since_last_purchase,
       CASE WHEN m.as_of < r.as_of AND m.registered_at IS NOT NULL
            THEN (r.t - (extract(epoch FROM m.first_event_at) * 1000000)::bigint)::float8 / 86400000000
            ELSE m.days_since_first_activity END AS days_since_first_activity,
       CASE WHEN m.as_of < r.as_of AND m.registered_at IS NOT NULL
            THEN (r.t - (extract(epoch FROM m.first_purchase_at) * 1000000)::bigint)::float8 / 86400000000
            ELSE m.days_since_first_purchase END AS days_since_first_purchase,
       CASE WHEN m.as_of < r.as_of AND m.registered_at IS NOT NULL
            THEN (r.t - (extract(epoch FROM m.last_cart_at) * 1000000)::bigint)::float8 / 86400000000
            ELSE m.days_since_last_cart_addition END AS days_since_last_cart_addition,
       m.events_last_7_days,
       m.events_last_14_days,
       m.events_last_30_days,
       m.events_last_60_days,
       m.events_total,
       m.active_days_last_7_days,
       m.active_days_last_30_days,
       m.active_days_total,
       m.page_views_last_7_days,
       m.page_views_last_30_days,
       m.product_views_last_30_days,
       m.cart_additions_last_30_days,
       m.purchases_last_7_days,
       m.purchases_last_30_days,
       m.purchases_last_60_days,
       m.bot_commands_last_30_days,
       m.events_per_active_day,
       m.activity_trend_7d_vs_14d,
       m.purchase_trend_30d_vs_60d,
       m.engagement_trend,
       m.spend_trend_30d_vs_60d,
       m.product_view_trend_7d_vs_30d,
       m.active_days_trend_7d_vs_30d,
       m.total_spent,
       m.avg_order_value,
       m.purchase_count,
       m.max_order_value,
       m.min_order_value,
       m.order_value_stddev,
       m.spend_last_7_days,
       m.spend_last_30_days,
       m.spend_last_60_days,
       m.avg_order_value_last_60_days,
       CASE WHEN m.as_of < r.as_of AND m.registered_at IS NOT NULL
            THEN m.total_spent / ((r.t - (extract(epoch FROM m.registered_at) * 1000000)::bigint)::float8 / 86400000000) * 30
            ELSE m.monthly_spend_rate END AS monthly_spend_rate,
       m.bot_commands_last_7_days,
       m.product_views_last_7_days,
       m.cart_additions_last_7_days,
       m.bot_commands_total,
       m.distinct_bot_commands,
       m.product_views_total,
       m.cart_additions_total,
       m.view_to_cart_rate,
       m.cart_to_purchase_rate,
       m.view_to_purchase_rate,
       m.distinct_products_viewed,
       m.distinct_products_purchased,
       m.distinct_categories_viewed,
       m.distinct_categories_purchased,
       m.favourite_category,
       m.favourite_category_share,
       m.avg_viewed_price,
       m.price_level_vs_category,
       m.purchased_price_level_vs_category,
       m.sessions_total,
       m.sessions_last_30_days,
       m.avg_events_per_session,
       m.avg_session_duration_minutes,
       m.days_between_purchases_mean,
       m.days_between_purchases_std,
       m.status,
       m.has_username,
       m.days_to_first_purchase,
       CASE WHEN m.as_of < r.as_of AND m.registered_at IS NOT NULL THEN r.as_of ELSE m.as_of END AS as_of,
       m.refreshed_at,
       m.first_event_at,
       m.last_event_at,
       m.first_purchase_at,
       m.last_purchase_at,
       m.last_cart_at,
       m.registered_at
FROM customer_analyzer.feature_store m
CROSS JOIN (SELECT (SELECT s.as_of FROM customer_analyzer.refresh_state s) AS as_of,
                   (SELECT (extract(epoch FROM s.as_of) * 1000000)::bigint
                    FROM customer_analyzer.refresh_state s) AS t
            OFFSET 0) r;

-- the views over the store read the new view (a view names a table by its identity)
CREATE OR REPLACE VIEW customer_analyzer.customer_features AS
SELECT m.user_id,
       m.as_of,
       m.refreshed_at,
       m.days_since_registration,
       m.days_since_last_activity,
       m.days_since_last_purchase,
       m.days_since_first_activity,
       m.days_since_first_purchase,
       m.days_since_last_cart_addition,
       m.events_last_7_days,
       m.events_last_14_days,
       m.events_last_30_days,
       m.events_last_60_days,
       m.events_total,
       m.active_days_last_7_days,
       m.active_days_last_30_days,
       m.active_days_total,
       m.page_views_last_7_days,
       m.page_views_last_30_days,
       m.product_views_last_30_days,
       m.cart_additions_last_30_days,
       m.purchases_last_7_days,
       m.purchases_last_30_days,
       m.purchases_last_60_days,
       m.bot_commands_last_30_days,
       m.events_per_active_day,
       m.activity_trend_7d_vs_14d,
       m.purchase_trend_30d_vs_60d,
       m.engagement_trend,
       m.spend_trend_30d_vs_60d,
       m.product_view_trend_7d_vs_30d,
       m.active_days_trend_7d_vs_30d,
       m.total_spent,
       m.avg_order_value,
       m.purchase_count,
       m.max_order_value,
       m.min_order_value,
       m.order_value_stddev,
       m.spend_last_7_days,
       m.spend_last_30_days,
       m.spend_last_60_days,
       m.avg_order_value_last_60_days,
       m.monthly_spend_rate,
       m.bot_commands_last_7_days,
       m.product_views_last_7_days,
       m.cart_additions_last_7_days,
       m.bot_commands_total,
       m.distinct_bot_commands,
       m.product_views_total,
       m.cart_additions_total,
       m.view_to_cart_rate,
       m.cart_to_purchase_rate,
       m.view_to_purchase_rate,
       m.distinct_products_viewed,
       m.distinct_products_purchased,
       m.distinct_categories_viewed,
       m.distinct_categories_purchased,
       m.favourite_category,
       m.favourite_category_share,
       m.avg_viewed_price,
       m.price_level_vs_category,
       m.purchased_price_level_vs_category,
       m.sessions_total,
       m.sessions_last_30_days,
       m.avg_events_per_session,
       m.avg_session_duration_minutes,
       m.days_between_purchases_mean,
       m.days_between_purchases_std,
       m.status,
       m.has_username,
       m.days_to_first_purchase
FROM customer_analyzer.user_metrics m;

CREATE OR REPLACE VIEW customer_analyzer.drift AS
-- the tasks drift_report() can answer, chosen first (MATERIALIZED: the planner may not
-- move these tests after the function, which raises 55000 for the others): a baseline
-- exists, and the population is not empty (training's rule: churn looks at the users
-- active in the last 30 days)
WITH ready AS MATERIALIZED (
    SELECT d.task FROM customer_analyzer.deployed_models d
    WHERE d.task IN ('churn', 'purchase')
      AND EXISTS (SELECT FROM customer_analyzer.model_baselines b WHERE b.model_id = d.model_id)
      AND EXISTS (SELECT FROM customer_analyzer.user_metrics m
                  WHERE d.task <> 'churn' OR m.events_last_30_days > 0)
)
SELECT ready.task, r.*
FROM ready CROSS JOIN LATERAL customer_analyzer.drift_report(ready.task) r;

CREATE OR REPLACE VIEW customer_analyzer.user_overview AS
SELECT m.user_id, s.segment_id, s.segment_name,
       c.score AS churn_score, p.score AS purchase_score,
       m.as_of - make_interval(secs => m.days_since_last_activity * 86400) AS last_seen,
       m.days_since_last_activity, m.total_spent, m.purchase_count, m.events_total, m.as_of
FROM customer_analyzer.user_metrics m
LEFT JOIN customer_analyzer.latest_scores c ON c.task = 'churn' AND c.user_id = m.user_id
LEFT JOIN customer_analyzer.latest_scores p ON p.task = 'purchase' AND p.user_id = m.user_id
LEFT JOIN customer_analyzer.user_segments s
       ON s.user_id = m.user_id
      AND s.segmentation_id = (SELECT d.model_id FROM customer_analyzer.deployed_models d
                               WHERE d.task = 'segmentation');

-- whoever could read the store (grant_operator(), or by hand) reads the view instead
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee::regrole AS grantee
             FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
             WHERE c.oid = 'customer_analyzer.feature_store'::regclass
               AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner AND a.grantee <> 0
    LOOP
        EXECUTE format('GRANT SELECT ON customer_analyzer.user_metrics TO %s', r.grantee);
        EXECUTE format('REVOKE ALL ON customer_analyzer.feature_store FROM %s', r.grantee);
    END LOOP;
    IF EXISTS (SELECT FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
               WHERE c.oid = 'customer_analyzer.feature_store'::regclass
                 AND a.privilege_type = 'SELECT' AND a.grantee = 0) THEN
        GRANT SELECT ON customer_analyzer.user_metrics TO PUBLIC;
        REVOKE ALL ON customer_analyzer.feature_store FROM PUBLIC;
    END IF;
END
$$;

COMMENT ON TABLE customer_analyzer.feature_store IS
    'Internal: each user''s features as computed from their events as of as_of, with the times the time-relative features come from; read it through user_metrics.';
COMMENT ON VIEW customer_analyzer.user_metrics IS
    'The feature store: each user''s latest features as of the last refresh_features() (or the later time one user''s row was recomputed), with the activity times they come from; refreshed_at is when the row was last written (a refresh that finds nothing changed for a user carries the row to its as_of without writing it).';
COMMENT ON FUNCTION customer_analyzer.refresh_features() IS
    'Brings every user''s features to now() in user_metrics: after an earlier refresh, reads only the users whose events changed or crossed a window''s edge and carries the other rows to now() unwritten (refresh_state says which it did); returns the number of users. A full refresh raises a NOTICE listing rows set aside by the data rules.';
COMMENT ON FUNCTION customer_analyzer.refresh_features(bigint) IS
    'Recomputes one user''s features as of now() into the feature store (read through user_metrics) through an index; false when the user registered after now().';
