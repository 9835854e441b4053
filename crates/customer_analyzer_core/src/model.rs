//! Classifiers for churn and purchase: gradient-boosted trees (forust-ml), a random
//! forest of bagged forust regression trees, and L2 logistic regression (linfa-logistic),
//! each behind the stored preprocessing; training with a time-based holdout, optional
//! 5-fold CV or 80/20 split, hyperparameter search; importance and per-row explanations.

use forust_ml::gradientbooster::{ContributionsMethod, GradientBooster, ImportanceMethod};
use forust_ml::Matrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::calibration::{reliability, Bin, Calibrator};
use crate::frame::Frame;
use crate::metrics::{best_f1_threshold, brier, evaluate, roc_curve, Metrics};
use crate::params::{self, Algorithm, TrainParams, Validation};
use crate::preprocess::{PreprocessOptions, Preprocessor};
use crate::trees::{self, column_major, Growth};
use crate::work::Work;
use crate::Error;

/// Rows to learn from: features, 0/1 labels, the snapshot each row comes from (0 is the
/// oldest) and its user (so that validation folds never split a user).
#[derive(Debug, Clone, Default)]
pub struct TrainingData {
    pub frame: Frame,
    pub y: Vec<f64>,
    pub snapshot: Vec<usize>,
    pub user_id: Vec<i64>,
}

impl TrainingData {
    /// Keeps the rows of the users for which `keep` holds.
    pub fn retain_users(&mut self, keep: impl Fn(i64) -> bool) {
        let mask: Vec<bool> = self.user_id.iter().map(|&u| keep(u)).collect();
        self.frame.retain_rows(&mask);
        let mut i = 0;
        self.y.retain(|_| {
            i += 1;
            mask[i - 1]
        });
        let mut i = 0;
        self.snapshot.retain(|_| {
            i += 1;
            mask[i - 1]
        });
        self.user_id.retain(|&u| keep(u));
    }

    /// Removes the rows of snapshot `snapshot` and returns their features (the rows are
    /// not labelled yet: drift's baseline at the end of the data).
    pub fn take_snapshot(&mut self, snapshot: usize) -> Frame {
        let keep: Vec<bool> = self.snapshot.iter().map(|&s| s != snapshot).collect();
        let taken: Vec<usize> = (0..keep.len()).filter(|&i| !keep[i]).collect();
        let frame = self.frame.select(&taken);
        self.frame.retain_rows(&keep);
        let mut flags = keep.iter();
        self.y.retain(|_| flags.next() == Some(&true));
        let mut flags = keep.iter();
        self.user_id.retain(|_| flags.next() == Some(&true));
        self.snapshot.retain(|&s| s != snapshot);
        frame
    }
}

/// Whether a user is in the sample that keeps 1 / 2^`halvings` of all users. The same
/// user is in or out in every snapshot, and a smaller sample is a subset of a larger one,
/// so halving again while reading needs no second pass.
pub fn user_in_sample(user_id: i64, halvings: u32) -> bool {
    if halvings == 0 {
        return true;
    }
    // splitmix64: a fixed, well-mixed hash, the same on every platform and version
    let mut z = (user_id as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z >> (64 - halvings.min(63)) == 0
}

/// Memory one training row needs at the peak of training: its row of the frame (8 bytes
/// a numeric feature, about 40 a category) and, for the fit, the preprocessed inputs
/// (up to one and a half columns per numeric feature with missing flags, 13 per category
/// one-hot), their column-major copy and bins, gradients and predictions.
pub fn bytes_per_training_row(numeric: usize, categorical: usize) -> usize {
    let frame_row = numeric * 8 + categorical * 40 + 24;
    let inputs = numeric * 3 / 2 + categorical * 13;
    frame_row + inputs * 8 * 2 + trees::fit_bytes(1, inputs)
}

/// The fitted estimator, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Estimator {
    /// forust-ml booster (LogLoss), as forust's own JSON.
    Gbm {
        booster: String,
    },
    /// Regression trees on 0/1 labels whose leaves hold positive rates; the score is
    /// their mean.
    Forest {
        trees: Vec<String>,
    },
    Logistic {
        weights: Vec<f64>,
        intercept: f64,
    },
}

/// A trained classifier: preprocessing, estimator, the calibration of its scores and
/// the decision threshold (on calibrated scores).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Model {
    pub algorithm: Algorithm,
    pub preprocessor: Preprocessor,
    pub estimator: Estimator,
    pub threshold: f64,
    /// Isotonic calibration fitted on the validation snapshot (None: scores as they are).
    pub calibrator: Option<Calibrator>,
}

/// Which rows of the training data play which part (see `schedule`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Split {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    pub holdout: Vec<usize>,
    /// The newest matured snapshots, which the serving model is refitted on.
    pub refit: Vec<usize>,
}

