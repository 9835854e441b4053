//! Training parameters: the `params jsonb` of `train()`, read into one typed struct per
//! algorithm plus the settings every algorithm shares, each with its documented defaults
//! and ranges (`validate`). An unknown key, a wrong type or a value out of range is
//! refused (SQLSTATE 22023).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Error;

/// Serialised by name in snake case (as `as_str`) in JSON; bincode stores the variant
/// index, so new variants go last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    Gbm,
    RandomForest,
    Logistic,
    /// Fit each of the three and keep the best on the validation snapshot.
    Auto,
}

impl Algorithm {
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Auto,
        Algorithm::Gbm,
        Algorithm::RandomForest,
        Algorithm::Logistic,
    ];

    pub fn parse(s: &str) -> Result<Algorithm, Error> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                bad(
                    "algorithm",
                    format!("unknown algorithm \"{s}\"; use auto, gbm, random_forest or logistic"),
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Gbm => "gbm",
            Algorithm::RandomForest => "random_forest",
            Algorithm::Logistic => "logistic",
            Algorithm::Auto => "auto",
        }
    }
}

/// How the stored metrics are measured besides the time-based holdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// Train on earlier snapshots, test on the latest matured one (always done).
    Holdout,
    /// Also 5-fold cross-validation, folds by user.
    #[serde(rename = "cv")]
    CrossValidation,
    /// Also an 80/20 split by user.
    Split,
}

/// Whether `train()` deploys what it trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployPolicy {
    /// Deploy when nothing is deployed or the new model has the higher AUC on the new
    /// model's holdout (the deployed model is scored on the same rows).
    IfBetter,
    Always,
    Never,
}

/// Settings every algorithm takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Common {
    /// Project onto this many principal components first.
    pub pca: Option<usize>,
    /// The decision threshold; by default the one that maximises F1 on the validation snapshot.
    pub threshold: Option<f64>,
    /// Pick the best candidate of the documented search space first.
    pub search: bool,
    pub validation: Validation,
    pub seed: u64,
    /// Snapshots stacked (the newest is the holdout) and the days between them.
    pub snapshots: usize,
    pub snapshot_days: usize,
    pub deploy: DeployPolicy,
}

impl Default for Common {
    fn default() -> Self {
        Common {
            pca: None,
            threshold: None,
            search: false,
            validation: Validation::Holdout,
            seed: 42,
            snapshots: 8,
            snapshot_days: 7,
            deploy: DeployPolicy::IfBetter,
        }
    }
}

/// Gradient boosting (forust-ml trees, log loss).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gbm {
    /// Rounds at most; early stopping on the validation snapshot usually ends sooner.
    pub iterations: usize,
    /// Stop after this many rounds without a better validation log loss (0: never).
    pub early_stopping_rounds: usize,
    pub learning_rate: f64,
    pub max_depth: usize,
    pub min_leaf_weight: f64,
    pub subsample: f64,
    pub l2: f64,
}

impl Default for Gbm {
    fn default() -> Self {
        Gbm {
            iterations: 1000,
            early_stopping_rounds: 50,
            learning_rate: 0.05,
            max_depth: 4,
            min_leaf_weight: 1.0,
            subsample: 0.8,
            l2: 1.0,
        }
    }
}

impl Gbm {
    /// The defaults for `rows` training rows with `positives` positive labels, before the
    /// caller's own settings: shallower trees and heavier leaves for less data, so that a
    /// small, sparse shop is not overfitted (documented in the README).
    pub fn scaled(rows: usize, positives: usize) -> Gbm {
        let minority = positives.min(rows.saturating_sub(positives));
        Gbm {
            max_depth: match minority {
                0..=999 => 3,
                1000..=19_999 => 4,
                _ => 5,
            },
            // a leaf must hold about a 400th of the minority class (hessians are at most 1/4)
            min_leaf_weight: (minority as f64 / 1600.0).max(1.0),
            // leaf values shrink harder when there are few positives to estimate them from
            l2: match minority {
                0..=999 => 5.0,
                1000..=19_999 => 2.0,
                _ => 1.0,
            },
            ..Gbm::default()
        }
    }
}

/// The random forest (bagged regression trees on the 0/1 labels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Forest {
    pub n_trees: usize,
    pub max_depth: usize,
    pub min_leaf_weight: f64,
    /// Share of the features each tree sees; sqrt(p) / p when None.
    pub feature_fraction: Option<f64>,
    /// Mean of the Poisson bootstrap weights.
    pub subsample: f64,
}

