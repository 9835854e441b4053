//! Drift: how far the features and scores of today's customers have moved from those a
//! model was trained on. At training time each feature (and the model's score) is
//! summarised in a small profile; `drift_report()` compares today's values with it.
//!
//! A numeric profile keeps the value at each percentile with the exact shares of values
//! below it and at or below it, so the Kolmogorov-Smirnov statistic is read on both
//! sides of the reference's percentiles (within 1/100 of the full statistic, ties
//! included) and the population stability index uses the reference deciles as bins,
//! with values below the first percentile and missing values as bins of their own. A
//! category profile keeps the shares of the most common categories; the rest, and
//! categories never seen in training, share one "(other)" bin. No crate computes these
//! from a stored summary; the maths is a few lines and tested below.

use serde::{Deserialize, Serialize};

use crate::frame::Frame;

/// Percentiles kept per numeric feature.
pub const POINTS: usize = 100;
/// Categories kept per categorical feature before "(other)".
pub const TOP_CATEGORIES: usize = 30;
pub const OTHER: &str = "(other)";

/// A share that is zero on one side only would make the index infinite; the usual
/// remedy is a floor.
const SHARE_FLOOR: f64 = 1e-4;

/// Thresholds, documented in the README. PSI: below 0.1 stable, 0.1 to 0.25 moderate,
/// 0.25 and above major (the credit-scoring convention). KS and the change in the
/// missing share: at 0.1 moderate, at 0.2 major (at these sample sizes any difference
/// is "significant", so the thresholds are on the size of the shift).
pub const PSI_MODERATE: f64 = 0.1;
pub const PSI_MAJOR: f64 = 0.25;
pub const KS_MODERATE: f64 = 0.1;
pub const KS_MAJOR: f64 = 0.2;
pub const MISSING_MODERATE: f64 = 0.1;
pub const MISSING_MAJOR: f64 = 0.2;

/// The distribution of one numeric column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericProfile {
    pub rows: usize,
    /// Share of rows without a value (NaN).
    pub missing: f64,
    /// Distinct values at the percentiles, ascending.
    pub points: Vec<f64>,
    /// Share of the non-missing values at or below each point.
    pub cdf: Vec<f64>,
    /// Share of the non-missing values strictly below each point.
    pub below: Vec<f64>,
}

/// The distribution of one categorical column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryProfile {
    pub rows: usize,
    pub missing: f64,
    /// Shares of the non-missing values, most common first, then "(other)" if any.
    pub shares: Vec<(String, f64)>,
}

/// What a model was trained on: a profile per feature, in catalog order, and its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub numeric: Vec<(String, NumericProfile)>,
    pub categorical: Vec<(String, CategoryProfile)>,
    pub score: NumericProfile,
}

/// How far one column moved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shift {
    pub psi: f64,
    /// None for categories.
    pub ks: Option<f64>,
    pub missing_then: f64,
    pub missing_now: f64,
    pub rows_now: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Stable,
    Moderate,
    Major,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Stable => "stable",
            Level::Moderate => "moderate",
            Level::Major => "major",
        }
    }
}

impl Shift {
    /// The worst of the three measures against their thresholds.
    pub fn level(&self) -> Level {
        let of = |v: f64, moderate: f64, major: f64| {
            if v >= major {
                Level::Major
            } else if v >= moderate {
                Level::Moderate
            } else {
                Level::Stable
            }
        };
        let psi = of(self.psi, PSI_MODERATE, PSI_MAJOR);
        let ks = self
            .ks
            .map_or(Level::Stable, |k| of(k, KS_MODERATE, KS_MAJOR));
        let missing = of(
            (self.missing_now - self.missing_then).abs(),
            MISSING_MODERATE,
            MISSING_MAJOR,
        );
        psi.max(ks).max(missing)
    }
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Non-missing values, sorted, and how many were missing.
fn sorted_present(values: &[f64]) -> (Vec<f64>, usize) {
    let mut present: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    present.sort_unstable_by(f64::total_cmp);
    let missing = values.len() - present.len();
    (present, missing)
}

/// Share of `sorted` at or below `x`.
fn cdf_at(sorted: &[f64], x: f64) -> f64 {
    share(sorted.partition_point(|&v| v <= x), sorted.len())
}

/// Share of `sorted` strictly below `x`.
fn below_at(sorted: &[f64], x: f64) -> f64 {
    share(sorted.partition_point(|&v| v < x), sorted.len())
}

impl NumericProfile {
    /// The profile of `values` (NaN is missing).
    pub fn of(values: &[f64]) -> NumericProfile {
        let (sorted, missing) = sorted_present(values);
        let n = sorted.len();
        let mut points: Vec<f64> = Vec::with_capacity(POINTS);
        if n > 0 {
            for k in 1..=POINTS {
                // the smallest value whose cumulative share reaches k / POINTS
                let rank = (k * n).div_ceil(POINTS).max(1);
                let x = sorted[rank - 1];
                if points.last() != Some(&x) {
                    points.push(x);
                }
            }
        }
        let cdf = points.iter().map(|&x| cdf_at(&sorted, x)).collect();
        let below = points.iter().map(|&x| below_at(&sorted, x)).collect();
        NumericProfile {
            rows: values.len(),
            missing: share(missing, values.len()),
            points,
            cdf,
            below,
        }
    }

