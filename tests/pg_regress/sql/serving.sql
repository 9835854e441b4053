-- Serving: one user from the model cache, explanations, batch scoring point in time.
\set VERBOSITY default
\set SHOW_CONTEXT never

-- scores are probabilities; the label uses the model's threshold
SELECT customer_analyzer.predict_churn(5) BETWEEN 0 AND 1 AS churn_is_a_probability,
       customer_analyzer.predict_purchase(5) BETWEEN 0 AND 1 AS purchase_is_a_probability;
SELECT model_id, label = (score >= (SELECT threshold FROM customer_analyzer.model_metrics m
                                    WHERE m.model_id = p.model_id)) AS label_at_threshold
FROM customer_analyzer.predict('purchase', 5) p;

-- explanations name catalog features, largest contribution first
SELECT count(*) AS features, bool_and(c.name IS NOT NULL) AS all_in_catalog
FROM customer_analyzer.explain('purchase', 5, 4) e
LEFT JOIN customer_analyzer.feature_catalog c ON c.name = e.feature;

-- batch scoring of the history as it was on 1 June: every user, the same scores on every run
SELECT customer_analyzer.score_all('purchase', '2026-06-01 00:00:00+00') AS scored;
SELECT count(*) AS users, round(avg(score)::numeric, 4) AS mean_score, sum(label::int) AS predicted_buyers
FROM customer_analyzer.predictions WHERE task = 'purchase' AND as_of = '2026-06-01 00:00:00+00';
SELECT customer_analyzer.score_all('churn') = (SELECT count(*) FROM customer_analyzer.user_metrics) AS scored_the_store;
SELECT task, count(*) FROM customer_analyzer.latest_predictions GROUP BY task ORDER BY task;
