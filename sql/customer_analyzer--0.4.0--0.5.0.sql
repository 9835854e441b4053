-- customer_analyzer 0.4.0 -> 0.5.0. Released scripts are never edited; the next change
-- ships customer_analyzer--0.5.0--<next>.sql. Run by ALTER EXTENSION customer_analyzer
-- UPDATE after the 0.5.0 build is installed.
--
-- What changed: predictions becomes an append-only log (no primary key: every score the
-- worker and score_all() write is kept, with the A/B arm); prune() trims the logs to
-- customer_analyzer.prediction_retention; forget_user() erases a user. The rescoring
-- worker works on a batch in a few statements.

ALTER TABLE customer_analyzer.predictions
    DROP CONSTRAINT predictions_pkey,
    ADD COLUMN arm text NOT NULL DEFAULT 'champion' CHECK (arm IN ('champion', 'challenger'));
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
                    customer_analyzer.segmentation_quality, customer_analyzer.current_segments'),
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
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.prune()'),
        ('operator', 'EXECUTE ON FUNCTION customer_analyzer.forget_user(bigint)'),
        ('operator', 'SELECT ON customer_analyzer.config, customer_analyzer.user_metrics,
                      customer_analyzer.models, customer_analyzer.deployments,
                      customer_analyzer.retired_models, customer_analyzer.predictions,
                      customer_analyzer.segments, customer_analyzer.user_segments')
    ) AS v(k, p)
    WHERE v.k = kind
$$;

COMMENT ON TABLE customer_analyzer.predictions IS
    'The prediction log, append-only: every score the rescoring worker and score_all() wrote, with model, A/B arm and the features'' as_of. predict_*() never writes. prune() trims it to customer_analyzer.prediction_retention, forget_user() erases a user.';
COMMENT ON VIEW customer_analyzer.latest_predictions IS
    'Each user''s newest logged score per task, from the prediction log (the rescoring worker and score_all() write it; each row keeps the as_of of the features it used).';
COMMENT ON FUNCTION customer_analyzer._feature_query(boolean) IS
    'Internal: the set-based feature query over the configured tables ($1 = as_of, $2 = an array of user ids when one_user).';
COMMENT ON FUNCTION customer_analyzer.prune() IS
    'Deletes the rows of the prediction log, the rescoring queue and worker_errors older than customer_analyzer.prediction_retention (the rescoring worker does it every few minutes). Returns the rows deleted per table.';
COMMENT ON FUNCTION customer_analyzer.forget_user(bigint) IS
    'Erases everything the extension holds about a user (features, predictions, segment assignments, queue entries, errors), for an erasure request; the shop''s own tables are left to the shop. Returns the rows deleted per table.';
REVOKE EXECUTE ON FUNCTION customer_analyzer.prune(), customer_analyzer.forget_user(bigint) FROM PUBLIC;
