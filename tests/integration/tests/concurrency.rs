//! Several sessions at once: deploy decisions are serialised per task, overlapping
//! refreshes both succeed, and a statement that scores many rows uses one model even
//! when another session deploys meanwhile.

use std::sync::Once;
use std::thread;
use std::time::Duration;

use customer_analyzer_integration::*;

const DB: &str = "ca_it_concurrency";

static SHOP: Once = Once::new();

fn shop() {
    SHOP.call_once(|| fresh_shop(DB, 5_000, 240));
}

#[test]
fn two_trainings_never_both_deploy_against_the_same_champion() {
    shop();
    let mut c = connect(DB);
    // a champion anyone beats: logistic regression with an enormous penalty
    let weak: i64 = value(
        &mut c,
        "SELECT model_id FROM customer_analyzer.train('purchase', 'logistic', '{\"alpha\": 1000000, \"deploy\": \"always\"}')",
    );
    // the same training twice at once: equal holdout AUC, so only the first may deploy
    let call = "SELECT model_id, deployed FROM customer_analyzer.train('purchase', 'gbm', '{\"iterations\": 60}')";
    let runs: Vec<thread::JoinHandle<(i64, bool)>> = (0..2)
        .map(|_| {
            thread::spawn(move || {
                let mut c = connect(DB);
                let r = c
                    .query_one(call, &[])
                    .unwrap_or_else(|e| panic!("{call}: {}", describe(&e)));
                (r.get(0), r.get(1))
            })
        })
        .collect();
    let results: Vec<(i64, bool)> = runs
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| panic!("a training session panicked"))
        })
        .collect();
    let deployed: Vec<&(i64, bool)> = results.iter().filter(|r| r.1).collect();
    assert_eq!(deployed.len(), 1, "{results:?}");
    let winner = deployed[0].0;
    let loser = results
        .iter()
        .find(|r| !r.1)
        .map(|r| r.0)
        .unwrap_or_default();
    let compared: i64 = value(
        &mut c,
        &format!("SELECT (metrics -> 'compared_with' ->> 'model_id')::bigint FROM customer_analyzer.models WHERE id = {loser}"),
    );
    assert_eq!(
        compared, winner,
        "the second decision must see the first one's model"
    );
    let compared: i64 = value(
        &mut c,
        &format!("SELECT (metrics -> 'compared_with' ->> 'model_id')::bigint FROM customer_analyzer.models WHERE id = {winner}"),
    );
    assert_eq!(compared, weak);
    // no deployment replaced the same one twice
    let dup: i64 = value(
        &mut c,
        "SELECT count(*) FROM (SELECT previous_id FROM customer_analyzer.deployments
          WHERE previous_id IS NOT NULL GROUP BY previous_id HAVING count(*) > 1) d",
    );
    assert_eq!(dup, 0);
}

#[test]
fn overlapping_refreshes_both_succeed() {
    shop();
    let runs: Vec<thread::JoinHandle<Result<i64, String>>> = (0..2)
        .map(|_| {
            thread::spawn(|| {
                let mut c = connect(DB);
                c.query_one("SELECT customer_analyzer.refresh_features()", &[])
                    .map(|r| r.get::<_, i64>(0))
                    .map_err(|e| describe(&e))
            })
        })
        .collect();
    for r in runs {
        let n = r
            .join()
            .unwrap_or_else(|_| panic!("a refresh session panicked"))
            .unwrap_or_else(|e| panic!("a refresh failed: {e}"));
        assert!(n > 0);
    }
    let mut c = connect(DB);
    let stored: i64 = value(
        &mut c,
        "SELECT count(*) FROM customer_analyzer.user_metrics",
    );
    let users: i64 = value(
        &mut c,
        "SELECT count(*) FROM public.users WHERE registered_at < now()",
    );
    assert_eq!(stored, users);
}

/// One statement scores every user slowly while another session deploys a new model.
fn one_statement_one_model(prior_write: bool) {
    shop();
    let mut c = connect(DB);
    c.batch_execute(
        "SELECT * FROM customer_analyzer.train('churn', 'logistic', '{\"deploy\": \"always\"}')",
    )
    .unwrap_or_else(|e| panic!("{}", describe(&e)));
    let other: i64 = value(
        &mut c,
        "SELECT model_id FROM customer_analyzer.train('churn', 'gbm', '{\"iterations\": 20, \"deploy\": \"never\"}')",
    );
    let deployer = thread::spawn(move || {
        let mut d = connect(DB);
        thread::sleep(Duration::from_secs(2));
        d.batch_execute(&format!("SELECT customer_analyzer.deploy({other})"))
            .unwrap_or_else(|e| panic!("deploying: {}", describe(&e)));
    });
    if prior_write {
        // a transaction that has written already runs its reads with fresh snapshots
        c.batch_execute("BEGIN; CREATE TEMP TABLE marker (x int); INSERT INTO marker VALUES (1)")
            .unwrap_or_else(|e| panic!("{}", describe(&e)));
    }
    let models: i64 = value(
        &mut c,
        "SELECT count(DISTINCT m) FROM (
             SELECT (customer_analyzer.predict('churn', user_id)).model_id AS m, pg_sleep(0.002)
             FROM customer_analyzer.user_metrics) s",
    );
    deployer
        .join()
        .unwrap_or_else(|_| panic!("the deploying session panicked"));
    assert_eq!(models, 1, "one statement scored with two models");
    if prior_write {
        c.batch_execute("COMMIT")
            .unwrap_or_else(|e| panic!("{}", describe(&e)));
    }
    // the next statement serves the new model
    let now: i64 = value(
        &mut c,
        "SELECT model_id FROM customer_analyzer.predict('churn', 1)",
    );
    assert_eq!(now, other);
}

#[test]
fn a_deploy_never_splits_a_scoring_statement() {
    one_statement_one_model(false);
}

#[test]
fn a_deploy_never_splits_a_scoring_statement_after_a_write() {
    one_statement_one_model(true);
}