    /// Bin edges: the distinct deciles (the smallest point reaching each tenth).
    pub fn deciles(&self) -> Vec<f64> {
        let mut edges: Vec<f64> = Vec::new();
        for d in 1..10 {
            let q = d as f64 / 10.0;
            if let Some(i) = self.cdf.iter().position(|&c| c >= q - 1e-12) {
                let x = self.points[i];
                if edges.last() != Some(&x) {
                    edges.push(x);
                }
            }
        }
        edges
    }

    /// How `values` (NaN missing) differ from this profile.
    pub fn compare(&self, values: &[f64]) -> Shift {
        let (sorted, missing) = sorted_present(values);
        let missing_now = share(missing, values.len());
        let ks = if sorted.is_empty() || self.points.is_empty() {
            None
        } else {
            // on both sides of each point: a point many values share is a step
            Some(
                (0..self.points.len())
                    .map(|i| {
                        let x = self.points[i];
                        (self.cdf[i] - cdf_at(&sorted, x))
                            .abs()
                            .max((self.below[i] - below_at(&sorted, x)).abs())
                    })
                    .fold(0.0, f64::max),
            )
        };
        // bins over the present values: below the first percentile (empty then when many
        // values share the smallest), up to the first decile, (e1, e2], ..., (ek, inf);
        // plus missing
        let edges = self.deciles();
        let reference_cdf = |x: f64| {
            let i = self.points.partition_point(|&p| p < x);
            self.cdf.get(i).copied().unwrap_or(1.0)
        };
        let mut then = vec![self.missing];
        let mut now = vec![missing_now];
        let mut below_then = 0.0;
        let mut below_now = 0.0;
        if let (Some(&first), Some(&share_then)) = (self.points.first(), self.below.first()) {
            below_then = share_then;
            below_now = below_at(&sorted, first);
            then.push((1.0 - self.missing) * below_then);
            now.push((1.0 - missing_now) * below_now);
        }
        for &e in &edges {
            let (t, n) = (reference_cdf(e), cdf_at(&sorted, e));
            then.push((1.0 - self.missing) * (t - below_then));
            now.push((1.0 - missing_now) * (n - below_now));
            (below_then, below_now) = (t, n);
        }
        if !self.points.is_empty() {
            then.push((1.0 - self.missing) * (1.0 - below_then));
        } else {
            then.push(0.0);
        }
        now.push(if sorted.is_empty() {
            0.0
        } else {
            (1.0 - missing_now) * (1.0 - below_now)
        });
        Shift {
            psi: psi(&then, &now),
            ks,
            missing_then: self.missing,
            missing_now,
            rows_now: values.len(),
        }
    }
}

impl CategoryProfile {
    pub fn of(values: &[Option<&str>]) -> CategoryProfile {
        let mut counts: rustc_hash::FxHashMap<&str, usize> = Default::default();
        let mut present = 0;
        for v in values.iter().flatten() {
            *counts.entry(v).or_default() += 1;
            present += 1;
        }
        let mut by_count: Vec<(&str, usize)> = counts.into_iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let rest: usize = by_count.iter().skip(TOP_CATEGORIES).map(|c| c.1).sum();
        let mut shares: Vec<(String, f64)> = by_count
            .iter()
            .take(TOP_CATEGORIES)
            .map(|(c, n)| (c.to_string(), share(*n, present)))
            .collect();
        if rest > 0 {
            shares.push((OTHER.to_string(), share(rest, present)));
        }
        CategoryProfile {
            rows: values.len(),
            missing: share(values.len() - present, values.len()),
            shares,
        }
    }

