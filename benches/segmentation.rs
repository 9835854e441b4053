//! Criterion benchmarks of segmentation in the core, on demo-shop features (no database):
//! `cargo bench -p customer_analyzer_core --bench segmentation`. CA_BENCH_USERS sets the
//! shop size (default 100,000 users over 240 days, the demo default). Besides timings it
//! prints, for every algorithm and view, the silhouette and how well the segments recover
//! the generator's hidden customer types (adjusted Rand index, normalised mutual
//! information).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use customer_analyzer_core::demo::{self, feature_inputs, product_table, products, DemoSpec};
use customer_analyzer_core::features::compute_features;
use customer_analyzer_core::frame::Frame;
use customer_analyzer_core::metrics::cluster_agreement;
use customer_analyzer_core::segment::{
    segment, silhouette, SegAlgorithm, SegParams, View, MAX_LINKAGE_SAMPLE,
};
use customer_analyzer_core::work::Work;

const END: i64 = 1_750_000_000 * 1_000_000;

/// Every user's features at the end of history, and their hidden customer type.
fn features(n: i64) -> (Frame, Vec<&'static str>) {
    let spec = DemoSpec::new(n, 240, 42, END).expect("valid spec");
    let cat = products(42);
    let table = product_table(&cat);
    let mut frame = Frame::for_catalog();
    let mut types = Vec::new();
    for id in 1..=n {
        let (record, events) = feature_inputs(&spec, id, &cat);
        if let Some(f) = compute_features(END, &record, &events, Some(&table)) {
            frame.push_catalog_row(&f.values);
            types.push(demo::user(&spec, id).customer_type.as_str());
        }
    }
    (frame, types)
}

fn params(algorithm: SegAlgorithm, k: Option<i64>, n: usize) -> SegParams {
    SegParams::from_json(algorithm, k, &serde_json::Value::Null, n).expect("valid params")
}

fn segmentation(c: &mut Criterion) {
    let n: i64 = std::env::var("CA_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let (frame, types) = features(n);
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
        (SegAlgorithm::Agglomerative, None),
        (SegAlgorithm::Dbscan, None),
    ] {
        let label = format!(
            "{}, k = {}",
            algo.as_str(),
            k.map_or("auto".to_string(), |k| k.to_string())
        );
        for view in [Some(View::Rfm), Some(View::Behaviour), None] {
            let mut p = params(algo, k, frame.rows);
            p.view = view;
            let (s, rows) = match segment(&work, &frame, &p) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{label}, view {view:?}: {e}");
                    continue;
                }
            };
            let ids: Vec<usize> = rows.iter().map(|r| r.0).collect();
            let (ari, nmi) = cluster_agreement(&ids, &types);
            eprintln!(
                "{label}, view {}: k = {}, {:?}, silhouette {:.3}, ARI {ari:.3}, NMI {nmi:.3}, Davies-Bouldin {:.3}, views tried {:?}",
                view.map_or("auto".to_string(), |v| v.as_str().to_string()),
                s.segments.iter().filter(|x| !x.noise).count(),
                s.segments
                    .iter()
                    .map(|x| format!("{} {:.0}%", x.name, x.share * 100.0))
                    .collect::<Vec<_>>(),
                s.quality.silhouette,
                s.quality.davies_bouldin,
                s.view_silhouettes
            );
        }
        let p = params(algo, k, frame.rows);
        let (s, _) = segment(&work, &frame, &p).expect("segments");
        g.bench_function(&label, |b| {
            b.iter(|| black_box(segment(&work, &frame, &p).expect("segments")))
        });
        if algo == SegAlgorithm::KMeans && k.is_some() {
            let x = s.preprocessor.transform(&s.inputs.frame(&frame));
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
