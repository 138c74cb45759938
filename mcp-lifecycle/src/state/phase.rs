//! The phase of a whole server, derived from its desired replica count and
//! its instances' phases. Derived, never stored, so it cannot disagree with
//! the instances.

use serde::{Deserialize, Serialize};

use super::instance::InstancePhase;

/// A server's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ServerPhase {
    /// Desired 0 and nothing left running.
    Stopped,
    /// Nothing ready yet, nothing failed.
    Starting,
    /// Exactly the desired number of instances, all ready.
    Running,
    /// Some instances unhealthy or failed, not all.
    Degraded,
    /// Converging: the number of live or ready instances differs from desired.
    Scaling,
    /// Every live instance has failed.
    Failed,
}

impl ServerPhase {
    /// A short name for tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            ServerPhase::Stopped => "stopped",
            ServerPhase::Starting => "starting",
            ServerPhase::Running => "running",
            ServerPhase::Degraded => "degraded",
            ServerPhase::Scaling => "scaling",
            ServerPhase::Failed => "failed",
        }
    }
}

/// Derives the phase from `desired` and the phases of the server's instances.
pub fn derive_phase<'a>(
    desired: u32,
    instances: impl IntoIterator<Item = &'a InstancePhase>,
) -> ServerPhase {
    let (mut live, mut ready, mut failed, mut unhealthy) = (0u32, 0u32, 0u32, 0u32);
    for phase in instances {
        if !phase.is_live() {
            // Stopping instances still exist.
            if matches!(phase, InstancePhase::Stopping { .. }) && desired == 0 {
                return ServerPhase::Scaling;
            }
            continue;
        }
        live += 1;
        match phase {
            InstancePhase::Ready { .. } => ready += 1,
            InstancePhase::Failed { .. } => failed += 1,
            InstancePhase::Unhealthy { .. } => unhealthy += 1,
            _ => {}
        }
    }
    if desired == 0 {
        return if live == 0 {
            ServerPhase::Stopped
        } else {
            ServerPhase::Scaling
        };
    }
    if live > 0 && failed == live {
        ServerPhase::Failed
    } else if ready == desired && live == desired {
        ServerPhase::Running
    } else if failed + unhealthy > 0 {
        ServerPhase::Degraded
    } else if ready == 0 {
        ServerPhase::Starting
    } else {
        ServerPhase::Scaling
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;
    use proptest::prelude::*;

    fn ready() -> InstancePhase {
        InstancePhase::Ready {
            since: Timestamp::EPOCH,
        }
    }
    fn failed() -> InstancePhase {
        InstancePhase::Failed {
            next_retry_at: Timestamp::EPOCH,
            reason: "x".into(),
        }
    }
    fn starting() -> InstancePhase {
        InstancePhase::Starting {
            since: Timestamp::EPOCH,
        }
    }

    #[test]
    fn table() {
        let cases: Vec<(u32, Vec<InstancePhase>, ServerPhase)> = vec![
            (0, vec![], ServerPhase::Stopped),
            (0, vec![InstancePhase::Stopped], ServerPhase::Stopped),
            (
                0,
                vec![InstancePhase::Stopping {
                    mode: crate::StopMode::Graceful,
                }],
                ServerPhase::Scaling,
            ),
            (0, vec![ready()], ServerPhase::Scaling),
            (1, vec![], ServerPhase::Starting),
            (1, vec![InstancePhase::Pending], ServerPhase::Starting),
            (1, vec![starting()], ServerPhase::Starting),
            (1, vec![ready()], ServerPhase::Running),
            (2, vec![ready(), ready()], ServerPhase::Running),
            (2, vec![ready(), starting()], ServerPhase::Scaling),
            (2, vec![ready()], ServerPhase::Scaling),
            (1, vec![ready(), ready()], ServerPhase::Scaling),
            (2, vec![ready(), failed()], ServerPhase::Degraded),
            (
                2,
                vec![
                    ready(),
                    InstancePhase::Unhealthy {
                        since: Timestamp::EPOCH,
                    },
                ],
                ServerPhase::Degraded,
            ),
            (1, vec![failed()], ServerPhase::Failed),
            (2, vec![failed(), failed()], ServerPhase::Failed),
        ];
        for (desired, instances, want) in cases {
            assert_eq!(
                derive_phase(desired, &instances),
                want,
                "desired {desired}, {instances:?}"
            );
        }
    }

    fn arb_phase() -> impl Strategy<Value = InstancePhase> {
        prop_oneof![
            Just(InstancePhase::Pending),
            Just(starting()),
            Just(ready()),
            Just(InstancePhase::Unhealthy {
                since: Timestamp::EPOCH
            }),
            Just(failed()),
            Just(InstancePhase::Stopped),
        ]
    }

    proptest! {
        /// Running means exactly `desired` ready instances and nothing else live;
        /// Stopped only at desired 0; Failed never when something is ready.
        #[test]
        fn phase_is_honest(desired in 0u32..5, instances in proptest::collection::vec(arb_phase(), 0..8)) {
            let phase = derive_phase(desired, &instances);
            let ready = instances.iter().filter(|p| matches!(p, InstancePhase::Ready { .. })).count() as u32;
            let live = instances.iter().filter(|p| p.is_live()).count() as u32;
            if phase == ServerPhase::Running {
                prop_assert!(ready == desired && live == desired && desired > 0);
            }
            if phase == ServerPhase::Stopped {
                prop_assert!(desired == 0 && live == 0);
            }
            if phase == ServerPhase::Failed {
                prop_assert_eq!(ready, 0);
            }
        }
    }
}
