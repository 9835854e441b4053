//! Upgrades and backups: a database made with the frozen 0.1.0 schema and filled with
//! that schema's data is updated with `ALTER EXTENSION ... UPDATE` and then matches a
//! fresh install object for object, with its data, models and predictions intact; and a
//! database dumped with pg_dump and restored predicts exactly what it predicted before.

use std::path::PathBuf;
use std::process::Command;

use customer_analyzer_integration::*;

const SOURCE: &str = "ca_it_upgrade_source";

/// Connection arguments of the test server for the client programs.
fn client_args(db: &str) -> Vec<String> {
    let mut args = vec!["-d".to_string(), db.to_string()];
    for part in dsn().split_whitespace() {
        match part.split_once('=') {
            Some(("host", v)) => args.extend(["-h".into(), v.into()]),
            Some(("port", v)) => args.extend(["-p".into(), v.into()]),
            Some(("user", v)) => args.extend(["-U".into(), v.into()]),
            _ => {}
        }
    }
    args
}

fn run(program: PathBuf, args: &[String]) {
    let out = Command::new(&program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn exec(c: &mut Client, sql: &str) {
    c.batch_execute(sql)
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
}

fn empty_database(db: &str) {
    let mut admin = connect("postgres");
    exec(
        &mut admin,
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    );
    exec(&mut admin, &format!("CREATE DATABASE {db}"));
}

/// A shop with models, a segmentation and stored predictions, made once.
fn source() {
    static MADE: std::sync::Once = std::sync::Once::new();
    MADE.call_once(|| {
        fresh_shop(SOURCE, 2000, 240);
        let mut c = connect(SOURCE);
        exec(
            &mut c,
            "SELECT * FROM customer_analyzer.train('churn', 'gbm', '{\"iterations\": 40}');
             SELECT * FROM customer_analyzer.train('purchase', 'logistic');
             SELECT * FROM customer_analyzer.train('churn', 'logistic', '{\"deploy\": \"always\"}');
             SELECT * FROM customer_analyzer.segment_users('kmeans', 4);
             SELECT customer_analyzer.score_all('churn');",
        );
    });
}

/// Every object of the extension as text: definitions, columns, indexes, triggers,
/// comments, privileges, settings. Two databases with the same text have the same
/// extension, object for object.
const FINGERPRINT: &str = r#"
SELECT string_agg(line, E'\n' ORDER BY line) FROM (
    SELECT 'function ' || p.oid::regprocedure || ' ' || pg_get_functiondef(p.oid)
           || ' acl=' || coalesce(p.proacl::text, '') || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '')
    FROM pg_proc p WHERE p.pronamespace = 'customer_analyzer'::regnamespace
    UNION ALL
    SELECT 'relation ' || c.relname || ' ' || c.relkind::text || ' acl=' || coalesce(c.relacl::text, '')
           || ' options=' || coalesce(c.reloptions::text, '')
           || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '')
           || coalesce(' view=' || pg_get_viewdef(c.oid), '')
    FROM pg_class c WHERE c.relnamespace = 'customer_analyzer'::regnamespace
    UNION ALL
    SELECT 'column ' || a.attrelid::regclass || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || ' notnull=' || a.attnotnull || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
           || ' position=' || a.attnum
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = 'customer_analyzer'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
    WHERE c.relnamespace = 'customer_analyzer'::regnamespace
    UNION ALL
    SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = 'customer_analyzer'::regnamespace
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid)
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = 'customer_analyzer'::regnamespace AND NOT t.tgisinternal
    UNION ALL
    SELECT 'event trigger ' || evtname || ' ' || evtevent || ' ' || evtfoid::regproc::text
           || ' comment=' || coalesce(obj_description(oid, 'pg_event_trigger'), '')
    FROM pg_event_trigger
    UNION ALL
    SELECT 'type ' || t.typname || ' comment=' || coalesce(obj_description(t.oid, 'pg_type'), '')
    FROM pg_type t WHERE t.typnamespace = 'customer_analyzer'::regnamespace AND t.typtype = 'c'
      AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid AND c.relkind <> 'c')
    UNION ALL
    SELECT 'dumped with its data ' || c::regclass
    FROM pg_extension, unnest(extconfig) AS c WHERE extname = 'customer_analyzer'
    UNION ALL
    SELECT 'schema comment=' || coalesce(obj_description('customer_analyzer'::regnamespace, 'pg_namespace'), '')
    UNION ALL
    SELECT 'member ' || pg_describe_object(classid, objid, objsubid)
    FROM pg_depend WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
      AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'customer_analyzer')
      -- the #[pg_test] functions of a test build are not part of any release
      AND pg_describe_object(classid, objid, objsubid) !~ '^(function tests\.|schema tests$)'
) lines(line)
"#;

