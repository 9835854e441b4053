-- customer_analyzer 0.3.0 -> 0.4.0. Released scripts are never edited; the next change
-- ships customer_analyzer--0.4.0--<next>.sql. Run by ALTER EXTENSION customer_analyzer
-- UPDATE after the 0.4.0 build is installed.
--
-- What changed: the real-time path. configure() puts statement-level triggers on the
-- events table that queue changed users into rescore_queue; the rescoring worker (started
-- when the library is in shared_preload_libraries) refreshes their features and scores
-- and announces them with pg_notify('customer_analyzer_scores', ...); failures go to
-- worker_errors, the worker's heartbeat to worker_status. Training reads the events
-- faster (no SQL change). Run SELECT customer_analyzer.configure(...) again after the
-- update to install the triggers.

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
    last_event_at timestamptz
);
CREATE INDEX rescore_queue_first_enqueued_at_idx ON customer_analyzer.rescore_queue (first_enqueued_at);

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

-- The real-time trigger function (src/realtime.rs puts it on the events table). It only
-- queues users; a failure is recorded and swallowed so that the shop's write succeeds,
-- and `customer_analyzer.realtime = off` turns it into a no-op. Users are queued in id
-- order, so that concurrent writers lock queue rows in the same order (no deadlocks).
CREATE FUNCTION customer_analyzer._enqueue_changed_users()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF lower(coalesce(current_setting('customer_analyzer.realtime', true), 'on'))
           IN ('off', 'false', 'no', '0') THEN
        RETURN NULL;
    END IF;
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO customer_analyzer.rescore_queue AS q (user_id, last_event_at)
            SELECT e.user_id::bigint, max(e.created_at::timestamptz)
            FROM customer_analyzer_new e WHERE e.user_id IS NOT NULL
            GROUP BY 1 ORDER BY 1
            ON CONFLICT (user_id) DO UPDATE
            SET generation = q.generation + 1,
                last_event_at = greatest(q.last_event_at, EXCLUDED.last_event_at);
        ELSIF TG_OP = 'UPDATE' THEN
            INSERT INTO customer_analyzer.rescore_queue AS q (user_id, last_event_at)
            SELECT e.user_id, max(e.at)
            FROM (SELECT user_id::bigint, created_at::timestamptz AS at FROM customer_analyzer_new
                  UNION ALL
                  SELECT user_id::bigint, created_at::timestamptz FROM customer_analyzer_old) e
            WHERE e.user_id IS NOT NULL
            GROUP BY 1 ORDER BY 1
            ON CONFLICT (user_id) DO UPDATE
            SET generation = q.generation + 1,
                last_event_at = greatest(q.last_event_at, EXCLUDED.last_event_at);
        ELSE
            INSERT INTO customer_analyzer.rescore_queue AS q (user_id, last_event_at)
            SELECT e.user_id::bigint, max(e.created_at::timestamptz)
            FROM customer_analyzer_old e WHERE e.user_id IS NOT NULL
            GROUP BY 1 ORDER BY 1
            ON CONFLICT (user_id) DO UPDATE
            SET generation = q.generation + 1,
                last_event_at = greatest(q.last_event_at, EXCLUDED.last_event_at);
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
    'Users whose events changed, waiting for the rescoring worker (one row per user; generation counts the changes since it was queued).';
COMMENT ON TABLE customer_analyzer.worker_errors IS
    'Failures of the real-time path: the trigger''s (swallowed so the shop''s write succeeds) and the worker''s, per user, with the SQLSTATE.';
COMMENT ON TABLE customer_analyzer.worker_status IS
    'The rescoring worker''s heartbeat: its pid, when it started and was last seen, and how many users it has rescored.';
REVOKE EXECUTE ON FUNCTION customer_analyzer._enqueue_changed_users() FROM PUBLIC;
