-- customer_analyzer 0.8.0 -> 0.9.0: fewer index writes on the real-time path. The
-- prediction log finds a model's rows through a block range index (models follow each
-- other in time) instead of a B-tree written for every logged score, and the rescoring
-- queue loses its index by first_enqueued_at (the queue is short; every event the shop
-- inserted wrote an entry in it).

DROP INDEX customer_analyzer.predictions_model_id_idx;
CREATE INDEX predictions_model_id_idx ON customer_analyzer.predictions USING brin (model_id);
DROP INDEX customer_analyzer.rescore_queue_first_enqueued_at_idx;