    pub fn compare(&self, values: &[Option<&str>]) -> Shift {
        let index = |c: &str| {
            self.shares
                .iter()
                .position(|(k, _)| k == c && k != OTHER)
                .unwrap_or(self.shares.len())
        };
        // one bin per kept category, "(other)" last, then missing
        let mut counts = vec![0usize; self.shares.len() + 1];
        let mut present = 0;
        for v in values.iter().flatten() {
            counts[index(v)] += 1;
            present += 1;
        }
        let missing_now = share(values.len() - present, values.len());
        let mut then: Vec<f64> = Vec::with_capacity(counts.len() + 1);
        let mut now: Vec<f64> = Vec::with_capacity(counts.len() + 1);
        let other_then: f64 = self
            .shares
            .iter()
            .filter(|(k, _)| k == OTHER)
            .map(|s| s.1)
            .sum();
        for (i, (k, s)) in self.shares.iter().enumerate() {
            if k != OTHER {
                then.push((1.0 - self.missing) * s);
                now.push((1.0 - missing_now) * share(counts[i], present));
            }
        }
        let other_now: usize = counts[self.shares.len()]
            + self
                .shares
                .iter()
                .position(|(k, _)| k == OTHER)
                .map_or(0, |i| counts[i]);
        then.push((1.0 - self.missing) * other_then);
        now.push((1.0 - missing_now) * share(other_now, present));
        then.push(self.missing);
        now.push(missing_now);
        Shift {
            psi: psi(&then, &now),
            ks: None,
            missing_then: self.missing,
            missing_now,
            rows_now: values.len(),
        }
    }
}

impl Baseline {
    /// The profiles of a frame's columns and of the scores a model gave its rows.
    pub fn of(frame: &Frame, scores: &[f64]) -> Baseline {
        Baseline {
            numeric: frame
                .numeric_names
                .iter()
                .enumerate()
                .map(|(j, name)| (name.clone(), NumericProfile::of(&numeric_column(frame, j))))
                .collect(),
            categorical: frame
                .categorical_names
                .iter()
                .enumerate()
                .map(|(j, name)| {
                    (
                        name.clone(),
                        CategoryProfile::of(&categorical_column(frame, j)),
                    )
                })
                .collect(),
            score: NumericProfile::of(scores),
        }
    }

