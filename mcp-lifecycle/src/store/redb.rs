//! The durable redb [`crate::Store`] (being written).

/// Durable redb store (being written).
#[derive(Debug)]
pub struct RedbStore;
