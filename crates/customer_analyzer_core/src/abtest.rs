//! Champion/challenger tests: which arm a user falls in, and how the two arms compare on
//! realised outcomes. The arms hold disjoint users, so the AUC difference is tested as
//! the difference of two independent AUCs with Hanley and McNeil's standard error
//! (DeLong's paired test needs both models scored on the same users).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::metrics;
use crate::Error;

/// The arm of a running test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    Champion,
    Challenger,
}

impl Arm {
    pub fn name(self) -> &'static str {
        match self {
            Arm::Champion => "champion",
            Arm::Challenger => "challenger",
        }
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit hash of one word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The arm of `user_id` in test `test_id`: the challenger for a `share` of users, fixed
/// for the life of the test (the same user always meets the same model) and drawn
/// afresh for each test (a user is not the challenger's in every test).
pub fn arm_of(test_id: i64, user_id: i64, share: f64) -> Arm {
    let h = mix((user_id as u64) ^ mix(test_id as u64 ^ 0x9e37_79b9_7f4a_7c15));
    // the top 53 bits as a uniform number in [0, 1)
    let u = (h >> 11) as f64 / (1u64 << 53) as f64;
    if u < share {
        Arm::Challenger
    } else {
        Arm::Champion
    }
}

/// A figure with its 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

impl Estimate {
    fn normal(value: f64, se: f64) -> Estimate {
        Estimate {
            value,
            low: value - Z95 * se,
            high: value + Z95 * se,
        }
    }

    const UNKNOWN: Estimate = Estimate {
        value: f64::NAN,
        low: f64::NAN,
        high: f64::NAN,
    };
}

const Z95: f64 = 1.959_963_984_540_054;

/// One arm's realised performance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ArmReport {
    pub users: usize,
    pub positives: usize,
    pub auc: Estimate,
    /// Hanley-McNeil standard error of the AUC.
    pub auc_se: f64,
    pub brier: Estimate,
    pub positive_rate: Estimate,
    /// Observed rate among the top tenth of scores over the arm's rate (bootstrap CI).
    pub top_decile_lift: Estimate,
}

/// Hanley and McNeil's (1982) standard error of an AUC from `positives` and `negatives`.
pub fn hanley_mcneil_se(auc: f64, positives: usize, negatives: usize) -> f64 {
    let (n1, n0) = (positives as f64, negatives as f64);
    if n1 < 1.0 || n0 < 1.0 || !auc.is_finite() {
        return f64::NAN;
    }
    let q1 = auc / (2.0 - auc);
    let q2 = 2.0 * auc * auc / (1.0 + auc);
    let var = (auc * (1.0 - auc) + (n1 - 1.0) * (q1 - auc * auc) + (n0 - 1.0) * (q2 - auc * auc))
        / (n1 * n0);
    var.max(0.0).sqrt()
}

/// Wilson's score interval of a proportion.
fn wilson(positives: usize, n: usize) -> Estimate {
    if n == 0 {
        return Estimate::UNKNOWN;
    }
    let (k, n) = (positives as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    Estimate {
        value: p,
        low: centre - half,
        high: centre + half,
    }
}

/// Rate among the top tenth of `scores` (at least one user) over the overall rate.
fn top_decile_lift(y: &[f64], scores: &[f64]) -> f64 {
    let n = y.len();
    if n == 0 {
        return f64::NAN;
    }
    let rate = y.iter().sum::<f64>() / n as f64;
    if rate <= 0.0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..n).collect();
    let top = n.div_ceil(10);
    // the top tenth in any order: a selection, linear, as the bootstrap repeats it
    order.select_nth_unstable_by(top - 1, |&a, &b| scores[b].total_cmp(&scores[a]));
    let hits: f64 = order[..top].iter().map(|&i| y[i]).sum();
    hits / top as f64 / rate
}

/// Bootstrap resamples for the lift's interval; seeded, so a report is reproducible.
const BOOTSTRAP: usize = 200;

