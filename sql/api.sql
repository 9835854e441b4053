-- customer_analyzer: the SQL surface written in SQL (finalize: after every Rust function).

COMMENT ON SCHEMA customer_analyzer IS
    'customer_analyzer: customer features, churn and purchase models and segmentation for an online shop.';

CREATE FUNCTION customer_analyzer.configure(
    users regclass DEFAULT pg_catalog.to_regclass('public.users'),
    events regclass DEFAULT pg_catalog.to_regclass('public.events'),
    products regclass DEFAULT pg_catalog.to_regclass('public.products'))
RETURNS jsonb LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT customer_analyzer._configure(users::oid, events::oid, products::oid) $$;

CREATE FUNCTION customer_analyzer.user_features(as_of timestamptz DEFAULT now())
RETURNS SETOF customer_analyzer.feature_row
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
    query text;
    caller_work_mem text := current_setting('work_mem');
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
    query := customer_analyzer._feature_query(false);   -- also loads the library and its settings
    PERFORM set_config('work_mem', current_setting('customer_analyzer.feature_work_mem'), true);
    RETURN QUERY EXECUTE query USING as_of;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM set_config('work_mem', caller_work_mem, true);
    IF n = 0 THEN
        RAISE NOTICE 'customer_analyzer: no user registered before %, so there are no features', as_of;
    END IF;
END
$$;

CREATE FUNCTION customer_analyzer.refresh_features()
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t timestamptz := now();
    n bigint;
    caller_work_mem text := current_setting('work_mem');
BEGIN
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION 'refresh_features() writes, and this server is a read-only standby'
            USING ERRCODE = 'read_only_sql_transaction',
                  HINT = 'Run it on the primary; its results reach the standbys by replication. Standbys answer predict_churn(), predict_purchase(), explain(), segment_of() and the views.';
    END IF;
    -- one bulk refresh at a time: a second waits, then replaces the first one's rows
    PERFORM pg_advisory_xact_lock(17217, 10);
    PERFORM customer_analyzer._feature_query(false);   -- loads the library and its settings
    PERFORM set_config('work_mem', current_setting('customer_analyzer.feature_work_mem'), true);
    n := customer_analyzer._refresh_store(t);
    PERFORM set_config('work_mem', caller_work_mem, true);
    -- the data rules' report reads every event: after full refreshes only
    IF (SELECT mode FROM customer_analyzer.refresh_state) = 'full' THEN
        PERFORM customer_analyzer._notice_data_quality(t);
    END IF;
    RETURN n;
END
$$;

CREATE VIEW customer_analyzer.feature_catalog AS
SELECT position, name, feature_group, sql_type, unit, description
FROM customer_analyzer.feature_definitions();

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

COMMENT ON TABLE customer_analyzer.source_version IS
    'Moves when the configuration or a table, view or type definition may have changed; backends re-check the source tables then.';
COMMENT ON FUNCTION customer_analyzer._sources_may_have_changed() IS
    'Internal: the event trigger that moves source_version after DDL on tables, views and types (never fails the DDL).';
COMMENT ON EVENT TRIGGER customer_analyzer_ddl IS 'Moves customer_analyzer.source_version after DDL on tables, views and types.';
COMMENT ON EVENT TRIGGER customer_analyzer_drop IS 'Moves customer_analyzer.source_version after a table, view or type is dropped.';
COMMENT ON TABLE customer_analyzer.config IS
    'Which of the shop''s tables customer_analyzer reads (written by configure(); no row means public.users, public.events, public.products).';
COMMENT ON TYPE customer_analyzer.feature_row IS
    'One user''s features: user_id, then every feature of feature_catalog in order.';
COMMENT ON TABLE customer_analyzer.feature_store IS
    'Internal: each user''s features as computed from their events as of as_of, with the times the time-relative features come from; read it through user_metrics.';
COMMENT ON VIEW customer_analyzer.user_metrics IS
    'The feature store: each user''s latest features as of the last refresh_features() (or the later time one user''s row was recomputed), with the activity times they come from; refreshed_at is when the row was last written (a refresh that finds nothing changed for a user carries the row to its as_of without writing it).';
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
    'Internal: the set-based feature query over the configured tables ($1 = as_of, $2 = an array of user ids when one_user).';
