-- customer_analyzer 0.5.0 -> 0.6.0. Released scripts are never edited; the next change
-- ships customer_analyzer--0.6.0--<next>.sql. Run by ALTER EXTENSION customer_analyzer
-- UPDATE after the 0.6.0 build is installed (the background workers wait until then).
--
-- What changed: every new churn or purchase model stores a drift baseline
-- (model_baselines); drift_report() and the drift view compare today's features and
-- scores with it; retrain() and the retraining worker (customer_analyzer.monitor_interval,
-- retrain_interval, retrain_auc_drop) retrain on a schedule, on drift and on falling live
-- AUC, recorded in retrain_log, which prune() trims too. Models trained before 0.6.0 have
-- no baseline until they are retrained.
--
-- Roles granted reader or operator rights before the update get the new objects by
-- running grant_reader() / grant_operator() again.

-- What each churn or purchase model was trained on, for drift_report(): a profile of every
-- feature and of the model's scores over the task's population at the end of its training
-- data (percentiles, missing share, category shares; crates/.../drift.rs). Written with
-- the model; purge_models() removes it with the model.
CREATE TABLE customer_analyzer.model_baselines (
    model_id bigint PRIMARY KEY REFERENCES customer_analyzer.models (id) ON DELETE CASCADE,
    as_of timestamptz NOT NULL,
    users bigint NOT NULL,
    baseline jsonb NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.model_baselines', '');

-- Every retrain (retrain(), the retraining worker, pg_cron): what set it off, what served
-- before and after, and the error when it failed. Pruned with the prediction log.
CREATE TABLE customer_analyzer.retrain_log (
    id bigserial PRIMARY KEY,
    task text NOT NULL CHECK (task IN ('churn', 'purchase')),
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    trigger text NOT NULL CHECK (trigger IN ('call', 'schedule', 'drift', 'live_auc')),
    reason text NOT NULL,
    previous_model_id bigint REFERENCES customer_analyzer.models (id) ON DELETE SET NULL,
    new_model_id bigint REFERENCES customer_analyzer.models (id) ON DELETE SET NULL,
    deployed boolean NOT NULL DEFAULT false,
    previous_auc double precision,
    new_auc double precision,
    sqlstate text,
    message text,
    CHECK ((sqlstate IS NULL) = (message IS NULL))
);
CREATE INDEX retrain_log_task_idx ON customer_analyzer.retrain_log (task, started_at);
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.retrain_log', '');
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.retrain_log_id_seq', '');

CREATE FUNCTION "drift_report"(
	"task" TEXT /* Option < & str > */
) RETURNS TABLE (
	"model_id" bigint,  /* i64 */
	"feature" TEXT,  /* String */
	"kind" TEXT,  /* String */
	"psi" double precision,  /* f64 */
	"ks" double precision,  /* Option < f64 > */
	"missing_then" double precision,  /* f64 */
	"missing_now" double precision,  /* f64 */
	"users_then" bigint,  /* i64 */
	"users_now" bigint,  /* i64 */
	"level" TEXT  /* String */
)
STABLE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'drift_report_wrapper';

CREATE FUNCTION "retrain"(
	"task" TEXT /* Option < & str > */
) RETURNS TABLE (
	"model_id" bigint,  /* i64 */
	"task" TEXT,  /* String */
	"algorithm" TEXT,  /* String */
	"auc" double precision,  /* f64 */
	"brier" double precision,  /* f64 */
	"previous_model_id" bigint,  /* Option < i64 > */
	"previous_auc" double precision,  /* Option < f64 > */
	"deployed" bool  /* bool */
)
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'retrain_wrapper';

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
        ('reader', 'SELECT ON customer_analyzer.feature_catalog, customer_analyzer.customer_features,
                    customer_analyzer.deployed_models, customer_analyzer.model_metrics,
                    customer_analyzer.model_calibration, customer_analyzer.model_candidates,
                    customer_analyzer.feature_importance, customer_analyzer.latest_predictions,
                    customer_analyzer.segmentation_quality, customer_analyzer.current_segments,
                    customer_analyzer.ab_tests, customer_analyzer.model_health,
                    customer_analyzer.prediction_outcomes, customer_analyzer.queue_status,
                    customer_analyzer.drift, customer_analyzer.retrain_log'),
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
COMMENT ON FUNCTION customer_analyzer.prune() IS
    'Deletes the rows of the prediction log, the rescoring queue, worker_errors and retrain_log older than customer_analyzer.prediction_retention (the rescoring worker does it every few minutes). Returns the rows deleted per table.';
COMMENT ON FUNCTION customer_analyzer.grant_reader(regrole) IS
    'Owner only: lets a role use the schema, predict (predict_*, explain, segment_of), compute user_features() and drift_report(), and read the views and retrain_log.';
COMMENT ON FUNCTION customer_analyzer.grant_operator(regrole) IS
    'Owner only: a reader that may also train, tune, retrain, deploy, roll back, retire, run A/B tests, refresh, score, segment, prune, forget users and read the tables.';
REVOKE EXECUTE ON FUNCTION customer_analyzer.drift_report(text), customer_analyzer.retrain(text) FROM PUBLIC;