impl Split {
    /// Rows by the snapshot they come from (indices into `data.snapshot`'s values).
    pub fn by_snapshot(
        data: &TrainingData,
        train: &[usize],
        validation: usize,
        holdout: usize,
        refit: &[usize],
    ) -> Split {
        let rows = |keep: &dyn Fn(usize) -> bool| -> Vec<usize> {
            (0..data.snapshot.len())
                .filter(|&i| keep(data.snapshot[i]))
                .collect()
        };
        Split {
            train: rows(&|s| train.contains(&s)),
            validation: rows(&|s| s == validation),
            holdout: rows(&|s| s == holdout),
            refit: rows(&|s| refit.contains(&s)),
        }
    }
}

/// One algorithm tried: its settings and how it did on the validation snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Candidate {
    pub algorithm: Algorithm,
    pub params: serde_json::Value,
    pub validation_auc: f64,
    /// Boosting rounds early stopping kept.
    pub rounds: Option<usize>,
    /// The one kept.
    pub chosen: bool,
}

/// How a model did, stored with it. The holdout figures are those of the model fitted on
/// the training snapshots (the honest fit); the serving model was then refitted with the
/// same settings on the newest matured snapshots.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// On the holdout snapshot, calibrated scores, threshold from the validation snapshot.
    pub holdout: Metrics,
    /// The holdout Brier score of the same fit before calibration.
    pub holdout_brier_uncalibrated: f64,
    /// Predicted against observed rates by decile on the holdout (calibrated).
    pub reliability: Vec<Bin>,
    /// The holdout's ROC curve (false positive rate, true positive rate), at most 101
    /// points; empty in models trained before 0.10.0.
    #[serde(default)]
    pub roc: Vec<(f64, f64)>,
    /// Every algorithm tried, with its validation AUC; the best one was chosen.
    pub candidates: Vec<Candidate>,
    pub cross_validation: Option<Vec<Metrics>>,
    pub split: Option<Metrics>,
    /// (feature, importance) of the serving model: gain share for trees, signed
    /// coefficient for the linear model.
    pub importance: Vec<(String, f64)>,
    /// The settings of the chosen algorithm (what a retraining repeats).
    pub params: serde_json::Value,
    /// (parameters, validation AUC) of every setting searched.
    pub search: Option<Vec<(serde_json::Value, f64)>>,
    pub train_rows: usize,
    pub validation_rows: usize,
    pub refit_rows: usize,
    pub train_positive_rate: f64,
    /// Trees requested and grown for the serving model, and whether the model-size budget
    /// stopped growing.
    pub growth: Option<Growth>,
    /// Whose figures these are.
    pub evaluation: String,
    /// Wall time of each step of the training, in seconds, in order.
    pub seconds: Vec<(String, f64)>,
}

fn preprocess_options(p: &TrainParams) -> PreprocessOptions {
    let linear = p.algorithm() == Algorithm::Logistic || p.common.pca.is_some();
    PreprocessOptions {
        log_transform: linear,
        impute: linear,
        scale: linear,
        one_hot: linear,
        max_categories: 12,
        max_correlation: Some(0.95),
        pca_components: p.common.pca,
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn forust_err(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("forust-ml: {e}"))
}

/// A stored booster that does not parse: the blob decoded but its inside is damaged.
fn corrupt_booster(e: impl std::fmt::Display) -> Error {
    Error::CorruptModel(format!("a stored tree booster does not parse: {e}"))
}

/// L-BFGS iterations per call of linfa-logistic: each call warm-starts from the last
/// one's weights, and the interrupt check runs between calls (linfa has no hook).
const LOGISTIC_CHUNK: u64 = 10;

fn fit_logistic(
    work: &Work,
    x: Vec<f64>,
    rows: usize,
    cols: usize,
    y: &[f64],
    p: &params::Logistic,
) -> Result<(Vec<f64>, f64), Error> {
    use linfa::traits::Fit;
    let records = ndarray::Array2::from_shape_vec((rows, cols), x)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let targets = ndarray::Array1::from_iter(y.iter().map(|&v| v > 0.5));
    let dataset = linfa::Dataset::new(records, targets);
    let mut start: Option<ndarray::Array1<f64>> = None;
    let mut done = 0;
    let fitted = loop {
        work.checkpoint()?;
        let steps = LOGISTIC_CHUNK.min(p.max_iterations - done);
        let mut params = linfa_logistic::LogisticRegression::default()
            .alpha(p.alpha)
            .max_iterations(steps);
        if let Some(w) = &start {
            params = params.initial_params(w.clone());
        }
        let fitted = work
            .install(|| params.fit(&dataset))
            .map_err(|e| Error::Internal(format!("linfa-logistic: {e}")))?;
        done += steps;
        let mut w = fitted.params().to_vec();
        w.push(fitted.intercept());
        let w = ndarray::Array1::from(w);
        let moved = start.as_ref().map_or(f64::INFINITY, |old| {
            old.iter()
                .zip(&w)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max)
        });
        start = Some(w);
        if done >= p.max_iterations || moved < 1e-9 {
            break fitted;
        }
    };
    // linfa's probability is of its "positive" class, the more frequent label; turn the
    // weights round when that is `false` so that scores are always P(label = true).
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    Ok((
        fitted.params().iter().map(|w| sign * w).collect(),
        sign * fitted.intercept(),
    ))
}

