//! `tetrad-byzantine`: the `tetrad` node with a misbehaviour switch, for the fault campaign
//! only (`scripts/chaos.sh --byzantine MODE`). Built only with the cargo feature `byzantine`
//! (`cargo build --release -p tetrad-node --features byzantine --bin tetrad-byzantine`); never
//! shipped. The same commands as `tetrad`; `TETRAD_BYZANTINE` names the misbehaviour
//! (`src/daemon/byzantine.rs`), and it refuses to start without it.

mod cli;
mod client;
mod config;
mod daemon;
mod identity;
mod ops;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if let Err(error) = daemon::byzantine::install_from_env() {
        eprintln!("error: {error}");
        return ExitCode::from(2);
    }
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
