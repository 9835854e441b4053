//! Gradient boosting and the random forest, grown one tree at a time from forust-ml's
//! public building blocks (`bin_matrix`, `Tree::fit`, its splitter and objective).
//!
//! forust's own `GradientBooster::fit` loops over every round on a rayon thread with no
//! way to stop it, so a cancel or a timeout would wait for the whole training. Here the
//! loop is ours: the data is binned once, each tree is fitted on the work's pool, and
//! between trees the calling thread checks for interrupts and the model-size budget. With
//! the same parameters and no subsampling, the boosting loop grows exactly the trees
//! `GradientBooster::fit` grows (a test checks it).

use forust_ml::binning::bin_matrix;
use forust_ml::constraints::ConstraintMap;
use forust_ml::gradientbooster::{GradientBooster, GrowPolicy};
use forust_ml::objective::{calc_init_callables, gradient_hessian_callables, ObjectiveType};
use forust_ml::sampler::{RandomSampler, SampleMethod, Sampler};
use forust_ml::splitter::MissingImputerSplitter;
use forust_ml::tree::Tree;
use forust_ml::Matrix;
use rand::rngs::StdRng;
use rand::seq::IteratorRandom;
use rand::SeedableRng;
use rand_distr::{Distribution, Poisson};
use serde::{Deserialize, Serialize};

use crate::params::{Forest, Gbm};
use crate::work::Work;
use crate::Error;

/// forust's default number of histogram bins.
const NBINS: u16 = 256;
/// Room left in the model-size budget for what is stored beside the trees (the
/// preprocessing, the booster's settings).
const MODEL_OVERHEAD: usize = 64 * 1024;

/// How far growing went, stored in the model's metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Growth {
    pub trees_requested: usize,
    pub trees_grown: usize,
    /// Growing stopped because the next tree would have passed the model-size budget.
    pub stopped_at_size_limit: bool,
    /// Bytes of the grown trees as stored.
    pub model_bytes: usize,
    /// With early stopping: the number of rounds with the best validation log loss,
    /// which the model keeps.
    #[serde(default)]
    pub rounds_chosen: Option<usize>,
}

/// Rows the trees are checked on while they grow: row-major inputs, their count, labels.
pub struct Validation<'a> {
    pub x: &'a [f64],
    pub rows: usize,
    pub y: &'a [f64],
}

fn log_loss_of_margins(y: &[f64], margin: &[f64]) -> f64 {
    y.iter()
        .zip(margin)
        .map(|(y, m)| {
            let p = (1.0 / (1.0 + (-m).exp())).clamp(1e-12, 1.0 - 1e-12);
            -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
        })
        .sum::<f64>()
        / y.len().max(1) as f64
}

fn forust_err(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("forust-ml: {e}"))
}

/// Row-major to forust's column-major layout.
pub fn column_major(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = x[i * cols + j];
        }
    }
    out
}

/// Bytes a tree takes in the stored model (forust's JSON inside the blob).
fn stored_size(tree: &Tree) -> Result<usize, Error> {
    serde_json::to_vec(tree)
        .map(|v| v.len())
        .map_err(|e| Error::Internal(format!("measuring a tree: {e}")))
}

/// Memory a tree-model fit needs beyond its input: the column-major copy, the bins, the
/// gradients, hessians, weights and running predictions.
pub fn fit_bytes(rows: usize, cols: usize) -> usize {
    rows * cols * (8 + 2) + rows * (4 + 4 + 8 + 8 + 8)
}

struct Binned<'a> {
    data: Matrix<'a, f64>,
    bins: Vec<u16>,
    cuts: forust_ml::data::JaggedMatrix<f64>,
}

fn bin<'a>(work: &Work, x_cm: &'a [f64], rows: usize, cols: usize) -> Result<Binned<'a>, Error> {
    let data = Matrix::new(x_cm, rows, cols);
    let ones = vec![1.0; rows];
    let parallel = work.parallel();
    let binned = work
        .install(|| bin_matrix(&data, &ones, NBINS, f64::NAN, parallel))
        .map_err(forust_err)?;
    Ok(Binned {
        data,
        bins: binned.binned_data,
        cuts: binned.cuts,
    })
}

