-- Segmentation of the feature store: every user in one named segment, quality stored,
-- one user placed without re-clustering, a segment renamed; the view that separates
-- better is kept unless one is named.
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT count(*) AS segments, sum(size) AS users, bool_and(share > 0) AS all_used
FROM customer_analyzer.segment_users('kmeans', 4);
SELECT count(*) = (SELECT count(*) FROM customer_analyzer.user_metrics) AS everyone_assigned
FROM customer_analyzer.user_segments
WHERE segmentation_id = (SELECT segmentation_id FROM customer_analyzer.segmentation_quality WHERE serving);
SELECT algorithm, segments, silhouette BETWEEN -1 AND 1 AS silhouette_in_range, silhouette_sample,
       jsonb_array_length(view_silhouettes) AS views_tried
FROM customer_analyzer.segmentation_quality WHERE serving;
SELECT bool_and(name ~ '^(Champions|Loyal|Promising new|Needs attention|At risk|Hibernating|Bargain hunters|Window shoppers|Premium buyers|Long-standing|Recently active|Outliers)( [0-9]+)?$')
       AND count(DISTINCT name) = count(*) AS names_follow_the_rule
FROM customer_analyzer.current_segments;
SELECT count(*) AS segments FROM customer_analyzer.segment_users('kmeans', 3, '{"view": "behaviour"}');
SELECT view, jsonb_array_length(view_silhouettes) AS views_tried
FROM customer_analyzer.segmentation_quality WHERE serving;

SELECT s.segment_id = us.segment_id AS same_segment
FROM customer_analyzer.segment_of(5) s
JOIN customer_analyzer.user_segments us ON us.user_id = 5 AND us.segmentation_id = s.segmentation_id;

SELECT customer_analyzer.rename_segment(
    (SELECT segmentation_id FROM customer_analyzer.segmentation_quality WHERE serving), 0, 'Our largest group');
SELECT name FROM customer_analyzer.current_segments WHERE segment_id = 0;

SELECT count(*) BETWEEN 2 AND 10 AS agglomerative_segments FROM customer_analyzer.segment_users('agglomerative');
SELECT count(*) >= 1 AS dbscan_segments FROM customer_analyzer.segment_users('dbscan', NULL, '{"min_points": 5}');