/// One arm's report from its users' outcomes (1.0 or 0.0) and scores; `checkpoint` runs
/// between bootstrap draws, and its error stops the report.
pub fn arm_report(
    y: &[f64],
    scores: &[f64],
    checkpoint: &dyn Fn() -> Result<(), Error>,
) -> Result<ArmReport, Error> {
    let n = y.len();
    let positives = y.iter().filter(|&&v| v > 0.5).count();
    let auc = metrics::auc(y, scores);
    let auc_se = hanley_mcneil_se(auc, positives, n - positives);
    let brier = if n == 0 {
        Estimate::UNKNOWN
    } else {
        let errors: Vec<f64> = y
            .iter()
            .zip(scores)
            .map(|(t, p)| (p - t) * (p - t))
            .collect();
        let mean = errors.iter().sum::<f64>() / n as f64;
        let var = errors.iter().map(|e| (e - mean) * (e - mean)).sum::<f64>()
            / (n.saturating_sub(1).max(1)) as f64;
        Estimate::normal(mean, (var / n as f64).sqrt())
    };
    let lift = top_decile_lift(y, scores);
    let top_decile_lift = if lift.is_finite() {
        let mut rng = ChaCha8Rng::seed_from_u64(n as u64);
        let mut draws: Vec<f64> = Vec::with_capacity(BOOTSTRAP);
        let (mut by, mut bs) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for draw in 0..BOOTSTRAP {
            // each draw reads the whole arm: a big one takes a while
            if draw % 10 == 0 {
                checkpoint()?;
            }
            by.clear();
            bs.clear();
            for _ in 0..n {
                let i = rng.gen_range(0..n);
                by.push(y[i]);
                bs.push(scores[i]);
            }
            let l = top_decile_lift(&by, &bs);
            if l.is_finite() {
                draws.push(l);
            }
        }
        draws.sort_by(f64::total_cmp);
        let at = |q: f64| draws[((draws.len() - 1) as f64 * q).round() as usize];
        if draws.is_empty() {
            Estimate::UNKNOWN
        } else {
            Estimate {
                value: lift,
                low: at(0.025),
                high: at(0.975),
            }
        }
    } else {
        Estimate::UNKNOWN
    };
    Ok(ArmReport {
        users: n,
        positives,
        auc: if auc_se.is_finite() {
            Estimate::normal(auc, auc_se)
        } else {
            Estimate::UNKNOWN
        },
        auc_se,
        brier,
        positive_rate: wilson(positives, n),
        top_decile_lift,
    })
}

