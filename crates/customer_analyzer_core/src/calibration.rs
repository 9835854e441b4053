//! Calibrated probabilities: isotonic regression (pool adjacent violators) or, on small
//! validation sets, Platt scaling, fitted on the validation snapshot and stored with the
//! model; and the reliability table that shows how well scores match observed rates.

use serde::{Deserialize, Serialize};

/// A monotone map from raw scores to probabilities, fitted on the validation snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Calibrator {
    /// Isotonic regression: piecewise linear between the centres of the pooled blocks,
    /// flat beyond the ends.
    Isotonic {
        /// Raw scores, increasing.
        x: Vec<f64>,
        /// Calibrated probabilities, non-decreasing.
        y: Vec<f64>,
    },
    /// Platt scaling: sigmoid(a * logit(score) + b) with a > 0, strictly increasing, so
    /// the ranking (and the AUC) is exactly the raw one.
    Platt { a: f64, b: f64 },
}

/// Isotonic calibration needs this many validation rows of each class; with fewer its
/// steps would be noise (and its ties would blunt the ranking), so Platt scaling's two
/// parameters are fitted instead.
pub const ISOTONIC_MIN_PER_CLASS: usize = 200;
/// Fewer validation rows than this leave scores as they are.
pub const MIN_ROWS: usize = 20;

