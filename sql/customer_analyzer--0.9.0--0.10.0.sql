-- customer_analyzer 0.9.0 -> 0.10.0: what the dashboard (crates/customer_analyzer_web) and
-- BI tools read. New: the user_overview view, user_predictions(), recent_events(),
-- segment_map(), the segment_transitions, model_roc and weekly_live_metrics views, and
-- their place among the reader's privileges. Models trained from 0.10.0 store their
-- holdout ROC curve in metrics -> 'roc' (older models show none). Roles granted before
-- get the new objects by calling grant_reader() or grant_operator() again.

-- What the dashboard and BI tools read (0.10.0) -----------------------------------------

CREATE VIEW customer_analyzer.user_overview AS
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

-- user_predictions() is the extension's library (src/serving.rs)
CREATE  FUNCTION "user_predictions"(
	"user_id" bigint, /* Option < i64 > */
	"top" INT DEFAULT 3 /* Option < i32 > */
) RETURNS TABLE (
	"task" TEXT,  /* String */
	"score" double precision,  /* f64 */
	"label" bool,  /* bool */
	"model_id" bigint,  /* i64 */
	"arm" TEXT,  /* String */
	"as_of" timestamp with time zone,  /* TimestampWithTimeZone */
	"reasons" jsonb  /* pgrx :: JsonB */
)
STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'user_predictions_wrapper';

-- recent_events() is the extension's library (src/recent_events.rs)
CREATE  FUNCTION "recent_events"(
	"user_id" bigint, /* Option < i64 > */
	"n" INT DEFAULT 20 /* Option < i32 > */
) RETURNS TABLE (
	"created_at" timestamp with time zone,  /* TimestampWithTimeZone */
	"event_type" TEXT,  /* Option < String > */
	"event_data" TEXT  /* Option < String > */
)
STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'recent_events_wrapper';

