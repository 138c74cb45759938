//! The four ports: the only ways the library reaches outside itself.
//!
//! Each is a small, object-safe, `Send + Sync` trait. A method belongs on a
//! port only if a backend must do it differently; retries, backoff, dedupe,
//! caching and leases are written once, above the ports.

mod image_resolver;
mod orchestrator;
mod replicas;
mod secret_source;
mod store;

pub use image_resolver::{ImageResolver, ResolveFailure, ResolverUnsupported, is_unsupported};
pub use orchestrator::{
    Connection, Endpoint, EndpointKind, EventStream, InstanceId, InstanceObservation, InstanceSpec,
    Orchestrator, ResolvedEnv, RuntimeEvent, RuntimeEventKind, RuntimeStatus, StdioStream,
    StopMode, labels,
};
pub use replicas::{ReplicaDetail, ReplicaOwner, WaitingReason, WorkloadSpec};
pub use secret_source::{EnvSecretSource, SecretSource, StaticSecretSource};
pub use store::{Fence, Lease, Precondition, Record, Store, StoreChange, Version};
