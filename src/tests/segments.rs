//! Segmentation inside PostgreSQL: named segments, stored assignments, every algorithm
//! and bad input.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::support::*;

    #[pg_test]
    fn segmentation_names_stores_and_assigns() {
        small_demo();
        run("SELECT customer_analyzer.refresh_features()");
        let users = one::<i64>("SELECT count(*) FROM customer_analyzer.user_metrics").unwrap_or(0);
        let total = one::<i64>(
            "SELECT sum(size)::bigint FROM customer_analyzer.segment_users('kmeans', 4)",
        );
        assert_eq!(total, Some(users));
        let seg = one::<i64>(
            "SELECT segmentation_id FROM customer_analyzer.segmentation_quality WHERE serving",
        )
        .unwrap_or(-1);
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM customer_analyzer.user_segments WHERE segmentation_id = {seg}")),
            Some(users)
        );
        assert_eq!(
            one::<i32>("SELECT segments FROM customer_analyzer.segmentation_quality WHERE serving"),
            Some(4)
        );
        let q = one::<bool>(
            "SELECT silhouette BETWEEN -1 AND 1 AND inertia > 0 AND davies_bouldin > 0 AND silhouette_sample > 0
             FROM customer_analyzer.segmentation_quality WHERE serving",
        );
        assert_eq!(q, Some(true));
        // names come from the documented rule and are unique within a segmentation
        let named = one::<bool>(&format!(
            "SELECT bool_and(name ~ '^(Champions|Loyal|Promising new|Needs attention|At risk|Hibernating|Bargain hunters|Window shoppers|Premium buyers|Long-standing|Recently active|Outliers)( [0-9]+)?$')
                    AND count(DISTINCT name) = count(*)
             FROM customer_analyzer.segments WHERE segmentation_id = {seg}"
        ));
        assert_eq!(named, Some(true));
        // without a view, both were clustered and the better kept
        assert_eq!(
            one::<bool>(
                "SELECT jsonb_array_length(view_silhouettes) = 2
                        AND silhouette = (SELECT max((v ->> 'silhouette')::float8) FROM jsonb_array_elements(view_silhouettes) v)
                 FROM customer_analyzer.segmentation_quality WHERE serving",
            ),
            Some(true)
        );
        // segment_of agrees with the stored assignment, without re-clustering
        let agree = one::<bool>(&format!(
            "SELECT bool_and(s.segment_id = us.segment_id)
             FROM customer_analyzer.user_segments us, LATERAL customer_analyzer.segment_of(us.user_id) s
             WHERE us.segmentation_id = {seg} AND us.user_id <= 40"
        ));
        assert_eq!(agree, Some(true));
        let models_before = one::<i64>("SELECT count(*) FROM customer_analyzer.models");
        run("INSERT INTO public.users VALUES (90001, 1, 'new', now() - interval '2 days', 'member');
             INSERT INTO public.events (user_id, event_type, created_at, event_data)
             VALUES (90001, 'product_view', now() - interval '1 day', '{\"product_id\": 3}')");
        assert!(one::<i32>("SELECT segment_id FROM customer_analyzer.segment_of(90001)").is_some());
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.models"),
            models_before
        );
        // renaming reaches every place the name is shown
        run(&format!(
            "SELECT customer_analyzer.rename_segment({seg}, 0, 'Our biggest group')"
        ));
        assert_eq!(
            one::<String>(&format!(
                "SELECT segment_name FROM customer_analyzer.user_segments WHERE segmentation_id = {seg} AND segment_id = 0 LIMIT 1"
            )),
            Some("Our biggest group".into())
        );
        assert_fails(
            &format!("SELECT customer_analyzer.rename_segment({seg}, 99, 'x')"),
            "22023",
        );
        assert_fails(
            &format!("SELECT customer_analyzer.rename_segment({seg}, 0, '  ')"),
            "22023",
        );
    }

    #[pg_test]
    fn a_segmentation_fitted_on_a_sample_places_and_counts_every_user() {
        small_demo();
        run("SELECT customer_analyzer.refresh_features()");
        let users = one::<i64>("SELECT count(*) FROM customer_analyzer.user_metrics").unwrap_or(0);
        assert!(users > 300, "{users} users");
        run("SELECT * FROM customer_analyzer.segment_users('kmeans', 4, '{\"fit_sample\": 150}')");
        let seg = one::<i64>(
            "SELECT segmentation_id FROM customer_analyzer.segmentation_quality WHERE serving",
        )
        .unwrap_or(-1);
        assert_eq!(
            one::<i64>(
                "SELECT clustered_sample FROM customer_analyzer.segmentation_quality WHERE serving"
            ),
            Some(150)
        );
        // every user is placed once, and the segments' sizes, shares and order are theirs
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(DISTINCT user_id) FROM customer_analyzer.user_segments WHERE segmentation_id = {seg}"
            )),
            Some(users)
        );
        assert_eq!(
            one::<bool>(&format!(
                "WITH placed AS (SELECT segment_id, count(*) AS n FROM customer_analyzer.user_segments
                                 WHERE segmentation_id = {seg} GROUP BY segment_id)
                 SELECT bool_and(s.size = coalesce(p.n, 0) AND abs(s.share - s.size::float8 / {users}) < 1e-12)
                        AND bool_and(s.size >= coalesce(l.size, s.size))
                        AND sum(s.size) = {users}
                 FROM customer_analyzer.segments s
                 LEFT JOIN placed p USING (segment_id)
                 LEFT JOIN customer_analyzer.segments l
                        ON l.segmentation_id = s.segmentation_id AND l.segment_id = s.segment_id + 1
                 WHERE s.segmentation_id = {seg}"
            )),
            Some(true)
        );
        // the profiles are the members' means over every user, not the sample's
        assert_eq!(
            one::<bool>(&format!(
                "SELECT bool_and(abs(s.mean_monetary - p.spent) < 1e-6 * greatest(1, p.spent))
                 FROM customer_analyzer.segments s
                 JOIN (SELECT us.segment_id, avg(m.total_spent)::float8 AS spent
                       FROM customer_analyzer.user_segments us
                       JOIN customer_analyzer.user_metrics m USING (user_id)
                       WHERE us.segmentation_id = {seg} GROUP BY us.segment_id) p USING (segment_id)
                 WHERE s.segmentation_id = {seg}"
            )),
            Some(true)
        );
        // the stored place of every user is the one segment_of() gives
        assert_eq!(
            one::<bool>(&format!(
                "SELECT bool_and(s.segment_id = us.segment_id AND abs(s.distance - us.distance) < 1e-9)
                 FROM customer_analyzer.user_segments us, LATERAL customer_analyzer.segment_of(us.user_id) s
                 WHERE us.segmentation_id = {seg}"
            )),
            Some(true)
        );
    }

    #[pg_test]
    fn each_view_is_kept_when_asked_for() {
        small_demo();
        run("SELECT customer_analyzer.refresh_features()");
        for view in ["rfm", "behaviour"] {
            run(&format!(
                "SELECT * FROM customer_analyzer.segment_users('kmeans', 3, '{{\"view\": \"{view}\"}}')"
            ));
            assert_eq!(
                one::<String>("SELECT view || ',' || jsonb_array_length(view_silhouettes) FROM customer_analyzer.segmentation_quality WHERE serving"),
                Some(format!("{view},1"))
            );
            // segment_of reads the same inputs the clustering saw
            let agree = one::<bool>(
                "SELECT bool_and(s.segment_id = us.segment_id)
                 FROM customer_analyzer.user_segments us
                 JOIN customer_analyzer.segmentation_quality q ON q.segmentation_id = us.segmentation_id AND q.serving,
                 LATERAL customer_analyzer.segment_of(us.user_id) s
                 WHERE us.user_id <= 60",
            );
            assert_eq!(agree, Some(true), "{view}");
        }
        for bad in [r#"{"view": "colour"}"#, r#"{"view": 3}"#] {
            assert_fails(
                &format!("SELECT * FROM customer_analyzer.segment_users('kmeans', 3, '{bad}')"),
                "22023",
            );
        }
    }

    #[pg_test]
    fn dbscan_and_agglomerative_with_churn_rates() {
        small_demo();
        run("SELECT customer_analyzer.refresh_features()");
        train("churn", "gbm", QUICK);
        let n =
            one::<i64>("SELECT count(*) FROM customer_analyzer.segment_users('agglomerative', 3)");
        assert_eq!(n, Some(3));
        assert_eq!(
            one::<bool>("SELECT bool_and(churn_rate BETWEEN 0 AND 1) FROM customer_analyzer.current_segments"),
            Some(true)
        );
        // DBSCAN, eps from the k-distance curve: noise, if any, is its own named segment
        let rows = one::<i64>("SELECT count(*) FROM customer_analyzer.segment_users('dbscan', NULL, '{\"min_points\": 5}')");
        assert!(rows.unwrap_or(0) >= 1);
        let noise_named = one::<bool>(
            "SELECT coalesce(bool_and(name = 'Outliers'), true) FROM customer_analyzer.current_segments WHERE is_noise",
        );
        assert_eq!(noise_named, Some(true));
        assert!(
            one::<f64>("SELECT eps FROM customer_analyzer.segmentation_quality WHERE serving")
                .unwrap_or(0.0)
                > 0.0
        );
        // k chosen by silhouette when k is NULL
        run("SELECT * FROM customer_analyzer.segment_users('kmeans')");
        assert_eq!(
            one::<i64>("SELECT jsonb_array_length(k_scores) FROM customer_analyzer.segmentation_quality WHERE serving"),
            Some(9)
        );
    }

    #[pg_test]
    fn segmentation_bad_input_is_refused() {
        small_demo();
        assert_fails("SELECT * FROM customer_analyzer.segment_users()", "55000");
        assert_fails("SELECT * FROM customer_analyzer.segment_of(1)", "55000");
        run("SELECT customer_analyzer.refresh_features()");
        assert_fails(
            "SELECT * FROM customer_analyzer.segment_users('kmeans', 1)",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.segment_users('kmeans', 100000)",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.segment_users('spectral')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.segment_users('dbscan', NULL, '{\"eps\": 0}')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.segment_users('dbscan', NULL, '{\"eps\": -2}')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.segment_users('dbscan', NULL, '{\"min_points\": 0}')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.segment_users('kmeans', NULL, '{\"colour\": 1}')",
            "22023",
        );
        assert_fails(
            "SELECT * FROM customer_analyzer.segment_users(NULL)",
            "22004",
        );
        for fit in ["99", "1000001", "\"all\""] {
            assert_fails(
                &format!("SELECT * FROM customer_analyzer.segment_users('kmeans', 3, '{{\"fit_sample\": {fit}}}')"),
                "22023",
            );
        }
        assert_eq!(
            one::<i64>("SELECT count(*) FROM customer_analyzer.segments"),
            Some(0)
        );
    }
}