impl Default for Forest {
    fn default() -> Self {
        Forest {
            n_trees: 50,
            max_depth: 8,
            min_leaf_weight: 5.0,
            feature_fraction: None,
            subsample: 1.0,
        }
    }
}

impl Forest {
    /// The defaults for `rows` training rows: leaves of at least a thousandth of the rows
    /// (5 at least), and depth 8, or 10 from 50,000 rows.
    pub fn scaled(rows: usize) -> Forest {
        Forest {
            max_depth: if rows >= 50_000 { 10 } else { 8 },
            min_leaf_weight: (rows as f64 / 1000.0).max(5.0),
            ..Forest::default()
        }
    }
}

/// L2-penalised logistic regression (linfa-logistic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Logistic {
    pub alpha: f64,
    pub max_iterations: u64,
}

impl Default for Logistic {
    fn default() -> Self {
        Logistic {
            alpha: 1.0,
            max_iterations: 200,
        }
    }
}

/// The estimator's own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Estimator {
    Gbm(Gbm),
    RandomForest(Forest),
    Logistic(Logistic),
    /// The automatic choice among the three, each with its scaled defaults.
    Auto,
}

/// Everything `train()` was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainParams {
    pub common: Common,
    pub estimator: Estimator,
    /// The keys the caller set: scaled defaults never replace these.
    pub explicit: Vec<String>,
}

