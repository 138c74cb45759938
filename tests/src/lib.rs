//! Test fixtures shared by mcp-lifecycle's cross-crate tests, benchmarks and
//! examples: the [`test_server`] MCP server. The tests themselves live in
//! `tests/tests/`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod test_server;
