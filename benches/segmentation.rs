//! Criterion benchmarks of segmentation in the core, on demo-shop features (no database):
//! `cargo bench -p customer_analyzer_core --bench segmentation`. CA_BENCH_USERS sets the
//! shop size (default 100,000 users).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use customer_analyzer_core::demo::{feature_inputs, product_table, products, DemoSpec};
use customer_analyzer_core::features::compute_features;
use customer_analyzer_core::frame::Frame;
use customer_analyzer_core::segment::{
    segment, silhouette, SegAlgorithm, SegParams, MAX_LINKAGE_SAMPLE,
};
use customer_analyzer_core::work::Work;

const END: i64 = 1_750_000_000 * 1_000_000;

fn features(n: i64) -> Frame {
    let spec = DemoSpec::new(n, 180, 42, END).expect("valid spec");
    let cat = products(42);
    let table = product_table(&cat);
    let mut frame = Frame::for_catalog();
    for id in 1..=n {
        let (record, events) = feature_inputs(&spec, id, &cat);
        if let Some(f) = compute_features(END, &record, &events, Some(&table)) {
            frame.push_catalog_row(&f.values);
        }
    }
    frame
}

fn params(algorithm: SegAlgorithm, k: Option<i64>, n: usize) -> SegParams {
    SegParams::from_json(algorithm, k, &serde_json::Value::Null, n).expect("valid params")
}

fn segmentation(c: &mut Criterion) {
    let n: i64 = std::env::var("CA_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let frame = features(n);
    // CA_BENCH_THREADS: the pool size, as customer_analyzer.max_threads (default 2)
    let threads: usize = std::env::var("CA_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let work = Work::unbounded(threads);
    let mut g = c.benchmark_group(format!("segment {} users", frame.rows));
    g.sample_size(10);
    for (algo, k) in [
        (SegAlgorithm::KMeans, Some(6)),
        (SegAlgorithm::KMeans, None),
        (SegAlgorithm::Agglomerative, Some(6)),
        (SegAlgorithm::Dbscan, None),
    ] {
        let p = params(algo, k, frame.rows);
        let label = format!(
            "{}, k = {}",
            algo.as_str(),
            k.map_or("auto".to_string(), |k| k.to_string())
        );
        let (s, _) = segment(&work, &frame, &p).expect("segments");
        eprintln!(
            "{label}: {} inputs after preprocessing, {} segments {:?}, silhouette {:.3} on {} users, Davies-Bouldin {:.3}, clustered sample {}",
            s.preprocessor.n_outputs(),
            s.segments.len(),
            s.segments.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(),
            s.quality.silhouette,
            s.quality.silhouette_sample,
            s.quality.davies_bouldin,
            s.quality.clustered_sample
        );
        g.bench_function(&label, |b| {
            b.iter(|| black_box(segment(&work, &frame, &p).expect("segments")))
        });
        if algo == SegAlgorithm::KMeans && k.is_some() {
            let x = s.preprocessor.transform(&frame);
            let d = s.preprocessor.n_outputs();
            let rows: Vec<usize> = (0..2000.min(frame.rows)).collect();
            let labels: Vec<Option<usize>> = rows
                .iter()
                .map(|&i| Some(s.assign(frame.numeric_row(i), &[]).0))
                .collect();
            g.bench_function("silhouette on 2,000 users", |b| {
                b.iter(|| black_box(silhouette(&work, &x, d, &rows, &labels).expect("runs")))
            });
            // kodama's linkage cannot be interrupted: this is the longest a cancel waits
            let m = MAX_LINKAGE_SAMPLE.min(frame.rows);
            let mut condensed = Vec::with_capacity(m * (m - 1) / 2);
            for a in 0..m {
                for b in a + 1..m {
                    let s: f64 = (0..d).map(|j| (x[a * d + j] - x[b * d + j]).powi(2)).sum();
                    condensed.push(s.sqrt());
                }
            }
            g.bench_function(
                format!("Ward linkage of {m} users (uninterruptible)"),
                |b| {
                    b.iter(|| {
                        let mut c = condensed.clone();
                        black_box(kodama::linkage(&mut c, m, kodama::Method::Ward).len())
                    })
                },
            );
            g.bench_function("assign one user (segment_of without SQL)", |b| {
                b.iter(|| black_box(s.assign(frame.numeric_row(7), &[])))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, segmentation);
criterion_main!(benches);
