-- The set-based feature query over the shop's tables: one row per user registered
-- before $1 (as_of), user_id then every feature of the catalog in order. The names in
-- braces are filled by src/features_sql.rs from the configured tables and the
-- data rules of crates/customer_analyzer_core/src/events.rs; $2 is an array of user ids
-- when only those users are computed.
WITH
{bounds},
u AS (
    SELECT src.id::bigint AS user_id, src.registered_at::timestamptz AS registered_at,
           {status} AS status, {has_username} AS has_username
    FROM {users} src
    WHERE src.id IS NOT NULL AND src.registered_at::timestamptz < $1
      AND src.registered_at::timestamptz > '-infinity'{user_filter}
),
pr AS ({product_table}),
pc AS (
    SELECT pr.product_id, pr.category, pr.price, pr.price / cm.mean_price AS price_level
    FROM pr LEFT JOIN (SELECT category, avg(price) AS mean_price FROM pr
                       WHERE category IS NOT NULL AND price IS NOT NULL GROUP BY category) cm
         ON cm.category = pr.category
),
-- Products as one jsonb object keyed by the id's canonical text: a lookup per event
-- instead of a join, which keeps the events in (user_id, at) order for the aggregate.
pm AS (
    SELECT coalesce(jsonb_object_agg(product_id::text, jsonb_build_array(category, price, price_level)),
                    '{}') AS m
    FROM pc
),
ev AS NOT MATERIALIZED (
    SELECT e.user_id::bigint AS user_id, e.event_type::text AS kind, e.created_at::timestamptz AS at,
           CASE WHEN e.event_type::text = 'purchase' AND {valid_amount}
                THEN ({data} ->> 'amount')::float8 END AS amount,
           CASE WHEN e.event_type::text IN ('product_view', 'add_to_cart', 'purchase')
                THEN {data} ->> 'product_id' END AS raw_product,
           CASE WHEN e.event_type::text = 'bot_command' THEN {data} ->> 'command' END AS command
    FROM {events} e
    WHERE e.created_at::timestamptz < $1 AND e.created_at::timestamptz > '-infinity'
      AND e.user_id IS NOT NULL{event_filter}
      AND e.user_id IN (SELECT user_id FROM u)
),
seq AS (
    SELECT ev.*,
           ev.at - lag(ev.at) OVER (PARTITION BY ev.user_id ORDER BY ev.at) AS gap,
           (ev.at AT TIME ZONE 'UTC')::date
               IS DISTINCT FROM (lead(ev.at) OVER (PARTITION BY ev.user_id ORDER BY ev.at) AT TIME ZONE 'UTC')::date
               AS last_of_day,
           (SELECT m FROM pm) -> ev.raw_product AS product
    FROM ev
),
x AS (
    SELECT seq.*, (seq.gap IS NULL OR seq.gap > interval '30 minutes') AS session_start,
           seq.product ->> 0 AS category, (seq.product ->> 1)::float8 AS price,
           (seq.product ->> 2)::float8 AS price_level,
           CASE WHEN {valid_product} THEN seq.raw_product END AS product_id
    FROM seq
),
a AS (
    SELECT user_id,
           count(*) AS events_total,
           count(*) FILTER (WHERE at >= {w7}) AS e7,
           count(*) FILTER (WHERE at >= {w14}) AS e14,
           count(*) FILTER (WHERE at >= {w30}) AS e30,
           count(*) FILTER (WHERE at >= {w60}) AS e60,
           count(*) FILTER (WHERE at >= {w90} AND at < {w30}) AS e_prior_60,
           min(at) AS first_at, max(at) AS last_at,
           min(at) FILTER (WHERE kind = 'purchase') AS first_purchase_at,
           max(at) FILTER (WHERE kind = 'purchase') AS last_purchase_at,
           max(at) FILTER (WHERE kind = 'add_to_cart') AS last_cart_at,
           -- a UTC calendar day is active in a window when its latest event is: windows end at as_of
           count(*) FILTER (WHERE last_of_day AND at >= {w7}) AS ad7,
           count(*) FILTER (WHERE last_of_day AND at >= {w30}) AS ad30,
           count(*) FILTER (WHERE last_of_day) AS ad_total,
           count(*) FILTER (WHERE kind = 'page_view' AND at >= {w7}) AS pv7,
           count(*) FILTER (WHERE kind = 'page_view' AND at >= {w30}) AS pv30,
           count(*) FILTER (WHERE kind = 'product_view') AS prv_total,
           count(*) FILTER (WHERE kind = 'product_view' AND at >= {w7}) AS prv7,
           count(*) FILTER (WHERE kind = 'product_view' AND at >= {w30}) AS prv30,
           count(*) FILTER (WHERE kind = 'add_to_cart') AS cart_total,
           count(*) FILTER (WHERE kind = 'add_to_cart' AND at >= {w7}) AS cart7,
           count(*) FILTER (WHERE kind = 'add_to_cart' AND at >= {w30}) AS cart30,
           count(*) FILTER (WHERE kind = 'purchase') AS buy_total,
           count(*) FILTER (WHERE kind = 'purchase' AND at >= {w7}) AS buy7,
           count(*) FILTER (WHERE kind = 'purchase' AND at >= {w30}) AS buy30,
           count(*) FILTER (WHERE kind = 'purchase' AND at >= {w60}) AS buy60,
           count(*) FILTER (WHERE kind = 'bot_command') AS bot_total,
           count(*) FILTER (WHERE kind = 'bot_command' AND at >= {w7}) AS bot7,
           count(*) FILTER (WHERE kind = 'bot_command' AND at >= {w30}) AS bot30,
           count(DISTINCT command) AS commands,
           coalesce(sum(amount), 0) AS spent,
           coalesce(sum(amount) FILTER (WHERE at >= {w7}), 0) AS spent7,
           coalesce(sum(amount) FILTER (WHERE at >= {w30}), 0) AS spent30,
           coalesce(sum(amount) FILTER (WHERE at >= {w60}), 0) AS spent60,
           avg(amount) AS aov, max(amount) AS max_amount, min(amount) AS min_amount,
           stddev_samp(amount) AS sd_amount,
           avg(amount) FILTER (WHERE at >= {w60}) AS aov60,
           count(*) FILTER (WHERE session_start) AS sessions,
           count(*) FILTER (WHERE session_start AND at >= {w30}) AS sessions30,
           sum(date_part('epoch', gap)) FILTER (WHERE NOT session_start) AS session_seconds,
           array_agg(at ORDER BY at) FILTER (WHERE kind = 'purchase') AS purchase_times,
           count(DISTINCT product_id) FILTER (WHERE kind = 'product_view') AS products_viewed,
           count(DISTINCT product_id) FILTER (WHERE kind = 'purchase') AS products_bought,
           count(DISTINCT category) FILTER (WHERE kind = 'product_view') AS categories_viewed,
           count(DISTINCT category) FILTER (WHERE kind = 'purchase') AS categories_bought,
           avg(price) FILTER (WHERE kind = 'product_view') AS viewed_price,
           avg(price_level) AS price_level,
           avg(price_level) FILTER (WHERE kind = 'purchase') AS bought_price_level,
           array_agg(category) FILTER (WHERE category IS NOT NULL) AS categories
    FROM x
    GROUP BY user_id
)
SELECT u.user_id,
       extract(epoch FROM $1 - u.registered_at)::float8 / 86400 AS days_since_registration,
       extract(epoch FROM $1 - a.last_at)::float8 / 86400 AS days_since_last_activity,
       extract(epoch FROM $1 - a.last_purchase_at)::float8 / 86400 AS days_since_last_purchase,
       extract(epoch FROM $1 - a.first_at)::float8 / 86400 AS days_since_first_activity,
       extract(epoch FROM $1 - a.first_purchase_at)::float8 / 86400 AS days_since_first_purchase,
       extract(epoch FROM $1 - a.last_cart_at)::float8 / 86400 AS days_since_last_cart_addition,
       coalesce(a.e7, 0) AS events_last_7_days,
       coalesce(a.e14, 0) AS events_last_14_days,
       coalesce(a.e30, 0) AS events_last_30_days,
       coalesce(a.e60, 0) AS events_last_60_days,
       coalesce(a.events_total, 0) AS events_total,
       coalesce(a.ad7, 0) AS active_days_last_7_days,
       coalesce(a.ad30, 0) AS active_days_last_30_days,
       coalesce(a.ad_total, 0) AS active_days_total,
       coalesce(a.pv7, 0) AS page_views_last_7_days,
       coalesce(a.pv30, 0) AS page_views_last_30_days,
       coalesce(a.prv30, 0) AS product_views_last_30_days,
       coalesce(a.cart30, 0) AS cart_additions_last_30_days,
       coalesce(a.buy7, 0) AS purchases_last_7_days,
       coalesce(a.buy30, 0) AS purchases_last_30_days,
       coalesce(a.buy60, 0) AS purchases_last_60_days,
       coalesce(a.bot30, 0) AS bot_commands_last_30_days,
       a.events_total::float8 / nullif(a.ad_total, 0) AS events_per_active_day,
       a.e7::float8 / nullif(a.e14, 0) AS activity_trend_7d_vs_14d,
       a.buy30::float8 / nullif(a.buy60, 0) AS purchase_trend_30d_vs_60d,
       (a.e30 / 30.0 - a.e_prior_60 / 60.0)::float8 / nullif((a.e30 / 30.0 + a.e_prior_60 / 60.0)::float8, 0) AS engagement_trend,
       a.spent30 / nullif(a.spent60, 0) AS spend_trend_30d_vs_60d,
       a.prv7::float8 / nullif(a.prv30, 0) AS product_view_trend_7d_vs_30d,
       a.ad7::float8 / nullif(a.ad30, 0) AS active_days_trend_7d_vs_30d,
       coalesce(a.spent, 0) AS total_spent,
       a.aov AS avg_order_value,
       coalesce(a.buy_total, 0) AS purchase_count,
       a.max_amount AS max_order_value,
       a.min_amount AS min_order_value,
       a.sd_amount AS order_value_stddev,
       coalesce(a.spent7, 0) AS spend_last_7_days,
       coalesce(a.spent30, 0) AS spend_last_30_days,
       coalesce(a.spent60, 0) AS spend_last_60_days,
       a.aov60 AS avg_order_value_last_60_days,
       coalesce(a.spent, 0) / (extract(epoch FROM $1 - u.registered_at)::float8 / 86400) * 30 AS monthly_spend_rate,
       coalesce(a.bot7, 0) AS bot_commands_last_7_days,
       coalesce(a.prv7, 0) AS product_views_last_7_days,
       coalesce(a.cart7, 0) AS cart_additions_last_7_days,
       coalesce(a.bot_total, 0) AS bot_commands_total,
       coalesce(a.commands, 0) AS distinct_bot_commands,
       coalesce(a.prv_total, 0) AS product_views_total,
       coalesce(a.cart_total, 0) AS cart_additions_total,
       a.cart_total::float8 / nullif(a.prv_total, 0) AS view_to_cart_rate,
       a.buy_total::float8 / nullif(a.cart_total, 0) AS cart_to_purchase_rate,
       a.buy_total::float8 / nullif(a.prv_total, 0) AS view_to_purchase_rate,
       coalesce(a.products_viewed, 0) AS distinct_products_viewed,
       coalesce(a.products_bought, 0) AS distinct_products_purchased,
       {distinct_cats_viewed} AS distinct_categories_viewed,
       {distinct_cats_bought} AS distinct_categories_purchased,
       fav.category AS favourite_category,
       fav.n::float8 / cardinality(a.categories) AS favourite_category_share,
       a.viewed_price AS avg_viewed_price,
       a.price_level AS price_level_vs_category,
       a.bought_price_level AS purchased_price_level_vs_category,
       coalesce(a.sessions, 0) AS sessions_total,
       coalesce(a.sessions30, 0) AS sessions_last_30_days,
       a.events_total::float8 / nullif(a.sessions, 0) AS avg_events_per_session,
       coalesce(a.session_seconds, 0) / 60 / nullif(a.sessions, 0) AS avg_session_duration_minutes,
       CASE WHEN a.buy_total >= 2
            THEN extract(epoch FROM a.last_purchase_at - a.first_purchase_at)::float8 / 86400 / (a.buy_total - 1) END
           AS days_between_purchases_mean,
       (SELECT stddev_samp(extract(epoch FROM a.purchase_times[i + 1] - a.purchase_times[i])::float8 / 86400)
        FROM generate_series(1, cardinality(a.purchase_times) - 1) i) AS days_between_purchases_std,
       u.status,
       u.has_username,
       extract(epoch FROM a.first_purchase_at - u.registered_at)::float8 / 86400 AS days_to_first_purchase
FROM u
LEFT JOIN a ON a.user_id = u.user_id
LEFT JOIN LATERAL (
    SELECT c.category, count(*) AS n FROM unnest(a.categories) AS c(category)
    GROUP BY c.category ORDER BY n DESC, c.category COLLATE "C" LIMIT 1
) fav ON true
ORDER BY u.user_id