COMMENT ON FUNCTION customer_analyzer.refresh_features() IS
    'Brings every user''s features to now() in user_metrics: after an earlier refresh, reads only the users whose events changed or crossed a window''s edge and carries the other rows to now() unwritten (refresh_state says which it did); returns the number of users. A full refresh raises a NOTICE listing rows set aside by the data rules.';
COMMENT ON FUNCTION customer_analyzer._refresh_store(timestamptz) IS
    'Internal: refresh_features() as of a given time, under its lock (full or incremental; see refresh_state).';
COMMENT ON TABLE customer_analyzer.refresh_state IS
    'The last refresh_features(): as of when, full or incremental (and why full), users read from their events and rows moved in time, and the basis the next incremental refresh must share.';
COMMENT ON FUNCTION customer_analyzer.refresh_features(bigint) IS
    'Recomputes one user''s features as of now() into the feature store (read through user_metrics) through an index; false when the user registered after now().';
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

-- Models, deployments and predictions ------------------------------------------------

CREATE VIEW customer_analyzer.deployed_models AS
SELECT DISTINCT ON (d.task)
       d.task, d.model_id, m.algorithm, d.deployed_at, d.reason,
       (m.metrics -> 'holdout' ->> 'auc')::float8 AS holdout_auc
FROM customer_analyzer.deployments d
JOIN customer_analyzer.models m ON m.id = d.model_id
ORDER BY d.task, d.id DESC;

CREATE VIEW customer_analyzer.model_metrics AS
SELECT m.id AS model_id, m.task, m.algorithm, m.created_at, m.trained_as_of,
       (m.metrics -> 'holdout' ->> 'auc')::float8 AS auc,
       (m.metrics -> 'holdout' ->> 'f1')::float8 AS f1,
       (m.metrics -> 'holdout' ->> 'precision')::float8 AS precision,
       (m.metrics -> 'holdout' ->> 'recall')::float8 AS recall,
       (m.metrics -> 'holdout' ->> 'brier')::float8 AS brier,
       (m.metrics -> 'holdout' ->> 'log_loss')::float8 AS log_loss,
       (m.metrics -> 'holdout' ->> 'threshold')::float8 AS threshold,
       (m.metrics -> 'holdout' ->> 'rows')::bigint AS holdout_rows,
       (m.metrics ->> 'train_rows')::bigint AS train_rows,
       m.size_bytes,
       d.model_id IS NOT NULL AS deployed,
       (m.metrics ->> 'holdout_brier_uncalibrated')::float8 AS brier_uncalibrated,
       (m.metrics ->> 'validation_rows')::bigint AS validation_rows,
       (m.metrics ->> 'refit_rows')::bigint AS refit_rows
FROM customer_analyzer.models m
LEFT JOIN customer_analyzer.deployed_models d ON d.model_id = m.id;

CREATE VIEW customer_analyzer.model_calibration AS
SELECT m.id AS model_id, (b ->> 'decile')::integer AS decile,
       (b ->> 'mean_predicted')::float8 AS mean_predicted,
       (b ->> 'observed_rate')::float8 AS observed_rate,
       (b ->> 'users')::bigint AS users
FROM customer_analyzer.models m,
     jsonb_array_elements(CASE jsonb_typeof(m.metrics -> 'reliability')
                          WHEN 'array' THEN m.metrics -> 'reliability' ELSE '[]' END) AS b;

CREATE VIEW customer_analyzer.model_candidates AS
SELECT m.id AS model_id, m.task, c.rank AS tried, c.item ->> 'algorithm' AS algorithm,
       (c.item ->> 'validation_auc')::float8 AS validation_auc,
       (c.item ->> 'rounds')::integer AS rounds,
       c.item -> 'params' AS params,
       (c.item ->> 'chosen')::boolean AS chosen
FROM customer_analyzer.models m,
     jsonb_array_elements(CASE jsonb_typeof(m.metrics -> 'candidates')
                          WHEN 'array' THEN m.metrics -> 'candidates' ELSE '[]' END)
         WITH ORDINALITY AS c(item, rank);

CREATE VIEW customer_analyzer.feature_importance AS
SELECT d.task, d.model_id, d.algorithm, i.rank, i.item ->> 0 AS feature,
       (i.item ->> 1)::float8 AS importance
