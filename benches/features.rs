//! Criterion benchmarks of the core: features of one user from in-memory events, and
//! demo-shop simulation. Run with `cargo bench -p customer_analyzer_core`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use customer_analyzer_core::demo::{
    feature_inputs, product_table, products, simulate_user, DemoSpec,
};
use customer_analyzer_core::events::Event;
use customer_analyzer_core::features::{compute_features, ProductTable, UserRecord};
use customer_analyzer_core::snapshots::{rows_of, History};
use customer_analyzer_core::task::Task;

const END: i64 = 1_750_000_000 * 1_000_000;

fn shop(n: i64) -> (ProductTable, Vec<(UserRecord, Vec<Event>)>) {
    let spec = DemoSpec::new(n, 180, 42, END).expect("valid spec");
    let cat = products(42);
    let users = (1..=n).map(|id| feature_inputs(&spec, id, &cat)).collect();
    (product_table(&cat), users)
}

fn features(c: &mut Criterion) {
    let (table, users) = shop(1000);
    let n_events: usize = users.iter().map(|(_, e)| e.len()).sum();
    let mut g = c.benchmark_group("features");
    g.throughput(Throughput::Elements(users.len() as u64));
    g.bench_function(format!("1000 users, {n_events} events"), |b| {
        b.iter(|| {
            for (u, evs) in &users {
                black_box(compute_features(END, u, evs, Some(&table)));
            }
        })
    });
    g.finish();
}

/// The training set of the default churn schedule: 17 weekly snapshots (training,
/// validation, holdout and refit) of each user from one sorted history.
fn snapshots(c: &mut Criterion) {
    let (table, users) = shop(1000);
    let histories: Vec<History> = users
        .into_iter()
        .map(|(user, events)| History { user, events })
        .collect();
    let day = 86_400_000_000i64;
    let times: Vec<i64> = (0..17).map(|k| END - (60 + 7 * k) * day).collect();
    let mut g = c.benchmark_group("snapshots");
    g.throughput(Throughput::Elements(histories.len() as u64));
    for task in [Task::Churn, Task::Purchase] {
        g.bench_function(format!("1000 users x 17 snapshots, {task:?}"), |b| {
            b.iter(|| {
                for h in &histories {
                    black_box(rows_of(task, &times, h, Some(&table)));
                }
            })
        });
    }
    g.finish();
}

fn demo(c: &mut Criterion) {
    let spec = DemoSpec::new(1000, 180, 42, END).expect("valid spec");
    let cat = products(42);
    let mut g = c.benchmark_group("demo");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("simulate 1000 users x 180 days", |b| {
        b.iter(|| {
            for id in 1..=1000 {
                black_box(simulate_user(&spec, id, &cat));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, features, snapshots, demo);
criterion_main!(benches);
