//! One campaign: start the nodes, run the workload, inject the schedule's faults one at a time
//! (each healed, then liveness measured), stop the workload, wait for the nodes to converge,
//! check, and run the checker on planted faults (negative controls).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tetrad_genesis::{Genesis, KeyFile};

use crate::checker::{self, Verdict};
use crate::cluster::Cluster;
use crate::monitor::Monitor;
use crate::record::{self, Answer, RecordWriter};
use crate::schedule::{Fault, FaultKind, Shape, Target};
use crate::workload::Workload;

pub struct Options {
    pub net: PathBuf,
    pub tetrad: PathBuf,
    pub prefix: String,
    pub seed: u64,
    pub duration: Duration,
    pub kinds: Vec<FaultKind>,
    pub clients: usize,
    /// Commits must resume within this long after every heal, or the campaign fails.
    pub resume_limit: Duration,
    /// libfaketime's preload library (clock faults).
    pub faketime: Option<PathBuf>,
    /// The node whose data/ is on a small filesystem of its own (disk-full faults).
    pub small_disk: Option<String>,
    pub rules: checker::Rules,
    /// One validator runs the Byzantine binary for the whole campaign.
    pub byzantine: Option<Byzantine>,
}

/// The Byzantine validator: `program` (tetrad-byzantine) with `TETRAD_BYZANTINE=modes` as node
/// `node`. The checker, the convergence wait and the liveness monitor then look at the honest
/// nodes only; clients still submit to it (and verify every certificate it names).
#[derive(Clone, Debug)]
pub struct Byzantine {
    pub node: String,
    pub program: PathBuf,
    pub modes: String,
}

