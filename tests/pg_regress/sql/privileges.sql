-- Two ways in, given by the owner to existing roles; nothing is open to PUBLIC.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = warning;
DROP ROLE IF EXISTS ca_reader, ca_operator, ca_nobody;
RESET client_min_messages;
CREATE ROLE ca_reader;
CREATE ROLE ca_operator;
CREATE ROLE ca_nobody;
SELECT customer_analyzer.grant_reader('ca_reader');
SELECT customer_analyzer.grant_operator('ca_operator');

SET ROLE ca_nobody;
SELECT customer_analyzer.predict_churn(5);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- a reader predicts and reads the views, and nothing more
SET ROLE ca_reader;
SELECT customer_analyzer.predict_churn(5) BETWEEN 0 AND 1 AS predicts;
SELECT count(*) > 0 AS reads_views FROM customer_analyzer.model_metrics;
SELECT customer_analyzer.deploy(1);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM customer_analyzer.models;
\echo :LAST_ERROR_SQLSTATE
SET customer_analyzer.max_memory_mb = 100000;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- an operator trains, deploys and rolls back, but cannot configure, purge or write tables
SET ROLE ca_operator;
SELECT task, algorithm, deployed FROM customer_analyzer.train('churn', 'logistic',
    '{"snapshots": 4, "deploy": "always"}', '2026-06-01 00:00:00+00');
SELECT customer_analyzer.rollback('churn') IS NOT NULL AS rolled_back;
SELECT customer_analyzer.configure();
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM customer_analyzer.purge_models('1 day');
\echo :LAST_ERROR_SQLSTATE
DELETE FROM customer_analyzer.predictions;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

SELECT customer_analyzer.revoke_reader('ca_operator');
SET ROLE ca_operator;
SELECT customer_analyzer.predict_churn(5);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP OWNED BY ca_reader, ca_operator, ca_nobody;
DROP ROLE ca_reader, ca_operator, ca_nobody;
