//! Training parameters: the `params jsonb` of `train()`, read into one typed struct per
//! algorithm plus the settings every algorithm shares, each with its documented defaults
//! and ranges (`validate`). An unknown key, a wrong type or a value out of range is
//! refused (SQLSTATE 22023).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    Gbm,
    RandomForest,
    Logistic,
}

impl Algorithm {
    pub const ALL: [Algorithm; 3] = [Algorithm::Gbm, Algorithm::RandomForest, Algorithm::Logistic];

    pub fn parse(s: &str) -> Result<Algorithm, Error> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                bad(
                    "algorithm",
                    format!("unknown algorithm \"{s}\"; use gbm, random_forest or logistic"),
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Gbm => "gbm",
            Algorithm::RandomForest => "random_forest",
            Algorithm::Logistic => "logistic",
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
    /// The decision threshold; by default the one that maximises F1 on the holdout.
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
    pub iterations: usize,
    pub learning_rate: f64,
    pub max_depth: usize,
    pub min_leaf_weight: f64,
    pub subsample: f64,
    pub l2: f64,
}

impl Default for Gbm {
    fn default() -> Self {
        Gbm {
            iterations: 200,
            learning_rate: 0.1,
            max_depth: 5,
            min_leaf_weight: 1.0,
            subsample: 1.0,
            l2: 1.0,
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
}

/// Everything `train()` was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainParams {
    pub common: Common,
    pub estimator: Estimator,
}

impl TrainParams {
    pub fn defaults(algorithm: Algorithm) -> TrainParams {
        TrainParams {
            common: Common::default(),
            estimator: match algorithm {
                Algorithm::Gbm => Estimator::Gbm(Gbm::default()),
                Algorithm::RandomForest => Estimator::RandomForest(Forest::default()),
                Algorithm::Logistic => Estimator::Logistic(Logistic::default()),
            },
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.estimator {
            Estimator::Gbm(_) => Algorithm::Gbm,
            Estimator::RandomForest(_) => Algorithm::RandomForest,
            Estimator::Logistic(_) => Algorithm::Logistic,
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
            },
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
            Estimator::Gbm(g) => {
                range("iterations", g.iterations as f64, 1.0, 5000.0)?;
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
    }
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
        assert_eq!((g.iterations, g.learning_rate, g.max_depth), (50, 0.2, 5));
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
        // stored parameters read back to the same thing
        let again = TrainParams::from_json(p.algorithm(), &p.effective_json()).unwrap();
        assert_eq!(again, p);
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
