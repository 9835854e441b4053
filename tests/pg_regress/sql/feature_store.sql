-- The feature store: refreshes, the BI view, the data-quality report.
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT customer_analyzer.refresh_features() AS users_refreshed;
SELECT count(*) AS rows, count(DISTINCT as_of) AS as_of_values FROM customer_analyzer.customer_features;
-- counts read only events before now(), and the demo's history ended on 1 June
SELECT user_id, events_total, purchase_count, round(total_spent::numeric, 2) AS spent
FROM customer_analyzer.customer_features ORDER BY user_id LIMIT 3;

-- the one-user refresh (the real-time path): true when the user has features
SELECT customer_analyzer.refresh_features(5::bigint) AS refreshed;

-- what the data rules set aside: a clean shop, then two bad rows
SELECT check_name, rows FROM customer_analyzer.data_quality() WHERE rows > 0;
INSERT INTO public.events (user_id, event_type, created_at, event_data) VALUES
    (1, 'purchase', '2026-05-01 00:00:00+00', '{"amount": -5, "product_id": "007"}'),
    (1, 'page_view', '-infinity', '{}');
SELECT check_name, rows, rule FROM customer_analyzer.data_quality() WHERE rows > 0 ORDER BY check_name;
-- as of 1 June user 1 has one more event and one more purchase (it still counts as one)
-- but the same spend (47 events, 5 purchases, 347.67 before); the -infinity event is not read
SELECT events_total, purchase_count, round(total_spent::numeric, 2) AS spent
FROM customer_analyzer.user_features('2026-06-01 00:00:00+00') WHERE user_id = 1;
DELETE FROM public.events WHERE created_at = '-infinity' OR event_data ->> 'product_id' = '007';
