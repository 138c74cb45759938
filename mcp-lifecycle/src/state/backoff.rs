//! Restart backoff policies: how long a failed instance waits before its next
//! attempt, and how long it must stay ready for the count to reset.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long to wait before retrying a failed instance.
///
/// ```
/// use std::time::Duration;
/// use mcp_lifecycle::state::BackoffPolicy;
///
/// // Like the kubelet's crash-loop backoff: 10 s doubling to 5 min.
/// let kubelet = BackoffPolicy::default();
/// assert_eq!(kubelet.delay_for(1), Duration::from_secs(10));
/// assert_eq!(kubelet.delay_for(3), Duration::from_secs(40));
/// assert_eq!(kubelet.delay_for(9), Duration::from_secs(300));
///
/// // 30 s for five attempts, then every 5 min.
/// let stepped = BackoffPolicy::stepped(&[(Duration::from_secs(30), 5)], Duration::from_secs(300));
/// assert_eq!(stepped.delay_for(5), Duration::from_secs(30));
/// assert_eq!(stepped.delay_for(6), Duration::from_secs(300));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffPolicy {
    /// The delays.
    pub schedule: BackoffSchedule,
    /// A run that stays ready this long resets the attempt count. Default: 10 min.
    #[serde(with = "humantime_serde")]
    pub reset_after: Duration,
}

/// The sequence of delays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BackoffSchedule {
    /// `initial`, doubling each attempt, capped at `max`.
    Exponential {
        /// The first delay.
        #[serde(with = "humantime_serde")]
        initial: Duration,
        /// The cap.
        #[serde(with = "humantime_serde")]
        max: Duration,
    },
    /// Fixed steps, each used for a number of attempts, then `then` forever.
    Steps {
        /// The steps, in order.
        steps: Vec<BackoffStep>,
        /// The delay once the steps are used up.
        #[serde(with = "humantime_serde")]
        then: Duration,
    },
}

/// One step of a stepped schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffStep {
    /// The delay.
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// For how many attempts.
    pub attempts: u32,
}

impl Default for BackoffPolicy {
    /// The kubelet's crash-loop backoff: 10 s doubling to a 5 min cap, reset
    /// after 10 min ready.
    fn default() -> Self {
        BackoffPolicy {
            schedule: BackoffSchedule::Exponential {
                initial: Duration::from_secs(10),
                max: Duration::from_secs(300),
            },
            reset_after: Duration::from_secs(600),
        }
    }
}

impl BackoffPolicy {
    /// A stepped policy: each `(delay, attempts)` in turn, then `then` forever.
    /// Resets after 10 min ready.
    pub fn stepped(steps: &[(Duration, u32)], then: Duration) -> Self {
        BackoffPolicy {
            schedule: BackoffSchedule::Steps {
                steps: steps
                    .iter()
                    .map(|&(delay, attempts)| BackoffStep { delay, attempts })
                    .collect(),
                then,
            },
            reset_after: Duration::from_secs(600),
        }
    }

    /// The same policy with another reset period.
    pub fn with_reset_after(mut self, reset_after: Duration) -> Self {
        self.reset_after = reset_after;
        self
    }

    /// The delay before retrying after the `attempt`-th consecutive failure
    /// (1-based; 0 is treated as 1). Never decreases as `attempt` grows, for
    /// schedules whose steps do not decrease.
    pub fn delay_for(&self, attempt: u32) -> Duration {
        let attempt = attempt.max(1);
        match &self.schedule {
            BackoffSchedule::Exponential { initial, max } => {
                let shift = (attempt - 1).min(31);
                initial
                    .checked_mul(1u32 << shift)
                    .map_or(*max, |d| d.min(*max))
            }
            BackoffSchedule::Steps { steps, then } => {
                let mut remaining = attempt;
                for step in steps {
                    if remaining <= step.attempts {
                        return step.delay;
                    }
                    remaining -= step.attempts;
                }
                *then
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kubelet_doubles_to_cap() {
        let p = BackoffPolicy::default();
        let got: Vec<u64> = (1..=8).map(|a| p.delay_for(a).as_secs()).collect();
        assert_eq!(got, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(p.delay_for(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn stepped_30s_times_5_then_5m() {
        let p = BackoffPolicy::stepped(&[(Duration::from_secs(30), 5)], Duration::from_secs(300));
        let got: Vec<u64> = (1..=8).map(|a| p.delay_for(a).as_secs()).collect();
        assert_eq!(got, [30, 30, 30, 30, 30, 300, 300, 300]);
    }

    #[test]
    fn policy_loads_from_yaml() {
        let p: BackoffPolicy = crate::spec::from_yaml_str(
            "schedule:\n  steps:\n    steps: [{delay: 30s, attempts: 5}]\n    then: 5m\nreset_after: 10m\n",
        )
        .unwrap();
        assert_eq!(
            p,
            BackoffPolicy::stepped(&[(Duration::from_secs(30), 5)], Duration::from_secs(300))
        );
    }

    proptest! {
        #[test]
        fn exponential_never_decreases(initial in 1u64..100_000, max in 1u64..10_000_000, a in 1u32..200) {
            let p = BackoffPolicy {
                schedule: BackoffSchedule::Exponential {
                    initial: Duration::from_millis(initial),
                    max: Duration::from_millis(max.max(initial)),
                },
                reset_after: Duration::from_secs(600),
            };
            prop_assert!(p.delay_for(a) <= p.delay_for(a + 1));
            prop_assert!(p.delay_for(a) <= Duration::from_millis(max.max(initial)));
        }
    }
}
