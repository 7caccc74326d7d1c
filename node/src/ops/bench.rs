//! `tetrad bench`: throughput and latency of a real local network, beside this machine's
//! ed25519 verification rate measured in the same run.
//!
//! 1. Measures single and batched ed25519 verification on one core (before the nodes start).
//! 2. Creates a testnet (release `tetrad` processes, one per validator) with K funded accounts.
//! 3. Pre-signs N transfers and encodes them as JSON-RPC `submit_transactions` calls, before the
//!    clock starts.
//! 4. Drives them through the RPC of every validator in turn (this process is separate from the
//!    nodes), open-loop at the rate the network absorbs or at a fixed `--rate`.
//! 5. Follows `/events` of validator 0; for every committed block it reads the block's
//!    transaction list, which gives each transaction's submit-to-commit latency and the
//!    committed rate over the steady window (the middle 80% of the commits).
//! 6. Reads per-node CPU time and peak RSS from `/proc`, prints a table, writes JSON if asked,
//!    and stops every process it started.
//!
//! With `--flood-keys K` a flood runs beside the honest load, at `--flood-rate` junk tx/s
//! through every validator's RPC: transfers behind a nonce gap from K funded junk accounts
//! (never proposable; each account may queue some), key rotations from fresh keys that are no
//! validator's, and transfers from fresh keys with no account, all validly signed and
//! pre-signed. Latency percentiles are of the honest transactions only; the table adds what the
//! nodes did with the junk (admitted, refused by error code). Run once without and once with
//! the flood to compare honest latency.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tetrad_consensus::crypto::{self, Domain};
use tetrad_consensus::{Digest, SecretKey};
use tetrad_ledger::scratch::ScratchDir;
use tetrad_ledger::tx::{Tx, TxBody, TxKind, chain_tag};

use crate::daemon::timing;
use crate::ops::testnet::{self, TestnetPlan};

pub struct BenchArgs {
    pub validators: u16,
    pub accounts: u64,
    pub txs: u64,
    pub rate: Option<u64>,
    pub json: Option<PathBuf>,
    pub base_port: u16,
    pub submitters: usize,
    pub timeout_s: u64,
    /// Keep the network (homes and logs) here instead of a scratch directory removed afterwards.
    pub keep_dir: Option<PathBuf>,
    /// Junk keys of the flood scenario (0: no flood), and its junk tx/s.
    pub flood_keys: u64,
    pub flood_rate: u64,
}

/// Most transactions per `submit_transactions` call (open loop); at a fixed rate a call holds
/// what is due in 10 ms, so latency is not measured in lumps.
const CALL_TXS_MAX: usize = 500;

fn call_txs(rate: Option<u64>) -> usize {
    rate.map(|rate| (rate / 100).clamp(1, CALL_TXS_MAX as u64) as usize).unwrap_or(CALL_TXS_MAX)
}
/// Open loop: most transactions submitted but not yet committed.
const IN_FLIGHT_MAX: u64 = 40_000;

#[derive(Serialize)]
pub struct Report {
    pub validators: u16,
    pub accounts: u64,
    pub txs_submitted: u64,
    pub txs_committed: u64,
    pub offered_rate: Option<u64>,
    pub committed_tx_per_s: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p90: f64,
    pub latency_ms_p99: f64,
    pub view_changes: u64,
    pub cores: usize,
    pub verify_single_per_core: f64,
    pub verify_batched_per_core: f64,
    pub verify_bound_tx_per_s: f64,
    pub ratio_to_bound: f64,
    /// Measured inside the validators during the run (`tetrad_tx_check_*` of their `/metrics`):
    /// transactions checked per CPU-second of the checking threads, the mean batch they were
    /// checked in, and the bound and ratio from that rate (`cores × rate ÷ validators`).
    pub verify_in_run_per_core: f64,
    pub verify_in_run_batch_mean: f64,
    pub verify_in_run_bound_tx_per_s: f64,
    pub ratio_to_in_run_bound: f64,
    /// The validators' CPU time per committed transaction for its signature checks and its
    /// execution (summed over validators), and what the cores could commit if that were all
    /// they did: the bound with execution counted, and the ratio to it.
    pub check_and_execute_cpu_us_per_tx: f64,
    pub check_and_execute_bound_tx_per_s: f64,
    pub ratio_to_check_and_execute_bound: f64,
    pub nodes: Vec<NodeUsage>,
    pub submit_errors: u64,
    pub duration_s: f64,
    pub flood: Option<FloodReport>,
    /// The node whose events and timing the breakdown follows.
    pub observed_node: String,
    /// Where the time of each committed transaction went, phase by phase (they add up to the
    /// submit→commit latency).
    pub phases: Vec<PhaseReport>,
    /// Committed transactions with a breakdown, and of those the ones the observed node never
    /// had in its mempool (their admission time is counted under `mempool`).
    pub txs_with_timing: u64,
    pub txs_not_pooled_at_observed_node: u64,
    /// The client's view of admission: a `submit_transactions` call's round trip.
    pub submit_call_ms_p50: f64,
    pub submit_call_ms_p99: f64,
    /// Transactions a node refused as busy (backpressure) and the bench submitted again.
    pub busy_refusals: u64,
}

