-- customer_analyzer 0.4.0 -> 0.5.0. Released scripts are never edited; the next change
-- ships customer_analyzer--0.5.0--<next>.sql. Run by ALTER EXTENSION customer_analyzer
-- UPDATE after the 0.5.0 build is installed.
--
-- What changed: predictions becomes an append-only log (no primary key: every score the
-- worker and score_all() write is kept, with the A/B arm); prune() trims the logs to
-- customer_analyzer.prediction_retention; forget_user() erases a user; champion/challenger
-- tests (experiments, the ab_tests view, start_ab_test(), stop_ab_test(), promote());
-- outcome tracking (predictions get an id; evaluate_matured() fills matured_predictions,
-- model_live and live_metrics; views prediction_outcomes and model_health; ab_report());
-- the queue_status view.
-- The rescoring worker works on a batch in a few statements.

ALTER TABLE customer_analyzer.predictions
    DROP CONSTRAINT predictions_pkey,
    ADD COLUMN arm text NOT NULL DEFAULT 'champion' CHECK (arm IN ('champion', 'challenger'));
-- every row gets an id, which its outcome refers to
ALTER TABLE customer_analyzer.predictions ADD COLUMN id bigserial PRIMARY KEY;
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.predictions_id_seq', '');
-- appended in time order: a block range index finds what prune() deletes for almost nothing
CREATE INDEX predictions_predicted_at_idx ON customer_analyzer.predictions USING brin (predicted_at);
CREATE OR REPLACE FUNCTION customer_analyzer._append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'models' AND customer_analyzer._purging() THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'customer_analyzer.% is append-only: % is refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'object_not_in_prerequisite_state',
              HINT = CASE TG_TABLE_NAME
                  WHEN 'models' THEN 'Models are kept for history: retire_model(id) takes one out of service, purge_models() removes old ones that never served.'
                  WHEN 'deployments' THEN 'The deployment history is kept: deploy(), rollback() and retire_model() add rows.'
                  WHEN 'predictions' THEN 'The prediction log is never rewritten: prune() deletes old rows, forget_user() a user''s.'
                  ELSE 'Retirements are permanent.' END;
END
$$;
CREATE TRIGGER predictions_are_append_only BEFORE UPDATE ON customer_analyzer.predictions
    FOR EACH STATEMENT EXECUTE FUNCTION customer_analyzer._append_only();
CREATE OR REPLACE VIEW customer_analyzer.latest_predictions AS
SELECT DISTINCT ON (p.task, p.user_id) p.*
FROM customer_analyzer.predictions p
ORDER BY p.task, p.user_id, p.predicted_at DESC, p.as_of DESC;

-- Champion/challenger tests (start_ab_test(), promote(), stop_ab_test()): while one runs,
-- the share of users a hash of their id picks is scored by the challenger. One running
-- test per task; any other change of what serves the task ends it (end_reason says why).
CREATE TABLE customer_analyzer.experiments (
    id bigserial PRIMARY KEY,
    task text NOT NULL CHECK (task IN ('churn', 'purchase')),
    champion_id bigint NOT NULL REFERENCES customer_analyzer.models (id),
    challenger_id bigint NOT NULL REFERENCES customer_analyzer.models (id),
    share double precision NOT NULL CHECK (share > 0 AND share < 1),
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at timestamptz,
    end_reason text,
    CHECK ((ended_at IS NULL) = (end_reason IS NULL))
);
CREATE UNIQUE INDEX experiments_one_running_per_task ON customer_analyzer.experiments (task)
    WHERE ended_at IS NULL;
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.experiments', '');
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.experiments_id_seq', '');