FROM customer_analyzer.deployed_models d
JOIN customer_analyzer.models m ON m.id = d.model_id,
     jsonb_array_elements(m.metrics -> 'importance') WITH ORDINALITY AS i(item, rank);

CREATE VIEW customer_analyzer.latest_predictions AS
SELECT p.*
FROM customer_analyzer.latest_scores l
JOIN customer_analyzer.predictions p ON p.id = l.prediction_id;

CREATE VIEW customer_analyzer.ab_tests AS
SELECT x.id AS test_id, x.task, x.champion_id, x.challenger_id, x.share,
       x.started_at, x.ended_at, x.ended_at IS NULL AS running, x.end_reason,
       ch.algorithm AS champion_algorithm, cl.algorithm AS challenger_algorithm,
       (SELECT count(*) FROM customer_analyzer.predictions p
        WHERE p.task = x.task AND p.arm = 'champion' AND p.model_id = x.champion_id
          AND p.predicted_at >= x.started_at AND p.predicted_at < coalesce(x.ended_at, 'infinity')) AS champion_predictions,
       (SELECT count(*) FROM customer_analyzer.predictions p
        WHERE p.task = x.task AND p.arm = 'challenger' AND p.model_id = x.challenger_id
          AND p.predicted_at >= x.started_at AND p.predicted_at < coalesce(x.ended_at, 'infinity')) AS challenger_predictions
FROM customer_analyzer.experiments x
JOIN customer_analyzer.models ch ON ch.id = x.champion_id
JOIN customer_analyzer.models cl ON cl.id = x.challenger_id;

CREATE VIEW customer_analyzer.prediction_outcomes AS
SELECT o.prediction_id, o.task, o.user_id, o.model_id, o.arm, o.as_of,
       date_trunc('week', o.as_of)::date AS week, o.predicted_at, o.score, o.outcome,
       (o.score - o.outcome::int) ^ 2 AS squared_error, o.evaluated_at
FROM customer_analyzer.matured_predictions o;

CREATE VIEW customer_analyzer.model_health AS
WITH serving AS (
    SELECT d.task, d.model_id, 'champion'::text AS role FROM customer_analyzer.deployed_models d
    WHERE d.task IN ('churn', 'purchase')
    UNION ALL
    SELECT x.task, x.challenger_id, 'challenger' FROM customer_analyzer.experiments x
    WHERE x.ended_at IS NULL
)
SELECT s.task, s.model_id, s.role, m.algorithm,
       (m.metrics -> 'holdout' ->> 'auc')::float8 AS holdout_auc,
       (m.metrics -> 'holdout' ->> 'brier')::float8 AS holdout_brier,
       l.predictions AS live_predictions, l.positives AS live_positives,
       l.auc AS live_auc, l.brier AS live_brier,
       l.auc - (m.metrics -> 'holdout' ->> 'auc')::float8 AS auc_change,
       l.mean_score AS live_mean_score, l.observed_rate AS live_observed_rate,
       w.week AS last_week, w.auc AS last_week_auc, l.evaluated_at
FROM serving s
JOIN customer_analyzer.models m ON m.id = s.model_id
LEFT JOIN customer_analyzer.model_live l ON l.model_id = s.model_id
LEFT JOIN LATERAL (SELECT lm.week, lm.auc FROM customer_analyzer.live_metrics lm
                   WHERE lm.model_id = s.model_id ORDER BY lm.week DESC LIMIT 1) w ON true;

CREATE VIEW customer_analyzer.queue_status AS
SELECT (SELECT count(*) FROM customer_analyzer.rescore_queue) AS depth,
       (SELECT now() - min(first_enqueued_at) FROM customer_analyzer.rescore_queue) AS oldest_item_age,
       w.pid AS worker_pid, w.last_seen AS worker_last_seen,
       now() - w.last_seen AS worker_silent_for,
       (SELECT count(DISTINCT p.user_id) FROM customer_analyzer.predictions p
        WHERE p.predicted_at > now() - interval '1 minute') AS rescored_last_minute,
       w.users_rescored AS rescored_since_start, w.started_at AS worker_started_at,
       (SELECT count(*) FROM customer_analyzer.worker_errors e
        WHERE e.occurred_at > now() - interval '1 hour') AS errors_last_hour
FROM (SELECT 1) one
LEFT JOIN customer_analyzer.worker_status w ON true;

