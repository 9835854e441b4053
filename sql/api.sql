-- customer_analyzer: the SQL surface written in SQL (finalize: after every Rust function).

COMMENT ON SCHEMA customer_analyzer IS
    'customer_analyzer: customer features, churn and purchase models and segmentation for an online shop.';

CREATE FUNCTION customer_analyzer.configure(
    users regclass DEFAULT to_regclass('public.users'),
    events regclass DEFAULT to_regclass('public.events'),
    products regclass DEFAULT to_regclass('public.products'))
RETURNS jsonb LANGUAGE sql VOLATILE
AS $$ SELECT customer_analyzer._configure(users::oid, events::oid, products::oid) $$;

CREATE FUNCTION customer_analyzer.user_features(as_of timestamptz DEFAULT now())
RETURNS SETOF customer_analyzer.feature_row
LANGUAGE plpgsql STABLE
SET work_mem = '256MB'
AS $$
DECLARE
    n bigint;
BEGIN
    IF as_of IS NULL THEN
        RAISE EXCEPTION 'as_of must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Leave as_of out to compute features as of now().';
    END IF;
    IF NOT isfinite(as_of) OR as_of > clock_timestamp() THEN
        RAISE EXCEPTION 'as_of % is in the future', as_of
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Features describe the past: pass a time at or before now().';
    END IF;
    RETURN QUERY EXECUTE customer_analyzer._feature_query(false) USING as_of;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        RAISE NOTICE 'customer_analyzer: no user registered before %, so there are no features', as_of;
    END IF;
END
$$;

CREATE FUNCTION customer_analyzer.refresh_features()
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET work_mem = '256MB'
AS $$
DECLARE
    t timestamptz := now();
    n bigint;
BEGIN
    PERFORM customer_analyzer._notice_data_quality(t);
    DELETE FROM customer_analyzer.user_metrics;
    INSERT INTO customer_analyzer.user_metrics
    SELECT f.*, t, clock_timestamp() FROM customer_analyzer.user_features(t) f;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE VIEW customer_analyzer.feature_catalog AS
SELECT position, name, feature_group, sql_type, unit, description
FROM customer_analyzer.feature_definitions();

CREATE VIEW customer_analyzer.customer_features AS
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

COMMENT ON TABLE customer_analyzer.config IS
    'Which of the shop''s tables customer_analyzer reads (written by configure(); no row means public.users, public.events, public.products).';
COMMENT ON TYPE customer_analyzer.feature_row IS
    'One user''s features: user_id, then every feature of feature_catalog in order.';
COMMENT ON TABLE customer_analyzer.user_metrics IS
    'The feature store: each user''s latest features and the as_of they were computed for. Written by refresh_features().';
COMMENT ON VIEW customer_analyzer.feature_catalog IS
    'Every feature: position, name, group, SQL type, unit and definition. Windows are [as_of - N*24h, as_of); see feature_conventions().';
COMMENT ON VIEW customer_analyzer.customer_features IS
    'For BI tools: the feature store with as_of and refresh time first, one named column per feature.';
COMMENT ON FUNCTION customer_analyzer.configure(regclass, regclass, regclass) IS
    'Chooses the shop''s users, events and products tables (products may be NULL) after checking every needed column and its type.';
COMMENT ON FUNCTION customer_analyzer._configure(oid, oid, oid) IS
    'Internal: configure() after its regclass arguments are resolved.';
COMMENT ON FUNCTION customer_analyzer.user_features(timestamptz) IS
    'Point-in-time features: one row per user registered before as_of, from events strictly before as_of.';
COMMENT ON FUNCTION customer_analyzer._feature_query(boolean) IS
    'Internal: the set-based feature query over the configured tables ($1 = as_of, $2 = user id when one_user).';
COMMENT ON FUNCTION customer_analyzer.refresh_features() IS
    'Recomputes every user''s features as of now() into user_metrics in one set-based pass; returns the number of users. Raises a NOTICE listing rows set aside by the data rules.';
COMMENT ON FUNCTION customer_analyzer.refresh_features(bigint) IS
    'Recomputes one user''s features as of now() into user_metrics through an index; false when the user registered after now().';
COMMENT ON FUNCTION customer_analyzer.data_quality(timestamptz) IS
    'How many source rows each documented data rule sets aside (NULL ids or times, future events, malformed event_data, invalid amounts, ...).';
COMMENT ON FUNCTION customer_analyzer._notice_data_quality(timestamptz) IS
    'Internal: raises one NOTICE listing the non-zero data_quality() counts.';
COMMENT ON FUNCTION customer_analyzer.feature_definitions() IS
    'The feature catalog as rows; feature_catalog is the view to query.';
COMMENT ON FUNCTION customer_analyzer.feature_conventions() IS
    'The catalog version and the conventions every feature follows.';
COMMENT ON FUNCTION customer_analyzer.generate_demo_data(integer, integer, bigint, timestamptz, boolean) IS
    'Creates (when missing) and fills public.users, public.events and public.products with a deterministic demo Telegram-bot shop whose history ends at ends_at.';
COMMENT ON FUNCTION customer_analyzer.demo_products(bigint) IS
    'The demo shop''s 500 products in 10 categories, for a seed.';
COMMENT ON FUNCTION customer_analyzer.demo_users(integer, integer, bigint, timestamptz) IS
    'The demo shop''s users, with the hidden customer type that drives their behaviour.';
COMMENT ON FUNCTION customer_analyzer.demo_events(integer, integer, bigint, timestamptz) IS
    'The demo shop''s event history, user by user, as rows ready for an events table.';
