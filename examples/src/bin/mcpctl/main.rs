//! `mcpctl`: a command-line client for the `mcpd` gateway, with kubectl's
//! habits — `get`, `describe`, `apply -f`, `delete`, `start --wait`,
//! `stop`, `scale`, `logs`, `check-updates`, `set-update-policy`,
//! `events --follow`; aligned tables by default and `-o json|yaml` for
//! scripts. A failed call exits non-zero with mcpd's error (its message
//! and code) on stderr.
//!
//! ```text
//! mcpctl --server 127.0.0.1:8080 --token "$TOKEN" get servers
//! ```
//!
//! One concern per module: [`cli`] (flags), [`config`] (where the server
//! and token come from), [`client`] (HTTP), [`output`] (tables, JSON,
//! YAML), [`progress`] (the wait indicator), and one module per command
//! group: [`get`], [`describe`], [`apply`] (apply and delete), [`actions`],
//! [`logs`], [`events`].
#![forbid(unsafe_code)]

mod actions;
mod apply;
mod cli;
mod client;
mod config;
mod describe;
mod events;
mod get;
mod logs;
mod output;
mod progress;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, OutputFormat};
use crate::client::{ApiClient, ApiFailure};
use crate::config::Connection;

/// What every command gets: the client and the output format.
#[derive(Debug)]
pub(crate) struct Context {
    /// The API client.
    pub(crate) client: ApiClient,
    /// `-o`, if given (tables otherwise).
    pub(crate) output: Option<OutputFormat>,
}

/// An error as the user reads it: mcpd's own words when mcpd refused.
pub(crate) fn describe_error(e: &anyhow::Error) -> String {
    match e.downcast_ref::<ApiFailure>() {
        Some(failure) => format!("Error from server: {failure}"),
        None => format!("error: {e:#}"),
    }
}

/// Whether `e` is stdout closing under us (`mcpctl events -f | head`).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let connection = Connection::resolve(&cli.connection)?;
    let ctx = Context {
        client: ApiClient::new(connection)?,
        output: cli.output,
    };
    match &cli.command {
        Command::Get(args) => get::run(&ctx, args).await,
        Command::Describe(args) => describe::run(&ctx, args).await,
        Command::Apply(args) => apply::run_apply(&ctx, args).await,
        Command::Delete(args) => apply::run_delete(&ctx, args).await,
        Command::Start(args) => actions::start(&ctx, args).await,
        Command::Stop(args) => actions::stop(&ctx, args).await,
        Command::Scale(args) => actions::scale(&ctx, args).await,
        Command::Logs(args) => logs::run(&ctx, args).await,
        Command::CheckUpdates(args) => actions::check_updates(&ctx, args).await,
        Command::SetUpdatePolicy(args) => actions::set_update_policy(&ctx, args).await,
        Command::Events(args) => events::run(&ctx, args).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", describe_error(&e));
            ExitCode::FAILURE
        }
    }
}