/// One phase of the latency breakdown, over the committed transactions.
#[derive(Serialize)]
pub struct PhaseReport {
    pub phase: &'static str,
    pub from_to: &'static str,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

/// The phases of the breakdown: name, and from what to what.
const PHASES: [(&str, &str); 7] = [
    ("admission", "submitted by the client → in the observed node's mempool (RPC, verification, gossip)"),
    ("mempool", "in the mempool → proposed by the primary"),
    ("pre_prepare", "proposed → pre-prepare accepted at the observed node"),
    ("prepare", "pre-prepare accepted → prepared (2f prepares)"),
    ("commit", "prepared → committed (2f+1 commits)"),
    ("execute", "committed → executed and written"),
    ("event", "executed → block event seen by the client"),
];

/// What the observer collects per committed transaction.
#[derive(Default)]
struct Samples {
    latencies_ms: Vec<f64>,
    phases_ms: [Vec<f64>; PHASES.len()],
    with_timing: u64,
    not_pooled: u64,
}

/// What the nodes did with the flood's junk.
#[derive(Serialize, Default)]
pub struct FloodReport {
    pub keys: u64,
    pub offered_rate: u64,
    pub submitted: u64,
    pub admitted: u64,
    /// Refusals by error name (`not_validator`, `no_account`, `nonce_too_far_ahead`, …).
    pub refused: std::collections::BTreeMap<String, u64>,
}

#[derive(Serialize)]
pub struct NodeUsage {
    pub name: String,
    pub cpu_percent: f64,
    pub peak_rss_mb: f64,
}

/// Deterministic account key `index` of bench seed `seed`.
pub fn account_key(seed: u64, index: u64) -> SecretKey {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&index.to_le_bytes());
    bytes[16] = 0xbe;
    SecretKey::from_seed(bytes)
}

/// Verifications per second on this thread: one at a time, and in batches of 64.
fn verify_rates() -> (f64, f64) {
    let chain = Digest::of(b"bench verify");
    let items: Vec<_> = (0..1024u64)
        .map(|i| {
            let key = account_key(7, i);
            let digest = crypto::signing_digest(Domain::Transaction, &chain, &i.to_le_bytes());
            (
                digest,
                key.public_key().verifying_key().unwrap_or_else(|_| unreachable!()),
                key.sign_digest(&digest),
            )
        })
        .collect();
    let started = Instant::now();
    let mut single = 0u64;
    while started.elapsed() < Duration::from_millis(1500) {
        for (digest, key, signature) in &items[..64] {
            if crypto::verify_with(key, digest, signature).is_ok() {
                single += 1;
            }
        }
    }
    let single_rate = single as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut batched = 0u64;
    while started.elapsed() < Duration::from_millis(1500) {
        for chunk in items.chunks(64) {
            if crypto::verify_batch(chunk).is_ok() {
                batched += chunk.len() as u64;
            }
        }
    }
    (single_rate, batched as f64 / started.elapsed().as_secs_f64())
}

struct Nodes {
    children: Vec<(String, Child)>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
        for (_, child) in &mut self.children {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .into()
}

fn get_json(agent: &ureq::Agent, url: &str) -> Result<Value> {
    let mut response = agent.get(url).call().with_context(|| format!("GET {url}"))?;
    let text = response.body_mut().read_to_string()?;
    serde_json::from_str(&text).with_context(|| format!("GET {url}: {text}"))
}

/// CPU seconds used by a process so far, and its peak RSS in MB.
fn usage(pid: u32) -> (f64, f64) {
    let ticks = 100.0; // USER_HZ on Linux
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = stat.rsplit_once(") ")?.1.split_whitespace().collect::<Vec<_>>();
            let utime: f64 = after.get(11)?.parse().ok()?;
            let stime: f64 = after.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
            let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / 1024.0)
        })
        .unwrap_or(0.0);
    (cpu, rss)
}

/// The validators' own count of their transaction signature checks (`tetrad_tx_check_*`).
#[derive(Default)]
struct InRunChecks {
    checks: f64,
    batches: f64,
    cpu_us: f64,
    /// Per node: CPU microseconds of checks and execution per transaction it executed, summed.
    work_us_per_tx: f64,
}

impl InRunChecks {
    /// Adds one node's `/metrics` text.
    fn add(&mut self, metrics: &str) {
        let (mut check_us, mut execute_us, mut executed) = (0.0, 0.0, 0.0);
        for line in metrics.lines() {
            let mut parts = line.split_whitespace();
            let (Some(name), Some(value)) = (parts.next(), parts.next()) else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            match name {
                "tetrad_tx_checks_total" => self.checks += value,
                "tetrad_tx_check_batches_total" => self.batches += value,
                "tetrad_tx_check_cpu_microseconds_total" => check_us += value,
                "tetrad_execute_cpu_microseconds_total" => execute_us += value,
                "tetrad_committed_txs_total" => executed += value,
                _ => {}
            }
        }
        self.cpu_us += check_us;
        if executed > 0.0 {
            self.work_us_per_tx += (check_us + execute_us) / executed;
        }
    }