CREATE VIEW customer_analyzer.drift AS
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

COMMENT ON TABLE customer_analyzer.models IS
    'Trained models, one append-only row each: task, algorithm, parameters, preprocessing, feature names and catalog version, training window, metrics (holdout, CV, split, importance) and the model blob.';
COMMENT ON TABLE customer_analyzer.deployments IS
    'Deployment history, append-only; the newest row per task names the model that serves it, previous_id the deployment it replaced. Written by train(), deploy(), rollback(), retire_model() and segment_users() inside the caller''s transaction.';
COMMENT ON TABLE customer_analyzer.predictions IS
    'The prediction log, append-only: every score the rescoring worker and score_all() wrote, with model, A/B arm and the features'' as_of. predict_*() never writes. prune() trims it to customer_analyzer.prediction_retention, forget_user() erases a user.';
COMMENT ON TABLE customer_analyzer.latest_scores IS
    'Each user''s newest prediction log row per task (its id and score), written with the log; latest_predictions reads the rows through it.';
COMMENT ON TABLE customer_analyzer.retired_models IS
    'Models taken out of service by retire_model(): never deployed again, kept for history. Append-only.';
COMMENT ON FUNCTION customer_analyzer._append_only() IS
    'Internal: keeps models, deployments and retired_models append-only (UPDATE, DELETE, TRUNCATE raise 55000), so that the per-backend cache, keyed by model id, is always right and history is never rewritten.';
COMMENT ON FUNCTION customer_analyzer._purging() IS 'Internal: true while purge_models() deletes.';
COMMENT ON FUNCTION customer_analyzer.retire_model(bigint, text) IS
    'Takes a model out of service for good (kept for history). When it serves its task, the task goes back to the model before it. Returns the model serving the task afterwards.';
COMMENT ON FUNCTION customer_analyzer.purge_models(interval, integer) IS
    'Owner only: deletes models older than older_than that never served, are not retired, have no stored predictions and are not among the newest keep_last of their task. Returns what it removed.';
COMMENT ON VIEW customer_analyzer.deployed_models IS 'The model serving each task, with its holdout AUC.';
COMMENT ON VIEW customer_analyzer.model_metrics IS
    'Holdout metrics of every model, for comparing and for BI tools: those of the fit on the training snapshots, with calibrated scores and the threshold chosen on the validation snapshot (brier_uncalibrated: before calibration). The serving model is refitted on refit_rows rows of the newest matured snapshots.';
COMMENT ON VIEW customer_analyzer.model_calibration IS
    'Reliability table of each model on its holdout: for each decile of calibrated scores, the mean predicted probability, the observed rate and the number of users. Well calibrated when the two rates agree.';
COMMENT ON VIEW customer_analyzer.model_candidates IS
    'Every algorithm or setting train() tried for a model (three for auto), in order, with its AUC on the validation snapshot, the boosting rounds early stopping kept, and which one was chosen.';
COMMENT ON VIEW customer_analyzer.feature_importance IS
    'Global importance of the features of each deployed model: gain share for trees, coefficient for the linear model (scaled inputs).';
COMMENT ON VIEW customer_analyzer.latest_predictions IS
    'Each user''s newest logged score per task: the prediction log''s row that latest_scores names (the rescoring worker and score_all() write both; each row keeps the as_of of the features it used).';
COMMENT ON FUNCTION customer_analyzer.train(text, text, jsonb, timestamptz) IS
    'Trains a churn (no event in 60 days) or purchase (a purchase within 30 days) model on point-in-time snapshots: algorithm auto (the default) fits gbm, random forest and logistic and keeps the best on a validation snapshot; scores are calibrated there, measured on a holdout a horizon later, and the serving model is refitted on the newest matured snapshots. Stores it and deploys it when it beats the deployed one. Returns id, chosen algorithm and holdout metrics.';
COMMENT ON FUNCTION customer_analyzer.tune(text, text, timestamptz) IS
    'train() with hyperparameter search over the documented space (each algorithm''s for auto), scored on the validation snapshot.';
COMMENT ON FUNCTION customer_analyzer.labels(text, timestamptz) IS
    'The task''s population as of a time with each user''s label (the horizon must have passed).';
