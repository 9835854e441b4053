-- customer_analyzer 0.12.0 -> 0.13.0: cheaper batch scoring. latest_scores leaves half of each
-- page free, so that rescoring a user updates its row in place (a HOT update, no new index
-- entry); the setting applies to pages written from now on: to rewrite the existing ones at
-- once, run VACUUM FULL customer_analyzer.latest_scores; after the update (it locks the table
-- while it runs). The prediction log's foreign key to models becomes a check once per
-- statement (same error, 23503, and the same lock on the models named).

ALTER TABLE customer_analyzer.latest_scores SET (fillfactor = 50);

ALTER TABLE customer_analyzer.predictions DROP CONSTRAINT predictions_model_id_fkey;

-- The foreign key of predictions.model_id, checked once per statement: refuses a row whose
-- model customer_analyzer.models does not hold, and locks the models named (FOR KEY SHARE,
-- as a foreign key's check does) until the transaction ends. purge_models(), the only
-- deleter of models, takes the log in SHARE mode before it looks for models without scores.
CREATE FUNCTION customer_analyzer._predictions_name_models() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    missing bigint;
BEGIN
    PERFORM FROM customer_analyzer.models m
    WHERE m.id IN (SELECT a.model_id FROM added a)
    FOR KEY SHARE OF m;
    SELECT a.model_id INTO missing
    FROM (SELECT DISTINCT model_id FROM added) a
    WHERE NOT EXISTS (SELECT FROM customer_analyzer.models m WHERE m.id = a.model_id)
    LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'customer_analyzer.predictions cannot log a score of model %: customer_analyzer.models has no such model', missing
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'The log holds scores of stored models: score_all() and the rescoring worker write it.';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER predictions_name_models AFTER INSERT ON customer_analyzer.predictions
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION customer_analyzer._predictions_name_models();
COMMENT ON FUNCTION customer_analyzer._predictions_name_models() IS
    'Internal: the foreign key of predictions.model_id, checked once per statement (23503 for a model that does not exist), locking the models named as a foreign key does.';
REVOKE EXECUTE ON FUNCTION customer_analyzer._predictions_name_models() FROM PUBLIC;
