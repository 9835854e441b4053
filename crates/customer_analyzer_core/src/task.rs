//! What a classifier predicts: one home for each task's name, label horizon and
//! population, which training, labels, serving and the SQL surface all read.

use crate::Error;

/// The text `models.task` and `deployments.task` hold for segmentations.
pub const SEGMENTATION: &str = "segmentation";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    /// No event at all in the `horizon_days()` after the snapshot.
    Churn,
    /// A purchase in the `horizon_days()` after the snapshot.
    Purchase,
}

/// Who gets a label at a snapshot time T.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Population {
    /// Users with an event in the 30 days before T (one cannot churn without activity).
    ActiveInLast30Days,
    /// Every user registered before T.
    Registered,
}

impl Task {
    pub const ALL: [Task; 2] = [Task::Churn, Task::Purchase];

    pub fn parse(name: &str) -> Result<Task, Error> {
        Task::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| Error::InvalidParameter {
                name: "task",
                message: format!(
                    "unknown task \"{name}\"; use {}",
                    Task::ALL
                        .iter()
                        .map(|t| format!("'{}' ({})", t.name(), t.meaning()))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            })
    }

    /// The name stored in the models and deployments tables.
    pub fn name(self) -> &'static str {
        match self {
            Task::Churn => "churn",
            Task::Purchase => "purchase",
        }
    }

    /// Days after a snapshot that the label looks at.
    pub fn horizon_days(self) -> i64 {
        match self {
            Task::Churn => 60,
            Task::Purchase => 30,
        }
    }

    pub fn population(self) -> Population {
        match self {
            Task::Churn => Population::ActiveInLast30Days,
            Task::Purchase => Population::Registered,
        }
    }

    /// What a positive label means, in words.
    pub fn meaning(self) -> &'static str {
        match self {
            Task::Churn => "no event in the next 60 days",
            Task::Purchase => "a purchase in the next 30 days",
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_tasks_are_refused() {
        for t in Task::ALL {
            assert_eq!(Task::parse(t.name()), Ok(t));
            assert!(t.meaning().contains(&t.horizon_days().to_string()));
        }
        assert!(matches!(
            Task::parse("revenue"),
            Err(Error::InvalidParameter { name: "task", .. })
        ));
        assert!(Task::parse(SEGMENTATION).is_err());
    }
}
