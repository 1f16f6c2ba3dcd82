//! `shoal`: the one binary for every role.
//!
//! - Server roles run until SIGINT/SIGTERM: `shoal up` (controller and agent in one
//!   process), `shoal controller`, `shoal agent` ([`commands::up`], [`commands::controller`],
//!   [`commands::agent`]).
//! - Client commands talk to the `Control` gRPC service through [`client::Client`], which
//!   tries each `--addr` and follows a follower's leader hint ([`leader`]).
//! - [`output`] renders rows as tables or as the JSON of DESIGN.md's contract;
//!   [`progress`] decides, purely, whether a deploy has converged.
//! - [`images`] builds `build:` services on this machine's engine and ships images to
//!   the cluster's store (`shoal deploy`, `shoal image push`).
//! - [`install`] runs a role as a systemd service (`shoal install`, `shoal uninstall`).
//! - [`dashboard`] serves `shoal dashboard`, a web view of the cluster read through the
//!   same client and credentials as every command.
//! - [`error`] maps failures to exit codes: 0 ok, 1 operation failed, 2 bad usage or input.
//!
//! This crate holds no cluster logic of its own: it parses, calls and prints.
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms)]

mod args;
mod client;
mod commands;
mod dashboard;
mod error;
#[cfg(test)]
mod fake_control;
mod images;
mod install;
mod leader;
mod logging;
mod login;
mod output;
mod progress;
mod signal;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    logging::init(cli.command.is_server());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::from(error::EXIT_FAILED as u8);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", error::render(&e));
            ExitCode::from(error::exit_code(&e) as u8)
        }
    }
}