-- Logged predictions whose horizon has passed, with their outcome by the label rule of
-- training (evaluate_matured()). Kept when prune() trims the log, so that live metrics
-- keep their history; forget_user() erases a user's.
CREATE TABLE customer_analyzer.matured_predictions (
    prediction_id bigint PRIMARY KEY,
    task text NOT NULL,
    user_id bigint NOT NULL,
    model_id bigint NOT NULL REFERENCES customer_analyzer.models (id),
    arm text NOT NULL,
    as_of timestamptz NOT NULL,
    predicted_at timestamptz NOT NULL,
    score double precision NOT NULL,
    outcome boolean NOT NULL,
    evaluated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX matured_predictions_task_model_idx ON customer_analyzer.matured_predictions (task, model_id, predicted_at);
CREATE INDEX matured_predictions_user_idx ON customer_analyzer.matured_predictions (user_id);
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.matured_predictions', '');

-- Each model's live metrics over its matured predictions (evaluate_matured()): overall,
-- and per week (Monday) of the features' as_of.
CREATE TABLE customer_analyzer.model_live (
    model_id bigint PRIMARY KEY REFERENCES customer_analyzer.models (id),
    predictions bigint NOT NULL,
    positives bigint NOT NULL,
    auc double precision,
    brier double precision,
    mean_score double precision,
    observed_rate double precision,
    evaluated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.model_live', '');
CREATE TABLE customer_analyzer.live_metrics (
    model_id bigint NOT NULL REFERENCES customer_analyzer.models (id),
    week date NOT NULL,
    predictions bigint NOT NULL,
    positives bigint NOT NULL,
    auc double precision,
    brier double precision,
    mean_score double precision,
    observed_rate double precision,
    evaluated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (model_id, week)
);
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.live_metrics', '');

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

CREATE FUNCTION "prune"() RETURNS TABLE (
	"table_name" TEXT,  /* String */
	"rows_deleted" bigint  /* i64 */
)
STRICT VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'prune_wrapper';

CREATE FUNCTION "forget_user"(
	"user_id" bigint /* Option < i64 > */
) RETURNS TABLE (
	"table_name" TEXT,  /* String */
	"rows_deleted" bigint  /* i64 */
)
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'forget_user_wrapper';

CREATE FUNCTION "start_ab_test"(
	"task" TEXT, /* Option < & str > */
	"challenger_model_id" bigint, /* Option < i64 > */
	"share" double precision DEFAULT 0.1 /* Option < f64 > */
) RETURNS bigint /* Result < i64 > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'start_ab_test_wrapper';

CREATE FUNCTION "stop_ab_test"(
	"task" TEXT /* Option < & str > */
) RETURNS bigint /* Result < i64 > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'stop_ab_test_wrapper';

CREATE FUNCTION "promote"(
	"task" TEXT /* Option < & str > */
) RETURNS bigint /* Result < i64 > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'promote_wrapper';

CREATE FUNCTION "evaluate_matured"(
	"task" TEXT /* Option < & str > */
) RETURNS TABLE (
	"model_id" bigint,  /* i64 */
	"week" date,  /* pgrx :: datum :: Date */
	"predictions" bigint,  /* i64 */
	"positives" bigint,  /* i64 */
	"auc" double precision,  /* Option < f64 > */
	"brier" double precision,  /* Option < f64 > */
	"mean_score" double precision,  /* Option < f64 > */
	"observed_rate" double precision  /* Option < f64 > */
)
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'evaluate_matured_wrapper';