/// Rows scored per chunk: small enough that a round of chunks takes a fraction of a second.
const SCORE_CHUNK: usize = 2048;

/// A model ready to score: boosters parsed once (the cache holds these).
pub struct Scorer {
    pub model: Model,
    boosters: Vec<GradientBooster>,
}

impl Scorer {
    pub fn new(model: Model) -> Result<Scorer, Error> {
        let boosters = match &model.estimator {
            Estimator::Gbm { booster } => {
                vec![GradientBooster::from_json(booster).map_err(corrupt_booster)?]
            }
            Estimator::Forest { trees } => trees
                .iter()
                .map(|t| GradientBooster::from_json(t).map_err(corrupt_booster))
                .collect::<Result<_, _>>()?,
            Estimator::Logistic { .. } => Vec::new(),
        };
        Ok(Scorer { model, boosters })
    }

    /// Probabilities for preprocessed rows (row-major, `rows` of them), calibrated when
    /// the model carries a calibrator. `parallel` is only for callers inside
    /// `Work::install`: forust's parallel path uses the current pool.
    fn predict_prepared(&self, x: &[f64], rows: usize, parallel: bool) -> Vec<f64> {
        let raw = self.raw_prepared(x, rows, parallel);
        match &self.model.calibrator {
            Some(c) => raw.into_iter().map(|s| c.apply(s)).collect(),
            None => raw,
        }
    }

    /// The estimator's own probabilities, before calibration.
    fn raw_prepared(&self, x: &[f64], rows: usize, parallel: bool) -> Vec<f64> {
        let cols = self.model.preprocessor.n_outputs();
        match &self.model.estimator {
            Estimator::Logistic { weights, intercept } => (0..rows)
                .map(|i| {
                    let z: f64 = x[i * cols..(i + 1) * cols]
                        .iter()
                        .zip(weights)
                        .map(|(a, w)| a * w)
                        .sum();
                    sigmoid(z + intercept)
                })
                .collect(),
            Estimator::Gbm { .. } => {
                let data = column_major(x, rows, cols);
                let m = Matrix::new(&data, rows, cols);
                self.boosters[0]
                    .predict(&m, parallel)
                    .into_iter()
                    .map(sigmoid)
                    .collect()
            }
            Estimator::Forest { .. } => {
                let data = column_major(x, rows, cols);
                let m = Matrix::new(&data, rows, cols);
                let mut sum = vec![0.0; rows];
                for b in &self.boosters {
                    for (s, v) in sum.iter_mut().zip(b.predict(&m, parallel)) {
                        *s += v;
                    }
                }
                let n = self.boosters.len().max(1) as f64;
                sum.into_iter().map(|s| (s / n).clamp(0.0, 1.0)).collect()
            }
        }
    }

    /// Scores every row of `frame` on this thread: for small frames and tests.
    pub fn predict(&self, frame: &Frame) -> Vec<f64> {
        let x = self.model.preprocessor.transform(frame);
        self.predict_prepared(&x, frame.rows, false)
    }

    /// Scores every row of `frame` in chunks on the work's pool, with an interrupt check
    /// between rounds of chunks.
    pub fn predict_in(&self, work: &Work, frame: &Frame) -> Result<Vec<f64>, Error> {
        let parts = work.for_chunks(frame.rows, SCORE_CHUNK, |r| {
            let rows: Vec<usize> = r.collect();
            let part = frame.select(&rows);
            let x = self.model.preprocessor.transform(&part);
            self.predict_prepared(&x, part.rows, false)
        })?;
        Ok(parts.concat())
    }

    /// One user's score from raw feature values.
    pub fn predict_one(&self, numeric: &[f64], categorical: &[Option<String>]) -> f64 {
        let x = self.model.preprocessor.transform_row(numeric, categorical);
        self.predict_prepared(&x, 1, false)
            .first()
            .copied()
            .unwrap_or(f64::NAN)
    }

