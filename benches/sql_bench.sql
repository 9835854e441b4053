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

-- models: train on the shop (one read of the events for every snapshot), then serve.
-- Every single algorithm and the default (auto), with the deploy left to the rules, and
-- each one's candidates, rows and calibration
DO $$
DECLARE t0 timestamptz; r record; the_task text; algo text;
BEGIN
    FOREACH the_task IN ARRAY ARRAY['churn', 'purchase'] LOOP
        FOREACH algo IN ARRAY ARRAY['gbm', 'random_forest', 'logistic', 'auto'] LOOP
            CONTINUE WHEN the_task = 'purchase' AND algo <> 'auto';
            t0 := clock_timestamp();
            SELECT * INTO r FROM customer_analyzer.train(the_task, algo);
            INSERT INTO bench VALUES (format('train(%L, %L)', the_task, algo),
                format('%s s; chose %s; holdout AUC %s, F1 %s, Brier %s (uncalibrated %s); model %s',
                       round(extract(epoch FROM clock_timestamp() - t0)::numeric, 1), r.algorithm,
                       round(r.auc::numeric, 4), round(r.f1::numeric, 3), round(r.brier::numeric, 4),
                       (SELECT round(brier_uncalibrated::numeric, 4) FROM customer_analyzer.model_metrics WHERE model_id = r.model_id),
                       (SELECT pg_size_pretty(size_bytes::bigint) || '; ' || (metrics ->> 'train_rows') || ' training, '
                               || (metrics ->> 'validation_rows') || ' validation, ' || (metrics -> 'holdout' ->> 'rows')
                               || ' holdout, ' || (metrics ->> 'refit_rows') || ' refit rows'
                        FROM customer_analyzer.models WHERE id = r.model_id)));
            IF algo = 'auto' THEN
                INSERT INTO bench
                SELECT format('  %s candidate %s', the_task, c.algorithm),
                       format('validation AUC %s%s%s', round(c.validation_auc::numeric, 4),
                              coalesce(', ' || c.rounds || ' rounds', ''), CASE WHEN c.chosen THEN ' (chosen)' ELSE '' END)
                FROM customer_analyzer.model_candidates c WHERE c.model_id = r.model_id ORDER BY c.tried;
                INSERT INTO bench
                SELECT format('  %s reliability', the_task),
                       string_agg(format('%s:%s/%s', decile, round(mean_predicted::numeric, 3), round(observed_rate::numeric, 3)), ' ' ORDER BY decile)
                FROM customer_analyzer.model_calibration WHERE model_id = r.model_id;
            END IF;
        END LOOP;
    END LOOP;
END $$;

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
    INSERT INTO bench VALUES ('predict_churn(user_id), 10,000 calls, warm backend',
        format('%s ms per call (server side)', round(((t_pred - t_loop) / 10000 * 1000)::numeric, 4)));
END $$;

DO $$
DECLARE t0 timestamptz; n bigint; s float8;
BEGIN
    t0 := clock_timestamp();
    n := customer_analyzer.score_all('churn');
    s := extract(epoch FROM clock_timestamp() - t0);
    INSERT INTO bench VALUES ('score_all(''churn'') from the feature store',
        format('%s users in %s s = %s users/min', n, round(s::numeric, 2), round(n / s * 60)));
END $$;

DO $$
DECLARE t0 timestamptz; n bigint; s float8; major bigint;
BEGIN
    t0 := clock_timestamp();
    SELECT count(*), count(*) FILTER (WHERE level = 'major') INTO n, major
    FROM customer_analyzer.drift_report('churn');
    s := extract(epoch FROM clock_timestamp() - t0);
    INSERT INTO bench SELECT 'drift_report(''churn''), the churn population of the store',
        format('%s s for %s users, %s columns (%s major)', round(s::numeric, 2),
               (SELECT max(users_now) FROM customer_analyzer.drift_report('churn')), n, major);
END $$;

INSERT INTO bench SELECT 'events table size', pg_size_pretty(pg_total_relation_size('public.events'));
INSERT INTO bench SELECT 'user_metrics size', pg_size_pretty(pg_total_relation_size('customer_analyzer.user_metrics'));
SELECT what, figure FROM bench;
