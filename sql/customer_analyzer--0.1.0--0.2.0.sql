-- customer_analyzer 0.1.0 -> 0.2.0. Released scripts are never edited; the next change
-- ships customer_analyzer--0.2.0--<next>.sql. Run by ALTER EXTENSION customer_analyzer
-- UPDATE after the 0.2.0 build is installed.
--
-- What changed: every function pins search_path = pg_catalog, pg_temp, and those that
-- read the shop's tables or write the extension's run as SECURITY DEFINER; EXECUTE is
-- revoked from PUBLIC and given through grant_reader() / grant_operator(); models,
-- deployments and the new retired_models are append-only; deployments remember the
-- deployment they replaced (rollback walks back); source checks are kept per backend
-- until source_version moves; user_features() and refresh_features() take their
-- work_mem from customer_analyzer.feature_work_mem.

-- Tables and columns --------------------------------------------------------------------

CREATE TABLE customer_analyzer.source_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version bigint NOT NULL DEFAULT 0
);
INSERT INTO customer_analyzer.source_version DEFAULT VALUES;

ALTER TABLE customer_analyzer.deployments
    ADD COLUMN previous_id bigint REFERENCES customer_analyzer.deployments (id);
CREATE INDEX deployments_model_id_idx ON customer_analyzer.deployments (model_id);
CREATE INDEX predictions_model_id_idx ON customer_analyzer.predictions (model_id);
CREATE INDEX predictions_task_user_idx ON customer_analyzer.predictions (task, user_id, predicted_at DESC);

