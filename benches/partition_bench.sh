#!/usr/bin/env bash
# refresh_features() over plain and over monthly-partitioned events: generates a demo
# shop in database ca_partitions, times refresh_features() twice over public.events,
# copies the events into public.events_by_month (native range partitions, one a month,
# a default partition, the same (user_id, created_at) index), configure()s that table,
# checks that the features are the same, and times refresh_features() twice again.
# Times are measured inside the server. Needs the extension installed (scripts/demo.sh).
# Usage: benches/partition_bench.sh [n_users] [days]   (defaults 100000 users, 180 days)
set -euo pipefail
cd "$(dirname "$0")/.."
N_USERS=${1:-100000}
DAYS=${2:-180}
DB=ca_partitions
bash scripts/cluster.sh >/dev/null
psql_pg() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_pg -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(date -u +%FT%TZ)"
psql_pg -d "$DB" <<SQL
\pset footer off
SET client_min_messages = warning;
CREATE EXTENSION customer_analyzer;
SELECT users, events FROM customer_analyzer.generate_demo_data($N_USERS, $DAYS, 42);
CREATE TABLE public.events_by_month (LIKE public.events INCLUDING DEFAULTS)
    PARTITION BY RANGE (created_at);
DO \$\$
DECLARE m timestamptz;
BEGIN
    FOR m IN SELECT generate_series(date_trunc('month', min(created_at)), date_trunc('month', now()), interval '1 month')
             FROM public.events LOOP
        EXECUTE format('CREATE TABLE public.%I PARTITION OF public.events_by_month FOR VALUES FROM (%L) TO (%L)',
                       'events_' || to_char(m, 'YYYY_MM'), m, m + interval '1 month');
    END LOOP;
END \$\$;
CREATE TABLE public.events_other PARTITION OF public.events_by_month DEFAULT;
INSERT INTO public.events_by_month SELECT * FROM public.events;
CREATE INDEX ON public.events_by_month (user_id, created_at);
CREATE INDEX ON public.events_by_month (created_at);
ANALYZE public.events_by_month;
SELECT count(*) AS partitions FROM pg_partition_tree('public.events_by_month') WHERE isleaf;

CREATE TEMP TABLE figures (what text, figure text);
CREATE FUNCTION pg_temp.timed_refresh(label text) RETURNS void LANGUAGE plpgsql AS \$\$
DECLARE t0 timestamptz; n bigint; i int;
BEGIN
    FOR i IN 1..2 LOOP
        t0 := clock_timestamp();
        n := customer_analyzer.refresh_features();
        INSERT INTO figures VALUES (format('refresh_features(), %s events, run %s', label, i),
            format('%s s for %s users', round(extract(epoch FROM clock_timestamp() - t0)::numeric, 2), n));
    END LOOP;
END \$\$;
SELECT now() AS t \gset
SELECT customer_analyzer.configure('public.users', 'public.events', 'public.products') IS NOT NULL AS configured;
SELECT pg_temp.timed_refresh('plain');
CREATE TEMP TABLE digests AS
SELECT 'plain' AS events, md5(string_agg(f::text, '|' ORDER BY f.user_id)) AS digest
FROM customer_analyzer.user_features(:'t') f;
SELECT customer_analyzer.configure('public.users', 'public.events_by_month', 'public.products') IS NOT NULL AS configured;
SELECT pg_temp.timed_refresh('partitioned');
INSERT INTO digests
SELECT 'partitioned', md5(string_agg(f::text, '|' ORDER BY f.user_id))
FROM customer_analyzer.user_features(:'t') f;
INSERT INTO figures
SELECT 'every feature of every user at one time, partitioned = plain',
       (count(DISTINCT digest) = 1)::text FROM digests;
INSERT INTO figures
SELECT 'events table size, plain / partitioned',
       pg_size_pretty(pg_total_relation_size('public.events')) || ' / '
       || pg_size_pretty((SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('public.events_by_month')));
SELECT * FROM figures;
SQL
