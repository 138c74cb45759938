//! Implementations of the [`crate::Store`] port.

mod memory;
#[cfg(feature = "redb")]
mod redb;

pub use memory::InMemoryStore;
#[cfg(feature = "redb")]
pub use self::redb::RedbStore;
