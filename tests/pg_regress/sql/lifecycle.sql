-- The lifecycle: a champion/challenger test, the outcomes of matured predictions, live
-- metrics beside the holdout, the arms compared, and what the extension keeps.
\set VERBOSITY default
\set SHOW_CONTEXT never

-- a challenger for churn: trained on the same history, stored, not deployed
SELECT model_id AS challenger
FROM customer_analyzer.train('churn', 'logistic', '{"snapshots": 4, "deploy": "never"}', '2026-06-01 00:00:00+00') \gset
SELECT customer_analyzer.start_ab_test('churn', :challenger, 0.5) AS test_id \gset
SELECT task, share, running, end_reason, challenger_algorithm
FROM customer_analyzer.ab_tests WHERE test_id = :test_id;
-- one test per task at a time
SELECT customer_analyzer.start_ab_test('churn', :challenger, 0.5);
-- user_predictions() (the dashboard's call) names the arm of the model that scored each
-- user, as predict() routes them
SELECT count(DISTINCT p.arm) AS arms,
       bool_and((p.arm = 'challenger') = (p.model_id = :challenger) AND p.model_id = s.model_id) AS arm_names_the_model
FROM generate_series(1, 60) u
CROSS JOIN LATERAL customer_analyzer.user_predictions(u, 1) p
CROSS JOIN LATERAL customer_analyzer.predict(p.task, u) s
WHERE p.task = 'churn';

-- the history scored as it was on 1 March: each user by the model of their arm
SELECT customer_analyzer.score_all('churn', '2026-03-01 00:00:00+00') AS scored;
SELECT arm, count(*) AS predictions, count(DISTINCT model_id) AS models,
       bool_and((arm = 'challenger') = (model_id = :challenger)) AS model_of_the_arm
FROM customer_analyzer.predictions
WHERE task = 'churn' AND as_of = '2026-03-01 00:00:00+00'
GROUP BY arm ORDER BY arm;

-- more than 60 days ago, inside the history: those predictions have matured and get
-- training's labels (its population too: users active in the 30 days before)
SELECT count(*) AS model_weeks, sum(predictions) AS matured, sum(positives) AS churned
FROM customer_analyzer.evaluate_matured('churn');
SELECT count(*) AS disagreements
FROM customer_analyzer.prediction_outcomes o
FULL JOIN customer_analyzer.labels('churn', '2026-03-01 00:00:00+00') l USING (user_id)
WHERE o.outcome IS DISTINCT FROM l.label;
SELECT role, live_predictions, round(live_auc::numeric, 3) AS live_auc,
       round(live_brier::numeric, 3) AS live_brier, holdout_auc IS NOT NULL AS has_holdout
FROM customer_analyzer.model_health WHERE task = 'churn' ORDER BY role;

-- the arms compared on those outcomes
SELECT arm, users, positives, round(auc::numeric, 3) AS auc,
       auc_low < auc AND auc < auc_high AS auc_in_its_interval,
       round(positive_rate::numeric, 3) AS positive_rate,
       round(top_decile_lift::numeric, 2) AS lift,
       round(auc_difference::numeric, 3) AS auc_difference, round(p_value::numeric, 3) AS p_value
FROM customer_analyzer.ab_report('churn') ORDER BY arm;

-- promote: the challenger serves everyone and the test ends (done here to show the call;
-- the report above says this challenger is no better)
SELECT customer_analyzer.promote('churn') = :challenger AS promoted;
SELECT running, end_reason FROM customer_analyzer.ab_tests WHERE test_id = :test_id;
SELECT customer_analyzer.stop_ab_test('churn');

-- the prediction log is never rewritten; prune() trims it by age, forget_user() by user
UPDATE customer_analyzer.predictions SET score = 0;
SET customer_analyzer.prediction_retention = '7d';
SELECT * FROM customer_analyzer.prune() ORDER BY table_name;
SELECT * FROM customer_analyzer.forget_user(5) ORDER BY table_name;
SELECT count(*) AS rows_left_about_user_5
FROM (SELECT user_id FROM customer_analyzer.predictions UNION ALL
      SELECT user_id FROM customer_analyzer.latest_scores UNION ALL
      SELECT user_id FROM customer_analyzer.matured_predictions UNION ALL
      SELECT user_id FROM customer_analyzer.user_metrics) x
WHERE user_id = 5;

-- retrain: the serving model's recipe (here the promoted logistic challenger, asked
-- with 4 snapshots) on all the data, deployed only if it beats the serving model on the
-- new holdout; every retrain is in retrain_log
SELECT task, algorithm, previous_model_id = :challenger AS replaces_the_challenger,
       deployed = (previous_auc < auc) AS deployed_only_if_better
FROM customer_analyzer.retrain('churn');
SELECT task, trigger, reason, previous_model_id = :challenger AS previous, sqlstate
FROM customer_analyzer.retrain_log ORDER BY id;
SELECT (metrics -> 'requested' -> 'params') AS recipe
FROM customer_analyzer.models WHERE id = (SELECT max(new_model_id) FROM customer_analyzer.retrain_log);

-- drift: the serving model's baseline (its population at the end of its training data)
-- against today's feature store. This shop's history ended months ago, so nobody is in
-- the churn population today:
SELECT feature, kind FROM customer_analyzer.drift_report('churn') LIMIT 3;
SELECT count(*) AS churn_drift_rows FROM customer_analyzer.drift WHERE task = 'churn';
-- a few users come back today; the figures move with the clock, so only their shape is
-- shown here
INSERT INTO public.events (user_id, event_type, created_at, event_data)
SELECT id, 'page_view', now() - interval '1 hour', '{}' FROM public.users WHERE id <= 60;
SELECT customer_analyzer.refresh_features() > 0 AS refreshed;
SELECT feature, kind FROM customer_analyzer.drift_report('churn') LIMIT 3;
SELECT kind, count(*) AS columns, bool_and(psi >= 0) AS psi_set,
       bool_and(kind <> 'category' OR ks IS NULL) AS no_ks_for_categories,
       bool_and(level IN ('stable', 'moderate', 'major')) AS levelled,
       bool_and(missing_then BETWEEN 0 AND 1 AND missing_now BETWEEN 0 AND 1) AS shares,
       max(users_now) AS users_now
FROM customer_analyzer.drift WHERE task = 'churn' GROUP BY kind ORDER BY kind;
-- the returning users are unlike the population the model was trained on
SELECT level FROM customer_analyzer.drift_report('churn') WHERE feature = '(score)';

-- the real-time path at a glance (no worker runs in this database)
SELECT depth, oldest_item_age, worker_last_seen, errors_last_hour FROM customer_analyzer.queue_status;