/// Scores as log-odds, kept finite.
fn logit(s: f64) -> f64 {
    let p = s.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

fn finite_pairs(scores: &[f64], labels: &[f64]) -> (Vec<(f64, f64)>, usize) {
    let pairs: Vec<(f64, f64)> = scores
        .iter()
        .zip(labels)
        .filter(|(s, _)| s.is_finite())
        .map(|(&s, &y)| (s, y))
        .collect();
    let positives = pairs.iter().filter(|p| p.1 > 0.5).count();
    (pairs, positives)
}

impl Calibrator {
    /// The calibration for these validation scores and 0/1 labels: isotonic when both
    /// classes have at least `ISOTONIC_MIN_PER_CLASS` rows, Platt otherwise; None with
    /// fewer than `MIN_ROWS` rows, a single class, or scores that rank backwards.
    pub fn fit(scores: &[f64], labels: &[f64]) -> Option<Calibrator> {
        let (pairs, positives) = finite_pairs(scores, labels);
        if positives.min(pairs.len() - positives) >= ISOTONIC_MIN_PER_CLASS {
            Calibrator::isotonic(scores, labels)
        } else {
            Calibrator::platt(scores, labels)
        }
    }

    /// Isotonic regression of `labels` on `scores` (pool adjacent violators).
    pub fn isotonic(scores: &[f64], labels: &[f64]) -> Option<Calibrator> {
        let (mut pairs, positives) = finite_pairs(scores, labels);
        if pairs.len() < MIN_ROWS || positives == 0 || positives == pairs.len() {
            return None;
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        // rows with the same score form one block first, so that a tie gets one
        // probability whatever the order of its labels
        // (score, sum of labels, count)
        let mut ties: Vec<(f64, f64, f64)> = Vec::with_capacity(pairs.len());
        for (s, y) in pairs {
            match ties.last_mut() {
                Some(last) if last.0 == s => {
                    last.1 += y;
                    last.2 += 1.0;
                }
                _ => ties.push((s, y, 1.0)),
            }
        }
        // blocks of (sum of x, sum of y, count), merged while they violate monotonicity
        let mut blocks: Vec<(f64, f64, f64)> = Vec::with_capacity(ties.len());
        for (s, sum_y, n) in ties {
            blocks.push((s * n, sum_y, n));
            while blocks.len() > 1 {
                let n = blocks.len();
                let (a, b) = (blocks[n - 2], blocks[n - 1]);
                if a.1 / a.2 < b.1 / b.2 {
                    break;
                }
                blocks.truncate(n - 2);
                blocks.push((a.0 + b.0, a.1 + b.1, a.2 + b.2));
            }
        }
        Some(Calibrator::Isotonic {
            x: blocks.iter().map(|b| b.0 / b.2).collect(),
            y: blocks.iter().map(|b| b.1 / b.2).collect(),
        })
    }

    /// Platt scaling by Newton's method on the log loss, with Platt's smoothed targets
    /// ((N+ + 1) / (N+ + 2) and 1 / (N- + 2)) so that separable scores still converge.
    pub fn platt(scores: &[f64], labels: &[f64]) -> Option<Calibrator> {
        let (pairs, positives) = finite_pairs(scores, labels);
        let negatives = pairs.len() - positives;
        if pairs.len() < MIN_ROWS || positives == 0 || negatives == 0 {
            return None;
        }
        let hi = (positives as f64 + 1.0) / (positives as f64 + 2.0);
        let lo = 1.0 / (negatives as f64 + 2.0);
        let data: Vec<(f64, f64)> = pairs
            .iter()
            .map(|&(s, y)| (logit(s), if y > 0.5 { hi } else { lo }))
            .collect();
        let loss = |a: f64, b: f64| -> f64 {
            data.iter()
                .map(|&(z, t)| {
                    // log(1 + e^m) - t m, computed without overflow
                    let m = a * z + b;
                    m.max(0.0) + (-m.abs()).exp().ln_1p() - t * m
                })
                .sum()
        };
        let (mut a, mut b) = (1.0f64, 0.0f64);
        let mut current = loss(a, b);
        for _ in 0..100 {
            let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-9, 0.0, 1e-9);
            for &(z, t) in &data {
                let p = sigmoid(a * z + b);
                let (d, w) = (p - t, (p * (1.0 - p)).max(1e-12));
                ga += d * z;
                gb += d;
                haa += w * z * z;
                hab += w * z;
                hbb += w;
            }
            let det = haa * hbb - hab * hab;
            if det.is_nan() || det <= 0.0 {
                break;
            }
            let (da, db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
            // halve the Newton step until the loss goes down
            let mut step = 1.0;
            let mut moved = false;
            while step > 1e-8 {
                let (na, nb) = (a - step * da, b - step * db);
                let l = loss(na, nb);
                if l < current {
                    (a, b, current, moved) = (na, nb, l, true);
                    break;
                }
                step /= 2.0;
            }
            if !moved || (step * (da.abs() + db.abs())) < 1e-10 {
                break;
            }
        }
        (a > 0.0 && a.is_finite() && b.is_finite()).then_some(Calibrator::Platt { a, b })
    }

    /// The calibrated probability of a raw score.
    pub fn apply(&self, s: f64) -> f64 {
        if !s.is_finite() {
            return s;
        }
        match self {
            Calibrator::Platt { a, b } => sigmoid(a * logit(s) + b),
            Calibrator::Isotonic { x, y } => {
                let n = x.len();
                if n == 0 {
                    return s;
                }
                if s <= x[0] {
                    return y[0];
                }
                if s >= x[n - 1] {
                    return y[n - 1];
                }
                let i = x.partition_point(|&v| v <= s);
                let (x0, x1, y0, y1) = (x[i - 1], x[i], y[i - 1], y[i]);
                if x1 > x0 {
                    y0 + (y1 - y0) * (s - x0) / (x1 - x0)
                } else {
                    y1
                }
            }
        }
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// One decile of a reliability table: users whose score falls in it, their mean score
/// and the share of them whose label was positive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    pub decile: usize,
    pub mean_predicted: f64,
    pub observed_rate: f64,
    pub users: usize,
}

/// Predicted against observed rates by decile of the scores (deciles of the rows, so
/// each holds a tenth of them).
pub fn reliability(scores: &[f64], labels: &[f64]) -> Vec<Bin> {
    let mut pairs: Vec<(f64, f64)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = pairs.len();
    (0..10)
        .filter_map(|d| {
            let (from, to) = (d * n / 10, (d + 1) * n / 10);
            let part = &pairs[from..to];
            if part.is_empty() {
                return None;
            }
            let k = part.len() as f64;
            Some(Bin {
                decile: d + 1,
                mean_predicted: part.iter().map(|p| p.0).sum::<f64>() / k,
                observed_rate: part.iter().map(|p| p.1).sum::<f64>() / k,
                users: part.len(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The isotonic fit by its definition: the non-decreasing step function closest in
    /// squared error, found by brute force over every pooling on tiny inputs.
    fn slow_isotonic(y: &[f64]) -> Vec<f64> {
        let n = y.len();
        let mut best: Option<(f64, Vec<f64>)> = None;
        for mask in 0..(1u32 << (n - 1)) {
            // mask bit i set: a cut after position i
            let mut fit = vec![0.0; n];
            let mut start = 0;
            for i in 0..n {
                if i == n - 1 || mask & (1 << i) != 0 {
                    let mean = y[start..=i].iter().sum::<f64>() / (i + 1 - start) as f64;
                    fit[start..=i].iter_mut().for_each(|f| *f = mean);
                    start = i + 1;
                }
            }
            if fit.windows(2).any(|w| w[0] > w[1] + 1e-12) {
                continue;
            }
            let err: f64 = fit.iter().zip(y).map(|(f, y)| (f - y) * (f - y)).sum();
            if best.as_ref().is_none_or(|b| err < b.0 - 1e-12) {
                best = Some((err, fit));
            }
        }
        best.map(|b| b.1).unwrap_or_default()
    }

    #[test]
    fn pooling_matches_the_definition() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let n = rng.gen_range(2..10);
            let y: Vec<f64> = (0..n).map(|_| f64::from(rng.gen_bool(0.4) as u8)).collect();
            let scores: Vec<f64> = (0..n).map(|i| i as f64).collect();
            // below MIN_ROWS fit() declines, so repeat each row to pass it unchanged
            let reps = MIN_ROWS / n + 1;
            let s: Vec<f64> = scores
                .iter()
                .flat_map(|&v| std::iter::repeat_n(v, reps))
                .collect();
            let l: Vec<f64> = y
                .iter()
                .flat_map(|&v| std::iter::repeat_n(v, reps))
                .collect();
            let want = slow_isotonic(&y);
            match Calibrator::isotonic(&s, &l) {
                Some(Calibrator::Isotonic { x: cx, y: cy }) => {
                    let c = Calibrator::Isotonic { x: cx, y: cy };
                    let Calibrator::Isotonic { y: c_y, .. } = &c else {
                        unreachable!()
                    };
                    // the pooled blocks' means are the steps of the isotonic fit
                    let mut steps = want.clone();
                    steps.dedup_by(|a, b| (*a - *b).abs() < 1e-12);
                    assert_eq!(c_y.len(), steps.len(), "{y:?}: {c:?}");
                    for (got, w) in c_y.iter().zip(&steps) {
                        assert!((got - w).abs() < 1e-9, "{y:?}: {c:?}");
                    }
                    // and the map is monotone between and beyond them
                    let a: Vec<f64> = (0..=4 * n).map(|i| c.apply(i as f64 / 4.0)).collect();
                    assert!(a.windows(2).all(|w| w[0] <= w[1] + 1e-12));
                }
                Some(other) => panic!("not isotonic: {other:?}"),
                None => assert!(y.iter().all(|&v| v == y[0]), "{y:?}"),
            }
        }
    }

    #[test]
    fn tied_scores_get_one_probability() {
        // 300 rows at score 0.5 whose labels come 0s first, then 1s, and 300 at 0.2 and 0.8
        let mut s = vec![0.5; 300];
        let mut y: Vec<f64> = (0..300).map(|i| f64::from(u8::from(i >= 150))).collect();
        s.extend(vec![0.2; 300]);
        y.extend((0..300).map(|i| f64::from(u8::from(i % 10 == 0))));
        s.extend(vec![0.8; 300]);
        y.extend((0..300).map(|i| f64::from(u8::from(i % 10 != 0))));
        let Some(Calibrator::Isotonic { x, y: fitted }) = Calibrator::isotonic(&s, &y) else {
            panic!("no isotonic fit")
        };
        assert_eq!(x.len(), 3, "{x:?}");
        assert!(x
            .iter()
            .zip([0.2, 0.5, 0.8])
            .all(|(a, b)| (a - b).abs() < 1e-12));
        assert!((fitted[1] - 0.5).abs() < 1e-12, "{fitted:?}");
        let c = Calibrator::Isotonic { x, y: fitted };
        assert!((c.apply(0.5) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn calibration_repairs_a_miscalibrated_score() {
        // true probability p, reported score p^3: badly miscalibrated, but monotone
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (mut s, mut y) = (Vec::new(), Vec::new());
        for _ in 0..20_000 {
            let p: f64 = rng.gen_range(0.0..1.0);
            s.push(p.powi(3));
            y.push(f64::from(rng.gen_bool(p) as u8));
        }
        let c = Calibrator::fit(&s, &y).expect("enough rows");
        let brier = |f: &dyn Fn(f64) -> f64| {
            s.iter()
                .zip(&y)
                .map(|(s, y)| (f(*s) - y).powi(2))
                .sum::<f64>()
                / s.len() as f64
        };
        let before = brier(&|v| v);
        let after = brier(&|v| c.apply(v));
        assert!(after < before - 0.02, "Brier {before} -> {after}");
        let table = reliability(&s.iter().map(|&v| c.apply(v)).collect::<Vec<_>>(), &y);
        assert_eq!(table.len(), 10);
        for b in table {
            assert!((b.mean_predicted - b.observed_rate).abs() < 0.05, "{b:?}");
        }
        assert!(matches!(c, Calibrator::Isotonic { .. }));
        // few rows: Platt, which keeps the ranking exactly; too few: nothing
        let small = Calibrator::fit(&s[..300], &y[..300]).expect("enough for Platt");
        assert!(matches!(small, Calibrator::Platt { .. }), "{small:?}");
        let mapped: Vec<f64> = s[..300].iter().map(|&v| small.apply(v)).collect();
        assert_eq!(
            crate::metrics::auc(&y[..300], &mapped),
            crate::metrics::auc(&y[..300], &s[..300])
        );
        let before = brier(&|v| v);
        assert!(before > 0.0);
        assert!(Calibrator::fit(&s[..10], &y[..10]).is_none());
        // scores that rank backwards are not turned round
        let backwards: Vec<f64> = s[..300].iter().map(|v| 1.0 - v).collect();
        assert!(Calibrator::platt(&backwards, &y[..300]).is_none());
    }
}