/// Gradient boosting with log loss on row-major `x`. With `validation`, stops after
/// `early_stopping_rounds` rounds without a better validation log loss and keeps the
/// best number of rounds. Stops too (and says so in the growth report) when the next
/// tree would pass `work.model_limit`.
#[allow(clippy::too_many_arguments)]
pub fn fit_gbm(
    work: &Work,
    x: Vec<f64>,
    rows: usize,
    cols: usize,
    y: &[f64],
    p: &Gbm,
    seed: u64,
    validation: Option<Validation<'_>>,
) -> Result<(GradientBooster, Growth), Error> {
    work.reserve("gradient boosting", fit_bytes(rows, cols))?;
    let x_cm = column_major(&x, rows, cols);
    drop(x);
    work.checkpoint()?;
    let b = bin(work, &x_cm, rows, cols)?;
    let bdata = Matrix::new(&b.bins, rows, cols);
    let parallel = work.parallel();
    let splitter = MissingImputerSplitter::new(
        0.0,
        p.l2 as f32,
        0.0,
        0.0,
        p.min_leaf_weight as f32,
        p.learning_rate as f32,
        true,
        ConstraintMap::new(),
    );
    let weights = vec![1.0; rows];
    let base_score = calc_init_callables(&ObjectiveType::LogLoss)(y, &weights);
    let grad_hess = gradient_hessian_callables(&ObjectiveType::LogLoss);
    let mut yhat = vec![base_score; rows];
    let mut rng = StdRng::seed_from_u64(seed);
    let all_rows: Vec<usize> = (0..rows).collect();
    let col_index: Vec<usize> = (0..cols).collect();
    let mut booster = GradientBooster::default()
        .set_objective_type(ObjectiveType::LogLoss)
        .set_learning_rate(p.learning_rate as f32)
        .set_max_depth(p.max_depth)
        .set_max_leaves(usize::MAX)
        .set_min_leaf_weight(p.min_leaf_weight as f32)
        .set_l2(p.l2 as f32)
        .set_subsample(p.subsample as f32)
        .set_seed(seed)
        .set_initialize_base_score(false)
        .set_base_score(base_score)
        .set_parallel(false);
    let mut growth = Growth {
        trees_requested: p.iterations,
        ..Growth::default()
    };
    let val = validation.map(|v| (column_major(v.x, v.rows, cols), v.rows, v.y));
    let mut val_margin = vec![base_score; val.as_ref().map_or(0, |v| v.1)];
    let mut best = (f64::INFINITY, 0usize);
    for _ in 0..p.iterations {
        work.checkpoint()?;
        let (mut grad, mut hess) = grad_hess(y, &yhat, &weights);
        let (chosen, method) = if p.subsample < 1.0 {
            let (chosen, _) = RandomSampler::new(p.subsample as f32)
                .sample(&mut rng, &all_rows, &mut grad, &mut hess);
            (chosen, SampleMethod::Random)
        } else {
            (all_rows.clone(), SampleMethod::None)
        };
        let tree = work.install(|| {
            let mut tree = Tree::new();
            tree.fit(
                &bdata,
                chosen,
                &col_index,
                &b.cuts,
                &grad,
                &hess,
                &splitter,
                usize::MAX,
                p.max_depth,
                parallel,
                &method,
                &GrowPolicy::DepthWise,
            );
            tree
        });
        let size = stored_size(&tree)?;
        if growth.model_bytes + size > work.model_limit.saturating_sub(MODEL_OVERHEAD) {
            growth.stopped_at_size_limit = true;
            break;
        }
        let step = work.install(|| tree.predict(&b.data, parallel, &f64::NAN));
        for (a, s) in yhat.iter_mut().zip(step) {
            *a += s;
        }
        let mut stop = false;
        if let Some((vx, vrows, vy)) = &val {
            let m = Matrix::new(vx, *vrows, cols);
            let step = work.install(|| tree.predict(&m, parallel, &f64::NAN));
            for (a, s) in val_margin.iter_mut().zip(step) {
                *a += s;
            }
            let loss = log_loss_of_margins(vy, &val_margin);
            if loss < best.0 - 1e-12 {
                best = (loss, booster.trees.len() + 1);
            } else if p.early_stopping_rounds > 0
                && booster.trees.len() + 1 - best.1 >= p.early_stopping_rounds
            {
                stop = true;
            }
        }
        growth.model_bytes += size;
        growth.trees_grown += 1;
        booster.trees.push(tree);
        if stop {
            break;
        }
    }
    if val.is_some() && p.early_stopping_rounds > 0 && best.1 > 0 {
        booster.trees.truncate(best.1);
        growth.rounds_chosen = Some(best.1);
    }
    if booster.trees.is_empty() {
        return Err(model_too_large(work));
    }
    booster.iterations = booster.trees.len();
    Ok((booster, growth))
}

fn model_too_large(work: &Work) -> Error {
    Error::TooLarge {
        what: "a single tree of this model".into(),
        needed_mb: work.model_limit.div_ceil(crate::work::MB) + 1,
        limit_mb: work.model_limit / crate::work::MB,
        setting: "customer_analyzer.max_model_mb",
    }
}