    /// Per-feature contributions to one score, summed back onto source features:
    /// Shapley values in log-odds for boosting, in probability for the forest, and
    /// coefficient x scaled value (log-odds, relative to the training mean) for the
    /// linear model. Returns (feature, contribution), largest magnitude first.
    pub fn explain(&self, numeric: &[f64], categorical: &[Option<String>]) -> Vec<(String, f64)> {
        let pre = &self.model.preprocessor;
        let x = pre.transform_row(numeric, categorical);
        let cols = x.len();
        let raw: Vec<f64> = match &self.model.estimator {
            Estimator::Logistic { weights, .. } => {
                x.iter().zip(weights).map(|(a, w)| a * w).collect()
            }
            Estimator::Gbm { .. } | Estimator::Forest { .. } => {
                let m = Matrix::new(&x, 1, cols);
                let mut acc = vec![0.0; cols];
                for b in &self.boosters {
                    let c = b.predict_contributions(&m, ContributionsMethod::Shapley, false);
                    for (a, v) in acc.iter_mut().zip(c) {
                        *a += v;
                    }
                }
                let n = self.boosters.len().max(1) as f64;
                acc.into_iter().map(|a| a / n).collect()
            }
        };
        let names: &[String] = if pre.output_sources.len() == cols {
            &pre.output_sources
        } else {
            &pre.output_names
        };
        let mut by_source: Vec<(String, f64)> = Vec::new();
        for (name, v) in names.iter().zip(raw) {
            match by_source.iter_mut().find(|(n, _)| n == name) {
                Some(e) => e.1 += v,
                None => by_source.push((name.clone(), v)),
            }
        }
        by_source.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        by_source
    }

    fn importance(&self) -> Vec<(String, f64)> {
        let pre = &self.model.preprocessor;
        let mut out: Vec<(String, f64)> = match &self.model.estimator {
            Estimator::Logistic { weights, .. } => pre
                .output_names
                .iter()
                .cloned()
                .zip(weights.iter().copied())
                .collect(),
            _ => {
                let mut acc = vec![0.0; pre.n_outputs()];
                for b in &self.boosters {
                    for (k, v) in b.calculate_feature_importance(ImportanceMethod::TotalGain, false)
                    {
                        if let Some(a) = acc.get_mut(k) {
                            *a += v as f64;
                        }
                    }
                }
                let total: f64 = acc.iter().sum();
                pre.output_names
                    .iter()
                    .cloned()
                    .zip(
                        acc.into_iter()
                            .map(|a| if total > 0.0 { a / total } else { 0.0 }),
                    )
                    .collect()
            }
        };
        out.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        out
    }
}

/// Fits preprocessing and estimator on `rows` of `data`; boosting stops early on the
/// `validation` rows when given.
fn fit(
    work: &Work,
    data: &TrainingData,
    rows: &[usize],
    p: &TrainParams,
    validation: Option<&[usize]>,
) -> Result<(Scorer, Option<Growth>), Error> {
    work.checkpoint()?;
    let frame = data.frame.select(rows);
    let y: Vec<f64> = rows.iter().map(|&i| data.y[i]).collect();
    check_classes(&y, "training rows")?;
    let pre = Preprocessor::fit(&frame, &preprocess_options(p))?;
    work.checkpoint()?;
    let x = work.install(|| pre.transform(&frame));
    drop(frame);
    work.checkpoint()?;
    let cols = pre.n_outputs();
    let n = rows.len();
    let seed = p.common.seed;
    let (estimator, growth) = match &p.estimator {
        params::Estimator::Gbm(g) => {
            let val = validation.map(|v| {
                let f = data.frame.select(v);
                (
                    work.install(|| pre.transform(&f)),
                    v.iter().map(|&i| data.y[i]).collect::<Vec<f64>>(),
                )
            });
            let val = val.as_ref().map(|(vx, vy)| trees::Validation {
                x: vx,
                rows: vy.len(),
                y: vy,
            });
            let (booster, growth) = trees::fit_gbm(work, x, n, cols, &y, g, seed, val)?;
            let booster = booster.json_dump().map_err(forust_err)?;
            (Estimator::Gbm { booster }, Some(growth))
        }
        params::Estimator::RandomForest(f) => {
            let (trees, growth) = trees::fit_forest(work, x, n, cols, &y, f, seed)?;
            let trees = trees
                .iter()
                .map(|b| b.json_dump().map_err(forust_err))
                .collect::<Result<_, _>>()?;
            (Estimator::Forest { trees }, Some(growth))
        }
        params::Estimator::Logistic(l) => {
            let (weights, intercept) = fit_logistic(work, x, n, cols, &y, l)?;
            (Estimator::Logistic { weights, intercept }, None)
        }
        params::Estimator::Auto => {
            return Err(Error::Internal(
                "auto is a choice among algorithms, not one to fit".into(),
            ))
        }
    };
    let scorer = Scorer::new(Model {
        algorithm: p.algorithm(),
        preprocessor: pre,
        estimator,
        threshold: 0.5,
        calibrator: None,
    })?;
    Ok((scorer, growth))
}

fn check_classes(y: &[f64], what: &str) -> Result<(), Error> {
    let pos = y.iter().filter(|&&v| v > 0.5).count();
    if y.len() < 20 {
        return Err(Error::NotEnoughData(format!(
            "{what}: {} rows, at least 20 are needed",
            y.len()
        )));
    }
    if pos == 0 || pos == y.len() {
        return Err(Error::NotEnoughData(format!(
            "{what}: all {} rows have the same label, both classes are needed",
            y.len()
        )));
    }
    Ok(())
}

