//! `tetrad-chaos`: the fault campaign of `scripts/chaos.sh` (test tooling; not shipped).
//!
//! The script makes one network namespace per node of a `tetrad testnet --hosts` network (a
//! bridge between them, the host on it too) and removes them on exit; this binary does the
//! rest: starts every `tetrad run` in its namespace, runs closed-loop clients that submit
//! transfers to random nodes and record every answer ([`record`]), injects a seeded schedule
//! of faults ([`schedule`]: partitions, one-way cuts, lossy, duplicating, throttled, delayed
//! and reordering links ([`delay`]: NFQUEUE, no netem needed), a paused primary, kill -9 and
//! restart, f+1 crashed, the whole network restarted),
//! measures when commits resume after each heal ([`monitor`]), and finally checks every
//! node's chain against the record ([`checker`]) — and checks that the checker catches planted
//! faults. Exit status 0 only if everything held.

mod campaign;
mod checker;
mod cluster;
mod delay;
mod http;
mod monitor;
mod record;
mod report;
mod rng;
mod schedule;
mod verify;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::schedule::{FaultKind, Shape};

#[derive(Parser)]
#[command(name = "tetrad-chaos", about = "Fault campaign on real tetrad processes (run by scripts/chaos.sh)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once from the command line: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Print the fault schedule of a seed (what `run` would inject), without running anything.
    Schedule {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Seconds of faults.
        #[arg(long, default_value_t = 120)]
        duration: u64,
        /// `all` or a comma-separated list of fault kinds.
        #[arg(long, default_value = "all")]
        faults: String,
        #[arg(long, default_value_t = 4)]
        validators: usize,
        #[arg(long, default_value_t = 1)]
        full_nodes: usize,
    },
    /// Delay the packets an NFQUEUE rule hands over (one link, one direction): each held for
    /// the delay plus or minus a uniform jitter, released in release-time order (so a jitter
    /// wider than the gap between packets reorders them). Run in the sender's namespace, with
    /// `iptables -A OUTPUT -d PEER -j NFQUEUE --queue-num N --queue-bypass` there. Stops on
    /// SIGTERM (every held packet let through) and prints its counters.
    Delay {
        /// The NFQUEUE number (the rule's --queue-num).
        #[arg(long)]
        queue: u16,
        #[arg(long, default_value_t = 100)]
        delay_ms: u64,
        /// Each packet held for the delay plus or minus up to this (uniform).
        #[arg(long, default_value_t = 0)]
        jitter_ms: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Only bind the queue and unbind it: exit 0 if this kernel offers NFQUEUE.
        #[arg(long)]
        check: bool,
    },
    /// Run a campaign on a network made by scripts/chaos.sh (needs root: namespaces, iptables).
    Run {
        /// The testnet directory (`tetrad testnet --hosts … --dir DIR`).
        #[arg(long)]
        net: PathBuf,
        /// The tetrad binary to run.
        #[arg(long)]
        tetrad: PathBuf,
        /// Namespace of node NAME: PREFIX + NAME.
        #[arg(long, default_value = "tchaos-")]
        prefix: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Seconds of faults (every kind named is injected at least once, even if that takes longer).
        #[arg(long, default_value_t = 120)]
        duration: u64,
        #[arg(long, default_value = "all")]
        faults: String,
        /// Client threads.
        #[arg(long, default_value_t = 6)]
        clients: usize,
        /// Commits must resume within this many seconds after each heal.
        #[arg(long, default_value_t = 60)]
        resume_limit: u64,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// libfaketime's preload library, for clock faults.
        #[arg(long)]
        faketime_lib: Option<PathBuf>,
        /// The node whose data/ is on a small filesystem of its own, for disk-full faults.
        #[arg(long)]
        small_disk: Option<String>,
        /// Let a transaction that is in the chain twice pass when it executed once and its
        /// other copy failed its nonce check (the known re-proposal issue); still counted.
        #[arg(long)]
        allow_replayed_copies: bool,
        /// Run one validator as the Byzantine binary with these modes (`TETRAD_BYZANTINE`:
        /// all, or equivocate,double-vote,view-churn,silence,lying-sync,flood,replay); the checker
        /// then looks at the honest nodes only.
        #[arg(long, requires = "tetrad_byzantine")]
        byzantine: Option<String>,
        /// The tetrad-byzantine binary (feature `byzantine`).
        #[arg(long)]
        tetrad_byzantine: Option<PathBuf>,
        /// Which validator is Byzantine (v0: the primary of view 0, so that it leads from the
        /// start).
        #[arg(long, default_value = "v0")]
        byzantine_node: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Schedule { seed, duration, faults, validators, full_nodes } => {
            let kinds = FaultKind::parse_list(&faults)?;
            let shape = Shape { validators, full_nodes };
            anyhow::ensure!(validators >= 4, "--validators: at least 4");
            let names: Vec<String> = (0..validators)
                .map(|index| format!("v{index}"))
                .chain((0..full_nodes).map(|index| format!("full{index}")))
                .collect();
            for fault in schedule::generate(seed, duration * 1000, &kinds, shape) {
                println!("{}", fault.describe(&names));
            }
            Ok(true)
        }
        Command::Delay { queue, delay_ms, jitter_ms, seed, check } => {
            delay::run(&delay::Options {
                queue,
                delay: Duration::from_millis(delay_ms),
                jitter: Duration::from_millis(jitter_ms),
                seed,
                check,
            })?;
            Ok(true)
        }
        Command::Run {
            net,
            tetrad,
            prefix,
            seed,
            duration,
            faults,
            clients,
            resume_limit,
            json,
            faketime_lib,
            small_disk,
            allow_replayed_copies,
            byzantine,
            tetrad_byzantine,
            byzantine_node,
        } => {
            let byzantine = match (byzantine, tetrad_byzantine) {
                (Some(modes), Some(program)) => {
                    Some(campaign::Byzantine { node: byzantine_node, program, modes })
                }
                _ => None,
            };
            let options = campaign::Options {
                net,
                tetrad,
                prefix,
                seed,
                duration: Duration::from_secs(duration),
                kinds: FaultKind::parse_list(&faults)?,
                clients: clients.max(1),
                resume_limit: Duration::from_secs(resume_limit),
                faketime: faketime_lib,
                small_disk,
                rules: checker::Rules { allow_replayed_copies },
                byzantine,
            };
            let report = match campaign::run(&options) {
                Ok(report) => report,
                Err(error) => {
                    eprintln!("chaos: seed {seed}: the campaign could not run: {error:#}");
                    return Err(error);
                }
            };
            print!("{}", report::table(&report));
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
                    .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
            }
            if !report.passed {
                eprintln!("chaos: FAILED with seed {seed}; replay: {}", report.replay);
            }
            Ok(report.passed)
        }
    }
}