COMMENT ON FUNCTION customer_analyzer.deploy(bigint) IS
    'Makes a model serve its task (inside the caller''s transaction); refuses retired models and models of another feature catalog version. Returns the task.';
COMMENT ON FUNCTION customer_analyzer.rollback(text) IS
    'Returns a task to the model that served before the current one, skipping retired models; each call goes one deployment further back. Returns the model id.';
COMMENT ON FUNCTION customer_analyzer.clear_model_cache() IS 'Empties this backend''s model cache; returns how many models it held.';
COMMENT ON FUNCTION customer_analyzer.cached_models() IS 'Ids of the models this backend has decoded and keeps.';
COMMENT ON FUNCTION customer_analyzer.predict_churn(bigint) IS 'Probability that the user has no event in the next 60 days, from the deployed churn model.';
COMMENT ON FUNCTION customer_analyzer.predict_purchase(bigint) IS 'Probability that the user buys in the next 30 days, from the deployed purchase model.';
COMMENT ON FUNCTION customer_analyzer.predict(text, bigint) IS 'Score, label at the model''s threshold, model id and the as_of of the features used.';
COMMENT ON FUNCTION customer_analyzer.explain(text, bigint, integer) IS
    'The features that pushed a user''s score up or down most: Shapley values for trees, coefficient x scaled value for the linear model.';
COMMENT ON FUNCTION customer_analyzer.score_all(text, timestamptz) IS
    'Scores every user into predictions: the feature store when as_of is NULL, point-in-time features otherwise. Returns the number of users.';
COMMENT ON FUNCTION customer_analyzer.training_snapshots(text, timestamptz, jsonb) IS
    'The snapshot times train() uses for a task with their roles (train, validation, holdout, refit; each a label horizon after the one before); join labels() and user_features() on them to export a training set.';

-- Segmentation -------------------------------------------------------------------------

CREATE VIEW customer_analyzer.segmentation_quality AS
SELECT m.id AS segmentation_id, m.algorithm, m.created_at,
       jsonb_array_length(m.metrics -> 'sizes') AS segments,
       (m.metrics ->> 'silhouette')::float8 AS silhouette,
       (m.metrics ->> 'silhouette_sample')::bigint AS silhouette_sample,
       (m.metrics ->> 'inertia')::float8 AS inertia,
       (m.metrics ->> 'davies_bouldin')::float8 AS davies_bouldin,
       m.metrics -> 'sizes' AS sizes,
       (m.metrics ->> 'clustered_sample')::bigint AS clustered_sample,
       (m.metrics ->> 'eps')::float8 AS eps,
       m.metrics -> 'k_scores' AS k_scores,
       d.model_id IS NOT NULL AS serving,
       coalesce(m.metrics ->> 'view', 'behaviour') AS view,
       m.metrics -> 'view_silhouettes' AS view_silhouettes
FROM customer_analyzer.models m
LEFT JOIN customer_analyzer.deployed_models d ON d.model_id = m.id
WHERE m.task = 'segmentation';

CREATE VIEW customer_analyzer.current_segments AS
SELECT s.*
FROM customer_analyzer.segments s
JOIN customer_analyzer.deployed_models d ON d.task = 'segmentation' AND d.model_id = s.segmentation_id;

COMMENT ON TABLE customer_analyzer.segments IS
    'Segments of every segmentation: name (renamable), description, size, share, mean recency (days since last activity), frequency (purchases), monetary (total spent) and churn rate (mean churn probability where a churn model serves).';
COMMENT ON TABLE customer_analyzer.user_segments IS 'Every user''s segment and distance to its centre, per segmentation.';
COMMENT ON VIEW customer_analyzer.segmentation_quality IS
    'Quality of each segmentation: silhouette (on a sample, size stated), inertia, Davies-Bouldin, segment sizes, the sample the quadratic algorithms clustered, eps, the silhouette of each k tried, the view clustered (rfm or behaviour) and the silhouette of each view tried.';
COMMENT ON VIEW customer_analyzer.current_segments IS 'The segments of the segmentation that serves segment_of().';
COMMENT ON FUNCTION customer_analyzer.segment_users(text, integer, jsonb) IS
    'Clusters every user of the feature store (kmeans, dbscan or agglomerative) in the view params names (rfm: recency, frequency, monetary value and tenure; behaviour: every numeric feature) or, by default, in the view that separates better; stores the segmentation as a model row, writes segments and user_segments, and returns one row per named segment.';