/// Labels and scores (calibrated when the scorer's model is) of `rows`.
fn score(
    work: &Work,
    s: &Scorer,
    data: &TrainingData,
    rows: &[usize],
) -> Result<(Vec<f64>, Vec<f64>), Error> {
    let frame = data.frame.select(rows);
    Ok((
        rows.iter().map(|&i| data.y[i]).collect(),
        s.predict_in(work, &frame)?,
    ))
}

fn labels_of(data: &TrainingData, rows: &[usize]) -> Vec<f64> {
    rows.iter().map(|&i| data.y[i]).collect()
}

/// The documented search space: candidates built from `base`, each changing the
/// algorithm's own settings only.
pub fn search_space(base: &TrainParams) -> Vec<TrainParams> {
    let with = |estimator| TrainParams {
        common: base.common.clone(),
        estimator,
        explicit: base.explicit.clone(),
    };
    let mut out = Vec::new();
    match &base.estimator {
        params::Estimator::Gbm(g) => {
            for iterations in [100, 300] {
                for learning_rate in [0.05, 0.1] {
                    for max_depth in [3, 6] {
                        out.push(with(params::Estimator::Gbm(params::Gbm {
                            iterations,
                            learning_rate,
                            max_depth,
                            ..g.clone()
                        })));
                    }
                }
            }
        }
        params::Estimator::RandomForest(f) => {
            for max_depth in [6, 10, 14] {
                for min_leaf_weight in [2.0, 10.0] {
                    out.push(with(params::Estimator::RandomForest(params::Forest {
                        max_depth,
                        min_leaf_weight,
                        ..f.clone()
                    })));
                }
            }
        }
        params::Estimator::Logistic(l) => {
            for alpha in [0.01, 0.1, 1.0, 10.0] {
                out.push(with(params::Estimator::Logistic(params::Logistic {
                    alpha,
                    ..l.clone()
                })));
            }
        }
        params::Estimator::Auto => out.push(base.clone()),
    }
    out
}

/// Users split into `k` groups by a seeded shuffle of the distinct ids.
fn user_groups(data: &TrainingData, rows: &[usize], k: usize, seed: u64) -> Vec<usize> {
    let mut users: Vec<i64> = rows.iter().map(|&i| data.user_id[i]).collect();
    users.sort_unstable();
    users.dedup();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let group: std::collections::HashMap<i64, usize> = users
        .into_iter()
        .map(|u| (u, rng.gen_range(0..k)))
        .collect();
    rows.iter().map(|&i| group[&data.user_id[i]]).collect()
}

/// The settings to refit the chosen model with: boosting keeps the number of rounds
/// early stopping chose, since the refit has no validation rows to stop on.
fn for_refit(p: &TrainParams, growth: Option<&Growth>) -> TrainParams {
    let mut p = p.clone();
    if let (params::Estimator::Gbm(g), Some(rounds)) =
        (&mut p.estimator, growth.and_then(|g| g.rounds_chosen))
    {
        g.iterations = rounds;
        g.early_stopping_rounds = 0;
    }
    p
}