/// A random forest on row-major `x`: regression trees on the 0/1 labels, each on a
/// Poisson(subsample) bootstrap of the rows and a random share of the features, whose
/// leaves hold positive rates. Each tree is a one-tree booster so that forust scores and
/// explains it.
pub fn fit_forest(
    work: &Work,
    x: Vec<f64>,
    rows: usize,
    cols: usize,
    y: &[f64],
    p: &Forest,
    seed: u64,
) -> Result<(Vec<GradientBooster>, Growth), Error> {
    work.reserve("the random forest", fit_bytes(rows, cols))?;
    let x_cm = column_major(&x, rows, cols);
    drop(x);
    work.checkpoint()?;
    let b = bin(work, &x_cm, rows, cols)?;
    let bdata = Matrix::new(&b.bins, rows, cols);
    let parallel = work.parallel();
    let fraction = p
        .feature_fraction
        .unwrap_or_else(|| ((cols as f64).sqrt() / cols as f64).max(1.0 / cols as f64));
    let n_features = ((cols as f64 * fraction).floor() as usize).clamp(1, cols);
    let splitter = MissingImputerSplitter::new(
        0.0,
        0.0,
        0.0,
        0.0,
        p.min_leaf_weight as f32,
        1.0,
        true,
        ConstraintMap::new(),
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let bootstrap =
        Poisson::new(p.subsample.max(0.05)).map_err(|e| Error::Internal(e.to_string()))?;
    let mut trees = Vec::with_capacity(p.n_trees);
    let mut growth = Growth {
        trees_requested: p.n_trees,
        ..Growth::default()
    };
    for _ in 0..p.n_trees {
        work.checkpoint()?;
        // Poisson weights are the bootstrap: each row drawn k ~ Poisson(subsample) times.
        // Squared loss at prediction 0 gives gradient -y*w and hessian w, so each leaf is
        // the weighted positive rate of its rows.
        let weights: Vec<f32> = (0..rows)
            .map(|_| bootstrap.sample(&mut rng) as f32)
            .collect();
        let chosen: Vec<usize> = (0..rows).filter(|&i| weights[i] > 0.0).collect();
        let grad: Vec<f32> = y
            .iter()
            .zip(&weights)
            .map(|(y, w)| -(*y as f32) * w)
            .collect();
        let mut features: Vec<usize> = (0..cols).choose_multiple(&mut rng, n_features);
        features.sort_unstable();
        let tree = work.install(|| {
            let mut tree = Tree::new();
            tree.fit(
                &bdata,
                chosen,
                &features,
                &b.cuts,
                &grad,
                &weights,
                &splitter,
                usize::MAX,
                p.max_depth,
                parallel,
                &SampleMethod::Random,
                &GrowPolicy::DepthWise,
            );
            tree
        });
        let size = stored_size(&tree)?;
        if growth.model_bytes + size > work.model_limit.saturating_sub(MODEL_OVERHEAD) {
            growth.stopped_at_size_limit = true;
            break;
        }
        growth.model_bytes += size;
        growth.trees_grown += 1;
        let mut booster = GradientBooster::default()
            .set_objective_type(ObjectiveType::SquaredLoss)
            .set_iterations(1)
            .set_learning_rate(1.0)
            .set_max_depth(p.max_depth)
            .set_min_leaf_weight(p.min_leaf_weight as f32)
            .set_l2(0.0)
            .set_initialize_base_score(false)
            .set_base_score(0.0)
            .set_parallel(false);
        booster.trees.push(tree);
        trees.push(booster);
    }
    if trees.is_empty() {
        return Err(model_too_large(work));
    }
    Ok((trees, growth))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand_chacha::ChaCha8Rng;

    fn problem(rows: usize, cols: usize) -> (Vec<f64>, Vec<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut x = Vec::with_capacity(rows * cols);
        let mut y = Vec::with_capacity(rows);
        for _ in 0..rows {
            let row: Vec<f64> = (0..cols)
                .map(|j| {
                    if j == 2 && rng.gen_bool(0.1) {
                        f64::NAN
                    } else {
                        rng.gen_range(-1.0..1.0)
                    }
                })
                .collect();
            let z = 2.0 * row[0] - row[1] + rng.gen_range(-0.5..0.5);
            y.push(if z > 0.0 { 1.0 } else { 0.0 });
            x.extend(row);
        }
        (x, y)
    }

    #[test]
    fn the_boosting_loop_grows_what_forust_grows() {
        let (rows, cols) = (600, 5);
        let (x, y) = problem(rows, cols);
        let p = Gbm {
            iterations: 25,
            max_depth: 4,
            subsample: 1.0,
            learning_rate: 0.1,
            ..Gbm::default()
        };
        let work = Work::unbounded(2);
        let (ours, growth) = fit_gbm(&work, x.clone(), rows, cols, &y, &p, 42, None).unwrap();
        assert_eq!(growth.trees_grown, 25);
        assert!(!growth.stopped_at_size_limit);

        let x_cm = column_major(&x, rows, cols);
        let m = Matrix::new(&x_cm, rows, cols);
        let mut theirs = GradientBooster::default()
            .set_objective_type(ObjectiveType::LogLoss)
            .set_iterations(p.iterations)
            .set_learning_rate(p.learning_rate as f32)
            .set_max_depth(p.max_depth)
            .set_max_leaves(usize::MAX)
            .set_min_leaf_weight(p.min_leaf_weight as f32)
            .set_l2(p.l2 as f32)
            .set_seed(42)
            .set_parallel(false);
        theirs.fit(&m, &y, &vec![1.0; rows], None).unwrap();
        let a = ours.predict(&m, false);
        let b = theirs.predict(&m, false);
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
    }

    #[test]
    fn early_stopping_keeps_the_best_number_of_rounds() {
        let (rows, cols) = (2000, 5);
        let (x, y) = problem(rows, cols);
        let (tx, vx) = x.split_at(1500 * cols);
        let (ty, vy) = y.split_at(1500);
        let p = Gbm {
            iterations: 2000,
            early_stopping_rounds: 20,
            learning_rate: 0.3,
            max_depth: 6,
            ..Gbm::default()
        };
        let work = Work::unbounded(1);
        let validation = Validation {
            x: vx,
            rows: 500,
            y: vy,
        };
        let (booster, growth) =
            fit_gbm(&work, tx.to_vec(), 1500, cols, ty, &p, 1, Some(validation)).unwrap();
        let chosen = growth.rounds_chosen.unwrap();
        assert!(growth.trees_grown < 2000, "never stopped: {growth:?}");
        assert_eq!(growth.trees_grown, chosen + 20, "{growth:?}");
        assert_eq!(booster.trees.len(), chosen);
    }

    #[test]
    fn growing_stops_at_the_model_size_budget() {
        let (rows, cols) = (600, 5);
        let (x, y) = problem(rows, cols);
        let p = Gbm {
            iterations: 500,
            max_depth: 6,
            ..Gbm::default()
        };
        let mut work = Work::unbounded(1);
        work.model_limit = 60_000 + MODEL_OVERHEAD;
        let (booster, growth) = fit_gbm(&work, x.clone(), rows, cols, &y, &p, 42, None).unwrap();
        assert!(growth.stopped_at_size_limit);
        assert!(growth.trees_grown < 500 && growth.trees_grown > 0);
        assert!(growth.model_bytes <= 60_000);
        assert_eq!(booster.trees.len(), growth.trees_grown);

        let f = Forest {
            n_trees: 300,
            ..Forest::default()
        };
        let (trees, growth) = fit_forest(&work, x.clone(), rows, cols, &y, &f, 42).unwrap();
        assert!(growth.stopped_at_size_limit && trees.len() == growth.trees_grown);

        work.model_limit = 10;
        assert!(matches!(
            fit_gbm(&work, x.clone(), rows, cols, &y, &p, 42, None),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn a_cancel_stops_between_trees() {
        let (rows, cols) = (400, 5);
        let (x, y) = problem(rows, cols);
        let p = Gbm {
            iterations: 1000,
            ..Gbm::default()
        };
        let calls = std::rc::Rc::new(std::cell::Cell::new(0));
        let c = calls.clone();
        let work = Work::new(
            1,
            usize::MAX,
            usize::MAX,
            Box::new(move || {
                c.set(c.get() + 1);
                if c.get() > 10 {
                    Err(Error::Cancelled)
                } else {
                    Ok(())
                }
            }),
        )
        .unwrap();
        assert_eq!(
            fit_gbm(&work, x.clone(), rows, cols, &y, &p, 42, None).map(|_| ()),
            Err(Error::Cancelled)
        );
        assert_eq!(calls.get(), 11);
        calls.set(0);
        let f = Forest {
            n_trees: 1000,
            ..Forest::default()
        };
        assert_eq!(
            fit_forest(&work, x.clone(), rows, cols, &y, &f, 42).map(|_| ()),
            Err(Error::Cancelled)
        );
    }
}
