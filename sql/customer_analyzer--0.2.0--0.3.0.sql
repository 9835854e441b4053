-- customer_analyzer 0.2.0 -> 0.3.0. Released scripts are never edited; the next change
-- ships customer_analyzer--0.3.0--<next>.sql. Run by ALTER EXTENSION customer_analyzer
-- UPDATE after the 0.3.0 build is installed.
--
-- What changed: train() and tune() default to algorithm 'auto' (gbm, random forest and
-- logistic, the best on a validation snapshot); training snapshots have roles a label
-- horizon apart (training_snapshots() shows train, validation, holdout, refit); scores
-- are calibrated; model_metrics gains the uncalibrated Brier score and the validation and
-- refit row counts; new views model_calibration and model_candidates; segment_users()
-- clusters an RFM or a behaviour view (segmentation_quality gains view and
-- view_silhouettes); the demo shop defaults to 240 days (churn needs three horizons of
-- history). Models stored by 0.2.0 still load and serve (model format 1: no calibration,
-- segmentations of every numeric feature).

CREATE OR REPLACE FUNCTION "train"(
	"task" TEXT, /* Option < & str > */
	"algorithm" TEXT DEFAULT 'auto', /* Option < & str > */
	"params" jsonb DEFAULT '{}', /* Option < JsonB > */
	"as_of" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
) RETURNS TABLE (
	"model_id" bigint,  /* i64 */
	"task" TEXT,  /* String */
	"algorithm" TEXT,  /* String */
	"auc" double precision,  /* f64 */
	"f1" double precision,  /* f64 */
	"precision" double precision,  /* f64 */
	"recall" double precision,  /* f64 */
	"brier" double precision,  /* f64 */
	"deployed" bool  /* bool */
)
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'train_wrapper';

CREATE OR REPLACE FUNCTION "tune"(
	"task" TEXT, /* Option < & str > */
	"algorithm" TEXT DEFAULT 'auto', /* Option < & str > */
	"as_of" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
) RETURNS TABLE (
	"model_id" bigint,  /* i64 */
	"task" TEXT,  /* String */
	"algorithm" TEXT,  /* String */
	"auc" double precision,  /* f64 */
	"f1" double precision,  /* f64 */
	"precision" double precision,  /* f64 */
	"recall" double precision,  /* f64 */
	"brier" double precision,  /* f64 */
	"deployed" bool  /* bool */
)
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'tune_wrapper';

CREATE OR REPLACE FUNCTION "generate_demo_data"(
	"n_users" INT DEFAULT 10000, /* Option < i32 > */
	"days" INT DEFAULT 240, /* Option < i32 > */
	"seed" bigint DEFAULT 42, /* Option < i64 > */
	"ends_at" timestamp with time zone DEFAULT now(), /* Option < TimestampWithTimeZone > */
	"replace" bool DEFAULT false /* Option < bool > */
) RETURNS TABLE (
	"users" bigint,  /* i64 */
	"events" bigint,  /* i64 */
	"products" bigint,  /* i64 */
	"history_from" timestamp with time zone,  /* TimestampWithTimeZone */
	"history_to" timestamp with time zone  /* TimestampWithTimeZone */
)
VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'generate_demo_data_wrapper';

-- Views ----------------------------------------------------------------------------------

CREATE OR REPLACE VIEW customer_analyzer.model_metrics AS
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

CREATE OR REPLACE VIEW customer_analyzer.segmentation_quality AS
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

COMMENT ON VIEW customer_analyzer.model_metrics IS
    'Holdout metrics of every model, for comparing and for BI tools: those of the fit on the training snapshots, with calibrated scores and the threshold chosen on the validation snapshot (brier_uncalibrated: before calibration). The serving model is refitted on refit_rows rows of the newest matured snapshots.';
COMMENT ON VIEW customer_analyzer.model_calibration IS
    'Reliability table of each model on its holdout: for each decile of calibrated scores, the mean predicted probability, the observed rate and the number of users. Well calibrated when the two rates agree.';
COMMENT ON VIEW customer_analyzer.model_candidates IS
    'Every algorithm or setting train() tried for a model (three for auto), in order, with its AUC on the validation snapshot, the boosting rounds early stopping kept, and which one was chosen.';
COMMENT ON VIEW customer_analyzer.segmentation_quality IS
    'Quality of each segmentation: silhouette (on a sample, size stated), inertia, Davies-Bouldin, segment sizes, the sample the quadratic algorithms clustered, eps, the silhouette of each k tried, the view clustered (rfm or behaviour) and the silhouette of each view tried.';
COMMENT ON FUNCTION customer_analyzer.train(text, text, jsonb, timestamptz) IS
    'Trains a churn (no event in 60 days) or purchase (a purchase within 30 days) model on point-in-time snapshots: algorithm auto (the default) fits gbm, random forest and logistic and keeps the best on a validation snapshot; scores are calibrated there, measured on a holdout a horizon later, and the serving model is refitted on the newest matured snapshots. Stores it and deploys it when it beats the deployed one. Returns id, chosen algorithm and holdout metrics.';
COMMENT ON FUNCTION customer_analyzer.tune(text, text, timestamptz) IS
    'train() with hyperparameter search over the documented space (each algorithm''s for auto), scored on the validation snapshot.';
COMMENT ON FUNCTION customer_analyzer.training_snapshots(text, timestamptz, jsonb) IS
    'The snapshot times train() uses for a task with their roles (train, validation, holdout, refit; each a label horizon after the one before); join labels() and user_features() on them to export a training set.';
COMMENT ON FUNCTION customer_analyzer.segment_users(text, integer, jsonb) IS
    'Clusters every user of the feature store (kmeans, dbscan or agglomerative) in the view params names (rfm: recency, frequency, monetary value and tenure; behaviour: every numeric feature) or, by default, in the view that separates better; stores the segmentation as a model row, writes segments and user_segments, and returns one row per named segment.';

-- Privileges: the reader list names the new views -------------------------------------

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
        ('operator', 'SELECT ON customer_analyzer.config, customer_analyzer.user_metrics,
                      customer_analyzer.models, customer_analyzer.deployments,
                      customer_analyzer.retired_models, customer_analyzer.predictions,
                      customer_analyzer.segments, customer_analyzer.user_segments')
    ) AS v(k, p)
    WHERE v.k = kind
$$;

-- roles given reader rights under 0.2.0 can read the new views too
DO $$
DECLARE
    r regrole;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee::regrole
             FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
             WHERE c.oid = 'customer_analyzer.model_metrics'::regclass
               AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner AND a.grantee <> 0
    LOOP
        EXECUTE format('GRANT SELECT ON customer_analyzer.model_calibration, customer_analyzer.model_candidates TO %s', r);
    END LOOP;
END
$$;
