//! Image freshness per server: is the running digest what the configured tag
//! points to now, and if not, roll the new digest out and verify it.
//!
//! States: Unknown, UpToDate, UpdateAvailable, Reinstalling, RolloutFailed,
//! CheckFailed. A digest-pinned image is UpToDate with no registry call. An
//! auto-reinstall rolls out `repo@sha256:…` (never the mutable tag) and is then
//! verified on a stored schedule (10, 20, 40, 60, 60, 60 s by default) by
//! reading digests only from ready instances of the new rollout. A rollout
//! older than its deadline is RolloutFailed (stale), so a later check retries.
//!
//! No I/O and no clock reads: `now` and the random jitter sample are arguments.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ports::ResolveFailure;
use crate::time::Timestamp;

/// Knobs for freshness checks and rollout verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreshnessPolicy {
    /// Time between checks. Default 15 min; never below `floor`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The shortest interval allowed. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub floor: Duration,
    /// Spread of the interval, as a fraction: 0.1 means ±10 %. Default 0.1.
    pub jitter: f64,
    /// Waits between rollout verifications. Default 10, 20, 40, 60, 60, 60 s.
    #[serde(with = "humantime_serde_vec")]
    pub verify_backoff: Vec<Duration>,
    /// A rollout still unverified after this long is stale. Default 10 min.
    #[serde(with = "humantime_serde")]
    pub rollout_deadline: Duration,
}

mod humantime_serde_vec {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct D(#[serde(with = "humantime_serde")] Duration);

    pub(super) fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        v.iter().map(|d| D(*d)).collect::<Vec<_>>().serialize(s)
    }

    pub(super) fn deserialize<'de, De: Deserializer<'de>>(
        d: De,
    ) -> Result<Vec<Duration>, De::Error> {
        Ok(Vec::<D>::deserialize(d)?
            .into_iter()
            .map(|D(d)| d)
            .collect())
    }
}

impl Default for FreshnessPolicy {
    fn default() -> Self {
        FreshnessPolicy {
            interval: Duration::from_secs(15 * 60),
            floor: Duration::from_secs(5 * 60),
            jitter: 0.1,
            verify_backoff: [10, 20, 40, 60, 60, 60].map(Duration::from_secs).to_vec(),
            rollout_deadline: Duration::from_secs(10 * 60),
        }
    }
}

impl FreshnessPolicy {
    /// When the next check is due after one at `last`, given a uniform random
    /// `sample` in `[0, 1)`. The result is within `interval ± jitter` and never
    /// closer than `floor` to `last`.
    pub fn next_check_at(&self, last: Timestamp, sample: f64) -> Timestamp {
        let base = self.interval.max(self.floor).as_secs_f64();
        let jitter = self.jitter.clamp(0.0, 0.5);
        let sample = if sample.is_finite() {
            sample.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let spread = base * jitter * (2.0 * sample - 1.0);
        let secs = (base + spread).max(self.floor.as_secs_f64());
        last + Duration::from_secs_f64(secs)
    }
}

/// Why a check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CheckFailure {
    /// The registry could not be reached.
    RegistryUnreachable,
    /// The registry refused the credentials.
    Unauthorized,
    /// The repository or tag does not exist.
    NotFound,
    /// The registry did not answer in time.
    Timeout,
    /// No ready instance reported the digest it runs.
    RunningDigestUnavailable,
    /// Starting the rollout failed.
    ReinstallFailed,
    /// The configured resolver cannot resolve on this runtime (Podman has
    /// no distribution endpoint): use the registry resolver.
    ResolverUnsupported,
}

impl From<ResolveFailure> for CheckFailure {
    fn from(f: ResolveFailure) -> Self {
        match f {
            ResolveFailure::Unreachable => CheckFailure::RegistryUnreachable,
            ResolveFailure::Unauthorized => CheckFailure::Unauthorized,
            ResolveFailure::NotFound => CheckFailure::NotFound,
            ResolveFailure::Timeout => CheckFailure::Timeout,
            ResolveFailure::Unsupported => CheckFailure::ResolverUnsupported,
        }
    }
}

/// Why a rollout failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RolloutFailure {
    /// Every verification ran and the new digest was never ready everywhere.
    NotReady,
    /// The rollout outlived its deadline (for example its host died).
    Stale,
}

