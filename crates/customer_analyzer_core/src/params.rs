//! Training parameters: parsed from the `params jsonb` of `train()`, checked key by key
//! and range by range, with the documented defaults.

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
    pub fn parse(s: &str) -> Result<Algorithm, Error> {
        match s {
            "gbm" => Ok(Algorithm::Gbm),
            "random_forest" => Ok(Algorithm::RandomForest),
            "logistic" => Ok(Algorithm::Logistic),
            other => Err(Error::InvalidParameter {
                name: "algorithm",
                message: format!(
                    "unknown algorithm \"{other}\"; use gbm, random_forest or logistic"
                ),
            }),
        }
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
pub enum Validation {
    /// Train on earlier snapshots, test on the latest matured one (always done).
    Holdout,
    /// Also 5-fold cross-validation, folds by user.
    CrossValidation,
    /// Also an 80/20 split by user.
    Split,
}

/// Whether `train()` deploys what it trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeployPolicy {
    /// Deploy when nothing is deployed or the new model has the higher AUC on the new
    /// model's holdout (the deployed model is scored on the same rows).
    IfBetter,
    Always,
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
    pub algorithm: Algorithm,
    // gradient boosting
    pub iterations: usize,
    pub learning_rate: f64,
    pub max_depth: usize,
    pub min_leaf_weight: f64,
    pub subsample: f64,
    pub l2: f64,
    // random forest
    pub n_trees: usize,
    pub feature_fraction: Option<f64>,
    // logistic regression
    pub alpha: f64,
    pub max_iterations: u64,
    // every algorithm
    pub pca: Option<usize>,
    pub threshold: Option<f64>,
    pub search: bool,
    pub validation: Validation,
    pub seed: u64,
    /// Training snapshots (the latest is the holdout) and the days between them.
    pub snapshots: usize,
    pub snapshot_days: usize,
    pub deploy: DeployPolicy,
}

