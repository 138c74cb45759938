//! `mcp-test-server`: the MCP server fixture that every mcp-lifecycle backend's
//! tests run. See [`mcp_lifecycle_tests::test_server`] for what it offers.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    mcp_lifecycle_tests::test_server::main_from(std::env::args_os())
}
