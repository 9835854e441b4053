//! The preprocessing stored with every model, fitted on training rows only:
//! log1p of skewed non-negative features, median imputation with missing-value flags,
//! z-score scaling, one-hot or label encoding of categories, removal of near-duplicate
//! features, and optional PCA. Scoring applies exactly the stored steps.

use serde::{Deserialize, Serialize};

use crate::frame::Frame;
use crate::Error;

/// Which steps to fit. Trees keep missing values (the booster routes them) and need no
/// scaling; the linear model needs both.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PreprocessOptions {
    pub log_transform: bool,
    pub impute: bool,
    pub scale: bool,
    pub one_hot: bool,
    /// Categories kept per categorical feature (the rest become "other").
    pub max_categories: usize,
    /// Drop the later of two features whose |correlation| exceeds this.
    pub max_correlation: Option<f64>,
    /// Project onto this many principal components (needs `scale`).
    pub pca_components: Option<usize>,
}

/// Rows the PCA projection is fitted on, at most.
const PCA_ROWS: usize = 50_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct NumericStep {
    name: String,
    log: bool,
    median: f64,
    /// Emit a 0/1 "was missing" column (only when imputing and training saw a gap).
    missing_flag: bool,
    mean: f64,
    std: f64,
    keep: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct CategoricalStep {
    name: String,
    /// Known categories; one-hot columns follow this order, or label codes are indices.
    vocabulary: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Pca {
    mean: Vec<f64>,
    /// components x inputs
    components: Vec<Vec<f64>>,
}

/// A fitted preprocessing pipeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Preprocessor {
    pub options: PreprocessOptions,
    numeric: Vec<NumericStep>,
    categorical: Vec<CategoricalStep>,
    pca: Option<Pca>,
    /// Names of the model's input columns, in order.
    pub output_names: Vec<String>,
    /// For each output column before PCA, the source feature it comes from.
    pub output_sources: Vec<String>,
}

fn finite(xs: impl Iterator<Item = f64>) -> Vec<f64> {
    xs.filter(|x| x.is_finite()).collect()
}

/// The median in linear time (a selection, not a sort: this runs once per feature on
/// every training row).
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    let (below, upper, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        upper
    } else {
        let lower = below
            .iter()
            .copied()
            .max_by(f64::total_cmp)
            .unwrap_or(upper);
        (lower + upper) / 2.0
    }
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 1.0);
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64;
    let s = var.sqrt();
    (m, if s > 1e-12 { s } else { 1.0 })
}

fn skewness(v: &[f64]) -> f64 {
    let (m, s) = mean_std(v);
    if v.len() < 3 || s <= 1e-12 {
        return 0.0;
    }
    v.iter().map(|x| ((x - m) / s).powi(3)).sum::<f64>() / v.len() as f64
}

impl NumericStep {
    fn before_scaling(&self, x: f64) -> f64 {
        let x = if self.log && x.is_finite() {
            x.max(0.0).ln_1p()
        } else {
            x
        };
        if x.is_finite() {
            x
        } else {
            f64::NAN
        }
    }
}

impl Preprocessor {
    /// Fits every step on the training rows.
    pub fn fit(frame: &Frame, options: &PreprocessOptions) -> Result<Preprocessor, Error> {
        if frame.rows == 0 {
            return Err(Error::NotEnoughData("no training rows".into()));
        }
        let w = frame.numeric_names.len();
        let column = |j: usize| (0..frame.rows).map(move |i| frame.numeric[i * w + j]);
        let mut numeric = Vec::with_capacity(w);
        for (j, name) in frame.numeric_names.iter().enumerate() {
            let values = finite(column(j));
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let log = options.log_transform && min >= 0.0 && skewness(&values) > 1.0;
            let mut step = NumericStep {
                name: name.clone(),
                log,
                median: 0.0,
                missing_flag: false,
                mean: 0.0,
                std: 1.0,
                keep: !values.is_empty(),
            };
            let transformed = finite(column(j).map(|x| step.before_scaling(x)));
            step.median = median(transformed.clone());
            step.missing_flag =
                options.impute && transformed.len() < frame.rows && !transformed.is_empty();
            if options.scale {
                let filled: Vec<f64> = column(j)
                    .map(|x| step.before_scaling(x))
                    .map(|x| if x.is_nan() { step.median } else { x })
                    .collect();
                let (m, s) = mean_std(&filled);
                step.mean = m;
                step.std = s;
            }
            numeric.push(step);
        }
        let cw = frame.categorical_names.len();
        let mut categorical = Vec::with_capacity(cw);
        for (j, name) in frame.categorical_names.iter().enumerate() {
            let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
            for i in 0..frame.rows {
                if let Some(c) = &frame.categorical[i * cw + j] {
                    *counts.entry(c.as_str()).or_default() += 1;
                }
            }
            let mut by_count: Vec<(&str, usize)> = counts.into_iter().collect();
            by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            categorical.push(CategoricalStep {
                name: name.clone(),
                vocabulary: by_count
                    .into_iter()
                    .take(options.max_categories)
                    .map(|(c, _)| c.to_string())
                    .collect(),
            });
        }
        let mut p = Preprocessor {
            options: options.clone(),
            numeric,
            categorical,
            pca: None,
            output_names: Vec::new(),
            output_sources: Vec::new(),
        };
        if let Some(limit) = options.max_correlation {
            p.drop_correlated(frame, limit);
        }
        p.name_outputs();
        if let Some(k) = options.pca_components {
            p.fit_pca(frame, k)?;
        }
        Ok(p)
    }

