-- Steps run by benches/sql_bench.sh, each in a backend of its own (the script splits this
-- file at its "-- step:" lines and prints the step's peak memory after it). Times are
-- measured inside the server with clock_timestamp(), so they exclude client round trips;
-- figures go to the table bench_figures of the benchmark database.

-- step: preamble
-- (not a step: put in front of every step) train(), timed, with the model's figures
CREATE FUNCTION pg_temp.train_figures(the_task text, algo text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz; r record;
BEGIN
    t0 := clock_timestamp();
    SELECT * INTO r FROM customer_analyzer.train(the_task, algo);
    INSERT INTO bench_figures (what, figure) VALUES (format('train(%L, %L)', the_task, algo),
        format('%s s; chose %s; holdout AUC %s, F1 %s, Brier %s (uncalibrated %s); model %s',
               round(extract(epoch FROM clock_timestamp() - t0)::numeric, 1), r.algorithm,
               round(r.auc::numeric, 4), round(r.f1::numeric, 3), round(r.brier::numeric, 4),
               (SELECT round(brier_uncalibrated::numeric, 4) FROM customer_analyzer.model_metrics WHERE model_id = r.model_id),
               (SELECT pg_size_pretty(size_bytes::bigint) || '; ' || (metrics ->> 'train_rows') || ' training, '
                       || (metrics ->> 'validation_rows') || ' validation, ' || (metrics -> 'holdout' ->> 'rows')
                       || ' holdout, ' || (metrics ->> 'refit_rows') || ' refit rows'
                FROM customer_analyzer.models WHERE id = r.model_id)));
    IF algo = 'auto' THEN
        INSERT INTO bench_figures (what, figure)
        SELECT format('  %s candidate %s', the_task, c.algorithm),
               format('validation AUC %s%s%s', round(c.validation_auc::numeric, 4),
                      coalesce(', ' || c.rounds || ' rounds', ''), CASE WHEN c.chosen THEN ' (chosen)' ELSE '' END)
        FROM customer_analyzer.model_candidates c WHERE c.model_id = r.model_id ORDER BY c.tried;
        INSERT INTO bench_figures (what, figure)
        SELECT format('  %s reliability', the_task),
               string_agg(format('%s:%s/%s', decile, round(mean_predicted::numeric, 3), round(observed_rate::numeric, 3)), ' ' ORDER BY decile)
        FROM customer_analyzer.model_calibration WHERE model_id = r.model_id;
    END IF;
END $$;

-- step: generate
DO $$
DECLARE t0 timestamptz; r record;
BEGIN
    t0 := clock_timestamp();
    SELECT * INTO r FROM customer_analyzer.generate_demo_data(current_setting('bench.n_users')::int, current_setting('bench.days')::int, 42);
    INSERT INTO bench_figures (what, figure) VALUES
        ('demo shop', format('%s users, %s events, %s products', r.users, r.events, r.products)),
        ('generate_demo_data()', format('%s s', round(extract(epoch FROM clock_timestamp() - t0)::numeric, 2)));
END $$;

-- step: refresh_features
-- two full refreshes, each in its own transaction as a scheduled one is (the second
-- replaces a full store), then the set-based SQL
SET customer_analyzer.incremental_refresh = off;
CREATE FUNCTION pg_temp.timed_full(run int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp(); n bigint;
BEGIN
    n := customer_analyzer.refresh_features();
    INSERT INTO bench_figures (what, figure) VALUES (format('refresh_features() full, all users, run %s', run),
        format('%s s for %s users', round(extract(epoch FROM clock_timestamp() - t0)::numeric, 2), n));
END $$;
SELECT pg_temp.timed_full(1);
SELECT pg_temp.timed_full(2);
DO $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    PERFORM count(*) FROM customer_analyzer.user_features(now() - interval '30 days');
    INSERT INTO bench_figures (what, figure) VALUES ('user_features(now() - 30 days), all users',
        format('%s s', round(extract(epoch FROM clock_timestamp() - t0)::numeric, 2)));
END $$;

-- step: refresh_incremental
-- The store as of a day ago (full), then the incremental refresh to now: (1) after the
-- demo's own last day, (2) after a day in which 5% of the users were active: the other
-- users' events of that day are deleted with real time off (so not queued, and the
-- trigger's note of that removed) inside a transaction that is rolled back, and the
-- active users are queued as the trigger would.
-- the real-time triggers tell the incremental refresh which users changed
SELECT customer_analyzer.configure('public.users', 'public.events', 'public.products') ->> 'realtime' AS realtime;
CREATE TEMP TABLE inc (what text, figure text);
CREATE FUNCTION pg_temp.full_as_of_yesterday() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('customer_analyzer.incremental_refresh', 'off', true);
    PERFORM customer_analyzer._refresh_store(now() - interval '1 day');
    PERFORM set_config('customer_analyzer.incremental_refresh', 'on', true);
END $$;
CREATE FUNCTION pg_temp.timed_incremental(label text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp(); r record;
BEGIN
    PERFORM customer_analyzer._refresh_store(now());
    SELECT * INTO r FROM customer_analyzer.refresh_state;
    INSERT INTO inc VALUES (format('refresh_features() incremental, %s', label),
        format('%s s (%s; %s users read from their events, %s rows moved in time)',
               round(extract(epoch FROM clock_timestamp() - t0)::numeric, 2),
               r.mode || coalesce(': ' || r.full_because, ''), r.users_computed, r.users_moved));
END $$;
BEGIN;
SELECT pg_temp.full_as_of_yesterday();
SELECT pg_temp.timed_incremental(format('the demo''s last day (%s%% of users active)',
    (SELECT round(100.0 * count(DISTINCT user_id) / (SELECT count(*) FROM public.users), 1)
     FROM public.events WHERE created_at >= now() - interval '1 day')));
COMMIT;
BEGIN;
SELECT pg_temp.full_as_of_yesterday();
SET LOCAL customer_analyzer.realtime = off;
CREATE TEMP TABLE day_active AS
SELECT DISTINCT user_id FROM public.events WHERE created_at >= now() - interval '1 day';
DELETE FROM public.events e
WHERE e.created_at >= now() - interval '1 day'
  AND e.user_id NOT IN (SELECT user_id FROM day_active ORDER BY hashint8(user_id)
                        LIMIT (SELECT count(*) / 20 FROM public.users));
SET LOCAL customer_analyzer.realtime = on;
-- the trigger noted that the DELETE was not queued: forget the note (this day stands for
-- one on which the others were not active at all)
DELETE FROM customer_analyzer.worker_errors WHERE source = 'trigger' AND sqlstate = '00000';
INSERT INTO customer_analyzer.rescore_queue (user_id)
SELECT DISTINCT user_id FROM public.events WHERE created_at >= now() - interval '1 day'
ON CONFLICT DO NOTHING;
SELECT pg_temp.timed_incremental('a day with 5% of users active');
-- kept in psql variables across the rollback
SELECT what AS five_what, figure AS five_figure FROM inc WHERE what LIKE '%5\% of users active' \gset
ROLLBACK;
INSERT INTO bench_figures (what, figure) SELECT what, figure FROM inc;
INSERT INTO bench_figures (what, figure) VALUES (:'five_what', :'five_figure');

-- step: refresh_features(user_id)
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
INSERT INTO bench_figures (what, figure)
SELECT 'refresh_features(user_id), 1000 random users',
       format('mean %s ms, p50 %s ms, p99 %s ms',
              round(avg(ms)::numeric, 3),
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3),
              round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 3))
FROM single;

-- models: train on the shop (one read of the events for every snapshot), then serve.
-- Every single algorithm and the default (auto), with the deploy left to the rules, and
-- each one's candidates, rows and calibration
-- step: train_churn_gbm
DO $$ BEGIN PERFORM pg_temp.train_figures('churn', 'gbm'); END $$;
-- step: train_churn_random_forest
DO $$ BEGIN PERFORM pg_temp.train_figures('churn', 'random_forest'); END $$;
-- step: train_churn_logistic
DO $$ BEGIN PERFORM pg_temp.train_figures('churn', 'logistic'); END $$;
-- step: train_churn_auto
DO $$ BEGIN PERFORM pg_temp.train_figures('churn', 'auto'); END $$;
-- step: train_purchase_auto
DO $$ BEGIN PERFORM pg_temp.train_figures('purchase', 'auto'); END $$;

-- step: predict_churn
-- single predictions on a warm backend: 10,000 calls, minus the loop's own cost
DO $$
DECLARE t0 timestamptz; t_loop float8; t_pred float8; i int; n bigint; x float8;
BEGIN
    SELECT max(id) INTO n FROM public.users;
    PERFORM customer_analyzer.predict_churn(1);          -- decode the model once
    t0 := clock_timestamp();
    FOR i IN 1..10000 LOOP x := (1 + (i * 7919) % n)::float8; END LOOP;
    t_loop := extract(epoch FROM clock_timestamp() - t0);
    t0 := clock_timestamp();
    FOR i IN 1..10000 LOOP x := customer_analyzer.predict_churn(1 + (i * 7919) % n); END LOOP;
    t_pred := extract(epoch FROM clock_timestamp() - t0);
    INSERT INTO bench_figures (what, figure) VALUES ('predict_churn(user_id), 10,000 calls, warm backend',
        format('%s ms per call (server side)', round(((t_pred - t_loop) / 10000 * 1000)::numeric, 4)));
END $$;

-- step: score_all
DO $$
DECLARE t0 timestamptz; n bigint; s float8;
BEGIN
    t0 := clock_timestamp();
    n := customer_analyzer.score_all('churn');
    s := extract(epoch FROM clock_timestamp() - t0);
    INSERT INTO bench_figures (what, figure) VALUES ('score_all(''churn'') from the feature store',
        format('%s users in %s s = %s users/min', n, round(s::numeric, 2), round(n / s * 60)));
END $$;

-- step: drift_report
DO $$
DECLARE t0 timestamptz; n bigint; s float8; major bigint;
BEGIN
    t0 := clock_timestamp();
    SELECT count(*), count(*) FILTER (WHERE level = 'major') INTO n, major
    FROM customer_analyzer.drift_report('churn');
    s := extract(epoch FROM clock_timestamp() - t0);
    INSERT INTO bench_figures (what, figure) SELECT 'drift_report(''churn''), the churn population of the store',
        format('%s s for %s users, %s columns (%s major)', round(s::numeric, 2),
               (SELECT max(users_now) FROM customer_analyzer.drift_report('churn')), n, major);
END $$;

