//! What a host asks for: the [`ServerSpec`] of one MCP server, loadable from
//! YAML or JSON, and its validation.
//!
//! This module owns the shape of the desired state and the rules that reject a
//! bad one. It must not talk to a runtime, a store or a registry.

mod de;
mod load;
mod server;
mod show;
mod validate;

#[cfg(test)]
pub(crate) use load::from_yaml_str;
pub use server::{
    Command, EnvEntry, EnvSource, HealthSpec, LivenessCheck, ReadinessCall, Resources, SecretRef,
    ServerSpec, Source, Transport, UpdatePolicy,
};
pub use validate::{FieldError, Limits, ValidationError, parse_cpu_millis, parse_memory_bytes};