    fn name_outputs(&mut self) {
        self.output_names.clear();
        self.output_sources.clear();
        for s in self.numeric.iter().filter(|s| s.keep) {
            self.output_names.push(s.name.clone());
            self.output_sources.push(s.name.clone());
            if s.missing_flag {
                self.output_names.push(format!("{}_missing", s.name));
                self.output_sources.push(s.name.clone());
            }
        }
        for c in &self.categorical {
            if self.options.one_hot {
                for v in c.vocabulary.iter().map(String::as_str).chain(["other"]) {
                    self.output_names.push(format!("{}={}", c.name, v));
                    self.output_sources.push(c.name.clone());
                }
            } else {
                self.output_names.push(c.name.clone());
                self.output_sources.push(c.name.clone());
            }
        }
    }

    /// Drops the later of every pair of numeric features with |r| above `limit`,
    /// measured on up to 20,000 training rows.
    fn drop_correlated(&mut self, frame: &Frame, limit: f64) {
        let w = frame.numeric_names.len();
        let step = (frame.rows / 20_000).max(1);
        let rows: Vec<usize> = (0..frame.rows).step_by(step).collect();
        let cols: Vec<Vec<f64>> = (0..w)
            .map(|j| {
                let s = &self.numeric[j];
                rows.iter()
                    .map(|&i| {
                        let x = s.before_scaling(frame.numeric[i * w + j]);
                        if x.is_nan() {
                            s.median
                        } else {
                            x
                        }
                    })
                    .collect()
            })
            .collect();
        let stats: Vec<(f64, f64)> = cols.iter().map(|c| mean_std(c)).collect();
        for b in 0..w {
            if !self.numeric[b].keep {
                continue;
            }
            for a in 0..b {
                if !self.numeric[a].keep {
                    continue;
                }
                let (ma, sa) = stats[a];
                let (mb, sb) = stats[b];
                let cov = cols[a]
                    .iter()
                    .zip(&cols[b])
                    .map(|(x, y)| (x - ma) * (y - mb))
                    .sum::<f64>()
                    / rows.len().max(1) as f64;
                if (cov / (sa * sb)).abs() > limit {
                    self.numeric[b].keep = false;
                    break;
                }
            }
        }
    }

    /// Fits the projection on up to `PCA_ROWS` evenly spaced rows, which bounds its
    /// (uninterruptible) cost.
    fn fit_pca(&mut self, frame: &Frame, k: usize) -> Result<(), Error> {
        use linfa::traits::Fit;
        let step = (frame.rows / PCA_ROWS).max(1);
        let rows: Vec<usize> = (0..frame.rows).step_by(step).collect();
        let before: Vec<f64> = rows
            .iter()
            .flat_map(|&i| self.encode(frame.numeric_row(i), frame.categorical_row(i)))
            .collect();
        let n_in = self.output_names.len();
        if k == 0 || k > n_in {
            return Err(Error::InvalidParameter {
                name: "pca",
                message: format!("pca must be between 1 and {n_in} components, got {k}"),
            });
        }
        let records = ndarray::Array2::from_shape_vec((rows.len(), n_in), before)
            .map_err(|e| Error::Internal(e.to_string()))?;
        // the decomposition fails on degenerate inputs (fewer rows than components,
        // constant columns): a parameter the caller can change
        let fitted = linfa_reduction::Pca::params(k)
            .fit(&linfa::DatasetBase::from(records))
            .map_err(|e| Error::InvalidParameter {
                name: "pca",
                message: format!("PCA with {k} components failed on these rows: {e}"),
            })?;
        let components = fitted.components();
        self.pca = Some(Pca {
            mean: fitted.mean().to_vec(),
            components: (0..components.nrows())
                .map(|r| components.row(r).to_vec())
                .collect(),
        });
        self.output_names = (1..=k).map(|i| format!("pc{i}")).collect();
        Ok(())
    }

