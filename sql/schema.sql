-- customer_analyzer: tables and types (bootstrap: created before any function).

-- Which tables of the shop to read; one row at most, written by configure().
CREATE TABLE customer_analyzer.config (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    users regclass NOT NULL,
    events regclass NOT NULL,
    products regclass,
    configured_at timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.config', '');

-- Moves whenever the configuration or the definition of a table, view or type may have
-- changed (configure(), and an event trigger on DDL), so that each backend re-checks the
-- source tables it keeps checked (src/source.rs). One row.
CREATE TABLE customer_analyzer.source_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version bigint NOT NULL DEFAULT 0
);
INSERT INTO customer_analyzer.source_version DEFAULT VALUES;

CREATE FUNCTION customer_analyzer._sources_may_have_changed() RETURNS event_trigger
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
CREATE EVENT TRIGGER customer_analyzer_ddl ON ddl_command_end
    EXECUTE FUNCTION customer_analyzer._sources_may_have_changed();
CREATE EVENT TRIGGER customer_analyzer_drop ON sql_drop
    EXECUTE FUNCTION customer_analyzer._sources_may_have_changed();

-- One row of features: user_id, then the catalog in order (see feature_catalog).
-- A test checks these columns against the core crate's catalog.
CREATE TYPE customer_analyzer.feature_row AS (
    user_id bigint,
    days_since_registration double precision,
    days_since_last_activity double precision,
    days_since_last_purchase double precision,
    days_since_first_activity double precision,
    days_since_first_purchase double precision,
    days_since_last_cart_addition double precision,
    events_last_7_days bigint,
    events_last_14_days bigint,
    events_last_30_days bigint,
    events_last_60_days bigint,
    events_total bigint,
    active_days_last_7_days bigint,
    active_days_last_30_days bigint,
    active_days_total bigint,
    page_views_last_7_days bigint,
    page_views_last_30_days bigint,
    product_views_last_30_days bigint,
    cart_additions_last_30_days bigint,
    purchases_last_7_days bigint,
    purchases_last_30_days bigint,
    purchases_last_60_days bigint,
    bot_commands_last_30_days bigint,
    events_per_active_day double precision,
    activity_trend_7d_vs_14d double precision,
    purchase_trend_30d_vs_60d double precision,
    engagement_trend double precision,
    spend_trend_30d_vs_60d double precision,
    product_view_trend_7d_vs_30d double precision,
    active_days_trend_7d_vs_30d double precision,
    total_spent double precision,
    avg_order_value double precision,
    purchase_count bigint,
    max_order_value double precision,
    min_order_value double precision,
    order_value_stddev double precision,
    spend_last_7_days double precision,
    spend_last_30_days double precision,
    spend_last_60_days double precision,
    avg_order_value_last_60_days double precision,
    monthly_spend_rate double precision,
    bot_commands_last_7_days bigint,
    product_views_last_7_days bigint,
    cart_additions_last_7_days bigint,
    bot_commands_total bigint,
    distinct_bot_commands bigint,
    product_views_total bigint,
    cart_additions_total bigint,
    view_to_cart_rate double precision,
    cart_to_purchase_rate double precision,
    view_to_purchase_rate double precision,
    distinct_products_viewed bigint,
    distinct_products_purchased bigint,
    distinct_categories_viewed bigint,
    distinct_categories_purchased bigint,
    favourite_category text,
    favourite_category_share double precision,
    avg_viewed_price double precision,
    price_level_vs_category double precision,
    purchased_price_level_vs_category double precision,
    sessions_total bigint,
    sessions_last_30_days bigint,
    avg_events_per_session double precision,
    avg_session_duration_minutes double precision,
    days_between_purchases_mean double precision,
    days_between_purchases_std double precision,
    status text,
    has_username bigint,
    days_to_first_purchase double precision
);

-- The feature store: each user's features as computed from their events as of as_of.
-- Read through the view user_metrics, which brings a row older than the last
-- store-wide refresh (refresh_state) to that refresh's as_of: a refresh rewrites only
-- the rows whose events changed or crossed a window's edge.
CREATE TABLE customer_analyzer.feature_store (
    LIKE customer_analyzer.feature_row,
    as_of timestamptz NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- when the user was first and last active, bought and added to the cart (events before
    -- as_of), and registered: the time-relative features at a later as_of come from them
    first_event_at timestamptz,
    last_event_at timestamptz,
    first_purchase_at timestamptz,
    last_purchase_at timestamptz,
    last_cart_at timestamptz,
    registered_at timestamptz,
    PRIMARY KEY (user_id)
);
-- dumped with its data: predictions read it, and a restore must predict the same
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.feature_store', '');