CREATE FUNCTION customer_analyzer.segment_map(max_users integer DEFAULT 2000)
RETURNS TABLE (user_id bigint, segment_id integer, segment_name text,
               recency_days double precision, monetary double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF max_users IS NULL THEN
        RAISE EXCEPTION 'max_users must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass how many users to plot, e.g. segment_map(2000).';
    END IF;
    IF max_users < 1 OR max_users > 100000 THEN
        RAISE EXCEPTION 'max_users must be between 1 and 100000, not %', max_users
            USING ERRCODE = 'invalid_parameter_value', HINT = 'A scatter plot shows a sample; 2,000 users are plenty.';
    END IF;
    -- a fixed hash of the user id picks the sample, so the picture is stable between reads
    RETURN QUERY
    SELECT s.user_id, s.segment_id, s.segment_name,
           coalesce(m.days_since_last_activity, m.days_since_registration),
           m.total_spent
    FROM customer_analyzer.user_segments s
    JOIN customer_analyzer.user_metrics m ON m.user_id = s.user_id
    WHERE s.segmentation_id = (SELECT d.model_id FROM customer_analyzer.deployed_models d
                               WHERE d.task = 'segmentation')
    ORDER BY hashint8(s.user_id), s.user_id
    LIMIT max_users;
END
$$;

CREATE VIEW customer_analyzer.segment_transitions AS
WITH pair AS (
    SELECT (SELECT max(m.id) FROM customer_analyzer.models m
            WHERE m.task = 'segmentation' AND m.id < d.model_id) AS from_id,
           d.model_id AS to_id
    FROM customer_analyzer.deployed_models d
    WHERE d.task = 'segmentation'
)
SELECT pair.from_id AS from_segmentation_id, pair.to_id AS to_segmentation_id,
       t.from_segment, t.to_segment, count(*) AS users
FROM pair
CROSS JOIN LATERAL (
    SELECT a.segment_name AS from_segment, b.segment_name AS to_segment
    FROM (SELECT u.user_id, u.segment_name FROM customer_analyzer.user_segments u
          WHERE u.segmentation_id = pair.from_id) a
    FULL JOIN (SELECT u.user_id, u.segment_name FROM customer_analyzer.user_segments u
               WHERE u.segmentation_id = pair.to_id) b USING (user_id)
) t
WHERE pair.from_id IS NOT NULL
GROUP BY pair.from_id, pair.to_id, t.from_segment, t.to_segment;

CREATE VIEW customer_analyzer.model_roc AS
SELECT m.id AS model_id, m.task, r.point, (r.item ->> 0)::float8 AS false_positive_rate,
       (r.item ->> 1)::float8 AS true_positive_rate
FROM customer_analyzer.models m,
     jsonb_array_elements(CASE jsonb_typeof(m.metrics -> 'roc')
                          WHEN 'array' THEN m.metrics -> 'roc' ELSE '[]' END)
         WITH ORDINALITY AS r(item, point);

CREATE VIEW customer_analyzer.weekly_live_metrics AS
SELECT m.task, l.model_id, l.week, l.predictions, l.positives, l.auc, l.brier,
       l.mean_score, l.observed_rate, l.evaluated_at
FROM customer_analyzer.live_metrics l
JOIN customer_analyzer.models m ON m.id = l.model_id;

COMMENT ON VIEW customer_analyzer.user_overview IS
    'One row per user of the feature store, for lists and BI tools: segment in the serving segmentation, newest logged churn and purchase scores, when last seen, spend, purchases and events.';
COMMENT ON FUNCTION customer_analyzer.user_predictions(bigint, integer) IS
    'Both scores of one user, each from the model that serves the user (label, model, A/B arm, the features'' as_of), with the top reasons of each as JSON; one row per deployed task.';
COMMENT ON FUNCTION customer_analyzer.recent_events(bigint, integer) IS
    'A user''s newest events (at most n, up to 1,000) from the configured events table, newest first; future and infinite timestamps are left out as the features leave them out.';
COMMENT ON FUNCTION customer_analyzer.segment_map(integer) IS
    'A stable sample of users of the serving segmentation with their segment, days since last activity (since registration when never active) and spend: a recency x monetary picture of the segments.';
COMMENT ON VIEW customer_analyzer.segment_transitions IS
    'How users moved between the segments of the segmentation before the serving one (from_segment) and the serving one (to_segment); NULL on one side for users present on the other side only. Empty until there are two segmentations.';
COMMENT ON VIEW customer_analyzer.model_roc IS
    'The holdout ROC curve of each model (at most 101 points, in order; empty for models trained before 0.10.0).';
COMMENT ON VIEW customer_analyzer.weekly_live_metrics IS
    'Live metrics of each model per week of the features'' as_of, over its matured predictions (evaluate_matured()).';

CREATE OR REPLACE FUNCTION customer_analyzer._privileges(kind text)
RETURNS SETOF text LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p FROM (VALUES
        ('reader', 'USAGE ON SCHEMA customer_analyzer'),
        ('reader', 'EXECUTE ON FUNCTION customer_analyzer.predict_churn(bigint)'),
        ('reader', 'EXECUTE ON FUNCTION customer_analyzer.predict_purchase(bigint)'),
        ('reader', 'EXECUTE ON FUNCTION customer_analyzer.predict(text, bigint)'),
        ('reader', 'EXECUTE ON FUNCTION customer_analyzer.explain(text, bigint, integer)'),
        ('reader', 'EXECUTE ON FUNCTION customer_analyzer.segment_of(bigint)'),
        ('reader', 'EXECUTE ON FUNCTION customer_analyzer.user_features(timestamptz)'),
        ('reader', 'EXECUTE ON FUNCTION customer_analyzer.feature_definitions()'),
        ('reader', 'EXECUTE ON FUNCTION customer_analyzer.feature_conventions()'),
        ('reader', 'EXECUTE ON FUNCTION customer_analyzer.drift_report(text)'),
        ('reader', 'EXECUTE ON FUNCTION customer_analyzer.user_predictions(bigint, integer)'),
        ('reader', 'EXECUTE ON FUNCTION customer_analyzer.recent_events(bigint, integer)'),
        ('reader', 'EXECUTE ON FUNCTION customer_analyzer.segment_map(integer)'),
        ('reader', 'SELECT ON customer_analyzer.feature_catalog, customer_analyzer.customer_features,
                    customer_analyzer.deployed_models, customer_analyzer.model_metrics,
                    customer_analyzer.model_calibration, customer_analyzer.model_candidates,
                    customer_analyzer.feature_importance, customer_analyzer.latest_predictions,
                    customer_analyzer.segmentation_quality, customer_analyzer.current_segments,
                    customer_analyzer.ab_tests, customer_analyzer.model_health,
                    customer_analyzer.prediction_outcomes, customer_analyzer.queue_status,
                    customer_analyzer.drift, customer_analyzer.retrain_log,
                    customer_analyzer.user_overview, customer_analyzer.segment_transitions,
                    customer_analyzer.model_roc, customer_analyzer.weekly_live_metrics'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.train(text, text, jsonb, timestamptz)'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.tune(text, text, timestamptz)'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.deploy(bigint)'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.rollback(text)'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.retire_model(bigint, text)'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.refresh_features()'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.refresh_features(bigint)'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.score_all(text, timestamptz)'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.segment_users(text, integer, jsonb)'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.rename_segment(bigint, integer, text)'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.labels(text, timestamptz)'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.training_snapshots(text, timestamptz, jsonb)'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.data_quality(timestamptz)'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.clear_model_cache()'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.cached_models()'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.start_ab_test(text, bigint, double precision)'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.stop_ab_test(text)'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.promote(text)'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.evaluate_matured(text)'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.ab_report(text)'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.prune()'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.forget_user(bigint)'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.retrain(text)'),
        ('operator', 'SELECT ON customer_analyzer.config, customer_analyzer.user_metrics,
                      customer_analyzer.models, customer_analyzer.deployments,
                      customer_analyzer.retired_models, customer_analyzer.predictions,
                      customer_analyzer.segments, customer_analyzer.user_segments,
                      customer_analyzer.experiments, customer_analyzer.matured_predictions,
                      customer_analyzer.model_live, customer_analyzer.live_metrics,
                      customer_analyzer.model_baselines')
    ) AS v(k, p)
    WHERE v.k = kind
$$;

COMMENT ON FUNCTION customer_analyzer.grant_reader(regrole) IS
    'Owner only: lets a role use the schema, predict (predict_*, predict, explain, segment_of, user_predictions), compute user_features() and drift_report(), read recent_events() and segment_map(), and read the views and retrain_log.';

REVOKE EXECUTE ON FUNCTION customer_analyzer.user_predictions(bigint, integer),
    customer_analyzer.recent_events(bigint, integer), customer_analyzer.segment_map(integer) FROM PUBLIC;
