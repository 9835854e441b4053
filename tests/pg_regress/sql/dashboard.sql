-- What the dashboard (crates/customer_analyzer_web) and BI tools read: one row per user
-- with newest scores and segment, both predictions of a user with reasons, a user's
-- recent events, a stable recency x spend sample of the segments, how users moved
-- between the last two segmentations, holdout ROC curves and weekly live metrics. A
-- reader may read all of it.
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT count(*) = (SELECT count(*) FROM customer_analyzer.user_metrics) AS one_row_per_user,
       count(segment_name) = count(*) AS everyone_segmented,
       count(purchase_score) = count(*) AS everyone_scored_for_purchase,
       bool_and(last_seen <= as_of) AS seen_before_as_of
FROM customer_analyzer.user_overview;
SELECT o.purchase_score = l.score AS newest_logged_score,
       o.segment_id = s.segment_id AS serving_segment
FROM customer_analyzer.user_overview o
JOIN customer_analyzer.latest_predictions l ON l.user_id = o.user_id AND l.task = 'purchase'
JOIN customer_analyzer.segment_of(5) s ON true
WHERE o.user_id = 5;

-- both tasks, from the models that serve them, with the reasons explain() gives
SELECT p.task, p.arm, jsonb_array_length(p.reasons) AS reasons,
       p.model_id = d.model_id AS serving_model,
       p.score = s.score AND p.label = s.label AS same_as_predict,
       p.reasons -> 0 ->> 'feature' = (SELECT e.feature FROM customer_analyzer.explain(p.task, 5, 1) e) AS same_top_reason
FROM customer_analyzer.user_predictions(5, 4) p
JOIN customer_analyzer.deployed_models d ON d.task = p.task
CROSS JOIN LATERAL customer_analyzer.predict(p.task, 5) s
ORDER BY p.task;
SELECT * FROM customer_analyzer.user_predictions(99999999);
SELECT * FROM customer_analyzer.user_predictions(5, 0);

-- a user's newest events, newest first; never the future or infinity
SELECT user_id AS busy FROM public.events GROUP BY user_id HAVING count(*) > 60 ORDER BY user_id LIMIT 1 \gset
SELECT count(*) AS shown,
       min(created_at) = (SELECT e.created_at FROM public.events e WHERE e.user_id = :busy
                          ORDER BY e.created_at DESC OFFSET 19 LIMIT 1) AS the_newest_twenty,
       bool_and(event_type IS NOT NULL AND event_data IS NOT NULL) AS complete
FROM customer_analyzer.recent_events(:busy);
SELECT count(*) AS shown, bool_and(created_at >= next_at OR next_at IS NULL) AS newest_first
FROM (SELECT created_at, lead(created_at) OVER (ORDER BY created_at DESC) AS next_at
      FROM customer_analyzer.recent_events(:busy, 50)) t;
SELECT count(*) AS all_four FROM customer_analyzer.recent_events(5);
BEGIN;
INSERT INTO public.events (user_id, event_type, created_at, event_data)
VALUES (5, 'page_view', now() + interval '1 day', '{}'), (5, 'page_view', 'infinity', '{}'),
       (5, 'page_view', '-infinity', '{}');
SELECT count(*) FILTER (WHERE created_at > now() OR NOT isfinite(created_at)) AS unreadable_shown
FROM customer_analyzer.recent_events(5, 1000);
ROLLBACK;
SELECT * FROM customer_analyzer.recent_events(99999999);
SELECT * FROM customer_analyzer.recent_events(5, 0);
SELECT * FROM customer_analyzer.recent_events(5, 1001);
SELECT * FROM customer_analyzer.recent_events(NULL);
SELECT * FROM customer_analyzer.recent_events(5, NULL);

-- a stable sample of the serving segmentation, in recency and spend
SELECT count(*) AS sampled, count(DISTINCT segment_id) > 1 AS several_segments,
       bool_and(recency_days >= 0 AND monetary >= 0) AS in_range