/// The freshness of one server's image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Freshness {
    /// Never checked.
    #[default]
    Unknown,
    /// The running digest is what the tag points to.
    UpToDate {
        /// The digest.
        digest: String,
    },
    /// The tag points to a newer digest; auto-reinstall is off.
    UpdateAvailable {
        /// What runs.
        running: String,
        /// What a pull would get.
        available: String,
    },
    /// The new digest is being rolled out and verified.
    Reinstalling {
        /// The digest rolled out.
        target: String,
        /// The digest it replaces.
        previous: String,
        /// When the rollout began.
        started_at: Timestamp,
        /// Verifications done so far.
        verifications: u32,
        /// When the next verification is due.
        next_verify_at: Timestamp,
    },
    /// The rollout did not become ready; the server keeps what it had.
    RolloutFailed {
        /// The digest that failed.
        target: String,
        /// Why.
        category: RolloutFailure,
    },
    /// The last checks failed.
    CheckFailed {
        /// Why the last one failed.
        category: CheckFailure,
        /// How many in a row.
        consecutive_failures: u32,
    },
}

impl Freshness {
    /// A short name for tables and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Freshness::Unknown => "unknown",
            Freshness::UpToDate { .. } => "up-to-date",
            Freshness::UpdateAvailable { .. } => "update-available",
            Freshness::Reinstalling { .. } => "reinstalling",
            Freshness::RolloutFailed { .. } => "rollout-failed",
            Freshness::CheckFailed { .. } => "check-failed",
        }
    }

    /// Whether a rollout is in progress.
    pub fn is_reinstalling(&self) -> bool {
        matches!(self, Freshness::Reinstalling { .. })
    }
}

/// What happened in a freshness check or rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreshnessEvent {
    /// A check begins for `image`, with the digests ready instances report.
    CheckStarted {
        /// The configured image reference.
        image: String,
        /// Digests of ready instances (empty if none reports one).
        running: Vec<String>,
        /// Whether a newer digest should be rolled out automatically.
        auto_reinstall: bool,
    },
    /// The resolver answered.
    Resolved {
        /// The digest a pull would get now.
        available: String,
        /// Digests of ready instances.
        running: Vec<String>,
        /// Whether to roll out automatically.
        auto_reinstall: bool,
    },
    /// The resolver failed.
    ResolveFailed {
        /// Why.
        category: CheckFailure,
    },
    /// Starting the rollout failed.
    RolloutStartFailed,
    /// A verification ran: the digests of ready instances of the new rollout,
    /// and how many instances the server wants.
    Verified {
        /// Digests reported by ready instances of the new rollout.
        ready_new: Vec<String>,
        /// Desired replicas.
        desired: u32,
    },
    /// Time passed (stale rollouts are detected).
    Tick,
}

/// What the controller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreshnessAction {
    /// Ask the resolver for `image`'s current digest.
    Resolve {
        /// The reference.
        image: String,
    },
    /// Roll out this digest (the controller builds `repo@digest`).
    StartRollout {
        /// The digest.
        digest: String,
    },
    /// Verify at this time (store it: verification must survive a restart).
    VerifyAt(Timestamp),
    /// Stop rolling out; keep serving on what runs.
    AbandonRollout,
}

/// The digest an image reference is pinned to, if any: `repo@sha256:<64 hex>`
/// (or `sha512:<128 hex>`).
pub fn pinned_digest(image: &str) -> Option<&str> {
    let (_, digest) = image.rsplit_once('@')?;
    let (algorithm, hex) = digest.split_once(':')?;
    let len = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return None,
    };
    (hex.len() == len && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(digest)
}