/// The challenger's AUC minus the champion's, with the two-sided p-value of a z test for
/// two independent AUCs.
pub fn auc_difference(champion: &ArmReport, challenger: &ArmReport) -> (f64, f64) {
    let diff = challenger.auc.value - champion.auc.value;
    let se = (champion.auc_se.powi(2) + challenger.auc_se.powi(2)).sqrt();
    if !(diff.is_finite() && se.is_finite()) || se == 0.0 {
        return (diff, f64::NAN);
    }
    let z = diff / se;
    // two-sided: P(|Z| >= |z|) = erfc(|z| / sqrt 2)
    (diff, libm::erfc(z.abs() / std::f64::consts::SQRT_2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_are_stable_split_at_the_share_and_differ_between_tests() {
        let n = 200_000;
        let challengers = (0..n)
            .filter(|&u| arm_of(1, u, 0.2) == Arm::Challenger)
            .count();
        let share = challengers as f64 / n as f64;
        assert!((share - 0.2).abs() < 0.005, "{share}");
        assert!((0..1000).all(|u| arm_of(1, u, 0.2) == arm_of(1, u, 0.2)));
        assert!((0..1000).all(|u| arm_of(1, u, 0.0) == Arm::Champion));
        assert!((0..1000).all(|u| arm_of(1, u, 1.0) == Arm::Challenger));
        // a larger share keeps the users a smaller one gave the challenger
        assert!((0..10_000)
            .filter(|&u| arm_of(3, u, 0.1) == Arm::Challenger)
            .all(|u| arm_of(3, u, 0.3) == Arm::Challenger));
        let same = (0..10_000)
            .filter(|&u| arm_of(1, u, 0.5) == arm_of(2, u, 0.5))
            .count();
        assert!((4_500..5_500).contains(&same), "{same}");
    }

    #[test]
    fn hanley_mcneil_matches_the_formula_by_hand() {
        // AUC 0.8, 50 positives, 50 negatives: Q1 = 0.8 / 1.2, Q2 = 1.28 / 1.8,
        // var = (0.16 + 49 (Q1 - 0.64) + 49 (Q2 - 0.64)) / 2500 = 0.0019804
        let se = hanley_mcneil_se(0.8, 50, 50);
        assert!((se - 0.0019804f64.sqrt()).abs() < 1e-5, "{se}");
        // more users, a narrower interval
        assert!(hanley_mcneil_se(0.8, 500, 500) < se / 3.0);
        assert!(hanley_mcneil_se(0.8, 0, 50).is_nan());
    }

    #[test]
    fn a_better_challenger_is_significant_and_equal_arms_are_not() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        // outcomes with a signal of strength `s`: a better model sees more of it
        let arm = |rng: &mut ChaCha8Rng, n: usize, s: f64| {
            let (mut y, mut p) = (Vec::new(), Vec::new());
            for _ in 0..n {
                let x: f64 = rng.gen_range(0.0..1.0);
                let label = rng.gen_range(0.0..1.0) < x;
                y.push(if label { 1.0 } else { 0.0 });
                p.push((s * x + (1.0 - s) * rng.gen_range(0.0..1.0)).clamp(0.0, 1.0));
            }
            arm_report(&y, &p, &|| Ok(())).unwrap()
        };
        let champion = arm(&mut rng, 4000, 0.3);
        let better = arm(&mut rng, 4000, 0.9);
        let (diff, p) = auc_difference(&champion, &better);
        assert!(diff > 0.05 && p < 0.001, "diff {diff}, p {p}");
        let same = arm(&mut rng, 4000, 0.3);
        let (_, p) = auc_difference(&champion, &same);
        assert!(p > 0.01, "p {p}");
        // intervals hold their value, rates are proportions, the lift is above 1
        for r in [&champion, &better] {
            for e in [r.auc, r.brier, r.positive_rate, r.top_decile_lift] {
                assert!(e.low <= e.value && e.value <= e.high, "{e:?}");
            }
            assert!(r.positive_rate.low > 0.4 && r.positive_rate.high < 0.6);
            assert!(r.top_decile_lift.value > 1.0);
        }
        assert!(better.top_decile_lift.value > champion.top_decile_lift.value);
    }

    #[test]
    fn one_class_or_no_users_give_unknowns_not_panics() {
        let r = arm_report(&[0.0, 0.0], &[0.2, 0.9], &|| Ok(())).unwrap();
        assert!(r.auc.value.is_nan() && r.top_decile_lift.value.is_nan());
        let r = arm_report(&[], &[], &|| Ok(())).unwrap();
        assert_eq!(r.users, 0);
        assert!(r.positive_rate.value.is_nan() && r.brier.value.is_nan());
        let (_, p) = auc_difference(&r, &r);
        assert!(p.is_nan());
    }

    #[test]
    fn the_bootstrap_stops_at_an_interrupt() {
        let y: Vec<f64> = (0..500).map(|i| f64::from(u8::from(i % 4 == 0))).collect();
        let p: Vec<f64> = (0..500).map(|i| f64::from(i % 7) / 7.0).collect();
        assert!(arm_report(&y, &p, &|| Ok(())).is_ok());
        let checks = std::cell::Cell::new(0);
        let stopped = arm_report(&y, &p, &|| {
            checks.set(checks.get() + 1);
            if checks.get() > 3 {
                Err(Error::Cancelled)
            } else {
                Ok(())
            }
        });
        assert!(matches!(stopped, Err(Error::Cancelled)));
        assert_eq!(checks.get(), 4);
    }
}
