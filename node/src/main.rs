//! `tetrad`: the Tetrad node and its command-line tools.

mod api;
mod bench;
mod bench_ledger;
mod cli;
mod client;
mod config;
mod deferred;
mod driver;
mod executor;
mod identity;
mod keys;
mod mempool;
mod metrics;
mod network;
mod node;
mod testnet;

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
