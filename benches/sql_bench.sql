-- Figures printed by benches/sql_bench.sh. Times are measured inside the server with
-- clock_timestamp(), so they exclude client round trips.
\pset footer off
SET client_min_messages = warning;
CREATE EXTENSION customer_analyzer;

CREATE TEMP TABLE bench (what text, figure text);
SELECT set_config('bench.n_users', :'n_users', false), set_config('bench.days', :'days', false) \gset

DO $$
DECLARE t0 timestamptz; r record;
BEGIN
    t0 := clock_timestamp();
    SELECT * INTO r FROM customer_analyzer.generate_demo_data(current_setting('bench.n_users')::int, current_setting('bench.days')::int, 42);
    INSERT INTO bench VALUES
        ('demo shop', format('%s users, %s events, %s products', r.users, r.events, r.products)),
        ('generate_demo_data()', format('%s s', round(extract(epoch FROM clock_timestamp() - t0)::numeric, 2)));
END $$;

DO $$
DECLARE t0 timestamptz; n bigint; i int;
BEGIN
    FOR i IN 1..2 LOOP
        t0 := clock_timestamp();
        n := customer_analyzer.refresh_features();
        INSERT INTO bench VALUES (format('refresh_features() all users, run %s', i),
            format('%s s for %s users', round(extract(epoch FROM clock_timestamp() - t0)::numeric, 2), n));
    END LOOP;
    t0 := clock_timestamp();
    PERFORM count(*) FROM customer_analyzer.user_features(now() - interval '30 days');
    INSERT INTO bench VALUES ('user_features(now() - 30 days), all users',
        format('%s s', round(extract(epoch FROM clock_timestamp() - t0)::numeric, 2)));
END $$;

-- single-user refresh: 1000 random users on a warm backend
CREATE TEMP TABLE single (ms float8);
DO $$
DECLARE t0 timestamptz; uid bigint; i int; n bigint;
BEGIN
    SELECT max(id) INTO n FROM public.users;
    PERFORM customer_analyzer.refresh_features(1::bigint);   -- warm the plan cache
    FOR i IN 1..1000 LOOP
        uid := 1 + floor(random() * n)::bigint;
        t0 := clock_timestamp();
        PERFORM customer_analyzer.refresh_features(uid);
        INSERT INTO single VALUES (extract(epoch FROM clock_timestamp() - t0) * 1000);
    END LOOP;
END $$;
INSERT INTO bench
SELECT 'refresh_features(user_id), 1000 random users',
       format('mean %s ms, p50 %s ms, p99 %s ms',
              round(avg(ms)::numeric, 3),
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3),
              round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 3))
FROM single;

INSERT INTO bench SELECT 'events table size', pg_size_pretty(pg_total_relation_size('public.events'));
INSERT INTO bench SELECT 'user_metrics size', pg_size_pretty(pg_total_relation_size('customer_analyzer.user_metrics'));
SELECT what, figure FROM bench;
