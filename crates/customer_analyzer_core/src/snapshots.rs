//! A training set for many snapshot times from one read of each user's history: the
//! history is sorted once and each snapshot's features come from its prefix before the
//! snapshot, its label from the events after it. Training reads the events once for all
//! snapshots instead of once per snapshot; a test in the extension checks the rows
//! against `user_features(T)` and `labels(T)` at every T.

use crate::events::{Event, EventKind, MICROS_PER_DAY};
use crate::features::{compute_features_sorted, FeatureVector, ProductTable, Resolved, UserRecord};
use crate::task::{Population, Task};

/// One user's facts and every event of theirs up to the end of the label windows.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub user: UserRecord,
    pub events: Vec<Event>,
}

/// One labelled row: the snapshot's index in the times given, the features and the label.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub snapshot: usize,
    pub features: FeatureVector,
    pub label: bool,
}

/// The label of `task` at `as_of` from a history sorted by time: churn is no event at
/// all in (T, T + horizon], purchase is a purchase in it.
pub fn label(task: Task, as_of: i64, sorted: &[Resolved<'_>]) -> bool {
    let end = as_of + task.horizon_days() * MICROS_PER_DAY;
    let from = sorted.partition_point(|e| e.event.at <= as_of);
    let mut window = sorted[from..].iter().take_while(|e| e.event.at <= end);
    match task {
        Task::Churn => window.next().is_none(),
        Task::Purchase => window.any(|e| e.event.kind == EventKind::Purchase),
    }
}

/// Whether a user with these features is in the task's population.
pub fn in_population(task: Task, features: &FeatureVector) -> bool {
    match task.population() {
        Population::Registered => true,
        Population::ActiveInLast30Days => features
            .get("events_last_30_days")
            .and_then(|v| v.as_f64())
            .is_some_and(|n| n > 0.0),
    }
}

/// The labelled rows of one user at each of `times` (any order) at which the user was
/// registered and is in the task's population.
pub fn rows_of(
    task: Task,
    times: &[i64],
    history: &History,
    products: Option<&ProductTable>,
) -> Vec<Row> {
    let mut by_time: Vec<&Event> = history.events.iter().collect();
    by_time.sort_by_key(|e| e.at);
    let sorted = ProductTable::resolve(products, by_time);
    let mut out = Vec::new();
    for (snapshot, &t) in times.iter().enumerate() {
        let before = sorted.partition_point(|e| e.event.at < t);
        // the churn population needs an event in the 30 days before T: most users of a
        // big shop are not in it, so look before computing 68 features to throw away
        if task.population() == Population::ActiveInLast30Days
            && !(before > 0 && sorted[before - 1].event.at >= t - 30 * MICROS_PER_DAY)
        {
            continue;
        }
        let Some(features) = compute_features_sorted(t, &history.user, &sorted[..before], products)
        else {
            continue;
        };
        if in_population(task, &features) {
            out.push(Row {
                snapshot,
                label: label(task, t, &sorted),
                features,
            });
        }
    }
    out
}

/// [`rows_of`] for many users, in parallel on the current rayon pool (call it on the
/// pool: `Work::start` or `Work::install`), in the users' order.
pub fn rows_of_all(
    task: Task,
    times: &[i64],
    histories: &[History],
    products: Option<&ProductTable>,
) -> Vec<Row> {
    use rayon::prelude::*;
    /// Users per parallel task: enough to amortise the split, small enough to balance.
    const CHUNK_USERS: usize = 64;
    histories
        .par_chunks(CHUNK_USERS)
        .flat_map_iter(|chunk| chunk.iter().flat_map(|h| rows_of(task, times, h, products)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::compute_features;
    use crate::testkit::random_shop;

    const DAY: i64 = MICROS_PER_DAY;

    /// The definition, spelled the slow way: features from the whole unsorted history,
    /// labels by scanning every event.
    fn slow_rows(
        task: Task,
        times: &[i64],
        h: &History,
        products: Option<&ProductTable>,
    ) -> Vec<Row> {
        let mut out = Vec::new();
        for (snapshot, &t) in times.iter().enumerate() {
            let Some(features) = compute_features(t, &h.user, &h.events, products) else {
                continue;
            };
            let horizon = t + task.horizon_days() * DAY;
            let in_window = |e: &&Event| e.at > t && e.at <= horizon;
            let label = match task {
                Task::Churn => !h.events.iter().any(|e| in_window(&e)),
                Task::Purchase => h
                    .events
                    .iter()
                    .any(|e| in_window(&e) && e.kind == EventKind::Purchase),
            };
            if in_population(task, &features) {
                out.push(Row {
                    snapshot,
                    features,
                    label,
                });
            }
        }
        out
    }

    #[test]
    fn one_pass_equals_each_snapshot_computed_alone() {
        for seed in 0..4u64 {
            let shop = random_shop(seed, 40);
            let (histories, products) = shop.histories();
            let times: Vec<i64> = [100, 61, 60, 30, 7, 0]
                .iter()
                .map(|d| shop.as_of - d * DAY)
                .collect();
            for task in Task::ALL {
                let mut positives = 0;
                for h in &histories {
                    let fast = rows_of(task, &times, h, Some(&products));
                    assert_eq!(fast, slow_rows(task, &times, h, Some(&products)));
                    positives += fast.iter().filter(|r| r.label).count();
                }
                assert!(positives > 0, "seed {seed} {task:?}: no positive label");
            }
        }
    }

    #[test]
    fn many_users_in_parallel_keep_their_order() {
        let shop = random_shop(7, 200);
        let (histories, products) = shop.histories();
        let times: Vec<i64> = [50, 20, 3].iter().map(|d| shop.as_of - d * DAY).collect();
        let one_by_one: Vec<Row> = histories
            .iter()
            .flat_map(|h| rows_of(Task::Purchase, &times, h, Some(&products)))
            .collect();
        let work = crate::work::Work::unbounded(3);
        let parallel =
            work.install(|| rows_of_all(Task::Purchase, &times, &histories, Some(&products)));
        assert!(one_by_one.len() > 200);
        assert_eq!(parallel, one_by_one);
    }

    #[test]
    fn label_windows_are_half_open() {
        let user = UserRecord {
            user_id: 1,
            registered_at: 0,
            status: None,
            has_username: None,
        };
        let ev = |at: i64, kind| Event {
            at,
            kind,
            amount: None,
            product_id: None,
            command: None,
        };
        let t = 100 * DAY;
        // an event exactly at T is in neither the features (before T) nor the label
        // (after T); one exactly at T + 30 days is in the label
        let h = History {
            user,
            events: vec![
                ev(t, EventKind::Purchase),
                ev(t + 30 * DAY, EventKind::Purchase),
            ],
        };
        let sorted = ProductTable::resolve(None, &h.events);
        assert!(label(Task::Purchase, t, &sorted));
        assert!(!label(Task::Purchase, t + 30 * DAY, &sorted));
        assert!(!label(Task::Churn, t, &sorted));
        assert!(label(Task::Churn, t + 30 * DAY, &sorted));
    }
}