FROM customer_analyzer.segment_map(500);
SELECT (SELECT array_agg(user_id ORDER BY user_id) FROM customer_analyzer.segment_map(50))
     = (SELECT array_agg(user_id ORDER BY user_id) FROM customer_analyzer.segment_map(50)) AS stable;
SELECT count(*) = (SELECT count(*) FROM customer_analyzer.user_metrics) AS everyone_when_asked
FROM customer_analyzer.segment_map(100000);
SELECT * FROM customer_analyzer.segment_map(0);
SELECT * FROM customer_analyzer.segment_map(100001);
SELECT * FROM customer_analyzer.segment_map(NULL);

-- the moves between the segmentation before the serving one and the serving one
SELECT from_segmentation_id < to_segmentation_id AS previous_to_serving,
       to_segmentation_id = (SELECT segmentation_id FROM customer_analyzer.segmentation_quality WHERE serving) AS to_the_serving_one,
       sum(users) FILTER (WHERE to_segment IS NOT NULL) = (SELECT count(*) FROM customer_analyzer.user_segments us
                                                           WHERE us.segmentation_id = to_segmentation_id) AS everyone_now,
       sum(users) FILTER (WHERE from_segment IS NOT NULL) = (SELECT count(*) FROM customer_analyzer.user_segments us
                                                             WHERE us.segmentation_id = from_segmentation_id) AS everyone_before
FROM customer_analyzer.segment_transitions
GROUP BY from_segmentation_id, to_segmentation_id;

-- the holdout ROC curve of every model trained since 0.10.0: corner to corner, and its
-- area (trapezoids over at most 101 points) close to the recorded AUC
SELECT r.model_id, count(*) BETWEEN 2 AND 101 AS points,
       min(r.false_positive_rate) = 0 AND max(r.true_positive_rate) = 1 AS corner_to_corner,
       abs(sum((r.false_positive_rate - r.prev_fpr) * (r.true_positive_rate + r.prev_tpr) / 2)
           - m.auc) < 0.01 AS area_is_the_auc
FROM (SELECT model_id, false_positive_rate, true_positive_rate,
             lag(false_positive_rate, 1, 0::float8) OVER w AS prev_fpr,
             lag(true_positive_rate, 1, 0::float8) OVER w AS prev_tpr
      FROM customer_analyzer.model_roc WINDOW w AS (PARTITION BY model_id ORDER BY point)) r
JOIN customer_analyzer.model_metrics m ON m.model_id = r.model_id
WHERE r.model_id IN (SELECT model_id FROM customer_analyzer.deployed_models WHERE task IN ('churn', 'purchase'))
GROUP BY r.model_id, m.auc ORDER BY r.model_id;
SELECT * FROM customer_analyzer.weekly_live_metrics LIMIT 0;

-- a reader reads it all
SET client_min_messages = warning;
DROP ROLE IF EXISTS ca_dashboard;
RESET client_min_messages;
CREATE ROLE ca_dashboard;
SELECT customer_analyzer.grant_reader('ca_dashboard');
SET ROLE ca_dashboard;
SELECT (SELECT count(*) > 0 FROM customer_analyzer.user_overview) AS overview,
       (SELECT count(*) = 2 FROM customer_analyzer.user_predictions(5)) AS predictions,
       (SELECT count(*) > 0 FROM customer_analyzer.recent_events(5)) AS events,
       (SELECT count(*) > 0 FROM customer_analyzer.segment_map()) AS map,
       (SELECT count(*) > 0 FROM customer_analyzer.segment_transitions) AS transitions,
       (SELECT count(*) > 0 FROM customer_analyzer.model_roc) AS roc,
       (SELECT count(*) >= 0 FROM customer_analyzer.weekly_live_metrics) AS weekly;
RESET ROLE;
SELECT customer_analyzer.revoke_reader('ca_dashboard');
DROP ROLE ca_dashboard;