impl TrainParams {
    pub fn defaults(algorithm: Algorithm) -> TrainParams {
        TrainParams {
            algorithm,
            iterations: 200,
            learning_rate: 0.1,
            max_depth: if algorithm == Algorithm::RandomForest {
                8
            } else {
                5
            },
            min_leaf_weight: if algorithm == Algorithm::RandomForest {
                5.0
            } else {
                1.0
            },
            subsample: 1.0,
            l2: 1.0,
            n_trees: 50,
            feature_fraction: None,
            alpha: 1.0,
            max_iterations: 200,
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

    /// The keys `params` may hold for an algorithm.
    pub fn allowed_keys(algorithm: Algorithm) -> Vec<&'static str> {
        const COMMON: [&str; 8] = [
            "pca",
            "threshold",
            "search",
            "validation",
            "seed",
            "deploy",
            "snapshots",
            "snapshot_days",
        ];
        let own: &[&str] = match algorithm {
            Algorithm::Gbm => &[
                "iterations",
                "learning_rate",
                "max_depth",
                "min_leaf_weight",
                "subsample",
                "l2",
            ],
            Algorithm::RandomForest => &[
                "n_trees",
                "max_depth",
                "min_leaf_weight",
                "feature_fraction",
                "subsample",
            ],
            Algorithm::Logistic => &["alpha", "max_iterations"],
        };
        own.iter().chain(COMMON.iter()).copied().collect()
    }

    /// Parses `params` (a JSON object) for `algorithm`.
    pub fn from_json(algorithm: Algorithm, params: &Value) -> Result<TrainParams, Error> {
        let obj = match params {
            Value::Object(m) => m,
            Value::Null => &Map::new(),
            _ => return Err(bad("params", "params must be a JSON object".into())),
        };
        let allowed = Self::allowed_keys(algorithm);
        for key in obj.keys() {
            if !allowed.contains(&key.as_str()) {
                return Err(bad(
                    "params",
                    format!(
                        "unknown parameter \"{key}\" for {}; allowed: {}",
                        algorithm.as_str(),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        let mut p = TrainParams::defaults(algorithm);
        if let Some(v) = obj.get("iterations") {
            p.iterations = int(v, "iterations", 1, 5000)? as usize;
        }
        if let Some(v) = obj.get("learning_rate") {
            p.learning_rate = real(v, "learning_rate", 1e-4, 1.0)?;
        }
        if let Some(v) = obj.get("max_depth") {
            p.max_depth = int(v, "max_depth", 1, 20)? as usize;
        }
        if let Some(v) = obj.get("min_leaf_weight") {
            p.min_leaf_weight = real(v, "min_leaf_weight", 0.0, 1e6)?;
        }
        if let Some(v) = obj.get("subsample") {
            p.subsample = real(v, "subsample", 0.05, 1.0)?;
        }
        if let Some(v) = obj.get("l2") {
            p.l2 = real(v, "l2", 0.0, 1e6)?;
        }
        if let Some(v) = obj.get("n_trees") {
            p.n_trees = int(v, "n_trees", 1, 1000)? as usize;
        }
        if let Some(v) = obj.get("feature_fraction") {
            p.feature_fraction = Some(real(v, "feature_fraction", 0.01, 1.0)?);
        }
        if let Some(v) = obj.get("alpha") {
            p.alpha = real(v, "alpha", 0.0, 1e6)?;
        }
        if let Some(v) = obj.get("max_iterations") {
            p.max_iterations = int(v, "max_iterations", 1, 100_000)? as u64;
        }
        if let Some(v) = obj.get("pca") {
            p.pca = match v {
                Value::Null => None,
                v => Some(int(v, "pca", 1, 1000)? as usize),
            };
        }
        if let Some(v) = obj.get("threshold") {
            p.threshold = match v {
                Value::Null => None,
                v => Some(real(v, "threshold", 0.0, 1.0)?),
            };
        }
        if let Some(v) = obj.get("search") {
            p.search = v
                .as_bool()
                .ok_or_else(|| bad("search", "search must be true or false".into()))?;
        }
        if let Some(v) = obj.get("validation") {
            p.validation = match v.as_str() {
                Some("holdout") => Validation::Holdout,
                Some("cv") => Validation::CrossValidation,
                Some("split") => Validation::Split,
                _ => {
                    return Err(bad(
                        "validation",
                        "validation must be \"holdout\", \"cv\" or \"split\"".into(),
                    ))
                }
            };
        }
        if let Some(v) = obj.get("seed") {
            p.seed = int(v, "seed", 0, i64::MAX)? as u64;
        }
        if let Some(v) = obj.get("snapshots") {
            p.snapshots = int(v, "snapshots", 2, 52)? as usize;
        }
        if let Some(v) = obj.get("snapshot_days") {
            p.snapshot_days = int(v, "snapshot_days", 1, 60)? as usize;
        }
        if let Some(v) = obj.get("deploy") {
            p.deploy = match v.as_str() {
                Some("if_better") => DeployPolicy::IfBetter,
                Some("always") => DeployPolicy::Always,
                Some("never") => DeployPolicy::Never,
                _ => {
                    return Err(bad(
                        "deploy",
                        "deploy must be \"if_better\", \"always\" or \"never\"".into(),
                    ))
                }
            };
        }
        Ok(p)
    }

    /// The parameters as stored with the model.
    pub fn effective_json(&self) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        match self.algorithm {
            Algorithm::Gbm => {
                put("iterations", self.iterations.into());
                put("learning_rate", self.learning_rate.into());
                put("max_depth", self.max_depth.into());
                put("min_leaf_weight", self.min_leaf_weight.into());
                put("subsample", self.subsample.into());
                put("l2", self.l2.into());
            }
            Algorithm::RandomForest => {
                put("n_trees", self.n_trees.into());
                put("max_depth", self.max_depth.into());
                put("min_leaf_weight", self.min_leaf_weight.into());
                put("subsample", self.subsample.into());
                put("feature_fraction", self.feature_fraction.into());
            }
            Algorithm::Logistic => {
                put("alpha", self.alpha.into());
                put("max_iterations", self.max_iterations.into());
            }
        }
        put("pca", self.pca.into());
        put("threshold", self.threshold.into());
        put("seed", self.seed.into());
        put("snapshots", self.snapshots.into());
        put("snapshot_days", self.snapshot_days.into());
        Value::Object(m)
    }
}

fn bad(name: &'static str, message: String) -> Error {
    Error::InvalidParameter { name, message }
}

fn int(v: &Value, name: &'static str, lo: i64, hi: i64) -> Result<i64, Error> {
    let n = v
        .as_i64()
        .ok_or_else(|| bad(name, format!("{name} must be a whole number, got {v}")))?;
    if n < lo || n > hi {
        return Err(bad(
            name,
            format!("{name} must be between {lo} and {hi}, got {n}"),
        ));
    }
    Ok(n)
}

fn real(v: &Value, name: &'static str, lo: f64, hi: f64) -> Result<f64, Error> {
    let x = v
        .as_f64()
        .ok_or_else(|| bad(name, format!("{name} must be a number, got {v}")))?;
    if !(lo..=hi).contains(&x) {
        return Err(bad(
            name,
            format!("{name} must be between {lo} and {hi}, got {x}"),
        ));
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_overrides() {
        let p = TrainParams::from_json(
            Algorithm::Gbm,
            &json!({"iterations": 50, "learning_rate": 0.2}),
        )
        .unwrap();
        assert_eq!((p.iterations, p.learning_rate, p.max_depth), (50, 0.2, 5));
        let p = TrainParams::from_json(Algorithm::Logistic, &json!({})).unwrap();
        assert_eq!(p.alpha, 1.0);
    }

    #[test]
    fn wrong_keys_types_and_ranges_are_refused() {
        for (algo, params) in [
            (Algorithm::Gbm, json!({"n_trees": 5})),
            (Algorithm::Gbm, json!({"iterations": "many"})),
            (Algorithm::Gbm, json!({"iterations": 0})),
            (Algorithm::Gbm, json!({"learning_rate": 5})),
            (Algorithm::RandomForest, json!({"feature_fraction": 0})),
            (Algorithm::Logistic, json!({"alpha": -1})),
            (Algorithm::Logistic, json!({"validation": "sometimes"})),
            (Algorithm::Logistic, json!({"search": 1})),
            (Algorithm::Logistic, json!([1, 2])),
        ] {
            assert!(TrainParams::from_json(algo, &params).is_err(), "{params}");
        }
        assert!(Algorithm::parse("xgboost").is_err());
    }
}