impl TrainParams {
    pub fn defaults(algorithm: Algorithm) -> TrainParams {
        TrainParams {
            common: Common::default(),
            estimator: match algorithm {
                Algorithm::Gbm => Estimator::Gbm(Gbm::default()),
                Algorithm::RandomForest => Estimator::RandomForest(Forest::default()),
                Algorithm::Logistic => Estimator::Logistic(Logistic::default()),
                Algorithm::Auto => Estimator::Auto,
            },
            explicit: Vec::new(),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.estimator {
            Estimator::Gbm(_) => Algorithm::Gbm,
            Estimator::RandomForest(_) => Algorithm::RandomForest,
            Estimator::Logistic(_) => Algorithm::Logistic,
            Estimator::Auto => Algorithm::Auto,
        }
    }

    /// What to fit for `rows` training rows with `positives` positive labels: the three
    /// algorithms for auto, else this one; each with the defaults scaled to the data
    /// wherever the caller set nothing.
    pub fn candidates(&self, rows: usize, positives: usize) -> Vec<TrainParams> {
        let with = |estimator: Estimator| TrainParams {
            common: self.common.clone(),
            estimator,
            explicit: self.explicit.clone(),
        };
        match &self.estimator {
            Estimator::Auto => vec![
                with(Estimator::Gbm(Gbm::scaled(rows, positives))),
                with(Estimator::RandomForest(Forest::scaled(rows))),
                with(Estimator::Logistic(Logistic::default())),
            ],
            Estimator::Gbm(g) => vec![with(Estimator::Gbm(overlay(
                Gbm::scaled(rows, positives),
                g,
                &self.explicit,
            )))],
            Estimator::RandomForest(f) => vec![with(Estimator::RandomForest(overlay(
                Forest::scaled(rows),
                f,
                &self.explicit,
            )))],
            Estimator::Logistic(_) => vec![self.clone()],
        }
    }

    /// Reads `params` (a JSON object or NULL) for `algorithm`: each key goes to the
    /// shared settings or the algorithm's own, and the result is checked.
    pub fn from_json(algorithm: Algorithm, params: &Value) -> Result<TrainParams, Error> {
        let empty = Map::new();
        let obj = match params {
            Value::Object(m) => m,
            Value::Null => &empty,
            _ => return Err(bad("params", "params must be a JSON object".into())),
        };
        let common_keys = keys_of(&Common::default());
        let own_keys = keys_of_estimator(algorithm);
        let (mut common, mut own) = (Map::new(), Map::new());
        for (k, v) in obj {
            if common_keys.contains(k) {
                common.insert(k.clone(), v.clone());
            } else if own_keys.contains(k) {
                own.insert(k.clone(), v.clone());
            } else {
                let allowed: Vec<&str> = own_keys
                    .iter()
                    .chain(&common_keys)
                    .map(String::as_str)
                    .collect();
                return Err(bad(
                    "params",
                    format!(
                        "unknown parameter \"{k}\" for {}; allowed: {}",
                        algorithm.as_str(),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        let p = TrainParams {
            common: read(common)?,
            estimator: match algorithm {
                Algorithm::Gbm => Estimator::Gbm(read(own)?),
                Algorithm::RandomForest => Estimator::RandomForest(read(own)?),
                Algorithm::Logistic => Estimator::Logistic(read(own)?),
                Algorithm::Auto => Estimator::Auto,
            },
            explicit: obj.keys().cloned().collect(),
        };
        p.validate()?;
        Ok(p)
    }

    /// Checks every value against its documented range.
    pub fn validate(&self) -> Result<(), Error> {
        let c = &self.common;
        if let Some(k) = c.pca {
            range("pca", k as f64, 1.0, 1000.0)?;
        }
        if let Some(t) = c.threshold {
            range("threshold", t, 0.0, 1.0)?;
        }
        range("snapshots", c.snapshots as f64, 2.0, 52.0)?;
        range("snapshot_days", c.snapshot_days as f64, 1.0, 60.0)?;
        range("seed", c.seed as f64, 0.0, i64::MAX as f64)?;
        match &self.estimator {
            Estimator::Auto => Ok(()),
            Estimator::Gbm(g) => {
                range("iterations", g.iterations as f64, 1.0, 5000.0)?;
                range(
                    "early_stopping_rounds",
                    g.early_stopping_rounds as f64,
                    0.0,
                    5000.0,
                )?;
                range("learning_rate", g.learning_rate, 1e-4, 1.0)?;
                range("max_depth", g.max_depth as f64, 1.0, 20.0)?;
                range("min_leaf_weight", g.min_leaf_weight, 0.0, 1e6)?;
                range("subsample", g.subsample, 0.05, 1.0)?;
                range("l2", g.l2, 0.0, 1e6)
            }
            Estimator::RandomForest(f) => {
                range("n_trees", f.n_trees as f64, 1.0, 1000.0)?;
                range("max_depth", f.max_depth as f64, 1.0, 20.0)?;
                range("min_leaf_weight", f.min_leaf_weight, 0.0, 1e6)?;
                if let Some(ff) = f.feature_fraction {
                    range("feature_fraction", ff, 0.01, 1.0)?;
                }
                range("subsample", f.subsample, 0.05, 1.0)
            }
            Estimator::Logistic(l) => {
                range("alpha", l.alpha, 0.0, 1e6)?;
                range("max_iterations", l.max_iterations as f64, 1.0, 100_000.0)
            }
        }
    }

    /// The parameters as stored with the model: the shared settings and the algorithm's
    /// own, in one object.
    pub fn effective_json(&self) -> Value {
        let mut m = match serde_json::to_value(&self.common) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        if let Value::Object(own) = self.estimator_json() {
            m.extend(own);
        }
        Value::Object(m)
    }

    /// The algorithm's own settings as JSON (a search candidate as logged).
    pub fn estimator_json(&self) -> Value {
        match &self.estimator {
            Estimator::Gbm(g) => serde_json::to_value(g),
            Estimator::RandomForest(f) => serde_json::to_value(f),
            Estimator::Logistic(l) => serde_json::to_value(l),
            Estimator::Auto => Ok(Value::Object(Map::new())),
        }
        .unwrap_or(Value::Null)
    }
}

/// The keys a settings struct reads: its fields, as serde names them.
fn keys_of<T: Serialize>(defaults: &T) -> Vec<String> {
    match serde_json::to_value(defaults) {
        Ok(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn keys_of_estimator(algorithm: Algorithm) -> Vec<String> {
    match algorithm {
        Algorithm::Gbm => keys_of(&Gbm::default()),
        Algorithm::RandomForest => keys_of(&Forest::default()),
        Algorithm::Logistic => keys_of(&Logistic::default()),
        Algorithm::Auto => Vec::new(),
    }
}

/// `scaled` with every key the caller set taken from `asked`.
fn overlay<T: Serialize + for<'de> Deserialize<'de> + Clone>(
    scaled: T,
    asked: &T,
    explicit: &[String],
) -> T {
    let (Ok(Value::Object(mut base)), Ok(Value::Object(own))) =
        (serde_json::to_value(&scaled), serde_json::to_value(asked))
    else {
        return asked.clone();
    };
    for k in explicit {
        if let Some(v) = own.get(k) {
            base.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(Value::Object(base)).unwrap_or_else(|_| asked.clone())
}

/// One settings struct from its keys; a wrong type names the key.
fn read<T: for<'de> Deserialize<'de>>(m: Map<String, Value>) -> Result<T, Error> {
    serde_json::from_value(Value::Object(m)).map_err(|e| bad("params", format!("params: {e}")))
}

fn bad(name: &'static str, message: String) -> Error {
    Error::InvalidParameter { name, message }
}

fn range(name: &'static str, v: f64, lo: f64, hi: f64) -> Result<(), Error> {
    if !(lo..=hi).contains(&v) {
        return Err(bad(
            name,
            format!("{name} must be between {lo} and {hi}, got {v}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_overrides() {
        let p = TrainParams::from_json(
            Algorithm::Gbm,
            &json!({"iterations": 50, "learning_rate": 0.2, "seed": 7}),
        )
        .unwrap();
        let Estimator::Gbm(g) = &p.estimator else {
            panic!("{p:?}")
        };
        assert_eq!((g.iterations, g.learning_rate, g.max_depth), (50, 0.2, 4));
        assert_eq!(p.common.seed, 7);
        let p = TrainParams::from_json(Algorithm::Logistic, &json!({})).unwrap();
        assert_eq!(p.estimator, Estimator::Logistic(Logistic::default()));
        let p = TrainParams::from_json(
            Algorithm::RandomForest,
            &json!({"validation": "cv", "deploy": "never"}),
        )
        .unwrap();
        assert_eq!(p.common.validation, Validation::CrossValidation);
        assert_eq!(p.common.deploy, DeployPolicy::Never);
        // stored parameters read back to the same settings
        let again = TrainParams::from_json(p.algorithm(), &p.effective_json()).unwrap();
        assert_eq!((again.common, again.estimator), (p.common, p.estimator));
    }

    #[test]
    fn defaults_scale_with_the_data_but_never_override_the_caller() {
        let p = TrainParams::from_json(Algorithm::Gbm, &json!({"max_depth": 7})).unwrap();
        let Estimator::Gbm(g) = &p.candidates(100_000, 30_000)[0].estimator else {
            panic!()
        };
        assert_eq!(g.max_depth, 7, "the caller's depth stays");
        assert!(
            g.min_leaf_weight > 10.0,
            "scaled to 30,000 positives: {g:?}"
        );
        let Estimator::Gbm(small) =
            &TrainParams::defaults(Algorithm::Gbm).candidates(2000, 300)[0].estimator
        else {
            panic!()
        };
        assert_eq!(
            (small.max_depth, small.min_leaf_weight, small.l2),
            (3, 1.0, 5.0)
        );
        let auto = TrainParams::from_json(Algorithm::Auto, &json!({"seed": 3})).unwrap();
        let algos: Vec<Algorithm> = auto
            .candidates(1000, 100)
            .iter()
            .map(|c| c.algorithm())
            .collect();
        assert_eq!(
            algos,
            vec![Algorithm::Gbm, Algorithm::RandomForest, Algorithm::Logistic]
        );
        assert!(TrainParams::from_json(Algorithm::Auto, &json!({"iterations": 5})).is_err());
    }

    #[test]
    fn wrong_keys_types_and_ranges_are_refused() {
        for (algo, params) in [
            (Algorithm::Gbm, json!({"n_trees": 5})),
            (Algorithm::Gbm, json!({"iterations": "many"})),
            (Algorithm::Gbm, json!({"iterations": 0})),
            (Algorithm::Gbm, json!({"iterations": -3})),
            (Algorithm::Gbm, json!({"learning_rate": 5})),
            (Algorithm::RandomForest, json!({"feature_fraction": 0})),
            (Algorithm::Logistic, json!({"alpha": -1})),
            (Algorithm::Logistic, json!({"validation": "sometimes"})),
            (Algorithm::Logistic, json!({"search": 1})),
            (Algorithm::Logistic, json!([1, 2])),
            (Algorithm::Logistic, json!({"snapshots": 1})),
        ] {
            assert!(
                matches!(
                    TrainParams::from_json(algo, &params),
                    Err(Error::InvalidParameter { .. })
                ),
                "{params}"
            );
        }
        assert!(Algorithm::parse("xgboost").is_err());
        let msg = TrainParams::from_json(Algorithm::Gbm, &json!({"trees": 5}))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains("iterations") && msg.contains("snapshots"),
            "{msg}"
        );
    }
}