COMMENT ON FUNCTION customer_analyzer.segment_of(bigint) IS
    'One user''s segment in the serving segmentation, assigned from the stored centres without re-clustering.';
COMMENT ON FUNCTION customer_analyzer.rename_segment(bigint, integer, text) IS 'Gives a segment a name of your choosing.';

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

-- Privileges ---------------------------------------------------------------------------
-- Nothing is open to PUBLIC. Two documented ways in, given to existing roles by the owner:
-- a reader predicts and reads; an operator also trains, deploys, refreshes and segments.
-- The real-time trigger function (src/realtime.rs puts it on the events table). It only
-- queues users; a failure is recorded and swallowed so that the shop's write succeeds,
-- and with `customer_analyzer.realtime = off` it queues nothing and only notes that in
-- worker_errors (one row a statement: the next refresh_features() then reads every
-- user). Users are queued in id
-- order, so that concurrent writers lock queue rows in the same order (no deadlocks).
CREATE FUNCTION customer_analyzer._enqueue_changed_users()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF lower(coalesce(current_setting('customer_analyzer.realtime', true), 'on'))
           IN ('off', 'false', 'no', '0') THEN
        -- nothing is queued: a row here makes the next refresh_features() read everyone
        BEGIN
            INSERT INTO customer_analyzer.worker_errors (source, sqlstate, message)
            VALUES ('trigger', '00000', format('%s on %s: not queued, customer_analyzer.realtime is off',
                                                TG_OP, TG_TABLE_NAME));
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'customer_analyzer could not record an unqueued change: %', SQLERRM;
        END;
        RETURN NULL;
    END IF;
    BEGIN
        -- earliest_event_at tells the worker which of the user's events it may already
        -- hold: an insert's earliest created_at (NULL times are never read: 'infinity'),
        -- and '-infinity' for an update or delete, after which it reads them all
        IF TG_OP = 'INSERT' THEN
            INSERT INTO customer_analyzer.rescore_queue AS q (user_id, last_event_at, earliest_event_at)
            SELECT e.user_id::bigint, max(e.created_at::timestamptz),
                   coalesce(min(e.created_at::timestamptz), 'infinity')
            FROM customer_analyzer_new e WHERE e.user_id IS NOT NULL
            GROUP BY 1 ORDER BY 1
            ON CONFLICT (user_id) DO UPDATE
            SET generation = q.generation + 1,
                last_event_at = greatest(q.last_event_at, EXCLUDED.last_event_at),
                earliest_event_at = least(q.earliest_event_at, EXCLUDED.earliest_event_at);
        ELSIF TG_OP = 'UPDATE' THEN
            INSERT INTO customer_analyzer.rescore_queue AS q (user_id, last_event_at, earliest_event_at)
            SELECT e.user_id, max(e.at), '-infinity'
            FROM (SELECT user_id::bigint, created_at::timestamptz AS at FROM customer_analyzer_new
                  UNION ALL
                  SELECT user_id::bigint, created_at::timestamptz FROM customer_analyzer_old) e
            WHERE e.user_id IS NOT NULL
            GROUP BY 1 ORDER BY 1
            ON CONFLICT (user_id) DO UPDATE
            SET generation = q.generation + 1,
                last_event_at = greatest(q.last_event_at, EXCLUDED.last_event_at),
                earliest_event_at = '-infinity';
        ELSE
            INSERT INTO customer_analyzer.rescore_queue AS q (user_id, last_event_at, earliest_event_at)
            SELECT e.user_id::bigint, max(e.created_at::timestamptz), '-infinity'
            FROM customer_analyzer_old e WHERE e.user_id IS NOT NULL
            GROUP BY 1 ORDER BY 1
            ON CONFLICT (user_id) DO UPDATE
            SET generation = q.generation + 1,
                last_event_at = greatest(q.last_event_at, EXCLUDED.last_event_at),
                earliest_event_at = '-infinity';
        END IF;
    EXCEPTION WHEN OTHERS THEN
        BEGIN
            INSERT INTO customer_analyzer.worker_errors (source, sqlstate, message)
            VALUES ('trigger', SQLSTATE, SQLERRM);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'customer_analyzer could not queue users for rescoring: %', SQLERRM;
        END;
    END;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION customer_analyzer._enqueue_changed_users() IS
    'Internal: the real-time trigger on the events table; queues the users whose events changed into rescore_queue.';