/// Trains a model (see `schedule` for the roles of the rows):
/// 1. each candidate algorithm (three for auto) is fitted on the training rows, boosting
///    stopping early on the validation rows; with `search`, each point of the search
///    space is tried the same way;
/// 2. the candidate with the best validation AUC is chosen, its scores calibrated on the
///    validation rows (isotonic) and its threshold set there (best F1);
/// 3. that fit is measured on the holdout rows (the reported figures);
/// 4. the serving model is refitted with the chosen settings on the refit rows and keeps
///    the calibration and threshold.
pub fn train(
    work: &Work,
    data: &TrainingData,
    split: &Split,
    params: &TrainParams,
) -> Result<(Model, Report), Error> {
    let y_train = labels_of(data, &split.train);
    check_classes(&y_train, "training snapshots")?;
    let y_val = labels_of(data, &split.validation);
    check_classes(&y_val, "validation snapshot")?;
    check_classes(&labels_of(data, &split.holdout), "holdout snapshot")?;
    let positives = y_train.iter().filter(|&&v| v > 0.5).count();
    let mut seconds = Vec::new();
    let mut clock = std::time::Instant::now();
    let mut lap = |what: &str| {
        seconds.push((what.to_string(), clock.elapsed().as_secs_f64()));
        clock = std::time::Instant::now();
    };

    let mut candidates = Vec::new();
    let mut search_log = None;
    let mut best: Option<(f64, TrainParams, Scorer, Option<Growth>)> = None;
    let mut best_index = 0;
    for candidate in params.candidates(split.train.len(), positives) {
        let settings = if candidate.common.search {
            search_space(&candidate)
        } else {
            vec![candidate]
        };
        for p in settings {
            let (scorer, growth) = fit(work, data, &split.train, &p, Some(&split.validation))?;
            let (_, raw) = score(work, &scorer, data, &split.validation)?;
            let auc = crate::metrics::auc(&y_val, &raw);
            if params.common.search {
                search_log
                    .get_or_insert_with(Vec::new)
                    .push((p.estimator_json(), auc));
            }
            candidates.push(Candidate {
                algorithm: p.algorithm(),
                params: p.estimator_json(),
                validation_auc: auc,
                rounds: growth.as_ref().and_then(|g| g.rounds_chosen),
                chosen: false,
            });
            if best.as_ref().is_none_or(|b| auc > b.0 || b.0.is_nan()) {
                best = Some((auc, p, scorer, growth));
                best_index = candidates.len() - 1;
            }
        }
    }
    let (_, chosen, mut honest, honest_growth) =
        best.ok_or_else(|| Error::Internal("no candidate was fitted".into()))?;
    candidates[best_index].chosen = true;
    lap("candidates");

    // calibration and threshold from the validation rows
    let (_, raw_val) = score(work, &honest, data, &split.validation)?;
    let calibrator = Calibrator::fit(&raw_val, &y_val);
    honest.model.calibrator = calibrator.clone();
    let (_, cal_val) = score(work, &honest, data, &split.validation)?;
    let threshold = params
        .common
        .threshold
        .unwrap_or_else(|| best_f1_threshold(&y_val, &cal_val));

    // the honest figures: the holdout, never seen by the fit, the choice or calibration
    let (y_hold, cal_hold) = score(work, &honest, data, &split.holdout)?;
    let holdout = evaluate(&y_hold, &cal_hold, Some(threshold));
    honest.model.calibrator = None;
    let (_, raw_hold) = score(work, &honest, data, &split.holdout)?;
    let holdout_brier_uncalibrated = brier(&y_hold, &raw_hold);
    let reliability = reliability(&cal_hold, &y_hold);
    let roc = roc_curve(&y_hold, &cal_hold, 101);

    lap("calibration and holdout");
    let refit_params = for_refit(&chosen, honest_growth.as_ref());
    let extra =
        |k: usize, seed: u64, test_group: &dyn Fn(usize) -> bool| -> Result<Metrics, Error> {
            let groups = user_groups(data, &split.train, k, seed);
            let (mut fit_rows, mut test_rows) = (Vec::new(), Vec::new());
            for (&i, &g) in split.train.iter().zip(&groups) {
                if test_group(g) {
                    test_rows.push(i)
                } else {
                    fit_rows.push(i)
                }
            }
            let (s, _) = fit(work, data, &fit_rows, &refit_params, None)?;
            let (y, p) = score(work, &s, data, &test_rows)?;
            Ok(evaluate(&y, &p, params.common.threshold))
        };
    let cross_validation = match params.common.validation {
        Validation::CrossValidation => Some(
            (0..5)
                .map(|fold| extra(5, params.common.seed, &|g| g == fold))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        _ => None,
    };
    let split_metrics = match params.common.validation {
        Validation::Split => Some(extra(5, params.common.seed, &|g| g == 0)?),
        _ => None,
    };

    // the serving model: the chosen settings on the newest matured snapshots
    let (serving, growth) = fit(work, data, &split.refit, &refit_params, None)?;
    let importance = serving.importance();
    lap("validation extras and refit");
    let mut model = serving.model;
    model.calibrator = calibrator;
    model.threshold = threshold;
    let report = Report {
        holdout,
        holdout_brier_uncalibrated,
        reliability,
        roc,
        candidates,
        cross_validation,
        split: split_metrics,
        importance,
        params: refit_params.effective_json(),
        search: search_log,
        train_rows: split.train.len(),
        validation_rows: split.validation.len(),
        refit_rows: split.refit.len(),
        train_positive_rate: positives as f64 / y_train.len().max(1) as f64,
        growth,
        seconds,
        evaluation: "holdout figures of the fit on the training snapshots, chosen and calibrated on the validation snapshot; the serving model is that fit's settings refitted on the newest matured snapshots".into(),
    };
    Ok((model, report))
}

/// Synthetic training data for tests in this crate.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A learnable problem: the label depends on two features plus noise.
    pub(crate) fn synthetic(n_users: usize, snapshots: usize, seed: u64) -> TrainingData {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut d = TrainingData {
            frame: Frame {
                numeric_names: vec![
                    "recency".into(),
                    "spend".into(),
                    "noise".into(),
                    "gappy".into(),
                ],
                categorical_names: vec!["status".into()],
                ..Frame::default()
            },
            ..TrainingData::default()
        };
        for s in 0..snapshots {
            for u in 0..n_users {
                let recency: f64 = rng.gen_range(0.0..60.0);
                let spend: f64 = rng.gen_range(0.0..500.0f64).powi(2) / 500.0;
                let vip = rng.gen_bool(0.3);
                let z = -0.08 * recency
                    + 0.004 * spend
                    + if vip { 1.0 } else { 0.0 }
                    + rng.gen_range(-1.0..1.0);
                let gappy = if rng.gen_bool(0.2) {
                    f64::NAN
                } else {
                    recency * 2.0
                };
                d.frame
                    .numeric
                    .extend([recency, spend, rng.gen_range(0.0..1.0), gappy]);
                d.frame
                    .categorical
                    .push(Some(if vip { "vip" } else { "member" }.into()));
                d.frame.rows += 1;
                d.y.push(if z > -1.0 { 1.0 } else { 0.0 });
                d.snapshot.push(s);
                d.user_id.push(u as i64);
            }
        }
        d
    }

    /// Roles for `synthetic` data: the last snapshot is the holdout, the one before the
    /// validation snapshot, the rest training; the refit takes the last two.
    pub(crate) fn split(data: &TrainingData) -> Split {
        let n = data.snapshot.iter().max().map_or(0, |m| m + 1);
        assert!(n >= 3, "synthetic splits need three snapshots");
        let train: Vec<usize> = (0..n - 2).collect();
        Split::by_snapshot(data, &train, n - 2, n - 1, &[n - 2, n - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::{split, synthetic};
    use super::*;

    #[test]
    fn every_algorithm_learns_and_round_trips() {
        let data = synthetic(400, 3, 1);
        for algo in [Algorithm::Gbm, Algorithm::RandomForest, Algorithm::Logistic] {
            let mut p = TrainParams::defaults(algo);
            match &mut p.estimator {
                params::Estimator::Gbm(g) => g.iterations = 60,
                params::Estimator::RandomForest(f) => f.n_trees = 20,
                _ => {}
            }
            let (model, report) = train(&Work::unbounded(2), &data, &split(&data), &p).unwrap();
            assert!(
                report.holdout.auc > 0.8,
                "{algo:?} AUC {}",
                report.holdout.auc
            );
            assert!(!report.importance.is_empty());
            let json = serde_json::to_string(&model).unwrap();
            let back: Model = serde_json::from_str(&json).unwrap();
            let a = Scorer::new(model).unwrap();
            let b = Scorer::new(back).unwrap();
            assert_eq!(a.predict(&data.frame), b.predict(&data.frame));
            let e = a.explain(data.frame.numeric_row(0), data.frame.categorical_row(0));
            assert!(e.iter().any(|(n, _)| n == "recency"), "{e:?}");
        }
    }

    #[test]
    fn validations_and_search_are_reported() {
        let data = synthetic(200, 4, 2);
        let mut p = TrainParams::defaults(Algorithm::Logistic);
        p.common.validation = Validation::CrossValidation;
        p.common.search = true;
        let (_, r) = train(&Work::unbounded(2), &data, &split(&data), &p).unwrap();
        assert_eq!(r.cross_validation.as_ref().map(Vec::len), Some(5));
        assert_eq!(r.search.as_ref().map(Vec::len), Some(4));
        p.common.validation = Validation::Split;
        p.common.search = false;
        let (_, r) = train(&Work::unbounded(2), &data, &split(&data), &p).unwrap();
        assert!(r.split.is_some());
    }

    #[test]
    fn user_samples_nest_and_keep_their_share() {
        let users: Vec<i64> = (1..=100_000).collect();
        for h in 1..6u32 {
            let kept: Vec<i64> = users
                .iter()
                .copied()
                .filter(|&u| user_in_sample(u, h))
                .collect();
            let share = kept.len() as f64 / users.len() as f64;
            let want = 1.0 / (1u64 << h) as f64;
            assert!((share - want).abs() < 0.01, "halvings {h}: {share}");
            // a smaller sample is inside the larger one
            assert!(kept.iter().all(|&u| user_in_sample(u, h - 1)));
        }
        assert!(users.iter().all(|&u| user_in_sample(u, 0)));

        let mut data = synthetic(50, 3, 9);
        let before = data.y.len();
        data.retain_users(|u| u % 2 == 0);
        assert_eq!(data.y.len(), before / 2);
        assert_eq!(data.frame.rows, data.y.len());
        assert_eq!(
            data.frame.numeric.len(),
            data.y.len() * data.frame.numeric_names.len()
        );
        assert!(data.user_id.iter().all(|u| u % 2 == 0));
        assert_eq!(data.snapshot.len(), data.y.len());
    }

    #[test]
    fn taking_a_snapshot_out_leaves_the_others_aligned() {
        let mut data = synthetic(40, 3, 5);
        let last = *data.snapshot.iter().max().unwrap();
        let rows_then = data.y.len();
        let wanted: Vec<usize> = (0..rows_then)
            .filter(|&i| data.snapshot[i] == last)
            .collect();
        let expected = data.frame.select(&wanted);
        let rest: Vec<usize> = (0..rows_then)
            .filter(|&i| data.snapshot[i] != last)
            .collect();
        let (rest_frame, rest_y, rest_users) = (
            data.frame.select(&rest),
            rest.iter().map(|&i| data.y[i]).collect::<Vec<_>>(),
            rest.iter().map(|&i| data.user_id[i]).collect::<Vec<_>>(),
        );
        let taken = data.take_snapshot(last);
        // by their printed form: the frames hold NaN, which is never equal to itself
        assert_eq!(format!("{taken:?}"), format!("{expected:?}"));
        assert_eq!(taken.rows, wanted.len());
        assert_eq!(format!("{:?}", data.frame), format!("{rest_frame:?}"));
        assert_eq!(data.y, rest_y);
        assert_eq!(data.user_id, rest_users);
        assert!(data.snapshot.iter().all(|&s| s != last));
        assert_eq!(data.snapshot.len(), data.y.len());
    }

    #[test]
    fn training_stops_at_a_cancel_in_every_algorithm() {
        let data = synthetic(300, 3, 4);
        for algo in [Algorithm::Gbm, Algorithm::RandomForest, Algorithm::Logistic] {
            let calls = std::rc::Rc::new(std::cell::Cell::new(0));
            let c = calls.clone();
            let work = Work::new(
                1,
                usize::MAX,
                usize::MAX,
                Box::new(move || {
                    c.set(c.get() + 1);
                    if c.get() > 5 {
                        Err(Error::Cancelled)
                    } else {
                        Ok(())
                    }
                }),
            )
            .unwrap();
            let mut p = TrainParams::defaults(algo);
            match &mut p.estimator {
                params::Estimator::Gbm(g) => g.iterations = 5000,
                params::Estimator::RandomForest(f) => f.n_trees = 1000,
                params::Estimator::Logistic(l) => {
                    l.max_iterations = 100_000;
                    l.alpha = 1e-6;
                }
                params::Estimator::Auto => {}
            }
            assert_eq!(
                train(&work, &data, &split(&data), &p).map(|_| ()),
                Err(Error::Cancelled),
                "{algo:?}"
            );
        }
    }

    #[test]
    fn single_class_and_empty_roles_are_refused() {
        let mut data = synthetic(100, 3, 3);
        let p = TrainParams::defaults(Algorithm::Logistic);
        let no_validation = Split {
            validation: vec![],
            ..split(&data)
        };
        assert!(matches!(
            train(&Work::unbounded(1), &data, &no_validation, &p),
            Err(Error::NotEnoughData(_))
        ));
        data.y.iter_mut().for_each(|y| *y = 0.0);
        assert!(matches!(
            train(&Work::unbounded(1), &data, &split(&data), &p),
            Err(Error::NotEnoughData(_))
        ));
    }

    #[test]
    fn auto_tries_three_algorithms_and_keeps_the_best_on_validation() {
        let data = synthetic(600, 4, 5);
        let p = TrainParams::from_json(Algorithm::Auto, &serde_json::json!({})).unwrap();
        let (model, r) = train(&Work::unbounded(2), &data, &split(&data), &p).unwrap();
        let algos: Vec<Algorithm> = r.candidates.iter().map(|c| c.algorithm).collect();
        assert_eq!(
            algos,
            vec![Algorithm::Gbm, Algorithm::RandomForest, Algorithm::Logistic]
        );
        let best = r
            .candidates
            .iter()
            .max_by(|a, b| a.validation_auc.total_cmp(&b.validation_auc))
            .unwrap();
        assert_eq!(model.algorithm, best.algorithm);
        assert!(best.chosen);
        assert_eq!(r.candidates.iter().filter(|c| c.chosen).count(), 1);
        assert!(r.candidates[0].rounds.is_some(), "gbm stops early");
        // the serving model learns from the refit rows, the figures come from the train rows
        let s = split(&data);
        assert_eq!((r.train_rows, r.refit_rows), (s.train.len(), s.refit.len()));
        assert_eq!(r.validation_rows, s.validation.len());
        assert!(r.holdout.auc > 0.8, "{}", r.holdout.auc);
    }

    #[test]
    fn scores_are_calibrated_and_the_reliability_table_is_reported() {
        let data = synthetic(800, 4, 6);
        let mut p = TrainParams::defaults(Algorithm::RandomForest);
        if let params::Estimator::RandomForest(f) = &mut p.estimator {
            f.n_trees = 20;
        }
        let (model, r) = train(&Work::unbounded(2), &data, &split(&data), &p).unwrap();
        assert!(model.calibrator.is_some());
        assert_eq!(r.reliability.len(), 10);
        assert_eq!(
            r.reliability.iter().map(|b| b.users).sum::<usize>(),
            split(&data).holdout.len()
        );
        // calibration on the validation snapshot does not make the holdout worse
        assert!(
            r.holdout.brier <= r.holdout_brier_uncalibrated + 0.01,
            "{} vs {}",
            r.holdout.brier,
            r.holdout_brier_uncalibrated
        );
        // calibrated: mean predicted and observed rate agree overall
        let (p_sum, o_sum, n): (f64, f64, f64) =
            r.reliability.iter().fold((0.0, 0.0, 0.0), |a, b| {
                let u = b.users as f64;
                (
                    a.0 + b.mean_predicted * u,
                    a.1 + b.observed_rate * u,
                    a.2 + u,
                )
            });
        assert!((p_sum / n - o_sum / n).abs() < 0.05);
    }
}
