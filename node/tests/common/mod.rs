//! A local network of real `tetrad` processes for cluster tests.
//!
//! Every loop is bounded in time, and every process is killed when the [`Cluster`] drops.

#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tetrad_consensus::{CommitCertificate, Digest, PublicKey, ValidatorSet};
use tetrad_genesis::KeyFile;
use tetrad_ledger::Address;
use tetrad_ledger::scratch::ScratchDir;
use tetrad_ledger::tx::{Tx, TxBody, TxKind, chain_tag};

pub const TETRAD: &str = env!("CARGO_BIN_EXE_tetrad");

/// The `tetrad` the cluster runs: this build's, or the one `TETRAD_TEST_BINARY` names (to run a
/// cluster test against another build, e.g. the code before a fix, and see the test fail there).
pub fn binary() -> std::ffi::OsString {
    std::env::var_os("TETRAD_TEST_BINARY").filter(|path| !path.is_empty()).unwrap_or_else(|| TETRAD.into())
}

/// What a test thread needs to talk to a running network: cheap to clone, owns no process.
#[derive(Clone)]
pub struct Net {
    pub testnet: Value,
    pub genesis_hash: Digest,
    pub validators: usize,
}

/// The network's processes and files: killed and removed when dropped (also when a test
/// panics, because the test, not a thread, owns it).
pub struct Cluster {
    pub dir: ScratchDir,
    pub net: Net,
    children: Vec<Option<Child>>,
    pub base_port: u16,
}

impl std::ops::Deref for Cluster {
    type Target = Net;
    fn deref(&self) -> &Net {
        &self.net
    }
}