COMMENT ON TABLE customer_analyzer.rescore_queue IS
    'Users whose events changed, waiting for the rescoring worker (one row per user; generation counts the changes since it was queued; earliest_event_at is the earliest inserted event''s time, -infinity after an update or delete).';
COMMENT ON TABLE customer_analyzer.worker_errors IS
    'Failures of the real-time path: the trigger''s (swallowed so the shop''s write succeeds) and the worker''s, per user, with the SQLSTATE.';
COMMENT ON TABLE customer_analyzer.experiments IS
    'Champion/challenger tests, one row each: the serving model when it started, the challenger, the share of users (by a hash of their id) the challenger scores, and when and why it ended (promoted, stopped, or another change of what serves the task).';
COMMENT ON VIEW customer_analyzer.ab_tests IS
    'Every A/B test with its models, whether it runs, why it ended, and the predictions each arm has logged during it.';
COMMENT ON FUNCTION customer_analyzer.start_ab_test(text, bigint, double precision) IS
    'Starts a champion/challenger test: from now on the given share of users (chosen by a hash of their id, the same users for the whole test) is scored by the challenger in predict_*, explain, score_all and the rescoring worker, which log the arm. One test per task. Returns the test id.';
COMMENT ON FUNCTION customer_analyzer.stop_ab_test(text) IS
    'Ends the running A/B test of a task; the serving model goes on serving every user. Returns the test id.';
COMMENT ON FUNCTION customer_analyzer.promote(text) IS
    'Deploys the running A/B test''s challenger for every user and ends the test. Returns the challenger''s id.';
COMMENT ON TABLE customer_analyzer.matured_predictions IS
    'Logged predictions whose horizon has passed, with their outcome by the label rule of training (written by evaluate_matured(); kept when prune() trims the log).';
COMMENT ON TABLE customer_analyzer.model_live IS
    'Each model''s live metrics over all its matured predictions (evaluate_matured()).';
COMMENT ON TABLE customer_analyzer.live_metrics IS
    'Each model''s live metrics per week (Monday) of the features'' as_of (evaluate_matured()).';
COMMENT ON VIEW customer_analyzer.prediction_outcomes IS
    'Every matured prediction with its outcome, week and squared error: how the scores did.';
COMMENT ON VIEW customer_analyzer.model_health IS
    'Every serving model (and the challenger of a running A/B test) with its holdout metrics beside its live ones (as of the last evaluate_matured()) and its newest week.';
COMMENT ON FUNCTION customer_analyzer.evaluate_matured(text) IS
    'Records the outcome of every logged prediction of a task whose horizon has passed (the label rule and population of training, at the prediction''s as_of) and recomputes each model''s live AUC, Brier score, mean score and observed rate, overall and per week. Returns the weekly rows.';
COMMENT ON FUNCTION customer_analyzer.ab_report(text) IS
    'Compares the arms of the running (else the latest) A/B test of a task on matured outcomes, each user once per arm: AUC, Brier score, positive rate and top-decile lift with 95% intervals, and the AUC difference (challenger minus champion) with the p-value of a z test for two independent AUCs (Hanley-McNeil standard errors).';
COMMENT ON VIEW customer_analyzer.queue_status IS
    'The real-time path at a glance: queue depth and the age of its oldest entry, when the rescoring worker was last seen, users rescored in the last minute and since the worker started, and errors in the last hour.';
COMMENT ON FUNCTION customer_analyzer.prune() IS
    'Deletes the rows of the prediction log, the rescoring queue, worker_errors and retrain_log older than customer_analyzer.prediction_retention (the rescoring worker does it every few minutes). Returns the rows deleted per table.';
COMMENT ON FUNCTION customer_analyzer.forget_user(bigint) IS
    'Erases everything the extension holds about a user (features, predictions and their outcomes, segment assignments, queue entries, errors), for an erasure request; the shop''s own tables are left to the shop. Returns the rows deleted per table.';
COMMENT ON TABLE customer_analyzer.model_baselines IS
    'What each churn or purchase model was trained on, for drift_report(): percentiles, missing share and category shares of every feature, and of the model''s scores, over the task''s population at the end of its training data.';