/// Rows of `table` (columns `cols`) copied from database `from` to database `to`.
fn copy_rows(from: &mut Client, to: &mut Client, table: &str, cols: &str) {
    use std::io::{Read, Write};
    let mut data = Vec::new();
    let mut reader = from
        .copy_out(&format!("COPY (SELECT {cols} FROM {table}) TO STDOUT"))
        .unwrap_or_else(|e| panic!("reading {table}: {}", describe(&e)));
    reader
        .read_to_end(&mut data)
        .unwrap_or_else(|e| panic!("reading {table}: {e}"));
    drop(reader);
    let mut w = to
        .copy_in(&format!("COPY {table} ({cols}) FROM STDIN"))
        .unwrap_or_else(|e| panic!("writing {table}: {}", describe(&e)));
    w.write_all(&data)
        .unwrap_or_else(|e| panic!("writing {table}: {e}"));
    w.finish()
        .unwrap_or_else(|e| panic!("writing {table}: {}", describe(&e)));
}

/// What a database predicts for a few users, with the models that predicted it.
fn predictions(c: &mut Client) -> Vec<(i64, i64, f64, i64, f64)> {
    c.query(
        "SELECT u.id, c.model_id, c.score, p.model_id, p.score
         FROM generate_series(1, 40) AS u(id),
              LATERAL customer_analyzer.predict('churn', u.id) c,
              LATERAL customer_analyzer.predict('purchase', u.id) p
         ORDER BY u.id",
        &[],
    )
    .unwrap_or_else(|e| panic!("predicting: {}", describe(&e)))
    .iter()
    .map(|r| {
        (
            r.get::<_, i32>(0) as i64,
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
        )
    })
    .collect()
}

