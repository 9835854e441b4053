//! When the retraining worker retrains a task on its own: the serving model is older
//! than the schedule allows, its score distribution has shifted a major amount, or its
//! live AUC has fallen well below its holdout AUC (on enough matured predictions to say
//! so). The first that holds is the reason recorded in `retrain_log`.

use crate::drift::Level;

/// Matured predictions (with both outcomes present) below which live AUC is not trusted
/// to call for a retrain.
pub const MIN_LIVE_PREDICTIONS: i64 = 200;

/// What the worker knows about a task's serving model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Watch {
    /// Seconds since the model was deployed (a rollback counts) or a retrain was last
    /// tried.
    pub age_seconds: f64,
    /// Whether a retrain was tried since the model was deployed: it kept the model, so
    /// drift or a fall in live AUC alone does not call for another (the schedule does).
    pub retried_since_deploy: bool,
    /// `customer_analyzer.retrain_interval` in seconds; None: no schedule.
    pub interval_seconds: Option<f64>,
    /// The score distribution's drift level, when a baseline and features exist.
    pub score_drift: Option<Level>,
    pub holdout_auc: Option<f64>,
    pub live_auc: Option<f64>,
    pub live_predictions: i64,
    /// `customer_analyzer.retrain_auc_drop`.
    pub auc_drop: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    Drift,
    LiveAuc,
}

impl Trigger {
    /// As `retrain_log.trigger` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Drift => "drift",
            Trigger::LiveAuc => "live_auc",
        }
    }
}

/// The schedule's call: the model is older than `retrain_interval`.
fn schedule_due(w: &Watch) -> Option<(Trigger, String)> {
    let interval = w.interval_seconds.filter(|&i| i > 0.0)?;
    (w.age_seconds >= interval).then(|| {
        (
            Trigger::Schedule,
            format!(
                "the model is {} old; customer_analyzer.retrain_interval is {}",
                duration(w.age_seconds),
                duration(interval)
            ),
        )
    })
}

/// Whether drift and live AUC may call for a retrain: the model has settled (a tenth
/// of the schedule, at most a day) and no retrain was tried since it was deployed.
fn settled(w: &Watch) -> bool {
    let settle = w
        .interval_seconds
        .filter(|&i| i > 0.0)
        .map_or(86_400.0, |i| (i / 10.0).min(86_400.0));
    w.age_seconds >= settle && !w.retried_since_deploy
}

/// Whether the score drift can change [`decide`]'s answer, so that the worker computes
/// it (a full read of the feature store) only then.
pub fn drift_matters(w: &Watch) -> bool {
    schedule_due(w).is_none() && settled(w)
}

/// Whether to retrain, and why (the trigger and a sentence for the log). Drift and
/// falling AUC wait for a minimum age (a tenth of the schedule, at most a day) and call
/// for one retrain per deployed model: when that retrain keeps the model, the newest
/// data gave nothing better, and only the schedule tries again.
pub fn decide(w: &Watch) -> Option<(Trigger, String)> {
    if let Some(due) = schedule_due(w) {
        return Some(due);
    }
    if !settled(w) {
        return None;
    }
    if w.score_drift == Some(Level::Major) {
        return Some((
            Trigger::Drift,
            "the score distribution drifted a major amount (see the drift view)".into(),
        ));
    }
    if let (Some(live), Some(holdout)) = (w.live_auc, w.holdout_auc) {
        if w.live_predictions >= MIN_LIVE_PREDICTIONS && live < holdout - w.auc_drop {
            return Some((
                Trigger::LiveAuc,
                format!(
                    "live AUC {live:.3} on {} matured predictions is more than {:.3} below the holdout AUC {holdout:.3}",
                    w.live_predictions, w.auc_drop
                ),
            ));
        }
    }
    None
}

