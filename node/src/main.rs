//! `tetrad`: the Tetrad node and its command-line tools.
//!
//! Rooms by concern: `daemon/` (the validator or full node that `tetrad run` starts),
//! `client/` (transactions, queries and key rotation against a node's RPC), `ops/` (operator
//! tooling: testnet, bench); `cli`, `config` and `identity` are shared by all three.

mod cli;
mod client;
mod config;
mod daemon;
mod identity;
mod ops;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