    /// One row through every step before PCA.
    fn encode(&self, numeric: &[f64], categorical: &[Option<String>]) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.output_sources.len());
        for (s, &x) in self.numeric.iter().zip(numeric) {
            if !s.keep {
                continue;
            }
            let mut v = s.before_scaling(x);
            let missing = v.is_nan();
            if self.options.impute && missing {
                v = s.median;
            }
            if self.options.scale && !v.is_nan() {
                v = (v - s.mean) / s.std;
            }
            out.push(v);
            if s.missing_flag {
                out.push(if missing { 1.0 } else { 0.0 });
            }
        }
        for (c, v) in self.categorical.iter().zip(categorical) {
            let code = v
                .as_deref()
                .and_then(|v| c.vocabulary.iter().position(|x| x == v));
            if self.options.one_hot {
                for k in 0..=c.vocabulary.len() {
                    let hit = match code {
                        Some(i) => i == k,
                        None => k == c.vocabulary.len(),
                    };
                    out.push(if hit { 1.0 } else { 0.0 });
                }
            } else {
                out.push(code.map(|i| i as f64).unwrap_or(f64::NAN));
            }
        }
        out
    }

    /// One row through every stored step: the model's input vector.
    pub fn transform_row(&self, numeric: &[f64], categorical: &[Option<String>]) -> Vec<f64> {
        let encoded = self.encode(numeric, categorical);
        match &self.pca {
            None => encoded,
            Some(p) => p
                .components
                .iter()
                .map(|c| {
                    c.iter()
                        .zip(encoded.iter().zip(&p.mean))
                        .map(|(w, (x, m))| w * (x - m))
                        .sum()
                })
                .collect(),
        }
    }

    /// Every row of `frame`, row-major.
    pub fn transform(&self, frame: &Frame) -> Vec<f64> {
        (0..frame.rows)
            .flat_map(|i| self.transform_row(frame.numeric_row(i), frame.categorical_row(i)))
            .collect()
    }

    pub fn n_outputs(&self) -> usize {
        self.output_names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Frame {
        let mut f = Frame {
            numeric_names: vec!["money".into(), "copy".into(), "sometimes".into()],
            categorical_names: vec!["colour".into()],
            ..Frame::default()
        };
        let colours = ["red", "red", "blue", "green", "red", "blue"];
        for i in 0..60 {
            let money = if i % 10 == 0 { 1000.0 } else { i as f64 };
            let sometimes = if i % 3 == 0 { f64::NAN } else { (i % 7) as f64 };
            f.numeric.extend([money, money * 2.0 + 1.0, sometimes]);
            f.categorical
                .push(Some(colours[i % colours.len()].to_string()));
            f.rows += 1;
        }
        f
    }

    fn linear() -> PreprocessOptions {
        PreprocessOptions {
            log_transform: true,
            impute: true,
            scale: true,
            one_hot: true,
            max_categories: 2,
            max_correlation: Some(0.95),
            pca_components: None,
        }
    }

    #[test]
    fn fitted_on_training_rows_and_applied_unchanged() {
        let f = frame();
        let p = Preprocessor::fit(&f, &linear()).unwrap();
        // copy = 2 * money + 1 is a near-duplicate and goes
        assert!(!p.output_names.contains(&"copy".to_string()));
        assert!(p.output_names.contains(&"sometimes_missing".to_string()));
        assert_eq!(
            p.output_names
                .iter()
                .filter(|n| n.starts_with("colour="))
                .count(),
            3,
            "two kept colours and other"
        );
        let x = p.transform(&f);
        assert_eq!(x.len(), f.rows * p.n_outputs());
        assert!(x.iter().all(|v| v.is_finite()));
        // scaled columns have mean 0 on the training rows
        let col0: f64 = (0..f.rows).map(|i| x[i * p.n_outputs()]).sum::<f64>() / f.rows as f64;
        assert!(col0.abs() < 1e-9);
        // a round trip through serde keeps the exact transform
        let json = serde_json::to_string(&p).unwrap();
        let q: Preprocessor = serde_json::from_str(&json).unwrap();
        assert_eq!(q.transform(&f), x);
        // an unseen category is "other"
        let row = q.transform_row(&[3.0, 7.0, 1.0], &[Some("purple".into())]);
        let other = q
            .output_names
            .iter()
            .position(|n| n == "colour=other")
            .unwrap();
        assert_eq!(row[other], 1.0);
    }

    #[test]
    fn trees_keep_missing_values_and_label_codes() {
        let f = frame();
        let opts = PreprocessOptions {
            log_transform: false,
            impute: false,
            scale: false,
            one_hot: false,
            max_categories: 10,
            max_correlation: None,
            pca_components: None,
        };
        let p = Preprocessor::fit(&f, &opts).unwrap();
        assert_eq!(p.n_outputs(), 4);
        let row = p.transform_row(&[1.0, 3.0, f64::NAN], &[None]);
        assert!(row[2].is_nan() && row[3].is_nan());
        assert_eq!(row[0], 1.0);
    }

    #[test]
    fn median_by_selection_matches_the_sorted_definition() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0]), 3.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert_eq!(median(vec![5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(vec![7.0, 1.0, 3.0, 5.0]), 4.0);
        assert_eq!(median(vec![2.0, 2.0, 2.0, 9.0]), 2.0);
    }

    #[test]
    fn pca_reduces_columns() {
        let f = frame();
        let mut opts = linear();
        opts.pca_components = Some(2);
        let p = Preprocessor::fit(&f, &opts).unwrap();
        assert_eq!(p.output_names, vec!["pc1", "pc2"]);
        assert_eq!(p.transform(&f).len(), f.rows * 2);
        opts.pca_components = Some(99);
        assert!(matches!(
            Preprocessor::fit(&f, &opts),
            Err(Error::InvalidParameter { name: "pca", .. })
        ));
    }
}
