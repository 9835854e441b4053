-- customer_analyzer 0.12.0 -> 0.13.0: latest_scores leaves half of each page free, so that
-- rescoring a user updates its row in place (a HOT update, no new index entry). The setting
-- applies to pages written from now on; to rewrite the existing ones at once, run
-- VACUUM FULL customer_analyzer.latest_scores; after the update (it locks the table while it
-- runs).

ALTER TABLE customer_analyzer.latest_scores SET (fillfactor = 50);