    /// CPU microseconds of all validators per committed transaction (NaN if none was counted).
    fn work_us_per_tx(&self) -> f64 {
        if self.work_us_per_tx > 0.0 { self.work_us_per_tx } else { f64::NAN }
    }

    /// Transactions checked per CPU-second (NaN if nothing was counted).
    fn per_core(&self) -> f64 {
        if self.cpu_us > 0.0 { self.checks / (self.cpu_us / 1e6) } else { f64::NAN }
    }

    fn batch_mean(&self) -> f64 {
        if self.batches > 0.0 { self.checks / self.batches } else { f64::NAN }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn run(args: &BenchArgs) -> Result<Report> {
    if args.validators == 0 || args.accounts == 0 || args.txs == 0 {
        bail!("--validators, --accounts and --txs must be positive");
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    eprintln!("measuring ed25519 verification on one core …");
    let (verify_single, verify_batched) = verify_rates();
    let bound = cores as f64 * verify_batched / f64::from(args.validators);
    eprintln!(
        "  single {verify_single:.0}/s, batched {verify_batched:.0}/s per core; bound {cores} × {verify_batched:.0} ÷ {} = {bound:.0} tx/s",
        args.validators
    );

    let scratch = ScratchDir::new("bench").context("scratch directory")?;
    let seed = 0x7e7a_d000_u64;
    let plan = TestnetPlan {
        validators: args.validators,
        // The flood's junk accounts are funded too (junk from an account that exists is the kind
        // admission cannot refuse outright).
        accounts: args.accounts + args.flood_keys,
        balance: 1_000_000_000,
        dir: args.keep_dir.clone().unwrap_or_else(|| scratch.join("net")),
        base_port: args.base_port,
        chain_id: "tetrad-bench".into(),
        account_seed: Some(seed),
        checkpoint_interval: None,
        watermark_window: None,
        view_change_timeout_ms: None,
        hosts: Vec::new(),
    };
    eprintln!("creating a {}-validator network with {} accounts …", args.validators, args.accounts);
    let file = testnet::create(&plan)?;
    let genesis_hash = Digest::from_hex(&file.genesis_hash)?;
    let exe = std::env::current_exe()?;
    let mut nodes = Nodes { children: Vec::new() };
    for node in &file.nodes {
        let log = std::fs::File::create(node.home.join("node.log"))?;
        let child = Command::new(&exe)
            .args(["run", "--home"])
            .arg(&node.home)
            // Quiet by default; `RUST_LOG=info scripts/bench.sh --keep-dir D` keeps the detail.
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        nodes.children.push((node.name.clone(), child));
    }
    let urls: Vec<String> = file.nodes.iter().map(|node| node.rpc_url.clone()).collect();
    let http = agent();
    let deadline = Instant::now() + Duration::from_secs(30);
    for url in &urls {
        while get_json(&http, &format!("{url}/status"))
            .map(|s| s["peers"].as_u64() < Some(u64::from(args.validators) - 1))
            .unwrap_or(true)
        {
            if Instant::now() > deadline {
                bail!("{url} did not come up with all peers connected");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    eprintln!("pre-signing {} transfers …", args.txs);
    let (calls, hashes) = presign(args, seed, &genesis_hash);
    let total = args.txs;
    let flood_calls = if args.flood_keys > 0 {
        eprintln!("pre-signing the flood's junk ({} keys, {} tx/s) …", args.flood_keys, args.flood_rate);
        flood_presign(args, seed, &genesis_hash)
    } else {
        Vec::new()
    };

    // Commit observer. Submit and event times are wall-clock microseconds (as are the nodes'
    // phase stamps): every process on this machine reads the same clock.
    let submitted_at: Arc<Mutex<HashMap<String, u64>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(total as usize)));
    let committed = Arc::new(AtomicU64::new(0));
    let samples: Arc<Mutex<Samples>> = Arc::new(Mutex::new(Samples::default()));
    let call_times: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let commit_times: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let observer = {
        let (url, submitted_at, committed, samples, commit_times, stop) = (
            urls[0].clone(),
            submitted_at.clone(),
            committed.clone(),
            samples.clone(),
            commit_times.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || observe(&url, &submitted_at, &committed, &samples, &commit_times, &stop))
    };
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let cpu_before: Vec<f64> = nodes.children.iter().map(|(_, child)| usage(child.id()).0).collect();
    let submitted = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let next_call = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(calls);
    let hashes = Arc::new(hashes);
    let flood = (!flood_calls.is_empty()).then(|| {
        let (urls, stop, keys, rate) = (urls.clone(), stop.clone(), args.flood_keys, args.flood_rate);
        std::thread::spawn(move || flood_run(&flood_calls, &urls, started, rate, keys, &stop))
    });
    let busy = Arc::new(AtomicU64::new(0));
    let mut submitters = Vec::new();
    for _ in 0..args.submitters.max(1) {
        let busy = busy.clone();
        let (calls, hashes, urls, submitted, committed, errors, next_call, submitted_at, stop, call_times) = (
            calls.clone(),
            hashes.clone(),
            urls.clone(),
            submitted.clone(),
            committed.clone(),
            errors.clone(),
            next_call.clone(),
            submitted_at.clone(),
            stop.clone(),
            call_times.clone(),
        );
        let rate = args.rate;
        submitters.push(std::thread::spawn(move || {
            let http = agent();
            loop {
                let index = next_call.fetch_add(1, Ordering::SeqCst) as usize;
                if index >= calls.len() || stop.load(Ordering::SeqCst) {
                    break;
                }
                let txs_before = (index * call_txs(rate)) as u64;
                match rate {
                    // Fixed rate: this call's transactions are due at txs_before / rate.
                    Some(rate) => {
                        let due = started + Duration::from_secs_f64(txs_before as f64 / rate as f64);
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                    }
                    // Open loop: as fast as the network absorbs, with a cap on what is in flight.
                    None => {
                        while submitted
                            .load(Ordering::SeqCst)
                            .saturating_sub(committed.load(Ordering::SeqCst))
                            > IN_FLIGHT_MAX
                        {
                            if stop.load(Ordering::SeqCst) {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                }
                let now = timing::unix_us();
                {
                    let mut map = submitted_at.lock().unwrap_or_else(|p| p.into_inner());
                    for hash in &hashes[index] {
                        map.insert(hash.clone(), now);
                    }
                }
                let url = format!("{}/", urls[index % urls.len()]);
                let refused =
                    submit_retrying_when_busy(&http, &url, &calls[index], hashes[index].len(), &busy, &stop);
                call_times
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(timing::unix_us().saturating_sub(now) as f64 / 1000.0);
                errors.fetch_add(refused as u64, Ordering::SeqCst);
                submitted.fetch_add(hashes[index].len() as u64, Ordering::SeqCst);
            }
        }));
    }

    // Progress, until everything accepted has committed or the time limit passes.
    let limit = Duration::from_secs(args.timeout_s);
    let mut last = (Instant::now(), 0u64);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let done = committed.load(Ordering::SeqCst);
        let sent = submitted.load(Ordering::SeqCst);
        let refused = errors.load(Ordering::SeqCst);
        let rate = (done - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), done);
        eprintln!(
            "  {:>5.1} s  submitted {sent:>8}  committed {done:>8}  {rate:>8.0} tx/s  refused {refused}",
            started.elapsed().as_secs_f64()
        );
        if sent >= total && done + refused >= total {
            break;
        }
        if started.elapsed() > limit {
            eprintln!("time limit reached");
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for submitter in submitters {
        let _ = submitter.join();
    }
    let flood = flood.and_then(|flood| flood.join().ok());
    let elapsed = started.elapsed();
    let usages: Vec<NodeUsage> = nodes
        .children
        .iter()
        .zip(&cpu_before)
        .map(|((name, child), before)| {
            let (cpu, rss) = usage(child.id());
            NodeUsage {
                name: name.clone(),
                cpu_percent: 100.0 * (cpu - before) / elapsed.as_secs_f64(),
                peak_rss_mb: rss,
            }
        })
        .collect();
    let view_changes =
        get_json(&http, &format!("{}/status", urls[0])).map(|s| s["view"].as_u64().unwrap_or(0)).unwrap_or(0);
    // What each node counted: its signature checks (the in-run verification rate), and with
    // --keep-dir everything (drops by reason, queue waits) beside its log.
    let mut checks = InRunChecks::default();
    for (node, url) in file.nodes.iter().zip(&urls) {
        if let Ok(mut response) = http.get(&format!("{url}/metrics")).call()
            && let Ok(text) = response.body_mut().read_to_string()
        {
            checks.add(&text);
            if args.keep_dir.is_some() {
                let _ = std::fs::write(node.home.join("metrics.txt"), text);
            }
        }
    }
    // Stopping the nodes ends the event stream the observer is blocked on.
    drop(nodes);
    let _ = observer.join();

    let times = commit_times.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let committed_total = committed.load(Ordering::SeqCst);
    let committed_rate = steady_rate(&times, committed_total);
    let mut samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    let mut latencies = std::mem::take(&mut samples.latencies_ms);
    latencies.sort_by(f64::total_cmp);
    let phases = PHASES
        .iter()
        .zip(samples.phases_ms.iter_mut())
        .map(|((phase, from_to), values)| {
            values.sort_by(f64::total_cmp);
            let mean =
                if values.is_empty() { f64::NAN } else { values.iter().sum::<f64>() / values.len() as f64 };
            PhaseReport {
                phase,
                from_to,
                mean_ms: mean,
                p50_ms: percentile(values, 0.50),
                p90_ms: percentile(values, 0.90),
                p99_ms: percentile(values, 0.99),
            }
        })
        .collect();
    let mut call_times = call_times.lock().unwrap_or_else(|p| p.into_inner()).clone();
    call_times.sort_by(f64::total_cmp);
    let in_run_bound = cores as f64 * checks.per_core() / f64::from(args.validators);
    let work_bound = cores as f64 * 1e6 / checks.work_us_per_tx();
    let report = Report {
        validators: args.validators,
        accounts: args.accounts,
        txs_submitted: submitted.load(Ordering::SeqCst),
        txs_committed: committed_total,
        offered_rate: args.rate,
        committed_tx_per_s: committed_rate,
        latency_ms_p50: percentile(&latencies, 0.50),
        latency_ms_p90: percentile(&latencies, 0.90),
        latency_ms_p99: percentile(&latencies, 0.99),
        view_changes,
        cores,
        verify_single_per_core: verify_single,
        verify_batched_per_core: verify_batched,
        verify_bound_tx_per_s: bound,
        ratio_to_bound: committed_rate / bound,
        verify_in_run_per_core: checks.per_core(),
        verify_in_run_batch_mean: checks.batch_mean(),
        verify_in_run_bound_tx_per_s: in_run_bound,
        ratio_to_in_run_bound: committed_rate / in_run_bound,
        check_and_execute_cpu_us_per_tx: checks.work_us_per_tx(),
        check_and_execute_bound_tx_per_s: work_bound,
        ratio_to_check_and_execute_bound: committed_rate / work_bound,
        nodes: usages,
        submit_errors: errors.load(Ordering::SeqCst),
        duration_s: elapsed.as_secs_f64(),
        flood,
        observed_node: file.nodes.first().map(|node| node.name.clone()).unwrap_or_default(),
        phases,
        txs_with_timing: samples.with_timing,
        txs_not_pooled_at_observed_node: samples.not_pooled,
        submit_call_ms_p50: percentile(&call_times, 0.50),
        submit_call_ms_p99: percentile(&call_times, 0.99),
        busy_refusals: busy.load(Ordering::SeqCst),
    };
    print_table(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("{}: cannot write", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(report)
}

/// Pre-signed `submit_transactions` bodies of [`CALL_TXS`] transfers each, and their hashes.
/// Transfer i: sender i mod K (nonce i div K) pays 1 to the next account.
fn presign(args: &BenchArgs, seed: u64, genesis_hash: &Digest) -> (Vec<String>, Vec<Vec<String>>) {
    let keys: Vec<SecretKey> = (0..args.accounts).map(|index| account_key(seed, index)).collect();
    let addresses: Vec<_> = keys.iter().map(SecretKey::public_key).collect();
    let chain = chain_tag(genesis_hash);
    let per_call = call_txs(args.rate);
    let call_count = (args.txs as usize).div_ceil(per_call);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let per_thread = call_count.div_ceil(threads);
    let keys = Arc::new(keys);
    let addresses = Arc::new(addresses);
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let (keys, addresses, genesis_hash) = (keys.clone(), addresses.clone(), *genesis_hash);
            let total = args.txs;
            let accounts = args.accounts;
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for call in thread * per_thread..((thread + 1) * per_thread).min(call_count) {
                    let first = (call * per_call) as u64;
                    let last = (first + per_call as u64).min(total);
                    let txs: Vec<Tx> = (first..last)
                        .map(|i| {
                            let sender = (i % accounts) as usize;
                            let body = TxBody {
                                chain,
                                from: addresses[sender],
                                nonce: i / accounts,
                                kind: TxKind::Transfer { to: addresses[(sender + 1) % addresses.len()], amount: 1 },
                            };
                            Tx::sign(body, &keys[sender], &genesis_hash)
                        })
                        .collect();
                    let hashes: Vec<String> = txs.iter().map(|tx| tx.hash().to_hex()).collect();
                    let body = json!({"jsonrpc": "2.0", "id": call, "method": "submit_transactions", "params": {"txs": txs}});
                    out.push((body.to_string(), hashes));
                }
                out
            })
        })
        .collect();
    let mut calls = Vec::with_capacity(call_count);
    let mut hashes = Vec::with_capacity(call_count);
    for handle in handles {
        for (call, call_hashes) in handle.join().unwrap_or_default() {
            calls.push(call);
            hashes.push(call_hashes);
        }
    }
    (calls, hashes)
}

/// The JSON-RPC code of a busy (overloaded) node, and those that mean "already admitted" when
/// a call is submitted again.
const CODE_OVERLOADED: i64 = -32021;
const CODES_ALREADY_ADMITTED: [i64; 2] = [-32007, -32003];

/// Submits one pre-encoded call; while the node answers busy for any of its transactions, waits
/// and submits the whole call again (what a client should do; transactions admitted by an earlier
/// try then answer duplicate or stale nonce, which counts as admitted). The latency clock keeps
/// running from the first try. Returns how many transactions were refused for good.
fn submit_retrying_when_busy(
    http: &ureq::Agent,
    url: &str,
    body: &str,
    count: usize,
    busy: &AtomicU64,
    stop: &AtomicBool,
) -> usize {
    let mut pause = Duration::from_millis(5);
    let mut admitted_before = vec![false; count];
    loop {
        let Ok(mut response) = http.post(url).header("content-type", "application/json").send(body) else {
            return count;
        };
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let Some(items) = value["result"].as_array() else { return count };
        let mut busy_now = 0usize;
        let mut refused = 0usize;
        for (index, item) in items.iter().enumerate() {
            let code = item["error"]["code"].as_i64();
            let retried = admitted_before.get(index).copied().unwrap_or(false);
            match code {
                None => {
                    if let Some(slot) = admitted_before.get_mut(index) {
                        *slot = true;
                    }
                }
                Some(CODE_OVERLOADED) => busy_now += 1,
                Some(code) if retried && CODES_ALREADY_ADMITTED.contains(&code) => {}
                Some(_) => refused += 1,
            }
        }
        if busy_now == 0 || stop.load(Ordering::SeqCst) {
            return refused + busy_now;
        }
        busy.fetch_add(busy_now as u64, Ordering::SeqCst);
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Follows `/events`: one thread reads the stream and stamps each block event as it arrives;
/// this one reads each block's timing from the same node and breaks every transaction's latency
/// into phases (falling back to the block's transaction list if the node kept no timing).
fn observe(
    url: &str,
    submitted_at: &Mutex<HashMap<String, u64>>,
    committed: &AtomicU64,
    samples: &Mutex<Samples>,
    commit_times: &Mutex<Vec<(Instant, u64)>>,
    stop: &AtomicBool,
) {
    let http = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let Ok(response) = http.get(&format!("{url}/events")).call() else { return };
    let (events_tx, events) = std::sync::mpsc::channel::<(u64, u64, Instant)>();
    // Reading the stream apart from the block queries: an event is stamped when it arrives, not
    // when the previous block's query is done.
    std::thread::spawn(move || {
        let reader = BufReader::new(response.into_body().into_reader());
        for line in reader.lines() {
            let Ok(line) = line else { break };
            let Some(data) = line.strip_prefix("data: ") else { continue };
            let (seen_us, seen) = (timing::unix_us(), Instant::now());
            let Ok(event) = serde_json::from_str::<Value>(data) else { continue };
            let Some(height) = event["height"].as_u64() else { continue };
            if events_tx.send((height, seen_us, seen)).is_err() {
                break;
            }
        }
    });
    let query = agent();
    for (height, seen_us, seen) in events {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let (txs, timing): (Vec<String>, Option<Value>) =
            match get_json(&query, &format!("{url}/timing/blocks/{height}")) {
                Ok(timing) if timing["txs"].is_array() => {
                    let txs = timing["txs"]
                        .as_array()
                        .map(|txs| {
                            txs.iter().filter_map(|tx| tx["hash"].as_str().map(str::to_string)).collect()
                        })
                        .unwrap_or_default();
                    (txs, Some(timing))
                }
                _ => {
                    let Ok(block) = get_json(&query, &format!("{url}/blocks/{height}")) else { continue };
                    let txs = block["txs"]
                        .as_array()
                        .map(|txs| txs.iter().filter_map(|tx| tx.as_str().map(str::to_string)).collect())
                        .unwrap_or_default();
                    (txs, None)
                }
            };
        {
            let map = submitted_at.lock().unwrap_or_else(|p| p.into_inner());
            let mut samples = samples.lock().unwrap_or_else(|p| p.into_inner());
            for (index, hash) in txs.iter().enumerate() {
                let Some(submitted) = map.get(hash).copied() else { continue };
                samples.latencies_ms.push(seen_us.saturating_sub(submitted) as f64 / 1000.0);
                let Some(timing) = &timing else { continue };
                let pooled = timing["txs"][index]["pooled_us"].as_u64();
                let stamps = [
                    Some(submitted),
                    pooled,
                    timing["proposed_us"].as_u64(),
                    timing["pre_prepared_us"].as_u64(),
                    timing["prepared_us"].as_u64(),
                    timing["committed_us"].as_u64(),
                    timing["executed_us"].as_u64(),
                    Some(seen_us),
                ];
                samples.with_timing += 1;
                if pooled.is_none() {
                    samples.not_pooled += 1;
                }
                for (phase, duration) in phase_durations_us(&stamps).into_iter().enumerate() {
                    samples.phases_ms[phase].push(duration as f64 / 1000.0);
                }
            }
        }
        committed.fetch_add(txs.len() as u64, Ordering::SeqCst);
        commit_times.lock().unwrap_or_else(|p| p.into_inner()).push((seen, txs.len() as u64));
    }
}

/// The time between consecutive stamps (the first is the submission, the last the event). A
/// missing stamp, or one earlier than the stamp before it (the proposal's timestamp has
/// millisecond precision; a transaction may reach the observed node's mempool by gossip after
/// the proposal), counts as that earlier stamp: its phase is 0 and the time goes to the next
/// one. So the phases always add up to the whole latency.
fn phase_durations_us(stamps: &[Option<u64>; PHASES.len() + 1]) -> [u64; PHASES.len()] {
    let mut durations = [0u64; PHASES.len()];
    let mut previous = stamps[0].unwrap_or(0);
    for (phase, stamp) in stamps[1..].iter().enumerate() {
        let at = stamp.unwrap_or(previous).max(previous);
        durations[phase] = at - previous;
        previous = at;
    }
    durations
}

/// Committed tx/s between the moments 10% and 90% of all commits had been observed.
fn steady_rate(times: &[(Instant, u64)], total: u64) -> f64 {
    if total == 0 || times.len() < 2 {
        return 0.0;
    }
    let (low, high) = (total / 10, total - total / 10);
    let mut seen = 0u64;
    let (mut start, mut end) = (None, None);
    let mut counted = 0u64;
    for (at, count) in times {
        let before = seen;
        seen += count;
        if start.is_none() && seen > low {
            start = Some((*at, before));
        }
        if end.is_none() && seen >= high {
            end = Some((*at, seen));
        }
    }
    if let (Some((t0, c0)), Some((t1, c1))) = (start, end) {
        counted = c1 - c0;
        let seconds = t1.duration_since(t0).as_secs_f64();
        if seconds > 0.0 {
            return counted as f64 / seconds;
        }
    }
    counted as f64
}

fn print_table(report: &Report) {
    println!();
    println!(
        "tetrad bench: {} validators, {} accounts, {} cores",
        report.validators, report.accounts, report.cores
    );
    println!(
        "{:<42} {}",
        "offered",
        report.offered_rate.map(|r| format!("{r} tx/s")).unwrap_or_else(|| "open loop".into())
    );
    println!(
        "{:<42} {} / {} ({} refused)",
        "committed / submitted", report.txs_committed, report.txs_submitted, report.submit_errors
    );
    println!("{:<42} {:.0} tx/s", "committed throughput (steady window)", report.committed_tx_per_s);
    println!(
        "{:<42} {:.1} / {:.1} / {:.1} ms",
        "latency submit→commit p50 / p90 / p99",
        report.latency_ms_p50,
        report.latency_ms_p90,
        report.latency_ms_p99
    );
    println!("{:<42} {}", "view changes", report.view_changes);
    println!("{:<42} {}", "busy refusals (submitted again)", report.busy_refusals);
    println!(
        "{:<42} {:.1} / {:.1} ms",
        "submit call round trip p50 / p99", report.submit_call_ms_p50, report.submit_call_ms_p99
    );
    println!(
        "breakdown ({} of {} committed txs, phases at {}; {} never in its mempool):",
        report.txs_with_timing,
        report.txs_committed,
        report.observed_node,
        report.txs_not_pooled_at_observed_node
    );
    println!("  {:<12} {:>8} {:>8} {:>8} {:>8}   from → to (ms)", "phase", "mean", "p50", "p90", "p99");
    for phase in &report.phases {
        println!(
            "  {:<12} {:>8.2} {:>8.2} {:>8.2} {:>8.2}   {}",
            phase.phase, phase.mean_ms, phase.p50_ms, phase.p90_ms, phase.p99_ms, phase.from_to
        );
    }
    println!(
        "{:<42} {:.0} single, {:.0} batched (per core)",
        "ed25519 verify/s", report.verify_single_per_core, report.verify_batched_per_core
    );
    println!("{:<42} {:.0} tx/s", "bound: cores × batched verify ÷ validators", report.verify_bound_tx_per_s);
    println!("{:<42} {:.2}", "committed ÷ bound", report.ratio_to_bound);
    println!(
        "{:<42} {:.0} per CPU-second, batches of {:.1} on average",
        "in-run tx checks (validators' own count)",
        report.verify_in_run_per_core,
        report.verify_in_run_batch_mean
    );
    println!(
        "{:<42} {:.0} tx/s",
        "in-run bound: cores × in-run rate ÷ validators", report.verify_in_run_bound_tx_per_s
    );
    println!("{:<42} {:.2}", "committed ÷ in-run bound", report.ratio_to_in_run_bound);
    println!(
        "{:<42} {:.1} µs of CPU per tx (all validators); bound {:.0} tx/s; committed ÷ it {:.2}",
        "checks + execution, in-run",
        report.check_and_execute_cpu_us_per_tx,
        report.check_and_execute_bound_tx_per_s,
        report.ratio_to_check_and_execute_bound
    );
    for node in &report.nodes {
        println!("  {:<6} cpu {:>6.1}%   peak rss {:>7.1} MB", node.name, node.cpu_percent, node.peak_rss_mb);
    }
    if let Some(flood) = &report.flood {
        println!(
            "{:<42} {} keys, {} tx/s offered, {} submitted",
            "flood (junk)", flood.keys, flood.offered_rate, flood.submitted
        );
        let refused: Vec<String> =
            flood.refused.iter().map(|(name, count)| format!("{name} {count}")).collect();
        println!(
            "{:<42} {} admitted; refused: {}",
            "  what the nodes did with it",
            flood.admitted,
            refused.join(", ")
        );
    }
}

/// Most junk transactions pre-signed (the flood cycles through them again if the honest run
/// lasts longer; a repeat still costs the node a signature check).
const FLOOD_TXS_MAX: u64 = 300_000;

/// Junk transaction `i` of the flood, of three kinds in turn from junk key `j = i/3 mod K`:
/// a transfer behind a nonce gap (nonce 0 is never sent) from funded junk account j; a key
/// rotation of validator 0 from fresh key j; a transfer from fresh key j (no account). Nonces
/// climb with each round over the keys. Signatures are valid (a node must check them).
fn flood_tx(args: &BenchArgs, seed: u64, genesis_hash: &Digest, i: u64) -> Tx {
    let keys = args.flood_keys.max(1);
    let (kind, j) = (i % 3, (i / 3) % keys);
    let round = i / (3 * keys);
    let chain = chain_tag(genesis_hash);
    let honest = account_key(seed, j % args.accounts.max(1)).public_key();
    let (key, nonce, kind) = match kind {
        0 => (account_key(seed, args.accounts + j), 1 + round, TxKind::Transfer { to: honest, amount: 1 }),
        1 => (
            account_key(seed ^ 0xf100d, j),
            round,
            TxKind::RotateValidatorKey {
                validator: tetrad_consensus::ValidatorIndex(0),
                new_key: honest,
                proof_of_possession: Default::default(),
            },
        ),
        _ => (account_key(seed ^ 0xf100d, j), round, TxKind::Transfer { to: honest, amount: 1 }),
    };
    Tx::sign(TxBody { chain, from: key.public_key(), nonce, kind }, &key, genesis_hash)
}

/// The flood's `submit_transactions` bodies (what is due in 10 ms each), with their sizes.
fn flood_presign(args: &BenchArgs, seed: u64, genesis_hash: &Digest) -> Vec<(String, usize)> {
    let per_call = (args.flood_rate / 100).clamp(1, CALL_TXS_MAX as u64);
    let seconds = match args.rate {
        Some(rate) => args.txs / rate.max(1) + 10,
        None => 60,
    }
    .min(args.timeout_s);
    let count = (args.flood_rate.saturating_mul(seconds)).clamp(per_call, FLOOD_TXS_MAX);
    let calls = count.div_ceil(per_call);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as u64;
    let per_thread = calls.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || {
                    (thread * per_thread..((thread + 1) * per_thread).min(calls))
                        .map(|call| {
                            let txs: Vec<Tx> = (call * per_call..((call + 1) * per_call).min(count))
                                .map(|i| flood_tx(args, seed, genesis_hash, i))
                                .collect();
                            let body = json!({"jsonrpc": "2.0", "id": call, "method": "submit_transactions", "params": {"txs": txs}});
                            (body.to_string(), txs.len())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|handle| handle.join().unwrap_or_default()).collect()
    })
}

/// Submits the junk at `rate` tx/s through every node in turn until `stop`; counts what the
/// nodes answered.
fn flood_run(
    calls: &[(String, usize)],
    urls: &[String],
    started: Instant,
    rate: u64,
    keys: u64,
    stop: &AtomicBool,
) -> FloodReport {
    let http = agent();
    let mut report = FloodReport { keys, offered_rate: rate, ..FloodReport::default() };
    let mut txs_before = 0u64;
    for index in 0.. {
        let due = started + Duration::from_secs_f64(txs_before as f64 / rate.max(1) as f64);
        while Instant::now() < due && !stop.load(Ordering::SeqCst) {
            std::thread::sleep((due - Instant::now()).min(Duration::from_millis(20)));
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let (body, count) = &calls[index % calls.len()];
        txs_before += *count as u64;
        report.submitted += *count as u64;
        let url = format!("{}/", urls[index % urls.len()]);
        let Ok(mut response) = http.post(&url).header("content-type", "application/json").send(body.as_str())
        else {
            *report.refused.entry("no_answer".into()).or_default() += *count as u64;
            continue;
        };
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let Some(items) = value["result"].as_array() else {
            let code = value["error"]["code"].as_i64().unwrap_or_default();
            *report.refused.entry(error_name(code)).or_default() += *count as u64;
            continue;
        };
        for item in items {
            match item["error"]["code"].as_i64() {
                Some(code) => *report.refused.entry(error_name(code)).or_default() += 1,
                None => report.admitted += 1,
            }
        }
    }
    report
}

fn error_name(code: i64) -> String {
    tetrad_rpc::ErrorCode::from_code(code)
        .map(|code| code.name().to_string())
        .unwrap_or_else(|| code.to_string())
}

#[cfg(test)]
mod tests {
    use super::InRunChecks;

    #[test]
    fn in_run_checks_add_up_over_nodes_from_prometheus_text() {
        let mut checks = InRunChecks::default();
        checks.add(
            "# TYPE tetrad_tx_checks_total counter\ntetrad_tx_checks_total 3000\n\
             tetrad_tx_check_batches_total 30\ntetrad_tx_check_cpu_microseconds_total 50000\n\
             tetrad_tx_checks_totally_else 9\n",
        );
        checks.add(
            "tetrad_tx_checks_total 1000\ntetrad_tx_check_batches_total 70\ntetrad_tx_check_cpu_microseconds_total 30000\n\
             tetrad_execute_cpu_microseconds_total 20000\ntetrad_committed_txs_total 1000\n",
        );
        assert_eq!(checks.per_core(), 4000.0 / 0.08);
        assert_eq!(checks.batch_mean(), 40.0);
        // Only the second node executed anything: (30,000 + 20,000) µs over 1,000 txs.
        assert_eq!(checks.work_us_per_tx(), 50.0);
        assert!(InRunChecks::default().per_core().is_nan());
    }
}