CREATE FUNCTION "ab_report"(
	"task" TEXT /* Option < & str > */
) RETURNS TABLE (
	"arm" TEXT,  /* String */
	"model_id" bigint,  /* i64 */
	"users" bigint,  /* i64 */
	"positives" bigint,  /* i64 */
	"auc" double precision,  /* Option < f64 > */
	"auc_low" double precision,  /* Option < f64 > */
	"auc_high" double precision,  /* Option < f64 > */
	"brier" double precision,  /* Option < f64 > */
	"brier_low" double precision,  /* Option < f64 > */
	"brier_high" double precision,  /* Option < f64 > */
	"positive_rate" double precision,  /* Option < f64 > */
	"positive_rate_low" double precision,  /* Option < f64 > */
	"positive_rate_high" double precision,  /* Option < f64 > */
	"top_decile_lift" double precision,  /* Option < f64 > */
	"lift_low" double precision,  /* Option < f64 > */
	"lift_high" double precision,  /* Option < f64 > */
	"auc_difference" double precision,  /* Option < f64 > */
	"p_value" double precision  /* Option < f64 > */
)
STABLE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ab_report_wrapper';

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
        ('reader', 'SELECT ON customer_analyzer.feature_catalog, customer_analyzer.customer_features,
                    customer_analyzer.deployed_models, customer_analyzer.model_metrics,
                    customer_analyzer.model_calibration, customer_analyzer.model_candidates,
                    customer_analyzer.feature_importance, customer_analyzer.latest_predictions,
                    customer_analyzer.segmentation_quality, customer_analyzer.current_segments,
                    customer_analyzer.ab_tests, customer_analyzer.model_health,
                    customer_analyzer.prediction_outcomes, customer_analyzer.queue_status'),
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
        ('operator', 'SELECT ON customer_analyzer.config, customer_analyzer.user_metrics,
                      customer_analyzer.models, customer_analyzer.deployments,
                      customer_analyzer.retired_models, customer_analyzer.predictions,
                      customer_analyzer.segments, customer_analyzer.user_segments,
                      customer_analyzer.experiments, customer_analyzer.matured_predictions,
                      customer_analyzer.model_live, customer_analyzer.live_metrics')
    ) AS v(k, p)
    WHERE v.k = kind
$$;

COMMENT ON TABLE customer_analyzer.predictions IS
    'The prediction log, append-only: every score the rescoring worker and score_all() wrote, with model, A/B arm and the features'' as_of. predict_*() never writes. prune() trims it to customer_analyzer.prediction_retention, forget_user() erases a user.';
COMMENT ON VIEW customer_analyzer.latest_predictions IS
    'Each user''s newest logged score per task, from the prediction log (the rescoring worker and score_all() write it; each row keeps the as_of of the features it used).';
COMMENT ON FUNCTION customer_analyzer._feature_query(boolean) IS
    'Internal: the set-based feature query over the configured tables ($1 = as_of, $2 = an array of user ids when one_user).';
COMMENT ON TABLE customer_analyzer.experiments IS
    'Champion/challenger tests, one row each: the serving model when it started, the challenger, the share of users (by a hash of their id) the challenger scores, and when and why it ended (promoted, stopped, or another change of what serves the task).';
COMMENT ON VIEW customer_analyzer.ab_tests IS
    'Every A/B test with its models, whether it runs, why it ended, and the predictions each arm has logged during it.';
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
COMMENT ON VIEW customer_analyzer.queue_status IS
    'The real-time path at a glance: queue depth and the age of its oldest entry, when the rescoring worker was last seen, users rescored in the last minute and since the worker started, and errors in the last hour.';
COMMENT ON FUNCTION customer_analyzer.evaluate_matured(text) IS
    'Records the outcome of every logged prediction of a task whose horizon has passed (the label rule and population of training, at the prediction''s as_of) and recomputes each model''s live AUC, Brier score, mean score and observed rate, overall and per week. Returns the weekly rows.';
COMMENT ON FUNCTION customer_analyzer.ab_report(text) IS
    'Compares the arms of the running (else the latest) A/B test of a task on matured outcomes, each user once per arm: AUC, Brier score, positive rate and top-decile lift with 95% intervals, and the AUC difference (challenger minus champion) with the p-value of a z test for two independent AUCs (Hanley-McNeil standard errors).';
COMMENT ON FUNCTION customer_analyzer.start_ab_test(text, bigint, double precision) IS
    'Starts a champion/challenger test: from now on the given share of users (chosen by a hash of their id, the same users for the whole test) is scored by the challenger in predict_*, explain, score_all and the rescoring worker, which log the arm. One test per task. Returns the test id.';
COMMENT ON FUNCTION customer_analyzer.stop_ab_test(text) IS
    'Ends the running A/B test of a task; the serving model goes on serving every user. Returns the test id.';
COMMENT ON FUNCTION customer_analyzer.promote(text) IS
    'Deploys the running A/B test''s challenger for every user and ends the test. Returns the challenger''s id.';
COMMENT ON FUNCTION customer_analyzer.prune() IS
    'Deletes the rows of the prediction log, the rescoring queue and worker_errors older than customer_analyzer.prediction_retention (the rescoring worker does it every few minutes). Returns the rows deleted per table.';
COMMENT ON FUNCTION customer_analyzer.forget_user(bigint) IS
    'Erases everything the extension holds about a user (features, predictions and their outcomes, segment assignments, queue entries, errors), for an erasure request; the shop''s own tables are left to the shop. Returns the rows deleted per table.';
COMMENT ON FUNCTION customer_analyzer.grant_operator(regrole) IS
    'Owner only: a reader that may also train, tune, deploy, roll back, retire, run A/B tests, refresh, score, segment, prune, forget users and read the tables.';
REVOKE EXECUTE ON FUNCTION customer_analyzer.prune(), customer_analyzer.forget_user(bigint),
    customer_analyzer.start_ab_test(text, bigint, double precision),
    customer_analyzer.stop_ab_test(text), customer_analyzer.promote(text),
    customer_analyzer.evaluate_matured(text), customer_analyzer.ab_report(text) FROM PUBLIC;
