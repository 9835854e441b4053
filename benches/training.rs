//! Criterion benchmarks of model training and scoring in the core, on features computed
//! from the demo shop (no database): `cargo bench -p customer_analyzer_core --bench training`.
//! CA_BENCH_USERS sets the shop size (default 100,000 users, 68 features); the snapshots
//! follow `schedule` for the purchase task (two training snapshots, validation, holdout).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use customer_analyzer_core::demo::{feature_inputs, product_table, products, DemoSpec};
use customer_analyzer_core::events::{EventKind, MICROS_PER_DAY};
use customer_analyzer_core::features::compute_features;
use customer_analyzer_core::frame::Frame;
use customer_analyzer_core::model::{train, Scorer, Split, TrainingData};
use customer_analyzer_core::params::{Algorithm, TrainParams};
use customer_analyzer_core::schedule::Schedule;
use customer_analyzer_core::work::Work;

const END: i64 = 1_750_000_000 * 1_000_000;

/// Purchase-in-30-days data on the snapshots of the schedule, and the rows' roles.
fn dataset(n: i64) -> (TrainingData, Split) {
    let spec = DemoSpec::new(n, 180, 42, END).expect("valid spec");
    let cat = products(42);
    let table = product_table(&cat);
    let schedule = Schedule::new(END, 30, 2, 7, END - 173 * MICROS_PER_DAY).expect("fits");
    let snapshots = schedule.all_times();
    let mut data = TrainingData {
        frame: Frame::for_catalog(),
        ..TrainingData::default()
    };
    for id in 1..=n {
        let (record, events) = feature_inputs(&spec, id, &cat);
        for (s, &t) in snapshots.iter().enumerate() {
            if let Some(f) = compute_features(t, &record, &events, Some(&table)) {
                let bought = events.iter().any(|e| {
                    e.kind == EventKind::Purchase && e.at > t && e.at <= t + 30 * MICROS_PER_DAY
                });
                data.frame.push_catalog_row(&f.values);
                data.y.push(if bought { 1.0 } else { 0.0 });
                data.snapshot.push(s);
                data.user_id.push(record.user_id);
            }
        }
    }
    let at = |t: i64| snapshots.iter().position(|&s| s == t).expect("a snapshot");
    let train: Vec<usize> = schedule.train.iter().map(|&t| at(t)).collect();
    let refit: Vec<usize> = schedule.refit.iter().map(|&t| at(t)).collect();
    let split = Split::by_snapshot(
        &data,
        &train,
        at(schedule.validation),
        at(schedule.holdout),
        &refit,
    );
    (data, split)
}

fn training(c: &mut Criterion) {
    let n: i64 = std::env::var("CA_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let (data, split) = dataset(n);
    // CA_BENCH_THREADS: the pool size, as customer_analyzer.max_threads (default 2)
    let threads: usize = std::env::var("CA_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let work = Work::unbounded(threads);
    let mut g = c.benchmark_group(format!(
        "train {} rows, refit {} rows x 68 features",
        split.train.len(),
        split.refit.len()
    ));
    g.sample_size(10);
    for algo in [
        Algorithm::Gbm,
        Algorithm::RandomForest,
        Algorithm::Logistic,
        Algorithm::Auto,
    ] {
        let p = TrainParams::defaults(algo);
        g.bench_function(algo.as_str(), |b| {
            b.iter(|| black_box(train(&work, &data, &split, &p).expect("trains")))
        });
        let (model, report) = train(&work, &data, &split, &p).expect("trains");
        let blob = customer_analyzer_core::codec::encode(
            &customer_analyzer_core::codec::Payload::Classifier(model.clone()),
        )
        .expect("encodes");
        eprintln!(
            "{}: chose {}, holdout AUC {:.4}, F1 {:.4}, Brier {:.4} ({:.4} uncalibrated), \
             model {} bytes, candidates {:?}",
            algo.as_str(),
            model.algorithm.as_str(),
            report.holdout.auc,
            report.holdout.f1,
            report.holdout.brier,
            report.holdout_brier_uncalibrated,
            blob.len(),
            report
                .candidates
                .iter()
                .map(|c| (c.algorithm.as_str(), c.validation_auc, c.rounds))
                .collect::<Vec<_>>()
        );
        let scorer = Scorer::new(model).expect("loads");
        let frame = data.frame.select(&split.holdout);
        g.bench_function(
            format!("{} score {} rows", algo.as_str(), frame.rows),
            |b| b.iter(|| black_box(scorer.predict_in(&work, &frame).expect("scores"))),
        );
        g.bench_function(format!("{} score one row", algo.as_str()), |b| {
            b.iter(|| black_box(scorer.predict_one(frame.numeric_row(0), frame.categorical_row(0))))
        });
    }
    g.finish();
}

criterion_group!(benches, training);
criterion_main!(benches);