/// A base port with 2n free ports above it (p2p and RPC of each validator).
fn free_base_port(count: u16) -> u16 {
    let seed = std::process::id() as u64 ^ (Instant::now().elapsed().as_nanos() as u64) ^ now_nanos();
    for attempt in 0..200u64 {
        // Below the kernel's ephemeral range (32768 and up), so no outgoing connection of another
        // test can hold one of these ports when a node binds it.
        let base = 20_000 + ((seed.wrapping_mul(2654435761).wrapping_add(attempt * 7919)) % 12_000) as u16;
        let base = base - base % 2;
        if (0..count).all(|offset| TcpListener::bind(("127.0.0.1", base + offset)).is_ok()) {
            return base;
        }
    }
    panic!("no free ports");
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

impl Cluster {
    /// Creates (but does not start) a testnet.
    pub fn create(label: &str, validators: u16, accounts: u64) -> Cluster {
        Cluster::create_with(label, validators, accounts, &[])
    }

    /// Creates a testnet with extra `tetrad testnet` flags.
    pub fn create_with(label: &str, validators: u16, accounts: u64, extra: &[&str]) -> Cluster {
        let dir = ScratchDir::new(label).expect("scratch dir");
        let base_port = free_base_port(2 * validators);
        let net = dir.join("net");
        let output = Command::new(binary())
            .args(["testnet", "--validators", &validators.to_string(), "--accounts", &accounts.to_string()])
            .args(["--base-port", &base_port.to_string()])
            .args(extra)
            .arg("--dir")
            .arg(&net)
            .output()
            .expect("run tetrad testnet");
        assert!(
            output.status.success(),
            "tetrad testnet failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let testnet: Value =
            serde_json::from_str(&std::fs::read_to_string(net.join("testnet.json")).expect("testnet.json"))
                .expect("json");
        let genesis_hash = Digest::from_hex(testnet["genesis_hash"].as_str().expect("hash")).expect("hex");
        let children = (0..validators).map(|_| None).collect();
        let net = Net { testnet, genesis_hash, validators: usize::from(validators) };
        Cluster { dir, net, children, base_port }
    }

    pub fn start(&mut self, node: usize) {
        self.start_with(node, &[]);
    }

    /// Sets `empty_blocks_after_idle_ms` in every node's `config.toml` (read at start). A test
    /// that needs the chain to stand still short of a checkpoint boundary (between a key
    /// rotation's commit and its activation, say) sets it far beyond its own length.
    pub fn set_empty_blocks_after_idle_ms(&self, ms: u64) {
        for node in 0..self.n() {
            let path = self.home(node).join("config.toml");
            let text = std::fs::read_to_string(&path).expect("config.toml");
            let mut lines: Vec<String> = text
                .lines()
                .filter(|line| !line.starts_with("empty_blocks_after_idle_ms"))
                .map(String::from)
                .collect();
            lines.push(format!("empty_blocks_after_idle_ms = {ms}"));
            std::fs::write(&path, lines.join("\n") + "\n").expect("write config.toml");
        }
    }

    /// Starts `node` with extra `tetrad run` flags.
    pub fn start_with(&mut self, node: usize, extra: &[&str]) {
        assert!(self.children[node].is_none(), "node {node} is running");
        let home = self.home(node);
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(home.join("node.log")).expect("log");
        let child = Command::new(binary())
            .args(["run", "--home"])
            .arg(&home)
            .args(extra)
            .env("RUST_LOG", "info,libp2p=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn tetrad run");
        self.children[node] = Some(child);
    }

    pub fn start_all(&mut self) {
        for node in 0..self.n() {
            self.start(node);
        }
        for node in 0..self.n() {
            self.wait_up(node, Duration::from_secs(30));
        }
    }

    /// The process id of `node`, if it runs.
    pub fn pid(&self, node: usize) -> Option<u32> {
        self.children[node].as_ref().map(Child::id)
    }

    pub fn is_running(&self, node: usize) -> bool {
        self.children[node].is_some()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self, node: usize) {
        if let Some(mut child) = self.children[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (bounded) for `node` to exit by itself; its exit status, or `None` if it still
    /// runs (it keeps running then).
    pub fn wait_exit(&mut self, node: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let child = self.children[node].as_mut().expect("node was started");
            if let Ok(Some(status)) = child.try_wait() {
                self.children[node] = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM and wait for a clean exit (bounded).
    pub fn stop(&mut self, node: usize) {
        if let Some(mut child) = self.children[node].take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Net {
    pub fn n(&self) -> usize {
        self.validators
    }

    pub fn home(&self, node: usize) -> PathBuf {
        PathBuf::from(self.testnet["nodes"][node]["home"].as_str().expect("home"))
    }

    pub fn rpc(&self, node: usize) -> String {
        self.testnet["nodes"][node]["rpc_url"].as_str().expect("rpc url").to_string()
    }

    pub fn log(&self, node: usize) -> String {
        std::fs::read_to_string(self.home(node).join("node.log")).unwrap_or_default()
    }

    pub fn get(&self, node: usize, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.rpc(node));
        match http().get(&url).call() {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let body = response.body_mut().read_to_string().unwrap_or_default();
                (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
            }
            Err(error) => (0, Value::String(error.to_string())),
        }
    }

    pub fn post(&self, node: usize, path: &str, body: &Value) -> (u16, Value) {
        let url = format!("{}{path}", self.rpc(node));
        match http().post(&url).header("content-type", "application/json").send(body.to_string()) {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let text = response.body_mut().read_to_string().unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
            }
            Err(error) => (0, Value::String(error.to_string())),
        }
    }

    pub fn status(&self, node: usize) -> Option<Value> {
        match self.get(node, "/status") {
            (200, value) => Some(value),
            _ => None,
        }
    }

    pub fn height(&self, node: usize) -> Option<u64> {
        self.status(node).and_then(|status| status["height"].as_u64())
    }

    pub fn wait_up(&self, node: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.status(node).is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("node {node} did not come up in {timeout:?}; log:\n{}", self.log(node));
    }

    /// Waits until `node` reaches `height`.
    pub fn wait_height(&self, node: usize, height: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.height(node).is_some_and(|h| h >= height) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "node {node} did not reach height {height} in {timeout:?} (at {:?}); log tail:\n{}",
            self.height(node),
            tail(&self.log(node))
        );
    }

    pub fn account_key(&self, index: u64) -> KeyFile {
        let dir = PathBuf::from(self.testnet["accounts_dir"].as_str().expect("accounts dir"));
        KeyFile::read(&dir.join(format!("account-{index}.json"))).expect("account key")
    }

    pub fn transfer(&self, from: &KeyFile, nonce: u64, to: Address, amount: u64) -> Tx {
        let body = TxBody {
            chain: chain_tag(&self.genesis_hash),
            from: from.public_key(),
            nonce,
            kind: TxKind::Transfer { to, amount },
        };
        Tx::sign(body, &from.secret, &self.genesis_hash)
    }

    /// Submits through `POST /txs`; returns the HTTP status and body.
    pub fn submit(&self, node: usize, tx: &Tx) -> (u16, Value) {
        self.post(node, "/txs", &serde_json::to_value(tx).expect("tx json"))
    }

    /// The block hash at every height 1..=upto as `node` reports it.
    pub fn chain(&self, node: usize, upto: u64) -> Vec<String> {
        (1..=upto)
            .map(|height| {
                let (status, block) = self.get(node, &format!("/blocks/{height}"));
                assert_eq!(status, 200, "node {node} block {height}: {block}");
                block["hash"].as_str().expect("hash").to_string()
            })
            .collect()
    }
}

pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in 0..self.children.len() {
            self.kill9(node);
        }
    }
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A child process that is killed when dropped (also when a test panics).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port outside the ephemeral range (see `free_base_port`).
pub fn free_port() -> u16 {
    free_base_port(1)
}

/// A node that is not a validator (its consensus key is not in the set): it follows the chain
/// by block sync. Killed when dropped.
pub struct FullNode {
    pub home: PathBuf,
    pub url: String,
    _process: KillOnDrop,
}

impl Cluster {
    /// `tetrad init` of a new home from this network's genesis, then `tetrad run` of it.
    pub fn start_full_node(&self, name: &str) -> FullNode {
        self.start_full_node_with_genesis(name, &self.dir.join("net/genesis.json"))
    }

    /// A full node from another genesis file (one that dials this network's validators).
    pub fn start_full_node_with_genesis(&self, name: &str, genesis: &Path) -> FullNode {
        let home = self.dir.join(name);
        let genesis = genesis.to_path_buf();
        let (p2p, rpc) = (free_port(), free_port());
        let output = Command::new(binary())
            .args(["init", "--home", path_str(&home), "--genesis", path_str(&genesis)])
            .args([
                "--p2p-listen",
                &format!("/ip4/127.0.0.1/tcp/{p2p}"),
                "--rpc-listen",
                &format!("127.0.0.1:{rpc}"),
            ])
            .output()
            .expect("init");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert!(String::from_utf8_lossy(&output.stdout).contains("full node"));
        let log = std::fs::File::create(home.join("node.log")).expect("log");
        let process = Command::new(binary())
            .args(["run", "--home", path_str(&home)])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("run the full node");
        FullNode { home, url: format!("http://127.0.0.1:{rpc}"), _process: KillOnDrop(process) }
    }
}

impl FullNode {
    pub fn get(&self, path: &str) -> Option<Value> {
        let mut response = http().get(format!("{}{path}", self.url)).call().ok()?;
        serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()
    }

    /// Waits until the node reports `height`; returns its status then.
    pub fn wait_height(&self, height: u64, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.get("/status")
                && status["height"].as_u64().is_some_and(|h| h >= height)
            {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the full node did not reach height {height}: {}",
                tail(&std::fs::read_to_string(self.home.join("node.log")).unwrap_or_default())
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Asserts that this node holds exactly `hashes` at heights 1, 2, ….
    pub fn assert_chain(&self, hashes: &[String]) {
        for (index, hash) in hashes.iter().enumerate() {
            let block = self.get(&format!("/blocks/{}", index + 1)).expect("block");
            assert_eq!(block["hash"].as_str(), Some(hash.as_str()), "full node, height {}", index + 1);
        }
    }
}

/// Sets a flag when dropped, so helper threads stop also when the test panics (the test owns
/// the cluster; its processes die with it).
pub struct StopOnDrop(pub Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub fn keys_at(cluster: &Net, height: u64) -> Vec<PublicKey> {
    let (_, set) = cluster.get(0, &format!("/validators?height={height}"));
    set["validators"]
        .as_array()
        .expect("validators")
        .iter()
        .map(|validator| serde_json::from_value(validator["consensus_key"].clone()).expect("key"))
        .collect()
}

/// Whether validator `index` signed any commit certificate in `(from, to]` (certificates are
/// checked against the set of their height, so a signature there was made with the right key).
pub fn signed_between(cluster: &Net, index: u64, from: u64, to: u64) -> bool {
    // Each node keeps the first quorum of commits it saw: a validator that is the slowest for
    // v0 may be among the first for another peer. Never its own certificates: a validator kept
    // silent (the safety margin) still signs, and only a peer's certificate shows that its
    // signature went out.
    let holders: Vec<usize> = (0..cluster.n()).filter(|holder| *holder as u64 != index).collect();
    (from + 1..=to).any(|height| {
        holders.iter().any(|holder| {
            let (status, block) = cluster.get(*holder, &format!("/blocks/{height}"));
            if status != 200 {
                return false;
            }
            let certificate: CommitCertificate =
                serde_json::from_value(block["certificate"].clone()).expect("certificate");
            let set = ValidatorSet::new(cluster.genesis_hash, keys_at(cluster, height)).expect("set");
            certificate.verify(&set).is_ok()
                && certificate.signers().any(|signer| u64::from(signer.0) == index)
        })
    })
}

/// Whether validator `index` signs a certificate above `from` within a minute of blocks (in
/// any other node's certificates; see [`signed_between`]). A certificate holds the first quorum
/// of commits: a replica that just restarted, or runs on a busy machine, may be the slowest for
/// a while, and v0's certificates then never show it.
pub fn signs_soon(cluster: &Net, index: usize, from: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let target = cluster.height(0).expect("height") + 8;
        cluster.wait_height(0, target, Duration::from_secs(60));
        cluster.wait_height(index, target, Duration::from_secs(60));
        if signed_between(cluster, index as u64, from, cluster.height(0).expect("height")) {
            return true;
        }
    }
    false
}

/// Keeps transfers flowing (one every 50 ms) until the returned flag is set.
pub fn keep_busy(cluster: &Net) -> (StopOnDrop, std::thread::JoinHandle<()>) {
    keep_busy_every(cluster, Duration::from_millis(50))
}

/// Keeps transfers flowing, one every `pause` (and one request's time), until the returned flag
/// is set.
pub fn keep_busy_every(cluster: &Net, pause: Duration) -> (StopOnDrop, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (cluster, flag) = (cluster.clone(), stop.clone());
    let handle = std::thread::spawn(move || {
        let key = cluster.account_key(0);
        let to = cluster.account_key(1).public_key();
        let (_, account) = cluster.get(0, &format!("/accounts/{}", key.public_key()));
        let mut nonce = account["nonce"].as_u64().expect("nonce");
        while !flag.load(Ordering::SeqCst) {
            let tx = cluster.transfer(&key, nonce, to, 1);
            for node in [0, 2, 3] {
                if matches!(cluster.submit(node, &tx).0, 200 | 202) {
                    nonce += 1;
                    break;
                }
            }
            std::thread::sleep(pause);
        }
    });
    (StopOnDrop(stop), handle)
}

/// Runs the `sh` block of the README between `<!-- MARKER:start -->` and `<!-- MARKER:end -->`
/// verbatim (bash -euo pipefail) against `cluster`'s validator 0: `RPC`, `NET` and `TETRAD` are
/// set as the README expects. Fails the test, with the script and its output, if it fails;
/// returns its stdout.
pub fn run_readme_block(cluster: &Cluster, marker: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README");
    let start = readme.find(&format!("<!-- {marker}:start -->")).expect("start marker");
    let end = readme.find(&format!("<!-- {marker}:end -->")).expect("end marker");
    let script = readme[start..end]
        .split("```sh")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a sh code block between the markers")
        .to_string();
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("RPC", cluster.rpc(0))
        .env("NET", cluster.dir.join("net"))
        .env("TETRAD", TETRAD)
        .output()
        .expect("run the README block");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "README block {marker} failed:\n{script}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}
