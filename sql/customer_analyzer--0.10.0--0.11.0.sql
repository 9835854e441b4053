-- customer_analyzer 0.10.0 -> 0.11.0: past one machine. Functions that write refuse to
-- run on a hot standby with 25006 and a hint to run them on the primary (the Rust ones
-- check in the library; refresh_features() checks here).

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
