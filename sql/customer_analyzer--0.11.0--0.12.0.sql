-- customer_analyzer 0.11.0 -> 0.12.0: the feature store's refresh is computed by the core
-- from each user's event history (as training and the real-time worker do) instead of the
-- set-based SQL, and after an earlier refresh it is incremental. Active days count UTC
-- calendar days (they counted 24-hour steps back from as_of): retrain after upgrading.
-- The rows stored before keep no activity times, so the first refresh after the upgrade
-- is a full one (refresh_state is empty). The real-time trigger, when real time is off in
-- the writing session, now notes in worker_errors that it queued nothing.

ALTER TABLE customer_analyzer.user_metrics
    ADD COLUMN first_event_at timestamptz,
    ADD COLUMN last_event_at timestamptz,
    ADD COLUMN first_purchase_at timestamptz,
    ADD COLUMN last_purchase_at timestamptz,
    ADD COLUMN last_cart_at timestamptz;

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

CREATE FUNCTION customer_analyzer."_refresh_store"(
	"as_of" timestamp with time zone
) RETURNS bigint
STRICT VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', '_refresh_store_wrapper';
REVOKE EXECUTE ON FUNCTION customer_analyzer._refresh_store(timestamptz) FROM PUBLIC;

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

-- with real time off, the trigger notes that it queued nothing (the next refresh then
-- reads every user)
CREATE OR REPLACE FUNCTION customer_analyzer._enqueue_changed_users()
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

COMMENT ON FUNCTION customer_analyzer.refresh_features() IS
    'Brings every user''s features to now() in user_metrics: after an earlier refresh, reads only the users whose events changed or crossed a window''s edge and moves the other rows in time (refresh_state says which it did); returns the number of users. A full refresh raises a NOTICE listing rows set aside by the data rules.';
COMMENT ON FUNCTION customer_analyzer._refresh_store(timestamptz) IS
    'Internal: refresh_features() as of a given time, under its lock (full or incremental; see refresh_state).';
COMMENT ON TABLE customer_analyzer.refresh_state IS
    'The last refresh_features(): as of when, full or incremental (and why full), users read from their events and rows moved in time, and the basis the next incremental refresh must share.';
