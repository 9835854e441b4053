-- customer_analyzer 0.6.0 -> 0.7.0: the real-time queue tells the rescoring worker which
-- of a user's events it may already hold (earliest_event_at), so that the worker reads
-- only the events after those it kept from its last read of the user.

ALTER TABLE customer_analyzer.rescore_queue
    ADD COLUMN earliest_event_at timestamptz NOT NULL DEFAULT '-infinity';

CREATE OR REPLACE FUNCTION customer_analyzer._enqueue_changed_users()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF lower(coalesce(current_setting('customer_analyzer.realtime', true), 'on'))
           IN ('off', 'false', 'no', '0') THEN
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

COMMENT ON TABLE customer_analyzer.rescore_queue IS
    'Users whose events changed, waiting for the rescoring worker (one row per user; generation counts the changes since it was queued; earliest_event_at is the earliest inserted event''s time, -infinity after an update or delete).';
