//! Live performance: how a model's stored predictions did once their outcome was known,
//! summarised per model (and per week) the way the holdout was.

use serde::{Deserialize, Serialize};

use crate::metrics;

/// Realised performance of a set of matured predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub predictions: usize,
    pub positives: usize,
    /// NaN when only one outcome occurred.
    pub auc: f64,
    pub brier: f64,
    pub mean_score: f64,
    pub observed_rate: f64,
}

/// Summarises outcomes `y` (1.0 or 0.0) against `scores`; None for no predictions.
pub fn summarise(y: &[f64], scores: &[f64]) -> Option<Summary> {
    let n = y.len();
    if n == 0 {
        return None;
    }
    Some(Summary {
        predictions: n,
        positives: y.iter().filter(|&&v| v > 0.5).count(),
        auc: metrics::auc(y, scores),
        brier: metrics::brier(y, scores),
        mean_score: scores.iter().sum::<f64>() / n as f64,
        observed_rate: y.iter().sum::<f64>() / n as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_match_the_metrics_and_say_unknown_for_one_class() {
        let y = [1.0, 0.0, 1.0, 0.0];
        let p = [0.9, 0.2, 0.6, 0.7];
        let s = summarise(&y, &p).unwrap_or_else(|| panic!("no summary"));
        assert_eq!((s.predictions, s.positives), (4, 2));
        assert!((s.auc - 0.75).abs() < 1e-12, "{}", s.auc);
        assert!((s.brier - (0.01 + 0.04 + 0.16 + 0.49) / 4.0).abs() < 1e-12);
        assert!((s.mean_score - 0.6).abs() < 1e-12 && (s.observed_rate - 0.5).abs() < 1e-12);
        assert!(summarise(&[1.0, 1.0], &[0.3, 0.4]).is_some_and(|s| s.auc.is_nan()));
        assert!(summarise(&[], &[]).is_none());
    }
}