    /// Each feature's shift (by name, numeric first, in the baseline's order) between the
    /// baseline and `frame`, which has the same columns, and the scores' shift. A column
    /// the frame lacks is left out.
    pub fn compare(&self, frame: &Frame, scores: &[f64]) -> (Vec<(String, Shift)>, Shift) {
        let mut out = Vec::with_capacity(self.numeric.len() + self.categorical.len());
        for (name, profile) in &self.numeric {
            if let Some(j) = frame.numeric_names.iter().position(|n| n == name) {
                out.push((name.clone(), profile.compare(&numeric_column(frame, j))));
            }
        }
        for (name, profile) in &self.categorical {
            if let Some(j) = frame.categorical_names.iter().position(|n| n == name) {
                out.push((name.clone(), profile.compare(&categorical_column(frame, j))));
            }
        }
        (out, self.score.compare(scores))
    }
}

fn numeric_column(frame: &Frame, j: usize) -> Vec<f64> {
    (0..frame.rows).map(|i| frame.numeric_row(i)[j]).collect()
}

fn categorical_column(frame: &Frame, j: usize) -> Vec<Option<&str>> {
    (0..frame.rows)
        .map(|i| frame.categorical_row(i)[j].as_deref())
        .collect()
}

/// The population stability index of two distributions over the same bins:
/// sum of (now - then) * ln(now / then), each share floored at 1e-4. Bins empty on
/// both sides add nothing.
pub fn psi(then: &[f64], now: &[f64]) -> f64 {
    then.iter()
        .zip(now)
        .filter(|(t, n)| **t > 0.0 || **n > 0.0)
        .map(|(&t, &n)| {
            let (t, n) = (t.max(SHARE_FLOOR), n.max(SHARE_FLOOR));
            (n - t) * (n / t).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn normal(rng: &mut ChaCha8Rng, n: usize, mean: f64, sd: f64) -> Vec<f64> {
        use rand_distr::{Distribution, Normal};
        let d = Normal::new(mean, sd).unwrap();
        (0..n).map(|_| d.sample(rng)).collect()
    }

    /// The full two-sample KS statistic, the slow way.
    fn ks_exact(a: &[f64], b: &[f64]) -> f64 {
        let (a, _) = sorted_present(a);
        let (b, _) = sorted_present(b);
        a.iter()
            .chain(&b)
            .map(|&x| (cdf_at(&a, x) - cdf_at(&b, x)).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn the_same_distribution_is_stable() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let p = NumericProfile::of(&normal(&mut rng, 20_000, 5.0, 2.0));
        let s = p.compare(&normal(&mut rng, 20_000, 5.0, 2.0));
        assert!(s.psi < 0.01, "{s:?}");
        assert!(s.ks.unwrap() < 0.03, "{s:?}");
        assert_eq!(s.level(), Level::Stable);
    }

    #[test]
    fn a_shifted_mean_is_major_and_ks_matches_the_full_statistic() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let a = normal(&mut rng, 20_000, 0.0, 1.0);
        let b = normal(&mut rng, 20_000, 1.0, 1.0);
        let s = NumericProfile::of(&a).compare(&b);
        // N(0,1) against N(1,1): KS = 2 Phi(0.5) - 1 = 0.383; PSI on deciles about 1
        assert!((s.ks.unwrap() - ks_exact(&a, &b)).abs() <= 0.011, "{s:?}");
        assert!((s.ks.unwrap() - 0.383).abs() < 0.02, "{s:?}");
        assert!(s.psi > 0.8 && s.psi < 1.3, "{s:?}");
        assert_eq!(s.level(), Level::Major);
        // a small shift is moderate at most
        let c = normal(&mut rng, 20_000, 0.15, 1.0);
        let s = NumericProfile::of(&a).compare(&c);
        assert!(s.level() <= Level::Moderate, "{s:?}");
    }

    #[test]
    fn discrete_values_and_ties_keep_exact_shares() {
        // counts: half zeros, then 1..=5
        let v: Vec<f64> = (0..1000)
            .map(|i| if i % 2 == 0 { 0.0 } else { (i % 5 + 1) as f64 })
            .collect();
        let p = NumericProfile::of(&v);
        assert_eq!(p.points, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert!((p.cdf[0] - 0.5).abs() < 1e-12);
        assert_eq!(*p.cdf.last().unwrap(), 1.0);
        let s = p.compare(&v);
        assert!(s.psi.abs() < 1e-12 && s.ks == Some(0.0), "{s:?}");
        // all zeros now: the zero bin doubles, the others empty
        let s = p.compare(&vec![0.0; 1000]);
        assert!((s.ks.unwrap() - 0.5).abs() < 1e-12, "{s:?}");
        assert_eq!(s.level(), Level::Major);
    }

    #[test]
    fn shifts_inside_ties_and_below_the_smallest_value_are_seen() {
        // half at 0, half at 1; then 10% at 0 and 90% at 0.5: the full KS is 0.5
        let then: Vec<f64> = (0..1000)
            .map(|i| if i % 2 == 0 { 0.0 } else { 1.0 })
            .collect();
        let now: Vec<f64> = (0..1000)
            .map(|i| if i % 10 == 0 { 0.0 } else { 0.5 })
            .collect();
        let s = NumericProfile::of(&then).compare(&now);
        assert!(
            (s.ks.unwrap() - ks_exact(&then, &now)).abs() < 1e-12,
            "{s:?}"
        );
        assert!((s.ks.unwrap() - 0.5).abs() < 1e-12, "{s:?}");
        // 30% of the values now lie below everything seen in training
        let now: Vec<f64> = (0..1000)
            .map(|i| if i % 10 < 3 { -5.0 } else { then[i] })
            .collect();
        let s = NumericProfile::of(&then).compare(&now);
        assert!(s.psi > 0.25, "{s:?}");
        assert_eq!(s.level(), Level::Major);
    }

    #[test]
    fn missing_values_are_a_bin_of_their_own() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let a = normal(&mut rng, 10_000, 0.0, 1.0);
        let mut b = normal(&mut rng, 10_000, 0.0, 1.0);
        for x in b.iter_mut().take(3000) {
            *x = f64::NAN;
        }
        let s = NumericProfile::of(&a).compare(&b);
        assert_eq!(s.missing_then, 0.0);
        assert!((s.missing_now - 0.3).abs() < 1e-12);
        assert!(s.psi > 0.25, "{s:?}");
        assert_eq!(s.level(), Level::Major);
        // nothing present at all: no KS, and no panic
        let s = NumericProfile::of(&a).compare(&[f64::NAN; 10]);
        assert_eq!(s.ks, None);
        assert_eq!(NumericProfile::of(&[]).compare(&a).ks, None);
    }

    #[test]
    fn categories_unseen_in_training_count_as_other() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let names = ["ios", "android", "web"];
        let a: Vec<Option<&str>> = (0..5000)
            .map(|_| Some(names[rng.gen_range(0..3)]))
            .collect();
        let p = CategoryProfile::of(&a);
        assert_eq!(p.shares.len(), 3);
        assert!(p.compare(&a).psi.abs() < 1e-12);
        let b: Vec<Option<&str>> = (0..5000)
            .map(|i| Some(if i % 2 == 0 { "desktop" } else { names[i % 3] }))
            .collect();
        let s = p.compare(&b);
        assert!(s.psi > 1.0, "{s:?}");
        assert_eq!(s.ks, None);
        // many categories: the long tail is one bin, and the same data is stable
        let many: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
        let c: Vec<Option<&str>> = (0..10_000).map(|i| Some(many[i % 100].as_str())).collect();
        let p = CategoryProfile::of(&c);
        assert_eq!(p.shares.len(), TOP_CATEGORIES + 1);
        assert_eq!(p.shares.last().unwrap().0, OTHER);
        assert!(p.compare(&c).psi.abs() < 1e-9);
        let none: Vec<Option<&str>> = vec![None; 10];
        assert_eq!(p.compare(&none).missing_now, 1.0);
    }

    #[test]
    fn a_baseline_compares_a_frame_column_by_column() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut then = Frame::for_catalog();
        then.numeric_names.truncate(2);
        then.categorical_names.truncate(1);
        let mut now = then.clone();
        for i in 0..4000 {
            let c = if i % 4 == 0 { "web" } else { "ios" };
            then.numeric
                .extend([rng.gen_range(0.0..1.0), rng.gen_range(0.0..1.0)]);
            then.categorical.push(Some(c.to_string()));
            then.rows += 1;
            // the first column moves, the second and the category do not
            now.numeric
                .extend([rng.gen_range(0.5..1.5), rng.gen_range(0.0..1.0)]);
            now.categorical.push(Some(c.to_string()));
            now.rows += 1;
        }
        let scores: Vec<f64> = (0..4000).map(|i| (i % 100) as f64 / 100.0).collect();
        let b = Baseline::of(&then, &scores);
        let (features, score) = b.compare(&now, &scores);
        assert_eq!(features.len(), 3);
        assert_eq!(features[0].0, then.numeric_names[0]);
        assert_eq!(features[0].1.level(), Level::Major);
        assert_eq!(features[1].1.level(), Level::Stable);
        assert_eq!(features[2].1.level(), Level::Stable);
        assert_eq!(score.psi, 0.0);
        // the baseline survives the JSON it is stored as
        let back: Baseline = serde_json::from_value(serde_json::to_value(&b).unwrap()).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn psi_is_symmetric_and_zero_for_equal_bins() {
        let a = [0.2, 0.3, 0.5];
        let b = [0.3, 0.3, 0.4];
        assert!((psi(&a, &b) - psi(&b, &a)).abs() < 1e-12);
        assert_eq!(psi(&a, &a), 0.0);
        assert!(psi(&[1.0, 0.0], &[0.0, 1.0]).is_finite());
    }
}