/// How one fault went.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRun {
    pub index: usize,
    pub kind: FaultKind,
    pub description: String,
    pub start_ms: u64,
    pub heal_ms: u64,
    /// From the heal to the first new block that carries transactions (None: none within the
    /// limit; empty blocks do not count).
    pub resume_after_heal_ms: Option<u64>,
    /// The longest time without a new block carrying transactions from the fault's start to the
    /// resumption.
    pub longest_stall_ms: u64,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct KindSummary {
    pub injected: usize,
    pub longest_stall_ms: u64,
    pub longest_resume_after_heal_ms: Option<u64>,
    /// Every resumption within two view-change timeouts.
    pub within_goal: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct NegativeControl {
    pub planted: String,
    pub caught: bool,
    pub first_violation: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `NODE: MODES` of the Byzantine validator, if one ran.
    pub byzantine: Option<String>,
    pub seed: u64,
    pub duration_s: u64,
    pub wall_s: u64,
    pub faults_requested: Vec<FaultKind>,
    pub view_change_timeout_ms: u64,
    pub goal_resume_ms: u64,
    pub resume_limit_ms: u64,
    pub faults: Vec<FaultRun>,
    pub per_kind: BTreeMap<FaultKind, KindSummary>,
    pub verdict: Verdict,
    pub negative_controls: Vec<NegativeControl>,
    /// Campaign-level failures (liveness, nodes that died on their own, setup).
    pub failures: Vec<String>,
    pub passed: bool,
    pub replay: String,
}

/// Longest wait for the first block, and for the nodes to converge at the end.
const START_LIMIT: Duration = Duration::from_secs(60);
const CONVERGE_LIMIT: Duration = Duration::from_secs(90);
/// Settling time after an f+1 crash before the chain must stand still.
const CRASH_SETTLE: Duration = Duration::from_millis(1_500);

pub fn run(options: &Options) -> Result<Report> {
    let started = Instant::now();
    let genesis_path = options.net.join("genesis.json");
    let genesis = Genesis::load(&genesis_path).with_context(|| format!("{}", genesis_path.display()))?;
    let set = genesis.validator_set().map_err(|error| anyhow::anyhow!("genesis validators: {error}"))?;
    let vc_timeout_ms = genesis.consensus.view_change_timeout_ms;
    let mut cluster = Cluster::load(&options.net, &options.tetrad, &options.prefix)?;
    let shape =
        Shape { validators: cluster.validators(), full_nodes: cluster.nodes.len() - cluster.validators() };
    let schedule =
        crate::schedule::generate(options.seed, options.duration.as_millis() as u64, &options.kinds, shape);
    let names = cluster.names();
    eprintln!("chaos: seed {} schedule of {} faults:", options.seed, schedule.len());
    for fault in &schedule {
        eprintln!("  {}", fault.describe(&names));
    }
    let accounts = load_accounts(&options.net)?;
    let record_path = options.net.join("record.jsonl");
    let _ = std::fs::remove_file(&record_path);
    let endpoints = cluster.endpoints();
    let mut byzantine_index = None;
    if let Some(byzantine) = &options.byzantine {
        let Some(index) = names.iter().position(|name| *name == byzantine.node) else {
            bail!("--byzantine-node {}: no such node", byzantine.node);
        };
        anyhow::ensure!(
            cluster.nodes[index].validator,
            "--byzantine-node {}: not a validator",
            byzantine.node
        );
        cluster.nodes[index].program = Some((
            byzantine.program.clone(),
            vec![("TETRAD_BYZANTINE".to_string(), byzantine.modes.clone())],
        ));
        byzantine_index = Some(index);
        eprintln!(
            "chaos: {} is Byzantine ({}, TETRAD_BYZANTINE={}); the checker looks at the honest nodes",
            byzantine.node,
            byzantine.program.display(),
            byzantine.modes
        );
    }
    // The honest nodes: what the checker, the convergence wait and the monitor look at.
    let honest: Vec<usize> =
        (0..cluster.nodes.len()).filter(|index| Some(*index) != byzantine_index).collect();
    let honest_endpoints: Vec<_> = honest.iter().map(|index| endpoints[*index].clone()).collect();
    for index in 0..cluster.nodes.len() {
        cluster.start(index)?;
    }
    let (monitor, monitor_threads) = Monitor::spawn(&endpoints, byzantine_index.as_slice(), started);
    let workload = Arc::new(Workload {
        endpoints: endpoints.clone(),
        genesis_hash: genesis.hash(),
        set: set.clone(),
        accounts,
        clients: options.clients,
        seed: options.seed,
        started,
        stop: Default::default(),
        writer: Mutex::new(RecordWriter::create(&record_path)?),
        counts: Default::default(),
    });
    let mut failures = Vec::new();
    let client_threads = workload.spawn();
    let first = Instant::now();
    while monitor.highest() == 0 {
        if first.elapsed() > START_LIMIT {
            workload.stop.store(true, Ordering::Relaxed);
            monitor.stop();
            bail!(
                "no block within {} s of the start; see the node.log files in {}",
                START_LIMIT.as_secs(),
                options.net.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("chaos: first block after {} ms; faults start", first.elapsed().as_millis());
    std::thread::sleep(Duration::from_secs(2));
    let campaign_start = Instant::now();
    let mut runs = Vec::new();
    for fault in &schedule {
        if campaign_start.elapsed() >= options.duration && !runs.is_empty() && covered(&runs, &options.kinds)
        {
            break;
        }
        let run = inject(&mut cluster, &monitor, fault, options, &mut failures);
        eprintln!(
            "chaos: {} -> resumed {} after the heal, longest stall {} ms (committed {}, failed {}, unknown {}){}",
            run.description,
            run.resume_after_heal_ms.map_or("NOT".to_string(), |ms| format!("{ms} ms")),
            run.longest_stall_ms,
            workload.counts.committed.load(Ordering::Relaxed),
            workload.counts.failed.load(Ordering::Relaxed),
            workload.counts.unknown.load(Ordering::Relaxed),
            if run.notes.is_empty() { String::new() } else { format!("; {}", run.notes.join("; ")) }
        );
        runs.push(run);
        std::thread::sleep(Duration::from_millis(fault.gap_ms));
    }
    eprintln!("chaos: faults done; stopping the clients (each resolves its last transaction)");
    workload.stop.store(true, Ordering::Relaxed);
    for thread in client_threads {
        if thread.join().is_err() {
            failures
                .push("a client thread panicked: its transaction's answer is not in the record".to_string());
        }
    }
    for (_, _, what) in cluster.exited() {
        failures.push(what);
    }
    converge(&honest_endpoints, &monitor, &mut failures);
    monitor.stop();
    for thread in monitor_threads {
        let _ = thread.join();
    }
    let record = record::read(&record_path)?;
    let recorded = workload.counts.recorded.load(Ordering::Relaxed);
    let record_errors = workload.counts.record_errors.load(Ordering::Relaxed);
    if record_errors > 0 || record.len() as u64 != recorded {
        failures.push(format!(
            "the record is incomplete: {record_errors} answers could not be written, {recorded} were, {} read back",
            record.len()
        ));
    }
    let genesis_accounts: Vec<_> =
        genesis.accounts.iter().map(|account| (account.address, account.balance)).collect();
    let addresses: Vec<_> = genesis_accounts.iter().map(|(address, _)| *address).collect();
    eprintln!("chaos: checking {} transactions against every node's chain", record.len());
    let chains = checker::fetch(&honest_endpoints, &set, &addresses);
    let verdict = checker::check(&genesis_accounts, &record, &chains, options.rules);
    // What the nodes told the liveness monitor (which blocks carried transactions) against the
    // verified chain.
    if let Some(longest) = chains.iter().max_by_key(|chain| chain.blocks.len()) {
        let carries: Vec<bool> = longest.blocks.iter().map(|block| !block.txs.is_empty()).collect();
        failures.extend(monitor.disagreements(&carries, &names));
    }
    // A campaign in which nothing was acknowledged, or most answers were unknown, proves nothing
    // about lost transactions (a node that never reports a commit would pass it).
    if verdict.acknowledged == 0 {
        failures
            .push("no transaction was acknowledged as committed: the campaign proves nothing".to_string());
    }
    if verdict.unknown * 100 > (verdict.acknowledged + verdict.failed + verdict.unknown) {
        failures.push(format!(
            "{} of {} answers were unknown (more than 1%)",
            verdict.unknown,
            verdict.acknowledged + verdict.failed + verdict.unknown
        ));
    }
    let negative_controls = negative_controls(&genesis_accounts, &record, &chains, options.rules);
    for control in &negative_controls {
        if !control.caught {
            failures.push(format!(
                "negative control not caught: the checker passed a history with {}",
                control.planted
            ));
        }
    }
    let per_kind = summarize(&runs, 2 * vc_timeout_ms);
    let passed = verdict.passed() && failures.is_empty();
    Ok(Report {
        byzantine: options
            .byzantine
            .as_ref()
            .map(|byzantine| format!("{}: {}", byzantine.node, byzantine.modes)),
        seed: options.seed,
        duration_s: options.duration.as_secs(),
        wall_s: started.elapsed().as_secs(),
        faults_requested: options.kinds.clone(),
        view_change_timeout_ms: vc_timeout_ms,
        goal_resume_ms: 2 * vc_timeout_ms,
        resume_limit_ms: options.resume_limit.as_millis() as u64,
        faults: runs,
        per_kind,
        verdict,
        negative_controls,
        failures,
        passed,
        replay: format!(
            "scripts/chaos.sh --seed {} --duration {} --faults {}{}{}",
            options.seed,
            options.duration.as_secs(),
            options.kinds.iter().map(|kind| kind.name()).collect::<Vec<_>>().join(","),
            if options.rules.allow_replayed_copies { " --allow-replayed-copies" } else { "" },
            match &options.byzantine {
                Some(byzantine) =>
                    format!(" --byzantine {} --byzantine-node {}", byzantine.modes, byzantine.node),
                None => String::new(),
            }
        ),
    })
}

fn covered(runs: &[FaultRun], kinds: &[FaultKind]) -> bool {
    kinds.iter().all(|kind| runs.iter().any(|run| run.kind == *kind))
}

fn load_accounts(net: &Path) -> Result<Vec<KeyFile>> {
    let dir = net.join("accounts");
    let mut accounts = Vec::new();
    for index in 0.. {
        let path = dir.join(format!("account-{index}.json"));
        if !path.exists() {
            break;
        }
        accounts.push(KeyFile::read(&path).with_context(|| format!("{}", path.display()))?);
    }
    if accounts.len() < 2 {
        bail!("{}: fewer than two account keys", dir.display());
    }
    Ok(accounts)
}

/// Sleeps `duration` in small steps.
fn hold(duration: Duration) {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
    }
}

/// Injects `fault`, holds it, heals it, and measures when commits resume.
fn inject(
    cluster: &mut Cluster,
    monitor: &Monitor,
    fault: &Fault,
    options: &Options,
    failures: &mut Vec<String>,
) -> FaultRun {
    let names = cluster.names();
    let resume_limit = options.resume_limit;
    let mut notes = Vec::new();
    for (index, _, what) in cluster.exited() {
        failures.push(what.clone());
        notes.push(what);
        let _ = cluster.start(index);
    }
    let start_ms = monitor.now_ms();
    let validators: Vec<usize> = (0..cluster.validators()).collect();
    let primary = match fault.target {
        Target::Primary => cluster.primary().unwrap_or_else(|| {
            notes.push("no validator named the primary; chose v0".to_string());
            0
        }),
        _ => 0,
    };
    let duration = Duration::from_millis(fault.duration_ms);
    let mut description = fault.describe(&names);
    if fault.target == Target::Primary {
        description = description.replace("the primary", &format!("the primary ({})", names[primary]));
    }
    let mut problems: Vec<String> = Vec::new();
    let mut note = |result: Result<()>| {
        if let Err(error) = result {
            problems.push(format!("{error:#}"));
        }
    };
    match (&fault.kind, &fault.target) {
        (FaultKind::IsolatePrimary, _) => {
            for other in 0..cluster.nodes.len() {
                if other != primary {
                    note(cluster.cut(primary, other));
                }
            }
            hold(duration);
        }
        (FaultKind::Split, Target::Sides { left, right }) => {
            for a in left {
                for b in right {
                    note(cluster.cut(*a, *b));
                }
            }
            hold(duration);
        }
        (FaultKind::OneWay, Target::OneWay { node, inbound }) => {
            note(cluster.cut_one_way(*node, *inbound));
            hold(duration);
        }
        (FaultKind::Link, Target::Links { links }) => {
            for link in links {
                note(cluster.damage(
                    link.a,
                    link.b,
                    link.loss_percent,
                    link.duplicate_percent,
                    link.throttle_kbit,
                ));
                note(cluster.damage(
                    link.b,
                    link.a,
                    link.loss_percent,
                    link.duplicate_percent,
                    link.throttle_kbit,
                ));
                if link.delay_ms > 0 {
                    // One delayer per direction, each with its own jitter stream.
                    for (from, to) in [(link.a, link.b), (link.b, link.a)] {
                        let seed =
                            options.seed ^ (((fault.index as u64) << 16) | ((from as u64) << 8) | to as u64);
                        note(cluster.delay(from, to, link.delay_ms, link.jitter_ms, seed));
                    }
                }
            }
            hold(duration);
            let (counters, stop_problems) = cluster.stop_delayers();
            notes.extend(counters);
            for problem in stop_problems {
                note(Err(anyhow::anyhow!(problem)));
            }
        }
        (FaultKind::PausePrimary, _) => {
            note(cluster.pause(primary));
            hold(duration);
            note(cluster.resume(primary));
        }
        (FaultKind::KillPrimary, _) => {
            cluster.kill(primary);
            hold(duration);
            note(cluster.start(primary));
        }
        (FaultKind::Kill, Target::Nodes { nodes }) | (FaultKind::CrashQuorum, Target::Nodes { nodes }) => {
            for node in nodes {
                cluster.kill(*node);
            }
            if fault.kind == FaultKind::CrashQuorum {
                // f + 1 down: once what was in flight has landed, nothing may commit.
                hold(CRASH_SETTLE.min(duration));
                let alive: Vec<usize> = validators.iter().copied().filter(|v| !nodes.contains(v)).collect();
                let before = monitor.highest_of(&alive);
                hold(duration.saturating_sub(CRASH_SETTLE));
                let after = monitor.highest_of(&alive);
                if after > before {
                    failures.push(format!(
                        "{description}: the chain went on from height {before} to {after} with f+1 validators down"
                    ));
                }
                notes.push(format!("chain stood at {after} while f+1 were down"));
            } else {
                hold(duration);
            }
            for node in nodes {
                note(cluster.start(*node));
            }
        }
        (FaultKind::RestartAll, _) => {
            for node in 0..cluster.nodes.len() {
                cluster.kill(node);
            }
            hold(duration);
            for node in 0..cluster.nodes.len() {
                note(cluster.start(node));
            }
        }
        (FaultKind::Clock, Target::Clock { node, skew_s }) => match &options.faketime {
            Some(library) => {
                cluster.kill(*node);
                let env = [
                    ("LD_PRELOAD", library.display().to_string()),
                    ("FAKETIME", format!("{skew_s:+}")),
                    // Only the wall clock: timers (tokio's monotonic clock) run true.
                    ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
                ];
                note(cluster.start_with(*node, &env));
                hold(duration);
                cluster.kill(*node);
                note(cluster.start(*node));
            }
            None => {
                note(Err(anyhow::anyhow!("clock faults need libfaketime (scripts/chaos.sh installs it)")))
            }
        },
        (FaultKind::DiskFull, Target::SmallDisk) => {
            match options.small_disk.as_ref().and_then(|name| names.iter().position(|known| known == name)) {
                Some(node) => {
                    description = description.replace("the node on the small disk", &names[node]);
                    let data = cluster.nodes[node].home.join("data");
                    let filler = data.join("chaos-filler");
                    // Writes zeros until the filesystem is full (dd then fails: expected).
                    let _ = std::process::Command::new("dd")
                        .arg("if=/dev/zero")
                        .arg(format!("of={}", filler.display()))
                        .args(["bs=1M", "status=none"])
                        .stderr(std::process::Stdio::null())
                        .status();
                    // RocksDB keeps preallocated room in its write-ahead log, so a running node
                    // may not notice for a long time: crash it and start it on the full disk.
                    hold(duration / 2);
                    cluster.kill(node);
                    note(cluster.start(node));
                    hold(duration / 2);
                    for (index, status, what) in cluster.exited() {
                        if index == node && status.code().is_some_and(|code| code != 101) {
                            notes.push(format!("{} stopped when its disk was full ({status})", names[node]));
                        } else {
                            failures.push(format!("{description}: {what}"));
                        }
                    }
                    note(std::fs::remove_file(&filler).with_context(|| format!("{}", filler.display())));
                    if !cluster.running(node) {
                        note(cluster.start(node));
                    }
                }
                None => note(Err(anyhow::anyhow!(
                    "disk-full faults need a node on a small filesystem (--small-disk)"
                ))),
            }
        }
        (FaultKind::Quiet, _) => hold(duration),
        (kind, target) => problems.push(format!("no injection for {kind} at {target:?}")),
    }
    problems.extend(cluster.heal());
    let heal_ms = monitor.now_ms();
    let highest_at_heal = monitor.highest();
    let limit = Instant::now() + resume_limit;
    let mut resumed = None;
    while Instant::now() < limit {
        if let Some(at) = monitor.rose_after(heal_ms, highest_at_heal) {
            resumed = Some(at);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let resume_after_heal_ms = resumed.map(|at| at.saturating_sub(heal_ms));
    let longest_stall_ms = monitor.longest_gap(start_ms, resumed.unwrap_or_else(|| monitor.now_ms()));
    if resumed.is_none() {
        failures.push(format!(
            "{description}: no new block with transactions within {} s of the heal (height {highest_at_heal})",
            resume_limit.as_secs()
        ));
    }
    for problem in &problems {
        failures.push(format!("{description}: {problem}"));
    }
    notes.extend(problems);
    FaultRun {
        index: fault.index,
        kind: fault.kind,
        description,
        start_ms,
        heal_ms,
        resume_after_heal_ms,
        longest_stall_ms,
        notes,
    }
}

/// Waits until every node reports the same height and latest block hash, steady for 2 s.
fn converge(endpoints: &[crate::workload::Endpoint], monitor: &Monitor, failures: &mut Vec<String>) {
    let agent = crate::http::agent(Duration::from_secs(2));
    let deadline = Instant::now() + CONVERGE_LIMIT;
    let mut steady_since: Option<(Instant, String)> = None;
    let mut last_seen = Vec::new();
    while Instant::now() < deadline {
        let seen: Vec<String> = endpoints
            .iter()
            .map(|endpoint| match crate::http::get(&agent, &format!("{}/status", endpoint.rpc)) {
                Ok((200, status)) => format!("{}@{}", status["height"], status["latest_block_hash"]),
                Ok((status, _)) => format!("HTTP {status}"),
                Err(_) => "no answer".to_string(),
            })
            .collect();
        let agreed = seen.windows(2).all(|pair| pair[0] == pair[1]) && seen[0].contains('@');
        if agreed {
            match &steady_since {
                Some((since, state)) if *state == seen[0] => {
                    if since.elapsed() >= Duration::from_secs(2) {
                        eprintln!("chaos: every node at {} (highest seen {})", seen[0], monitor.highest());
                        return;
                    }
                }
                _ => steady_since = Some((Instant::now(), seen[0].clone())),
            }
        } else {
            steady_since = None;
        }
        last_seen = seen;
        std::thread::sleep(Duration::from_millis(250));
    }
    let states: Vec<String> = endpoints
        .iter()
        .zip(&last_seen)
        .map(|(endpoint, seen)| format!("{} {seen}", endpoint.name))
        .collect();
    failures.push(format!(
        "the nodes did not converge within {} s after the last heal: {}",
        CONVERGE_LIMIT.as_secs(),
        states.join(", ")
    ));
}

/// The same checker on the same chains with a planted fault: each must fail.
pub(crate) fn negative_controls(
    genesis: &[(tetrad_ledger::tx::Address, u64)],
    record: &[record::TxRecord],
    chains: &[checker::NodeChain],
    rules: checker::Rules,
) -> Vec<NegativeControl> {
    let mut controls = Vec::new();
    let mut unplanted: Vec<&str> = Vec::new();
    // Caught means caught by the detector the fault is planted for (a planted fault that only
    // trips some other check proves nothing about its own).
    let mut run = |planted: &str,
                   record: Vec<record::TxRecord>,
                   chains: &[checker::NodeChain],
                   detected: &dyn Fn(&checker::Verdict) -> bool| {
        let verdict = checker::check(genesis, &record, chains, rules);
        controls.push(NegativeControl {
            planted: planted.to_string(),
            caught: !verdict.passed() && detected(&verdict),
            first_violation: verdict.violations.first().cloned(),
        });
    };
    let names = |verdict: &checker::Verdict, words: &str| {
        verdict.violations.iter().any(|violation| violation.starts_with(words) || violation.contains(words))
    };
    // A committed transaction that is in the chain once: one whose replayed copy (the known
    // re-proposal issue, let through by --allow-replayed-copies) sits at the next height would
    // make "acknowledged at the wrong height" pass (seen with seed 1, --faults quiet
    // --byzantine equivocate: the first acknowledged transaction was at heights 1 and 5).
    let once = |entry: &record::TxRecord| once_hash(chains, &entry.hash);
    let committed = record
        .iter()
        .position(|entry| entry.answer == Answer::Committed && once(entry))
        .or_else(|| record.iter().position(|entry| entry.answer == Answer::Committed));
    if let Some(index) = committed {
        // A forged acknowledgment: a transaction the client "was told" committed that no block
        // holds (a copy of a real one with another hash).
        let mut forged = record.to_vec();
        let mut fake = record[index].clone();
        fake.hash.0[0] ^= 0xff;
        fake.hash.0[31] ^= 0x5a;
        forged.push(fake);
        run(
            "a forged acknowledgment (a committed answer for a transaction no block holds)",
            forged,
            chains,
            &|verdict| verdict.lost == 1,
        );
        // An acknowledgment whose height is off by one.
        let mut moved = record.to_vec();
        moved[index].height = moved[index].height.map(|height| height + 1);
        run("an acknowledgment at the wrong height", moved, chains, &|verdict| verdict.lost == 1);
        // A committed transaction the record never saw (the chain holds something nobody sent).
        let mut missing = record.to_vec();
        missing.remove(index);
        run("a committed transaction missing from the record (a phantom)", missing, chains, &|verdict| {
            verdict.phantom == 1
        });
    } else {
        unplanted.push("acknowledgment controls: no committed transaction to plant them on");
    }
    if chains.len() > 1 && chains[0].blocks.len() > 1 {
        // A node whose database was rolled back by one block while it kept answering.
        let mut rolled = chains.to_vec();
        rolled[1].blocks.pop();
        run("a node rolled back by one block", record.to_vec(), &rolled, &|verdict| {
            names(verdict, "not converged")
        });
        // A node that holds another block at some height.
        let mut forked = chains.to_vec();
        let victim = 2 % forked.len();
        let middle = forked[victim].blocks.len() / 2;
        if let Some(block) = forked[victim].blocks.get_mut(middle) {
            block.hash.0[0] ^= 1;
            run("a fork at one height", record.to_vec(), &forked, &|verdict| names(verdict, "fork: "));
        }
    } else {
        unplanted.push("chain controls: fewer than two chains of two blocks to plant them on");
    }
    // The last block of the first chain that carries a transaction the chain holds once.
    let carrying = chains.first().and_then(|chain| {
        chain.blocks.iter().rposition(|block| block.txs.iter().any(|tx| once_hash(chains, tx)))
    });
    if let Some(index) = carrying {
        // Every node serves that block without its last transaction, the tx root, count and
        // hash recomputed (and every later link): only the batch digest under the certificate
        // can tell, or, where the node names the batch's transactions (the block left a copy
        // out), the replay: the dropped one had its sender's next nonce.
        let mut dropped = chains.to_vec();
        for chain in &mut dropped {
            if let Some(block) = chain.blocks.get_mut(index) {
                block.txs.pop();
                checker::rehash(&mut chain.blocks, index);
            }
        }
        run(
            "a transaction dropped from a block on every node, the header rebuilt",
            record.to_vec(),
            &dropped,
            &|verdict| {
                (verdict.bad_blocks > 0 && names(verdict, "batch digest")) || names(verdict, "left out")
            },
        );
        // Every node's header of that height carries another state root.
        let mut diverged = chains.to_vec();
        for chain in &mut diverged {
            if let Some(block) = chain.blocks.get_mut(index) {
                block.header.state_root.0[0] ^= 0x5a;
                checker::rehash(&mut chain.blocks, index);
            }
        }
        run(
            "a header whose state root is not the replay's, on every node",
            record.to_vec(),
            &diverged,
            &|verdict| verdict.state_mismatches > 0,
        );
    } else {
        unplanted.push("block controls: no block with a transaction to plant them on");
    }
    // A node serves the balances it holds as those of the height before a transfer that
    // executed (an acknowledged one, in the chain once): the replay there differs at least in
    // the sender's nonce.
    let executed = record
        .iter()
        .filter(|entry| entry.answer == Answer::Committed && entry.executed && once(entry))
        .filter_map(|entry| entry.height)
        .max();
    match executed {
        Some(height) if !chains.is_empty() && !chains[0].accounts.is_empty() => {
            let mut stale = chains.to_vec();
            stale[0].accounts_height = height - 1;
            run("a node's balances named for an earlier height", record.to_vec(), &stale, &|verdict| {
                names(verdict, "balance: ")
            });
        }
        _ => {
            unplanted.push("balance control: no executed acknowledged transfer or no balances to plant it on")
        }
    }
    // A control that could not be planted proves nothing: it counts as not caught.
    controls.extend(unplanted.into_iter().map(|planted| NegativeControl {
        planted: planted.to_string(),
        caught: false,
        first_violation: None,
    }));
    controls
}

/// `hash` is in the first chain exactly once.
fn once_hash(chains: &[checker::NodeChain], hash: &tetrad_consensus::Digest) -> bool {
    chains.first().is_some_and(|chain| {
        chain.blocks.iter().flat_map(|block| &block.txs).filter(|tx| *tx == hash).count() == 1
    })
}

fn summarize(runs: &[FaultRun], goal_ms: u64) -> BTreeMap<FaultKind, KindSummary> {
    let mut per_kind: BTreeMap<FaultKind, KindSummary> = BTreeMap::new();
    for run in runs {
        let entry = per_kind.entry(run.kind).or_insert(KindSummary {
            injected: 0,
            longest_stall_ms: 0,
            longest_resume_after_heal_ms: Some(0),
            within_goal: true,
        });
        entry.injected += 1;
        entry.longest_stall_ms = entry.longest_stall_ms.max(run.longest_stall_ms);
        entry.longest_resume_after_heal_ms =
            match (entry.longest_resume_after_heal_ms, run.resume_after_heal_ms) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        entry.within_goal &= run.resume_after_heal_ms.is_some_and(|ms| ms <= goal_ms);
    }
    per_kind
}
