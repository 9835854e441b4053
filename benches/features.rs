//! Criterion benchmarks of the core: features of one user from in-memory events, and
//! demo-shop simulation. Run with `cargo bench -p customer_analyzer_core`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use customer_analyzer_core::demo::{products, simulate_user, DemoSpec};
use customer_analyzer_core::events::Event;
use customer_analyzer_core::features::{compute_features, Product, ProductTable, UserRecord};

const END: i64 = 1_750_000_000 * 1_000_000;

fn shop(n: i64) -> (ProductTable, Vec<(UserRecord, Vec<Event>)>) {
    let spec = DemoSpec::new(n, 180, 42, END).expect("valid spec");
    let cat = products(42);
    let table = ProductTable::new(cat.iter().map(|p| {
        (
            p.id,
            Product {
                category: Some(p.category.to_string()),
                price: Some(p.price),
            },
        )
    }));
    let users = (1..=n)
        .map(|id| {
            let (u, evs) = simulate_user(&spec, id, &cat);
            let events = evs
                .iter()
                .map(|e| {
                    let data: serde_json::Value = serde_json::from_str(&e.data).expect("demo json");
                    Event::from_raw(e.at, e.event_type, &data)
                })
                .collect();
            let record = UserRecord {
                user_id: u.id,
                registered_at: u.registered_at,
                status: Some(u.status.to_string()),
                has_username: Some(u.username.is_some()),
            };
            (record, events)
        })
        .collect();
    (table, users)
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

criterion_group!(benches, features, demo);
criterion_main!(benches);
