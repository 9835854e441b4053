-- Segmentation figures, steps of benches/sql_bench.sh after benches/sql_bench.sql:
-- segment_users() per algorithm and segment_of() latency.
-- step: segment_users
DO $$
DECLARE t0 timestamptz; n bigint; algo text; k int;
BEGIN
    FOR algo, k IN VALUES ('kmeans', 6), ('kmeans', NULL), ('agglomerative', 6), ('agglomerative', NULL), ('dbscan', NULL) LOOP
        t0 := clock_timestamp();
        SELECT count(*) INTO n FROM customer_analyzer.segment_users(algo, k);
        INSERT INTO bench_figures (what, figure)
        SELECT format('segment_users(%L, %s)', algo, coalesce(k::text, 'NULL')),
               format('%s s, %s segments, view %s (silhouettes %s), silhouette %s on %s users, Davies-Bouldin %s, names %s',
                      round(extract(epoch FROM clock_timestamp() - t0)::numeric, 1), n, view,
                      (SELECT string_agg((v ->> 'view') || ' ' || round((v ->> 'silhouette')::numeric, 3), ', ')
                       FROM jsonb_array_elements(view_silhouettes) v),
                      round(silhouette::numeric, 3), silhouette_sample, round(davies_bouldin::numeric, 3),
                      (SELECT string_agg(name, ', ' ORDER BY segment_id) FROM customer_analyzer.current_segments))
        FROM customer_analyzer.segmentation_quality WHERE serving;
    END LOOP;
END $$;

-- step: segment_of
DO $$
DECLARE t0 timestamptz; t_loop float8; t_seg float8; i int; n bigint; x int;
BEGIN
    SELECT max(user_id) INTO n FROM customer_analyzer.user_metrics;
    PERFORM customer_analyzer.segment_of(1);
    t0 := clock_timestamp();
    FOR i IN 1..10000 LOOP x := (1 + (i * 7919) % n)::int; END LOOP;
    t_loop := extract(epoch FROM clock_timestamp() - t0);
    t0 := clock_timestamp();
    FOR i IN 1..10000 LOOP SELECT segment_id INTO x FROM customer_analyzer.segment_of(1 + (i * 7919) % n); END LOOP;
    t_seg := extract(epoch FROM clock_timestamp() - t0);
    INSERT INTO bench_figures (what, figure) VALUES ('segment_of(user_id), 10,000 calls, warm backend',
        format('%s ms per call (server side)', round(((t_seg - t_loop) / 10000 * 1000)::numeric, 4)));
END $$;
