//! Binary classification metrics: AUC, log loss, Brier score, and the confusion matrix,
//! precision, recall and F1 at a threshold, with the threshold that maximises F1.

use serde::{Deserialize, Serialize};

/// Everything reported for one evaluation of a classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub rows: usize,
    pub positives: usize,
    pub auc: f64,
    pub log_loss: f64,
    pub brier: f64,
    pub threshold: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub true_positives: usize,
    pub false_positives: usize,
    pub true_negatives: usize,
    pub false_negatives: usize,
}

/// Area under the ROC curve by the rank-sum formula, ties counted as half. NaN when
/// only one class is present.
pub fn auc(y: &[f64], p: &[f64]) -> f64 {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let (mut rank_sum, mut n_pos) = (0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && p[idx[j + 1]] == p[idx[i]] {
            j += 1;
        }
        let mid_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if y[k] > 0.5 {
                rank_sum += mid_rank;
                n_pos += 1.0;
            }
        }
        i = j + 1;
    }
    let n_neg = p.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return f64::NAN;
    }
    (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

pub fn log_loss(y: &[f64], p: &[f64]) -> f64 {
    let eps = 1e-15;
    let s: f64 = y
        .iter()
        .zip(p)
        .map(|(&y, &p)| {
            let p = p.clamp(eps, 1.0 - eps);
            -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
        })
        .sum();
    s / y.len().max(1) as f64
}

pub fn brier(y: &[f64], p: &[f64]) -> f64 {
    let s: f64 = y.iter().zip(p).map(|(&y, &p)| (p - y) * (p - y)).sum();
    s / y.len().max(1) as f64
}

/// (tp, fp, tn, fn) with "positive" meaning p >= threshold.
pub fn confusion(y: &[f64], p: &[f64], threshold: f64) -> (usize, usize, usize, usize) {
    let mut c = (0, 0, 0, 0);
    for (&y, &p) in y.iter().zip(p) {
        match (p >= threshold, y > 0.5) {
            (true, true) => c.0 += 1,
            (true, false) => c.1 += 1,
            (false, false) => c.2 += 1,
            (false, true) => c.3 += 1,
        }
    }
    c
}

fn prf(tp: usize, fp: usize, fn_: usize) -> (f64, f64, f64) {
    let precision = if tp + fp > 0 {
        tp as f64 / (tp + fp) as f64
    } else {
        0.0
    };
    let recall = if tp + fn_ > 0 {
        tp as f64 / (tp + fn_) as f64
    } else {
        0.0
    };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    (precision, recall, f1)
}

/// The score threshold with the highest F1 (one pass over the sorted scores).
pub fn best_f1_threshold(y: &[f64], p: &[f64]) -> f64 {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    let total_pos = y.iter().filter(|&&v| v > 0.5).count();
    let (mut tp, mut fp) = (0usize, 0usize);
    let (mut best_f1, mut best_t) = (-1.0, 0.5);
    let mut i = 0;
    while i < idx.len() {
        let t = p[idx[i]];
        while i < idx.len() && p[idx[i]] == t {
            if y[idx[i]] > 0.5 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let (_, _, f1) = prf(tp, fp, total_pos - tp);
        if f1 > best_f1 {
            best_f1 = f1;
            best_t = t;
        }
    }
    best_t
}

/// The ROC curve as (false positive rate, true positive rate) points, from (0, 0) at the
/// highest threshold to (1, 1): one point per distinct score (tied scores move both
/// rates at once, which is how `auc` counts ties), thinned to at most `max_points`
/// (at least 2) evenly along the list, both ends kept. Its trapezoid area before thinning
/// is `auc`. Empty when only one class is present.
pub fn roc_curve(y: &[f64], p: &[f64], max_points: usize) -> Vec<(f64, f64)> {
    let n_pos = y.iter().filter(|&&v| v > 0.5).count() as f64;
    let n_neg = y.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return Vec::new();
    }
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    let mut points = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        // a group of equal scores (total_cmp: a NaN equals itself, so every group ends)
        let mut j = i;
        while j < idx.len() && p[idx[j]].total_cmp(&p[idx[i]]).is_eq() {
            if y[idx[j]] > 0.5 {
                tp += 1.0
            } else {
                fp += 1.0
            }
            j += 1;
        }
        points.push((fp / n_neg, tp / n_pos));
        i = j;
    }
    let max_points = max_points.max(2);
    if points.len() <= max_points {
        return points;
    }
    let last = points.len() - 1;
    (0..max_points)
        .map(|k| points[k * last / (max_points - 1)])
        .collect()
}

