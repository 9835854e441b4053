#!/usr/bin/env bash
# Training at scale: a demo shop of n_users (default 1,000,000) over `days` (default 100;
# the generator stops at 200 million user-days), then train(task, 'gbm') under the
# default settings (default task purchase: churn's schedule needs about 190 days of
# history, purchase's 100). Prints the time, how many users the memory cap kept, and the
# backend's peak resident memory (VmHWM, read from /proc by the server itself).
# Needs the extension installed (scripts/demo.sh) and about 10 GB of disk for 1M users.
# Usage: benches/scale_bench.sh [n_users] [days] [task]
set -euo pipefail
cd "$(dirname "$0")/.."
N_USERS=${1:-1000000}
DAYS=${2:-100}
TASK=${3:-purchase}
DB=ca_scale
bash scripts/cluster.sh >/dev/null
runuser -u postgres -- psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d "$DB" <<SQL
\pset footer off
SET client_min_messages = warning;
CREATE EXTENSION customer_analyzer;
\timing on
SELECT users, events FROM customer_analyzer.generate_demo_data($N_USERS, $DAYS, 42);
SELECT pg_size_pretty(pg_total_relation_size('public.events')) AS events_size;
RESET client_min_messages;
SELECT model_id, algorithm, round(auc::numeric, 4) AS auc, deployed FROM customer_analyzer.train('$TASK', 'gbm');
\timing off
SELECT metrics -> 'sample' AS sample, metrics ->> 'train_rows' AS train_rows,
       metrics ->> 'refit_rows' AS refit_rows, pg_size_pretty(size_bytes::bigint) AS model
FROM customer_analyzer.models ORDER BY id DESC LIMIT 1;
SELECT current_setting('customer_analyzer.max_memory_mb') AS max_memory_mb,
       (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+ kB)'))[1] AS backend_peak_rss;
SQL
