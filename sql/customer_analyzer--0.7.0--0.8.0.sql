-- customer_analyzer 0.7.0 -> 0.8.0: each user's newest prediction per task is kept in
-- latest_scores, written with the log, and the log loses its index by user (every score
-- the worker logged landed on a random page of it).

CREATE TABLE customer_analyzer.latest_scores (
    task text NOT NULL,
    user_id bigint NOT NULL,
    prediction_id bigint NOT NULL,
    score double precision NOT NULL,
    PRIMARY KEY (task, user_id)
);
SELECT pg_catalog.pg_extension_config_dump('customer_analyzer.latest_scores', '');

-- what latest_predictions showed until now
INSERT INTO customer_analyzer.latest_scores (task, user_id, prediction_id, score)
SELECT DISTINCT ON (task, user_id) task, user_id, id, score
FROM customer_analyzer.predictions
ORDER BY task, user_id, predicted_at DESC, as_of DESC, id DESC;

DROP INDEX customer_analyzer.predictions_task_user_idx;

CREATE OR REPLACE VIEW customer_analyzer.latest_predictions AS
SELECT p.*
FROM customer_analyzer.latest_scores l
JOIN customer_analyzer.predictions p ON p.id = l.prediction_id;

COMMENT ON TABLE customer_analyzer.latest_scores IS
    'Each user''s newest prediction log row per task (its id and score), written with the log; latest_predictions reads the rows through it.';
COMMENT ON VIEW customer_analyzer.latest_predictions IS
    'Each user''s newest logged score per task: the prediction log''s row that latest_scores names (the rescoring worker and score_all() write both; each row keeps the as_of of the features it used).';
