//! When the snapshots of a training are taken, and what each is for.
//!
//! With `h` the task's label horizon, `end` the newest time labels may look at, and
//! `step` the days between stacked snapshots:
//!
//! ```text
//!   train ... train   |  h  |  validation  |  h  |  holdout  |  h  | end
//! ```
//!
//! - the holdout is `end - h`, the newest snapshot whose label has matured;
//! - the validation snapshot is one horizon earlier, `holdout - h`;
//! - the training snapshots end one more horizon earlier, `validation - h`, and go back
//!   `step` days at a time.
//!
//! So no label window of an earlier role reaches into a later role's period: a training
//! label looks at most up to the validation snapshot, and a validation label at most up
//! to the holdout. Settings are chosen on the validation snapshot and measured on the
//! holdout; then the model that serves is refitted with those settings on the `refit`
//! snapshots, the newest matured ones (`end - h`, and `step` days back), so honest
//! evaluation does not make it stale.

use crate::events::MICROS_PER_DAY;
use crate::Error;

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Oldest first.
    pub train: Vec<i64>,
    pub validation: i64,
    pub holdout: i64,
    /// The newest matured snapshots, oldest first; the serving model learns from these.
    pub refit: Vec<i64>,
}

impl Schedule {
    /// `snapshots` training (and refit) snapshots `step_days` apart before `end`, all
    /// after `earliest` (a snapshot needs some history before it).
    pub fn new(
        end: i64,
        horizon_days: i64,
        snapshots: usize,
        step_days: usize,
        earliest: i64,
    ) -> Result<Schedule, Error> {
        let h = horizon_days * MICROS_PER_DAY;
        let step = step_days as i64 * MICROS_PER_DAY;
        let holdout = end - h;
        let validation = holdout - h;
        let back = |from: i64| -> Vec<i64> {
            let mut v: Vec<i64> = (0..snapshots as i64)
                .map(|k| from - k * step)
                .filter(|&t| t > earliest)
                .collect();
            v.reverse();
            v
        };
        let train = back(validation - h);
        if train.is_empty() || validation <= earliest {
            return Err(Error::NotEnoughData(format!(
                "the history is too short: a training snapshot, a validation snapshot and a holdout, \
                 each {horizon_days} days apart, need about {} days of history after the first week",
                3 * horizon_days
            )));
        }
        Ok(Schedule {
            train,
            validation,
            holdout,
            refit: back(holdout),
        })
    }

    /// Every distinct snapshot time, oldest first.
    pub fn all_times(&self) -> Vec<i64> {
        let mut t: Vec<i64> = self
            .train
            .iter()
            .chain(&self.refit)
            .copied()
            .chain([self.validation, self.holdout])
            .collect();
        t.sort_unstable();
        t.dedup();
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = MICROS_PER_DAY;

    #[test]
    fn roles_are_a_horizon_apart_and_labels_never_reach_a_later_role() {
        let end = 1000 * DAY;
        for (h, n, step) in [(60, 8, 7), (30, 8, 7), (30, 52, 1), (60, 2, 60)] {
            let s = Schedule::new(end, h, n, step, 0).unwrap();
            let hz = h * DAY;
            assert_eq!(s.holdout, end - hz);
            assert_eq!(s.validation, s.holdout - hz);
            // a training label window (T, T + h] ends at or before the validation snapshot
            assert!(s.train.iter().all(|&t| t + hz <= s.validation));
            // the validation label window ends at or before the holdout
            assert!(s.validation + hz <= s.holdout);
            // every label has matured by the end
            assert!(s.refit.iter().all(|&t| t + hz <= end));
            assert_eq!(s.train.len(), n);
            assert_eq!(s.refit.last(), Some(&s.holdout));
            assert!(s.train.windows(2).all(|w| w[1] - w[0] == step as i64 * DAY));
        }
    }

    #[test]
    fn short_histories_are_refused_or_trimmed() {
        // history from day 30 to day 220 with a 60-day horizon: the training snapshots
        // end at day 40 and only two of them fall after day 30
        let s = Schedule::new(220 * DAY, 60, 8, 7, 30 * DAY).unwrap();
        assert_eq!(s.train, vec![33 * DAY, 40 * DAY]);
        assert_eq!((s.validation, s.holdout), (100 * DAY, 160 * DAY));
        // to day 200: no room for a training snapshot after day 30
        assert!(matches!(
            Schedule::new(200 * DAY, 60, 8, 7, 30 * DAY),
            Err(Error::NotEnoughData(_))
        ));
    }
}
