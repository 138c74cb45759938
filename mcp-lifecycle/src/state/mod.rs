//! Pure state machines: `step(state, event, now, &policy) -> (state, actions)`.
//!
//! This module is the library's decision-maker. It performs no I/O and reads
//! no clock; the controller feeds it events and time and carries out the
//! actions it returns. Every decision can be tested without a runtime.

mod backoff;
mod freshness;
mod instance;
mod phase;
mod replicas;

pub use backoff::{BackoffPolicy, BackoffSchedule, BackoffStep};
pub use freshness::{
    CheckFailure, Freshness, FreshnessAction, FreshnessEvent, FreshnessPolicy, RolloutFailure,
    pinned_digest,
};
pub use instance::{InstanceAction, InstanceEvent, InstancePhase, InstancePolicy, InstanceState};
pub use phase::{ServerPhase, derive_phase};
pub use replicas::{ReplicaAction, ReplicaView, plan_replicas};