CREATE TABLE customer_analyzer.retired_models (
    model_id bigint PRIMARY KEY REFERENCES customer_analyzer.models (id),
    retired_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    reason text NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.retired_models', '');
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.user_metrics', '');

DROP TRIGGER models_are_immutable ON customer_analyzer.models;
DROP FUNCTION customer_analyzer._refuse_model_update();

-- Functions: every one as 0.2.0 defines it ----------------------------------------------

CREATE OR REPLACE FUNCTION customer_analyzer._sources_may_have_changed() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_EVENT = 'sql_drop' THEN
        PERFORM 1 FROM pg_event_trigger_dropped_objects() d
        WHERE NOT d.is_temporary
          AND d.object_type IN ('table', 'view', 'materialized view', 'foreign table', 'type', 'table column', 'schema');
    ELSE
        PERFORM 1 FROM pg_event_trigger_ddl_commands() c
        WHERE coalesce(c.schema_name, '') NOT LIKE 'pg\_temp%'
          AND c.object_type IN ('table', 'view', 'materialized view', 'foreign table', 'type', 'table column', 'schema');
    END IF;
    IF FOUND THEN
        UPDATE customer_analyzer.source_version SET version = version + 1;
    END IF;
EXCEPTION WHEN OTHERS THEN
    -- the shop's own DDL must never fail because of the extension; a missed bump only
    -- leaves a backend's cached check older, and every query still fails cleanly on it
    NULL;
END
$$;

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
                  ELSE 'Retirements are permanent.' END;
END
$$;

CREATE OR REPLACE FUNCTION "_configure"(
	"users" oid, /* Option < pg_sys :: Oid > */
	"events" oid, /* Option < pg_sys :: Oid > */
	"products" oid /* Option < pg_sys :: Oid > */
) RETURNS jsonb /* Result < pgrx :: JsonB > */
VOLATILE 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'configure_wrapper';

CREATE OR REPLACE FUNCTION "_feature_query"(
	"one_user" bool /* bool */
) RETURNS TEXT /* Result < String > */
STRICT STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_feature_query_wrapper';

CREATE OR REPLACE FUNCTION "_notice_data_quality"(
	"as_of" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS bigint /* Result < i64 > */
STRICT STABLE 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'notice_data_quality_wrapper';

CREATE OR REPLACE FUNCTION "_purging"() RETURNS bool /* bool */
STRICT VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_purging_wrapper';

CREATE OR REPLACE FUNCTION "cached_models"() RETURNS bigint[] /* Vec < i64 > */
STRICT VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'cached_models_wrapper';

CREATE OR REPLACE FUNCTION "clear_model_cache"() RETURNS bigint /* i64 */
STRICT VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'clear_model_cache_wrapper';

CREATE OR REPLACE FUNCTION "data_quality"(
	"as_of" timestamp with time zone DEFAULT now() /* Option < TimestampWithTimeZone > */
) RETURNS TABLE (
	"check_name" TEXT,  /* String */
	"rows" bigint,  /* i64 */
	"rule" TEXT  /* String */
)
STABLE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'data_quality_wrapper';

CREATE OR REPLACE FUNCTION "demo_events"(
	"n_users" INT, /* i32 */
	"days" INT, /* i32 */
	"seed" bigint, /* i64 */
	"ends_at" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS TABLE (
	"user_id" bigint,  /* i64 */
	"event_type" TEXT,  /* String */
	"created_at" timestamp with time zone,  /* TimestampWithTimeZone */
	"event_data" TEXT  /* String */
)
IMMUTABLE STRICT PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'demo_events_wrapper';

CREATE OR REPLACE FUNCTION "demo_products"(
	"seed" bigint /* i64 */
) RETURNS TABLE (
	"id" bigint,  /* i64 */
	"name" TEXT,  /* String */
	"category" TEXT,  /* String */
	"price" double precision  /* f64 */
)
IMMUTABLE STRICT PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'demo_products_wrapper';

CREATE OR REPLACE FUNCTION "demo_users"(
	"n_users" INT, /* i32 */
	"days" INT, /* i32 */
	"seed" bigint, /* i64 */
	"ends_at" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS TABLE (
	"id" bigint,  /* i64 */
	"telegram_id" bigint,  /* i64 */
	"username" TEXT,  /* Option < String > */
	"registered_at" timestamp with time zone,  /* TimestampWithTimeZone */
	"status" TEXT,  /* String */
	"customer_type" TEXT  /* String */
)
IMMUTABLE STRICT PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'demo_users_wrapper';

CREATE OR REPLACE FUNCTION "deploy"(
	"model_id" bigint /* Option < i64 > */
) RETURNS TEXT /* Result < String > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'deploy_wrapper';

CREATE OR REPLACE FUNCTION "explain"(
	"task" TEXT, /* Option < & str > */
	"user_id" bigint, /* Option < i64 > */
	"top" INT DEFAULT 5 /* Option < i32 > */
) RETURNS TABLE (
	"feature" TEXT,  /* String */
	"value" TEXT,  /* Option < String > */
	"contribution" double precision,  /* f64 */
	"direction" TEXT  /* String */
)
STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'explain_wrapper';

CREATE OR REPLACE FUNCTION "feature_conventions"() RETURNS TABLE (
	"catalog_version" INT,  /* i32 */
	"conventions" TEXT  /* String */
)
IMMUTABLE STRICT PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'feature_conventions_wrapper';

CREATE OR REPLACE FUNCTION "feature_definitions"() RETURNS TABLE (
	"position" INT,  /* i32 */
	"name" TEXT,  /* String */
	"feature_group" TEXT,  /* String */
	"sql_type" TEXT,  /* String */
	"unit" TEXT,  /* String */
	"description" TEXT  /* String */
)
IMMUTABLE STRICT PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'feature_definitions_wrapper';

CREATE OR REPLACE FUNCTION "generate_demo_data"(
	"n_users" INT DEFAULT 10000, /* Option < i32 > */
	"days" INT DEFAULT 180, /* Option < i32 > */
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

CREATE OR REPLACE FUNCTION "labels"(
	"task" TEXT, /* Option < & str > */
	"as_of" timestamp with time zone /* Option < TimestampWithTimeZone > */
) RETURNS TABLE (
	"user_id" bigint,  /* i64 */
	"label" bool  /* bool */
)
STABLE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'labels_wrapper';

CREATE OR REPLACE FUNCTION "predict"(
	"task" TEXT, /* Option < & str > */
	"user_id" bigint /* Option < i64 > */
) RETURNS TABLE (
	"score" double precision,  /* f64 */
	"label" bool,  /* bool */
	"model_id" bigint,  /* i64 */
	"as_of" timestamp with time zone  /* TimestampWithTimeZone */
)
STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'predict_wrapper';

CREATE OR REPLACE FUNCTION "predict_churn"(
	"user_id" bigint /* Option < i64 > */
) RETURNS double precision /* Result < f64 > */
STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'predict_churn_wrapper';

CREATE OR REPLACE FUNCTION "predict_purchase"(
	"user_id" bigint /* Option < i64 > */
) RETURNS double precision /* Result < f64 > */
STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'predict_purchase_wrapper';

CREATE OR REPLACE FUNCTION "purge_models"(
	"older_than" interval, /* Option < pgrx :: datum :: Interval > */
	"keep_last" INT DEFAULT 10 /* Option < i32 > */
) RETURNS TABLE (
	"model_id" bigint,  /* i64 */
	"task" TEXT,  /* String */
	"created_at" timestamp with time zone  /* TimestampWithTimeZone */
)
VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'purge_models_wrapper';

CREATE OR REPLACE FUNCTION "refresh_features"(
	"user_id" bigint /* Option < i64 > */
) RETURNS bool /* Result < bool > */
VOLATILE SECURITY DEFINER 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'refresh_user_features_wrapper';

CREATE OR REPLACE FUNCTION "rename_segment"(
	"segmentation_id" bigint, /* Option < i64 > */
	"segment_id" INT, /* Option < i32 > */
	"name" TEXT /* Option < & str > */
) RETURNS bool /* Result < bool > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rename_segment_wrapper';

CREATE OR REPLACE FUNCTION "retire_model"(
	"model_id" bigint, /* Option < i64 > */
	"reason" TEXT DEFAULT 'retired' /* Option < & str > */
) RETURNS bigint /* Result < Option < i64 > > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'retire_model_wrapper';

CREATE OR REPLACE FUNCTION "rollback"(
	"task" TEXT /* Option < & str > */
) RETURNS bigint /* Result < i64 > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rollback_wrapper';

CREATE OR REPLACE FUNCTION "score_all"(
	"task" TEXT, /* Option < & str > */
	"as_of" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
) RETURNS bigint /* Result < i64 > */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'score_all_wrapper';

CREATE OR REPLACE FUNCTION "segment_of"(
	"user_id" bigint /* Option < i64 > */
) RETURNS TABLE (
	"segment_id" INT,  /* i32 */
	"segment_name" TEXT,  /* String */
	"distance" double precision,  /* f64 */
	"segmentation_id" bigint  /* i64 */
)
STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'segment_of_wrapper';

CREATE OR REPLACE FUNCTION "segment_users"(
	"algorithm" TEXT DEFAULT 'kmeans', /* Option < & str > */
	"k" INT DEFAULT NULL, /* Option < i32 > */
	"params" jsonb DEFAULT '{}' /* Option < JsonB > */
) RETURNS TABLE (
	"segment_id" INT,  /* i32 */
	"name" TEXT,  /* String */
	"description" TEXT,  /* String */
	"size" bigint,  /* i64 */
	"share" double precision,  /* f64 */
	"mean_recency_days" double precision,  /* Option < f64 > */
	"mean_frequency" double precision,  /* Option < f64 > */
	"mean_monetary" double precision,  /* Option < f64 > */
	"churn_rate" double precision  /* Option < f64 > */
)
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'segment_users_wrapper';

CREATE OR REPLACE FUNCTION "train"(
	"task" TEXT, /* Option < & str > */
	"algorithm" TEXT DEFAULT 'gbm', /* Option < & str > */
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

CREATE OR REPLACE FUNCTION "training_snapshots"(
	"task" TEXT, /* Option < & str > */
	"as_of" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"params" jsonb DEFAULT '{}' /* Option < JsonB > */
) RETURNS TABLE (
	"as_of" timestamp with time zone,  /* TimestampWithTimeZone */
	"role" TEXT  /* String */
)
STABLE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'training_snapshots_wrapper';

CREATE OR REPLACE FUNCTION "tune"(
	"task" TEXT, /* Option < & str > */
	"algorithm" TEXT DEFAULT 'gbm', /* Option < & str > */
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

CREATE OR REPLACE FUNCTION customer_analyzer.configure(
    users regclass DEFAULT pg_catalog.to_regclass('public.users'),
    events regclass DEFAULT pg_catalog.to_regclass('public.events'),
    products regclass DEFAULT pg_catalog.to_regclass('public.products'))
RETURNS jsonb LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT customer_analyzer._configure(users::oid, events::oid, products::oid) $$;

CREATE OR REPLACE FUNCTION customer_analyzer.user_features(as_of timestamptz DEFAULT now())
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

CREATE OR REPLACE FUNCTION customer_analyzer.refresh_features()
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t timestamptz := now();
    n bigint;
    caller_work_mem text := current_setting('work_mem');
BEGIN
    -- one bulk refresh at a time: a second waits, then replaces the first one's rows
    PERFORM pg_advisory_xact_lock(17217, 10);
    PERFORM customer_analyzer._notice_data_quality(t);   -- also loads the library and its settings
    PERFORM set_config('work_mem', current_setting('customer_analyzer.feature_work_mem'), true);
    DELETE FROM customer_analyzer.user_metrics;
    INSERT INTO customer_analyzer.user_metrics
    SELECT f.*, t, clock_timestamp() FROM customer_analyzer.user_features(t) f;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM set_config('work_mem', caller_work_mem, true);
    RETURN n;
END
$$;

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

CREATE OR REPLACE FUNCTION customer_analyzer._apply_privileges(verb text, kind text, role regrole)
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

CREATE OR REPLACE FUNCTION customer_analyzer.grant_reader(role regrole) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT customer_analyzer._apply_privileges('GRANT', 'reader', role) $$;

CREATE OR REPLACE FUNCTION customer_analyzer.grant_operator(role regrole) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT customer_analyzer._apply_privileges('GRANT', 'reader', role);
    SELECT customer_analyzer._apply_privileges('GRANT', 'operator', role);
$$;

CREATE OR REPLACE FUNCTION customer_analyzer.revoke_reader(role regrole) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT customer_analyzer._apply_privileges('REVOKE', 'operator', role);
    SELECT customer_analyzer._apply_privileges('REVOKE', 'reader', role);
$$;

CREATE OR REPLACE FUNCTION customer_analyzer.revoke_operator(role regrole) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT customer_analyzer._apply_privileges('REVOKE', 'operator', role) $$;

-- Views ------------------------------------------------------------------------------------

-- each user's newest score, rather than the newest as_of (which one-user refreshes split)
CREATE OR REPLACE VIEW customer_analyzer.latest_predictions AS
SELECT DISTINCT ON (p.task, p.user_id) p.*
FROM customer_analyzer.predictions p
ORDER BY p.task, p.user_id, p.predicted_at DESC, p.as_of DESC;

-- Triggers ---------------------------------------------------------------------------------

CREATE TRIGGER models_are_append_only BEFORE UPDATE OR DELETE ON customer_analyzer.models
    FOR EACH ROW EXECUTE FUNCTION customer_analyzer._append_only();
CREATE TRIGGER models_are_not_truncated BEFORE TRUNCATE ON customer_analyzer.models
    FOR EACH STATEMENT EXECUTE FUNCTION customer_analyzer._append_only();
CREATE TRIGGER deployments_are_append_only BEFORE UPDATE OR DELETE ON customer_analyzer.deployments
    FOR EACH ROW EXECUTE FUNCTION customer_analyzer._append_only();
CREATE TRIGGER deployments_are_not_truncated BEFORE TRUNCATE ON customer_analyzer.deployments
    FOR EACH STATEMENT EXECUTE FUNCTION customer_analyzer._append_only();
CREATE TRIGGER retired_models_are_append_only BEFORE UPDATE OR DELETE ON customer_analyzer.retired_models
    FOR EACH ROW EXECUTE FUNCTION customer_analyzer._append_only();
CREATE TRIGGER retired_models_are_not_truncated BEFORE TRUNCATE ON customer_analyzer.retired_models
    FOR EACH STATEMENT EXECUTE FUNCTION customer_analyzer._append_only();
CREATE EVENT TRIGGER customer_analyzer_ddl ON ddl_command_end
    EXECUTE FUNCTION customer_analyzer._sources_may_have_changed();
CREATE EVENT TRIGGER customer_analyzer_drop ON sql_drop
    EXECUTE FUNCTION customer_analyzer._sources_may_have_changed();

-- Privileges and comments -------------------------------------------------------------------

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA customer_analyzer FROM PUBLIC;

COMMENT ON SCHEMA customer_analyzer IS
    'customer_analyzer: customer features, churn and purchase models and segmentation for an online shop.';
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
COMMENT ON TABLE customer_analyzer.models IS
    'Trained models, one append-only row each: task, algorithm, parameters, preprocessing, feature names and catalog version, training window, metrics (holdout, CV, split, importance) and the model blob.';
COMMENT ON TABLE customer_analyzer.deployments IS
    'Deployment history, append-only; the newest row per task names the model that serves it, previous_id the deployment it replaced. Written by train(), deploy(), rollback(), retire_model() and segment_users() inside the caller''s transaction.';
COMMENT ON TABLE customer_analyzer.predictions IS
    'Scores written by score_all(): one batch per task and as_of.';
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
COMMENT ON VIEW customer_analyzer.model_metrics IS 'Holdout metrics of every model, for comparing and for BI tools.';
COMMENT ON VIEW customer_analyzer.feature_importance IS
    'Global importance of the features of each deployed model: gain share for trees, coefficient for the linear model (scaled inputs).';
COMMENT ON VIEW customer_analyzer.latest_predictions IS
    'Each user''s newest stored score per task (score_all() writes them; users refreshed one by one keep their own as_of).';
COMMENT ON FUNCTION customer_analyzer.train(text, text, jsonb, timestamptz) IS
    'Trains a churn (no event in 60 days) or purchase (a purchase within 30 days) model on point-in-time snapshots; stores it and deploys it when it beats the deployed one on the same holdout. Returns id and holdout metrics.';
COMMENT ON FUNCTION customer_analyzer.tune(text, text, timestamptz) IS
    'train() with hyperparameter search over the documented space, scored on time-based validation.';
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
    'The snapshot times train() stacks for a task (role train or holdout); join labels() and user_features() on them to export a training set.';
COMMENT ON TABLE customer_analyzer.segments IS
    'Segments of every segmentation: name (renamable), description, size, share, mean recency (days since last activity), frequency (purchases), monetary (total spent) and churn rate (mean churn probability where a churn model serves).';
COMMENT ON TABLE customer_analyzer.user_segments IS 'Every user''s segment and distance to its centre, per segmentation.';
COMMENT ON VIEW customer_analyzer.segmentation_quality IS
    'Quality of each segmentation: silhouette (on a sample, size stated), inertia, Davies-Bouldin, segment sizes, the sample the quadratic algorithms clustered, eps and the silhouette of each k tried.';
COMMENT ON VIEW customer_analyzer.current_segments IS 'The segments of the segmentation that serves segment_of().';
COMMENT ON FUNCTION customer_analyzer.segment_users(text, integer, jsonb) IS
    'Clusters every user of the feature store (kmeans, dbscan or agglomerative), stores the segmentation as a model row, writes segments and user_segments, and returns one row per named segment.';
COMMENT ON FUNCTION customer_analyzer.segment_of(bigint) IS
    'One user''s segment in the serving segmentation, assigned from the stored centres without re-clustering.';
COMMENT ON FUNCTION customer_analyzer.rename_segment(bigint, integer, text) IS 'Gives a segment a name of your choosing.';
COMMENT ON FUNCTION customer_analyzer._privileges(text) IS
    'Internal: the privileges of the reader and operator ways in (one home for both lists).';
COMMENT ON FUNCTION customer_analyzer._apply_privileges(text, text, regrole) IS
    'Internal: grants or revokes one list of _privileges().';
COMMENT ON FUNCTION customer_analyzer.grant_reader(regrole) IS
    'Owner only: lets a role use the schema, predict (predict_*, explain, segment_of), compute user_features() and read the views.';
COMMENT ON FUNCTION customer_analyzer.grant_operator(regrole) IS
    'Owner only: a reader that may also train, tune, deploy, roll back, retire, refresh, score, segment and read the tables.';
COMMENT ON FUNCTION customer_analyzer.revoke_reader(regrole) IS 'Owner only: takes every privilege of grant_reader() and grant_operator() back.';
COMMENT ON FUNCTION customer_analyzer.revoke_operator(regrole) IS 'Owner only: takes the privileges of grant_operator() back, leaving the reader''s.';