#[test]
fn an_upgrade_from_0_1_0_keeps_data_models_and_predictions() {
    source();
    let frozen =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sql/customer_analyzer--0.1.0.sql");
    let installed = pg_tree().join("share/postgresql/15/extension/customer_analyzer--0.1.0.sql");
    std::fs::copy(&frozen, &installed)
        .unwrap_or_else(|e| panic!("installing {}: {e}", frozen.display()));

    let old = "ca_it_upgrade_old";
    empty_database(old);
    // the shop's own tables, as they are
    let dump = std::env::temp_dir().join("ca_it_shop_tables.sql");
    let mut args = client_args(SOURCE);
    args.extend([
        "-n".into(),
        "public".into(),
        "--no-owner".into(),
        "-f".into(),
    ]);
    args.push(dump.display().to_string());
    run(pg_bin("pg_dump"), &args);
    // the dump makes schema public itself
    exec(&mut connect(old), "DROP SCHEMA public");
    let mut args = client_args(old);
    args.extend([
        "-q".into(),
        "-v".into(),
        "ON_ERROR_STOP=1".into(),
        "-f".into(),
    ]);
    args.push(dump.display().to_string());
    run(pg_bin("psql"), &args);

    let mut src = connect(SOURCE);
    let mut c = connect(old);
    exec(
        &mut c,
        "SET client_min_messages = warning; CREATE EXTENSION customer_analyzer VERSION '0.1.0'",
    );
    assert_eq!(
        value::<String>(
            &mut c,
            "SELECT extversion FROM pg_extension WHERE extname = 'customer_analyzer'"
        ),
        "0.1.0"
    );
    // what 0.1.0 kept, in 0.1.0's own columns
    for (table, cols) in [
        ("customer_analyzer.config", "singleton, users, events, products, configured_at"),
        ("customer_analyzer.user_metrics", "*"),
        (
            "customer_analyzer.models",
            "id, task, algorithm, params, preprocessing, feature_names, catalog_version, trained_as_of, \
             training_from, training_to, metrics, created_at, size_bytes, format_version, model",
        ),
        ("customer_analyzer.deployments", "id, task, model_id, deployed_at, reason"),
        (
            "customer_analyzer.predictions",
            "user_id, task, model_id, score, label, as_of, predicted_at",
        ),
        ("customer_analyzer.segments", "*"),
        ("customer_analyzer.user_segments", "*"),
    ] {
        // "*": every column the 0.1.0 table has (later versions add some)
        let cols = if cols == "*" {
            value::<String>(
                &mut c,
                &format!(
                    "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
                     WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped"
                ),
            )
        } else {
            cols.to_string()
        };
        copy_rows(&mut src, &mut c, table, &cols);
    }
    exec(
        &mut c,
        "SELECT setval('customer_analyzer.models_id_seq', (SELECT max(id) FROM customer_analyzer.models));
         SELECT setval('customer_analyzer.deployments_id_seq', (SELECT max(id) FROM customer_analyzer.deployments));",
    );

    exec(&mut c, "ALTER EXTENSION customer_analyzer UPDATE");
    assert_eq!(
        value::<String>(
            &mut c,
            "SELECT extversion FROM pg_extension WHERE extname = 'customer_analyzer'"
        ),
        "0.14.0"
    );
    // object for object what a fresh install makes
    let fresh: String = value(&mut src, FINGERPRINT);
    let upgraded: String = value(&mut c, FINGERPRINT);
    if fresh != upgraded {
        let f: std::collections::BTreeSet<&str> = fresh.lines().collect();
        let u: std::collections::BTreeSet<&str> = upgraded.lines().collect();
        let only_fresh: Vec<&&str> = f.difference(&u).collect();
        let only_upgraded: Vec<&&str> = u.difference(&f).collect();
        panic!("the upgrade differs from a fresh install:\nonly in a fresh install: {only_fresh:#?}\nonly after the upgrade: {only_upgraded:#?}");
    }
    // the data, models and predictions survive
    for table in [
        "models",
        "deployments",
        "user_metrics",
        "predictions",
        "latest_predictions",
        "segments",
        "user_segments",
    ] {
        let sql = format!("SELECT count(*) FROM customer_analyzer.{table}");
        assert_eq!(
            value::<i64>(&mut c, &sql),
            value::<i64>(&mut src, &sql),
            "{table}"
        );
    }
    assert_eq!(predictions(&mut c), predictions(&mut src));
    let seg = "SELECT string_agg(segment_id::text, ',' ORDER BY u) FROM generate_series(1, 40) u, customer_analyzer.segment_of(u)";
    assert_eq!(value::<String>(&mut c, seg), value::<String>(&mut src, seg));
    // and the new version's behaviour works on the old history
    exec(
        &mut c,
        "SELECT * FROM customer_analyzer.train('churn', 'logistic', '{\"deploy\": \"always\"}')",
    );
    let back: i64 = value(&mut c, "SELECT customer_analyzer.rollback('churn')");
    assert!(back > 0);
    let refused = c.batch_execute("DELETE FROM customer_analyzer.deployments");
    assert_eq!(sqlstate(&refused), "55000");
    let _ = std::fs::remove_file(installed);
}

#[test]
fn a_dump_restored_into_a_new_database_predicts_the_same() {
    source();
    let restored = "ca_it_restored";
    empty_database(restored);
    let dump = std::env::temp_dir().join("ca_it_dump.custom");
    let mut args = client_args(SOURCE);
    args.extend(["-Fc".into(), "-f".into(), dump.display().to_string()]);
    run(pg_bin("pg_dump"), &args);
    let mut args = client_args(restored);
    args.extend(["--exit-on-error".into(), dump.display().to_string()]);
    run(pg_bin("pg_restore"), &args);

    let mut src = connect(SOURCE);
    let mut c = connect(restored);
    for table in [
        "models",
        "deployments",
        "user_metrics",
        "predictions",
        "latest_predictions",
        "segments",
        "user_segments",
        "config",
    ] {
        let sql = format!("SELECT count(*) FROM customer_analyzer.{table}");
        assert_eq!(
            value::<i64>(&mut c, &sql),
            value::<i64>(&mut src, &sql),
            "{table}"
        );
    }
    assert_eq!(predictions(&mut c), predictions(&mut src));
    let served = "SELECT string_agg(task || '=' || model_id, ',' ORDER BY task) FROM customer_analyzer.deployed_models";
    assert_eq!(
        value::<String>(&mut c, served),
        value::<String>(&mut src, served)
    );
    // the restored history keeps its rules
    let refused = c.batch_execute("UPDATE customer_analyzer.models SET algorithm = 'x'");
    assert_eq!(sqlstate(&refused), "55000");
    let _ = std::fs::remove_file(dump);
}
