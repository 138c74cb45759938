//! Speaking MCP to instances, with rmcp: one client session per instance,
//! shared by health probes and by host traffic through
//! [`crate::Lifecycle::peer`], so a probe fails exactly when real traffic would.
//!
//! This module owns sessions (opening them from whatever the backend's
//! [`crate::ports::Connection`] is, and dropping dead ones), the MCP
//! [`McpProber`], and the per-server tools cache. It decides nothing about
//! lifecycles: probe verdicts go to the instance state machine.

mod pool;
mod prober;
mod session;
pub(crate) mod tools_cache;

pub use pool::SessionPool;
pub use prober::McpProber;
pub use session::{McpPeer, McpSession};
pub(crate) use tools_cache::ToolsCache;