/// Seconds as a person would say them.
fn duration(seconds: f64) -> String {
    match seconds {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} days", s / 86_400.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calm() -> Watch {
        Watch {
            age_seconds: 3.0 * 86_400.0,
            retried_since_deploy: false,
            interval_seconds: Some(7.0 * 86_400.0),
            score_drift: Some(Level::Stable),
            holdout_auc: Some(0.80),
            live_auc: Some(0.79),
            live_predictions: 5000,
            auc_drop: 0.05,
        }
    }

    #[test]
    fn a_healthy_young_model_is_left_alone() {
        assert_eq!(decide(&calm()), None);
        // moderate drift is not enough
        let w = Watch {
            score_drift: Some(Level::Moderate),
            ..calm()
        };
        assert_eq!(decide(&w), None);
    }

    #[test]
    fn each_trigger_fires_on_its_own() {
        let old = Watch {
            age_seconds: 8.0 * 86_400.0,
            ..calm()
        };
        let (t, why) = decide(&old).unwrap();
        assert_eq!(t, Trigger::Schedule);
        assert_eq!(
            why,
            "the model is 8.0 days old; customer_analyzer.retrain_interval is 7.0 days"
        );
        assert_eq!(duration(1.0), "1 s");
        assert_eq!(duration(600.0), "10 min");
        let drifted = Watch {
            score_drift: Some(Level::Major),
            ..calm()
        };
        assert_eq!(decide(&drifted).unwrap().0, Trigger::Drift);
        let worse = Watch {
            live_auc: Some(0.70),
            ..calm()
        };
        let (t, why) = decide(&worse).unwrap();
        assert_eq!(t, Trigger::LiveAuc);
        assert!(why.contains("0.700") && why.contains("5000"), "{why}");
    }

    #[test]
    fn live_auc_needs_enough_predictions_and_drift_needs_a_settled_model() {
        let few = Watch {
            live_auc: Some(0.60),
            live_predictions: MIN_LIVE_PREDICTIONS - 1,
            ..calm()
        };
        assert_eq!(decide(&few), None);
        // a retrain since the deploy kept the model: drift and live AUC wait for the
        // schedule
        let kept = Watch {
            retried_since_deploy: true,
            score_drift: Some(Level::Major),
            live_auc: Some(0.5),
            ..calm()
        };
        assert_eq!(decide(&kept), None);
        let kept_and_old = Watch {
            age_seconds: 8.0 * 86_400.0,
            ..kept
        };
        assert_eq!(decide(&kept_and_old).unwrap().0, Trigger::Schedule);
        // a model retrained an hour ago is not retrained again for drift
        let fresh = Watch {
            age_seconds: 3600.0,
            score_drift: Some(Level::Major),
            ..calm()
        };
        assert_eq!(decide(&fresh), None);
        // no schedule: drift waits a day, the schedule never fires
        let unscheduled = Watch {
            interval_seconds: None,
            age_seconds: 1000.0 * 86_400.0,
            ..calm()
        };
        assert_eq!(decide(&unscheduled), None);
        let unscheduled_drift = Watch {
            score_drift: Some(Level::Major),
            ..unscheduled
        };
        assert_eq!(decide(&unscheduled_drift).unwrap().0, Trigger::Drift);
        // a short schedule (tests) settles for a tenth of it
        let short = Watch {
            interval_seconds: Some(60.0),
            age_seconds: 6.0,
            score_drift: Some(Level::Major),
            ..calm()
        };
        assert_eq!(decide(&short).unwrap().0, Trigger::Drift);
    }

    #[test]
    fn drift_is_computed_only_when_it_can_decide() {
        assert!(drift_matters(&calm()));
        let old = Watch {
            age_seconds: 8.0 * 86_400.0,
            ..calm()
        };
        assert!(!drift_matters(&old), "the schedule decides");
        let fresh = Watch {
            age_seconds: 3600.0,
            ..calm()
        };
        assert!(!drift_matters(&fresh), "not settled");
        let kept = Watch {
            retried_since_deploy: true,
            ..calm()
        };
        assert!(!drift_matters(&kept), "tried since the deploy");
        // whenever drift does not matter, a major drift changes nothing
        for w in [old, fresh, kept] {
            let major = Watch {
                score_drift: Some(Level::Major),
                ..w
            };
            assert_eq!(decide(&major), decide(&w));
        }
    }
}
