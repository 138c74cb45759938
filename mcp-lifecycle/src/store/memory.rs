//! The in-memory [`crate::Store`] (being written).

/// In-memory store (being written).
#[derive(Debug, Default)]
pub struct InMemoryStore;