COMMENT ON FUNCTION customer_analyzer.drift_report(text) IS
    'How far the serving model''s inputs and scores moved since training: for its scores and every feature, the population stability index (reference deciles as bins, missing as a bin), the Kolmogorov-Smirnov statistic (numeric columns), the missing share then and now, and a level: major at PSI >= 0.25, KS >= 0.2 or a change of 0.2 in the missing share; moderate at 0.1, 0.1 and 0.1.';
COMMENT ON VIEW customer_analyzer.drift IS
    'drift_report() of every deployed churn and purchase model that has a baseline and a non-empty population in the feature store, computed when read (about 1.5 s per 100,000 users).';
COMMENT ON TABLE customer_analyzer.retrain_log IS
    'Every retrain: trigger (call: retrain() by someone or pg_cron; schedule, drift, live_auc: the retraining worker), why, the model serving before, the new model, whether it was deployed and both holdout AUCs; sqlstate and message when the worker''s attempt failed. Pruned with the prediction log.';
COMMENT ON FUNCTION customer_analyzer.retrain(text) IS
    'Trains the serving model''s recipe again (its algorithm choice, auto choosing again, and its parameters) on fresh data, compares the new model with the serving one on the new holdout and deploys it only if it is better. One retrain per task at a time (another call fails with 55P03). Recorded in retrain_log.';
COMMENT ON TABLE customer_analyzer.worker_status IS
    'The rescoring worker''s heartbeat: its pid, when it started and was last seen, and how many users it has rescored.';

-- Functions that reach the shop's tables or write the extension's run as SECURITY
-- DEFINER with a pinned search_path, so the roles need no rights on those tables.

CREATE FUNCTION customer_analyzer._privileges(kind text)
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

CREATE FUNCTION customer_analyzer._apply_privileges(verb text, kind text, role regrole)
RETURNS void LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p text;
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass an existing role, e.g. ''analyst''.';
    END IF;
    FOR p IN SELECT customer_analyzer._privileges(kind) LOOP
        IF verb = 'GRANT' THEN
            EXECUTE format('GRANT %s TO %s', p, role);
        ELSE
            EXECUTE format('REVOKE %s FROM %s', p, role);
        END IF;
    END LOOP;
END
$$;

CREATE FUNCTION customer_analyzer.grant_reader(role regrole) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT customer_analyzer._apply_privileges('GRANT', 'reader', role) $$;

CREATE FUNCTION customer_analyzer.grant_operator(role regrole) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT customer_analyzer._apply_privileges('GRANT', 'reader', role);
    SELECT customer_analyzer._apply_privileges('GRANT', 'operator', role);
$$;

CREATE FUNCTION customer_analyzer.revoke_reader(role regrole) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT customer_analyzer._apply_privileges('REVOKE', 'operator', role);
    SELECT customer_analyzer._apply_privileges('REVOKE', 'reader', role);
$$;

CREATE FUNCTION customer_analyzer.revoke_operator(role regrole) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT customer_analyzer._apply_privileges('REVOKE', 'operator', role) $$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA customer_analyzer FROM PUBLIC;

COMMENT ON FUNCTION customer_analyzer._privileges(text) IS
    'Internal: the privileges of the reader and operator ways in (one home for both lists).';
COMMENT ON FUNCTION customer_analyzer._apply_privileges(text, text, regrole) IS
    'Internal: grants or revokes one list of _privileges().';
COMMENT ON FUNCTION customer_analyzer.grant_reader(regrole) IS
    'Owner only: lets a role use the schema, predict (predict_*, predict, explain, segment_of, user_predictions), compute user_features() and drift_report(), read recent_events() and segment_map(), and read the views and retrain_log.';
COMMENT ON FUNCTION customer_analyzer.grant_operator(regrole) IS
    'Owner only: a reader that may also train, tune, retrain, deploy, roll back, retire, run A/B tests, refresh, score, segment, prune, forget users and read the tables.';
COMMENT ON FUNCTION customer_analyzer.revoke_reader(regrole) IS 'Owner only: takes every privilege of grant_reader() and grant_operator() back.';
COMMENT ON FUNCTION customer_analyzer.revoke_operator(regrole) IS 'Owner only: takes the privileges of grant_operator() back, leaving the reader''s.';