/// All metrics, at `threshold` or (None) at the F1-maximising threshold.
pub fn evaluate(y: &[f64], p: &[f64], threshold: Option<f64>) -> Metrics {
    let threshold = threshold.unwrap_or_else(|| best_f1_threshold(y, p));
    let (tp, fp, tn, fn_) = confusion(y, p, threshold);
    let (precision, recall, f1) = prf(tp, fp, fn_);
    Metrics {
        rows: y.len(),
        positives: y.iter().filter(|&&v| v > 0.5).count(),
        auc: auc(y, p),
        log_loss: log_loss(y, p),
        brier: brier(y, p),
        threshold,
        precision,
        recall,
        f1,
        true_positives: tp,
        false_positives: fp,
        true_negatives: tn,
        false_negatives: fn_,
    }
}

/// How well two labelings of the same items agree: the adjusted Rand index (0 for
/// chance, 1 for the same partition) and the normalised mutual information (arithmetic
/// mean of the entropies, as scikit-learn's default). Labels are any comparable values.
pub fn cluster_agreement<A: Eq + std::hash::Hash, B: Eq + std::hash::Hash>(
    a: &[A],
    b: &[B],
) -> (f64, f64) {
    use std::collections::HashMap;
    let n = a.len().min(b.len());
    if n < 2 {
        return (f64::NAN, f64::NAN);
    }
    let mut ia: HashMap<&A, usize> = HashMap::new();
    let mut ib: HashMap<&B, usize> = HashMap::new();
    let mut cells: HashMap<(usize, usize), f64> = HashMap::new();
    for (x, y) in a.iter().zip(b).take(n) {
        let na = ia.len();
        let i = *ia.entry(x).or_insert(na);
        let nb = ib.len();
        let j = *ib.entry(y).or_insert(nb);
        *cells.entry((i, j)).or_default() += 1.0;
    }
    let mut rows = vec![0.0; ia.len()];
    let mut cols = vec![0.0; ib.len()];
    for (&(i, j), &c) in &cells {
        rows[i] += c;
        cols[j] += c;
    }
    let pairs = |v: f64| v * (v - 1.0) / 2.0;
    let total = pairs(n as f64);
    let index: f64 = cells.values().map(|&c| pairs(c)).sum();
    let (sa, sb): (f64, f64) = (
        rows.iter().map(|&v| pairs(v)).sum(),
        cols.iter().map(|&v| pairs(v)).sum(),
    );
    let expected = sa * sb / total;
    let max = (sa + sb) / 2.0;
    let ari = if (max - expected).abs() < 1e-12 {
        if (index - expected).abs() < 1e-12 {
            1.0
        } else {
            0.0
        }
    } else {
        (index - expected) / (max - expected)
    };
    let nf = n as f64;
    let entropy = |v: &[f64]| -> f64 {
        v.iter()
            .filter(|&&c| c > 0.0)
            .map(|&c| -(c / nf) * (c / nf).ln())
            .sum()
    };
    let (ha, hb) = (entropy(&rows), entropy(&cols));
    let mi: f64 = cells
        .iter()
        .map(|(&(i, j), &c)| (c / nf) * ((c * nf) / (rows[i] * cols[j])).ln())
        .sum();
    let nmi = if ha + hb <= 0.0 {
        1.0
    } else {
        2.0 * mi / (ha + hb)
    };
    (ari, nmi.max(0.0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_roc_curve_runs_from_corner_to_corner_and_its_area_is_the_auc() {
        let mut rng = 7u64;
        let mut next = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        let (mut y, mut p) = (Vec::new(), Vec::new());
        for _ in 0..2000 {
            let label = if next() < 0.3 { 1.0 } else { 0.0 };
            // rounded scores, so that ties occur
            p.push(((next() + label * 0.4) * 20.0).round() / 20.0);
            y.push(label);
        }
        let full = roc_curve(&y, &p, usize::MAX);
        assert_eq!(full.first(), Some(&(0.0, 0.0)));
        assert_eq!(full.last(), Some(&(1.0, 1.0)));
        assert!(full
            .windows(2)
            .all(|w| w[1].0 >= w[0].0 && w[1].1 >= w[0].1));
        let area: f64 = full
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
            .sum();
        assert!(
            (area - auc(&y, &p)).abs() < 1e-12,
            "{area} vs {}",
            auc(&y, &p)
        );
        let thin = roc_curve(&y, &p, 5);
        assert_eq!(thin.len(), 5);
        assert_eq!(thin.first(), full.first());
        assert_eq!(thin.last(), full.last());
        assert!(roc_curve(&[1.0, 1.0], &[0.2, 0.3], 10).is_empty());
        // a NaN score is a group of its own, never a loop without end
        let with_nan = roc_curve(&[1.0, 0.0, 1.0], &[f64::NAN, 0.2, 0.7], 10);
        assert_eq!(with_nan.last(), Some(&(1.0, 1.0)));
        assert_eq!(with_nan.len(), 4);
    }

    use super::*;

    #[test]
    fn cluster_agreement_matches_known_values() {
        // identical partitions under other names
        let (ari, nmi) = cluster_agreement(&[0, 0, 1, 1, 2, 2], &["a", "a", "b", "b", "c", "c"]);
        assert!((ari - 1.0).abs() < 1e-12 && (nmi - 1.0).abs() < 1e-12);
        // scikit-learn: adjusted_rand_score([0,0,1,1],[0,0,1,2]) = 0.5714285714,
        // normalized_mutual_info_score(...) = 0.8
        let (ari, nmi) = cluster_agreement(&[0, 0, 1, 1], &[0, 0, 1, 2]);
        assert!((ari - 0.571_428_571_4).abs() < 1e-9, "{ari}");
        assert!((nmi - 0.8).abs() < 1e-9, "{nmi}");
        // independent labels agree by chance only
        let a: Vec<usize> = (0..1000).map(|i| i % 4).collect();
        let b: Vec<usize> = (0..1000).map(|i| (i / 4) % 5).collect();
        let (ari, nmi) = cluster_agreement(&a, &b);
        assert!(ari.abs() < 0.01 && nmi < 0.01, "{ari} {nmi}");
    }

    /// AUC by its definition: the share of (positive, negative) pairs ranked correctly.
    fn slow_auc(y: &[f64], p: &[f64]) -> f64 {
        let (mut good, mut pairs) = (0.0, 0.0);
        for i in 0..y.len() {
            for j in 0..y.len() {
                if y[i] > 0.5 && y[j] < 0.5 {
                    pairs += 1.0;
                    if p[i] > p[j] {
                        good += 1.0;
                    } else if p[i] == p[j] {
                        good += 0.5;
                    }
                }
            }
        }
        good / pairs
    }

    #[test]
    fn auc_matches_the_pairwise_definition() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20 {
            let n = rng.gen_range(5..60);
            let y: Vec<f64> = (0..n).map(|i| if i % 3 == 0 { 1.0 } else { 0.0 }).collect();
            // coarse scores so that ties happen
            let p: Vec<f64> = (0..n).map(|_| (rng.gen_range(0..8) as f64) / 8.0).collect();
            assert!((auc(&y, &p) - slow_auc(&y, &p)).abs() < 1e-12);
        }
        assert!(auc(&[1.0, 1.0], &[0.2, 0.3]).is_nan());
        assert_eq!(auc(&[0.0, 1.0], &[0.2, 0.3]), 1.0);
    }

    #[test]
    fn confusion_and_f1_at_threshold() {
        let y = [1.0, 1.0, 0.0, 0.0, 1.0];
        let p = [0.9, 0.6, 0.7, 0.1, 0.2];
        let m = evaluate(&y, &p, Some(0.5));
        assert_eq!(
            (
                m.true_positives,
                m.false_positives,
                m.true_negatives,
                m.false_negatives
            ),
            (2, 1, 1, 1)
        );
        assert!((m.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.brier - (0.01 + 0.16 + 0.49 + 0.01 + 0.64) / 5.0).abs() < 1e-12);
        // the best threshold is at least as good as 0.5
        let best = evaluate(&y, &p, None);
        assert!(best.f1 >= m.f1);
        assert_eq!(best.threshold, 0.2); // P = 3/4, R = 1, F1 = 6/7
    }
}