impl Freshness {
    /// Applies `event` at `now`.
    pub fn step(
        &self,
        event: &FreshnessEvent,
        now: Timestamp,
        policy: &FreshnessPolicy,
    ) -> (Freshness, Vec<FreshnessAction>) {
        use Freshness as F;
        use FreshnessEvent as E;
        match (self, event) {
            // A rollout is verified to its end; checks do not interrupt it.
            (
                F::Reinstalling { .. },
                E::CheckStarted { .. } | E::Resolved { .. } | E::ResolveFailed { .. },
            ) => (self.clone(), vec![]),
            (
                _,
                E::CheckStarted {
                    image,
                    running,
                    auto_reinstall,
                },
            ) => match pinned_digest(image) {
                Some(digest) => (
                    F::UpToDate {
                        digest: digest.to_owned(),
                    },
                    vec![],
                ),
                None => {
                    let _ = (running, auto_reinstall);
                    (
                        self.clone(),
                        vec![FreshnessAction::Resolve {
                            image: image.clone(),
                        }],
                    )
                }
            },
            (
                _,
                E::Resolved {
                    available,
                    running,
                    auto_reinstall,
                },
            ) => {
                let Some(current) = majority_digest(running) else {
                    return (
                        self.check_failed(CheckFailure::RunningDigestUnavailable),
                        vec![],
                    );
                };
                if running.iter().all(|d| d == available) {
                    (
                        F::UpToDate {
                            digest: available.clone(),
                        },
                        vec![],
                    )
                } else if !auto_reinstall {
                    (
                        F::UpdateAvailable {
                            running: current,
                            available: available.clone(),
                        },
                        vec![],
                    )
                } else if matches!(self, F::RolloutFailed { target, .. } if target == available) {
                    // This digest already failed to become ready; do not loop on it.
                    // A new digest, or a stale mark, lets a later check retry.
                    (self.clone(), vec![])
                } else {
                    let first = policy
                        .verify_backoff
                        .first()
                        .copied()
                        .unwrap_or(Duration::from_secs(10));
                    let next_verify_at = now + first;
                    (
                        F::Reinstalling {
                            target: available.clone(),
                            previous: current,
                            started_at: now,
                            verifications: 0,
                            next_verify_at,
                        },
                        vec![
                            FreshnessAction::StartRollout {
                                digest: available.clone(),
                            },
                            FreshnessAction::VerifyAt(next_verify_at),
                        ],
                    )
                }
            }
            (_, E::ResolveFailed { category }) => (self.check_failed(*category), vec![]),
            (F::Reinstalling { .. }, E::RolloutStartFailed) => (
                self.check_failed(CheckFailure::ReinstallFailed),
                vec![FreshnessAction::AbandonRollout],
            ),
            (
                F::Reinstalling {
                    target,
                    previous,
                    started_at,
                    verifications,
                    ..
                },
                E::Verified { ready_new, desired },
            ) => {
                let ready_on_target = ready_new.iter().filter(|d| *d == target).count();
                let wanted = usize::try_from(*desired).unwrap_or(usize::MAX).max(1);
                if ready_on_target >= wanted && ready_new.iter().all(|d| d == target) {
                    return (
                        F::UpToDate {
                            digest: target.clone(),
                        },
                        vec![],
                    );
                }
                let done = verifications.saturating_add(1);
                let idx = usize::try_from(done).unwrap_or(usize::MAX);
                match policy.verify_backoff.get(idx) {
                    Some(wait) if now.saturating_since(*started_at) < policy.rollout_deadline => {
                        let next_verify_at = now + *wait;
                        (
                            F::Reinstalling {
                                target: target.clone(),
                                previous: previous.clone(),
                                started_at: *started_at,
                                verifications: done,
                                next_verify_at,
                            },
                            vec![FreshnessAction::VerifyAt(next_verify_at)],
                        )
                    }
                    _ => (
                        F::RolloutFailed {
                            target: target.clone(),
                            category: RolloutFailure::NotReady,
                        },
                        vec![FreshnessAction::AbandonRollout],
                    ),
                }
            }
            (
                F::Reinstalling {
                    target, started_at, ..
                },
                E::Tick,
            ) => {
                if now.saturating_since(*started_at) >= policy.rollout_deadline {
                    (
                        F::RolloutFailed {
                            target: target.clone(),
                            category: RolloutFailure::Stale,
                        },
                        vec![FreshnessAction::AbandonRollout],
                    )
                } else {
                    (self.clone(), vec![])
                }
            }
            // Results that belong to no rollout in progress are ignored.
            (_, E::RolloutStartFailed | E::Verified { .. } | E::Tick) => (self.clone(), vec![]),
        }
    }

    fn check_failed(&self, category: CheckFailure) -> Freshness {
        let consecutive_failures = match self {
            Freshness::CheckFailed {
                consecutive_failures,
                ..
            } => consecutive_failures.saturating_add(1),
            _ => 1,
        };
        Freshness::CheckFailed {
            category,
            consecutive_failures,
        }
    }
}

/// The digest most ready instances run; ties go to the smallest, so the
/// answer does not depend on listing order.
fn majority_digest(running: &[String]) -> Option<String> {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for d in running {
        *counts.entry(d.as_str()).or_default() += 1;
    }
    let max = counts.values().copied().max()?;
    counts
        .into_iter()
        .find(|(_, c)| *c == max)
        .map(|(d, _)| d.to_owned())
}

#[cfg(test)]
#[path = "freshness_tests.rs"]
mod tests;