-- The last store-wide refresh: what its rows depend on besides the events (the basis:
-- extension version, sources, the events' storage, the real-time triggers, products), so
-- that the next refresh_features() may recompute only the users whose events changed or
-- crossed a window's edge since, and what it did.
CREATE TABLE customer_analyzer.refresh_state (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    as_of timestamptz NOT NULL,
    basis text NOT NULL,
    mode text NOT NULL CHECK (mode IN ('full', 'incremental')),
    -- why a full refresh was needed (NULL for an incremental one)
    full_because text,
    users_computed bigint NOT NULL,
    users_moved bigint NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL
);
-- dumped with its data: user_metrics reads the store's as_of from it (a restored
-- database's basis names another database, so its next refresh is full)
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.refresh_state', '');

-- Models: versioned and append-only (UPDATE, DELETE and TRUNCATE raise 55000, for the
-- owner too). The model itself is a bincode blob behind a magic and a format number (see
-- crates/.../codec.rs). retire_model() takes a model out of service; purge_models() is
-- the only way to delete, and only old models that never served.
CREATE TABLE customer_analyzer.models (
    id bigserial PRIMARY KEY,
    task text NOT NULL CHECK (task IN ('churn', 'purchase', 'segmentation')),
    algorithm text NOT NULL,
    params jsonb NOT NULL,
    preprocessing jsonb NOT NULL,
    feature_names text[] NOT NULL,
    catalog_version integer NOT NULL,
    trained_as_of timestamptz NOT NULL,
    training_from timestamptz NOT NULL,
    training_to timestamptz NOT NULL,
    metrics jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    size_bytes integer NOT NULL,
    format_version integer NOT NULL,
    model bytea NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.models', '');
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.models_id_seq', '');

-- Refuses every change of an append-only table, except the deletes purge_models() makes.
CREATE FUNCTION customer_analyzer._append_only() RETURNS trigger
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
CREATE TRIGGER models_are_append_only BEFORE UPDATE OR DELETE ON customer_analyzer.models
    FOR EACH ROW EXECUTE FUNCTION customer_analyzer._append_only();
CREATE TRIGGER models_are_not_truncated BEFORE TRUNCATE ON customer_analyzer.models
    FOR EACH STATEMENT EXECUTE FUNCTION customer_analyzer._append_only();

-- Which model serves each task: the newest row per task; older rows are the history.
-- previous_id is the deployment a row replaced, which rollback() walks back through.
CREATE TABLE customer_analyzer.deployments (
    id bigserial PRIMARY KEY,
    task text NOT NULL CHECK (task IN ('churn', 'purchase', 'segmentation')),
    model_id bigint NOT NULL REFERENCES customer_analyzer.models (id),
    deployed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    reason text NOT NULL,
    previous_id bigint REFERENCES customer_analyzer.deployments (id)
);
CREATE INDEX deployments_task_id_idx ON customer_analyzer.deployments (task, id DESC);
CREATE INDEX deployments_model_id_idx ON customer_analyzer.deployments (model_id);
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.deployments', '');
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.deployments_id_seq', '');
CREATE TRIGGER deployments_are_append_only BEFORE UPDATE OR DELETE ON customer_analyzer.deployments
    FOR EACH ROW EXECUTE FUNCTION customer_analyzer._append_only();
CREATE TRIGGER deployments_are_not_truncated BEFORE TRUNCATE ON customer_analyzer.deployments
    FOR EACH STATEMENT EXECUTE FUNCTION customer_analyzer._append_only();

-- Models taken out of service by retire_model(): never deployed again, kept for history.
CREATE TABLE customer_analyzer.retired_models (
    model_id bigint PRIMARY KEY REFERENCES customer_analyzer.models (id),
    retired_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    reason text NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.retired_models', '');
CREATE TRIGGER retired_models_are_append_only BEFORE UPDATE OR DELETE ON customer_analyzer.retired_models
    FOR EACH ROW EXECUTE FUNCTION customer_analyzer._append_only();
CREATE TRIGGER retired_models_are_not_truncated BEFORE TRUNCATE ON customer_analyzer.retired_models
    FOR EACH STATEMENT EXECUTE FUNCTION customer_analyzer._append_only();

-- The prediction log: every score the rescoring worker and score_all() wrote, with the
-- model, the A/B arm and the as_of of the features used. predict_*() never writes, so it
-- works on a replica. Rows are never updated; prune() deletes those older than
-- customer_analyzer.prediction_retention and forget_user() a user's.
CREATE TABLE customer_analyzer.predictions (
    user_id bigint NOT NULL,
    task text NOT NULL,
    model_id bigint NOT NULL REFERENCES customer_analyzer.models (id),
    score double precision NOT NULL,
    label boolean NOT NULL,
    as_of timestamptz NOT NULL,
    predicted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    arm text NOT NULL DEFAULT 'champion' CHECK (arm IN ('champion', 'challenger')),
    id bigserial PRIMARY KEY
);
-- appended in time order, and models follow each other in time: block range indexes
-- find what prune() deletes and a model's rows (for the foreign key and the A/B counts)
-- for almost nothing, where a B-tree took an index entry (and its WAL) for every score
CREATE INDEX predictions_model_id_idx ON customer_analyzer.predictions USING brin (model_id);
CREATE INDEX predictions_predicted_at_idx ON customer_analyzer.predictions USING brin (predicted_at);
CREATE TRIGGER predictions_are_append_only BEFORE UPDATE ON customer_analyzer.predictions
    FOR EACH STATEMENT EXECUTE FUNCTION customer_analyzer._append_only();
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.predictions', '');
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.predictions_id_seq', '');

-- Each user's newest row of the log per task, written with it: latest_predictions and the
-- worker's previous score read it. The log has no index by user: every new score would
-- land on a random page of one (the log grows for the whole retention, its user index
-- beyond memory), and the rescoring worker's writes of those pages were most of what it
-- cost the shop's own inserts. forget_user() and prune() keep it in step with the log.
-- Half of each page is left free, so that rescoring a user updates the row on its own page
-- without a new index entry (a HOT update): score_all() rewrites every row, and at a million
-- users full pages made a third of its time.
CREATE TABLE customer_analyzer.latest_scores (
    task text NOT NULL,
    user_id bigint NOT NULL,
    prediction_id bigint NOT NULL,
    score double precision NOT NULL,
    PRIMARY KEY (task, user_id)
) WITH (fillfactor = 50);
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.latest_scores', '');

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

-- Segments of each segmentation (a models row with task 'segmentation'); names can be
-- changed with rename_segment(), the rest is as computed.
CREATE TABLE customer_analyzer.segments (
    segmentation_id bigint NOT NULL REFERENCES customer_analyzer.models (id) ON DELETE CASCADE,
    segment_id integer NOT NULL,
    name text NOT NULL,
    description text NOT NULL,
    size bigint NOT NULL,
    share double precision NOT NULL,
    mean_recency_days double precision,
    mean_frequency double precision,
    mean_monetary double precision,
    churn_rate double precision,
    is_noise boolean NOT NULL,
    PRIMARY KEY (segmentation_id, segment_id)
);
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.segments', '');

-- Every user's segment in each segmentation.
CREATE TABLE customer_analyzer.user_segments (
    user_id bigint NOT NULL,
    segmentation_id bigint NOT NULL,
    segment_id integer NOT NULL,
    segment_name text NOT NULL,
    distance double precision NOT NULL,
    PRIMARY KEY (segmentation_id, user_id),
    FOREIGN KEY (segmentation_id, segment_id)
        REFERENCES customer_analyzer.segments (segmentation_id, segment_id) ON DELETE CASCADE
);
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.user_segments', '');

-- The real-time path. Statement-level triggers on the shop's events table queue the users
-- whose events changed; the rescoring worker refreshes their features and scores. A
-- user already queued is not queued again: the trigger bumps `generation` instead, and
-- the worker deletes a row only at the generation it read, so an event that arrives
-- while the worker works on that user leaves the row for another pass. The worker locks
-- queue rows only for its closing DELETE (with SKIP LOCKED), so the shop's writes never
-- wait on its work. Transient: not dumped.
CREATE TABLE customer_analyzer.rescore_queue (
    user_id bigint PRIMARY KEY,
    generation bigint NOT NULL DEFAULT 1,
    first_enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_event_at timestamptz,
    -- the earliest created_at of the events inserted since the user was queued;
    -- '-infinity' once an UPDATE or DELETE touched the user's events (read them all)
    earliest_event_at timestamptz NOT NULL DEFAULT '-infinity'
);
-- no index by first_enqueued_at: the worker keeps the queue short, so sorting it to take
-- the oldest costs less than an index entry written by every event the shop inserts

-- What went wrong on the real-time path: the trigger's failures (recorded and swallowed,
-- so that the shop's write succeeds) and the worker's, one row per user it could not
-- rescore.
CREATE TABLE customer_analyzer.worker_errors (
    id bigserial PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    source text NOT NULL CHECK (source IN ('trigger', 'worker')),
    user_id bigint,
    sqlstate text NOT NULL,
    message text NOT NULL
);

-- The rescoring worker's heartbeat: one row, written when it starts and after each batch
-- (and at least every few seconds while idle).
CREATE TABLE customer_analyzer.worker_status (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pid integer NOT NULL,
    started_at timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    users_rescored bigint NOT NULL DEFAULT 0,
    last_batch_at timestamptz
);
