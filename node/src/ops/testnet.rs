//! `tetrad testnet`: a local network in one directory, optionally started.
//!
//! ```text
//! DIR/testnet.json          every node's name, home, RPC URL, p2p address and peer id
//! DIR/genesis.json
//! DIR/v0 … DIR/v{N-1}       validator homes (config, genesis, keys, data, node.log)
//! DIR/accounts/account-K.json   funded account keys
//! ```
//! Ports: validator i listens for p2p on `base + 2i` and for RPC on `base + 2i + 1`.
//!
//! With `hosts` (one IP address per node, e.g. the containers of a compose network or the
//! machines of a lab), every node listens on all interfaces at the same ports
//! ([`HOSTED_P2P_PORT`], [`HOSTED_RPC_PORT`]), the genesis says `/ip4/HOST/tcp/26000`, nodes past
//! the validators are full nodes (`DIR/full0`, …), and `rpc_url` is `127.0.0.1:base + 2i + 1`,
//! where a compose network publishes node i's RPC on the host (`ops/compose.rs`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tetrad_genesis::{Genesis, GenesisAccount, GenesisValidator, KeyFile};
use tetrad_ledger::Store;

use crate::config::{Config, Home};
use crate::identity;

pub struct TestnetPlan {
    pub validators: u16,
    pub accounts: u64,
    pub balance: u64,
    pub dir: PathBuf,
    pub base_port: u16,
    pub chain_id: String,
    /// Derive account keys from this seed (the benchmark's) instead of writing key files.
    pub account_seed: Option<u64>,
    pub checkpoint_interval: Option<u64>,
    pub watermark_window: Option<u64>,
    pub view_change_timeout_ms: Option<u64>,
    /// One address per node, validators first (empty: every node on 127.0.0.1, own ports).
    pub hosts: Vec<IpAddr>,
}

/// The p2p port of every node of a network with hosts.
pub const HOSTED_P2P_PORT: u16 = 26000;
/// The RPC port of every node of a network with hosts.
pub const HOSTED_RPC_PORT: u16 = 8545;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestnetNode {
    pub name: String,
    pub home: PathBuf,
    pub rpc_url: String,
    pub p2p_address: String,
    pub peer_id: String,
    pub consensus_key: String,
    /// A full node (not in the genesis validator set); only networks with hosts have them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_node: bool,
    /// The node's own address on its network (networks with hosts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<IpAddr>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestnetFile {
    pub chain_id: String,
    pub genesis_hash: String,
    pub genesis: PathBuf,
    pub accounts_dir: PathBuf,
    pub accounts: u64,
    pub nodes: Vec<TestnetNode>,
}

/// Where node `index` of a plan listens and is reached.
struct Placement {
    name: String,
    full_node: bool,
    host: Option<IpAddr>,
    /// The address in the genesis (validators) and in testnet.json.
    p2p_address: String,
    p2p_listen: String,
    rpc_listen: String,
    rpc_url: String,
}

fn multiaddr_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => format!("/ip4/{ip}"),
        IpAddr::V6(ip) => format!("/ip6/{ip}"),
    }
}

impl TestnetPlan {
    /// Validators, then full nodes (only a plan with hosts has those).
    fn nodes(&self) -> usize {
        self.hosts.len().max(usize::from(self.validators))
    }

    fn placement(&self, index: usize) -> Placement {
        // Ports were checked in `check`: index < 2^15 and base + 2 * nodes <= u16::MAX.
        let p2p_port = self.base_port + 2 * index as u16;
        let rpc_port = p2p_port + 1;
        let full_node = index >= usize::from(self.validators);
        let name = if full_node {
            format!("full{}", index - usize::from(self.validators))
        } else {
            format!("v{index}")
        };
        match self.hosts.get(index) {
            None => Placement {
                name,
                full_node,
                host: None,
                p2p_address: format!("/ip4/127.0.0.1/tcp/{p2p_port}"),
                p2p_listen: format!("/ip4/127.0.0.1/tcp/{p2p_port}"),
                rpc_listen: format!("127.0.0.1:{rpc_port}"),
                rpc_url: format!("http://127.0.0.1:{rpc_port}"),
            },
            Some(&host) => {
                let any = match host {
                    IpAddr::V4(_) => "/ip4/0.0.0.0",
                    IpAddr::V6(_) => "/ip6/::",
                };
                let rpc_any = match host {
                    IpAddr::V4(_) => format!("0.0.0.0:{HOSTED_RPC_PORT}"),
                    IpAddr::V6(_) => format!("[::]:{HOSTED_RPC_PORT}"),
                };
                Placement {
                    name,
                    full_node,
                    host: Some(host),
                    p2p_address: format!("{}/tcp/{HOSTED_P2P_PORT}", multiaddr_ip(host)),
                    p2p_listen: format!("{any}/tcp/{HOSTED_P2P_PORT}"),
                    rpc_listen: rpc_any,
                    rpc_url: format!("http://127.0.0.1:{rpc_port}"),
                }
            }
        }
    }

    fn check(&self) -> Result<()> {
        if self.validators == 0 {
            bail!("--validators must be at least 1");
        }
        if !self.hosts.is_empty() && self.hosts.len() < usize::from(self.validators) {
            bail!(
                "--hosts names {} addresses for {} validators: give one per validator (and one per full node after them)",
                self.hosts.len(),
                self.validators
            );
        }
        for (index, host) in self.hosts.iter().enumerate() {
            if host.is_unspecified() || host.is_multicast() {
                bail!("--hosts: {host} (node {index}) is not an address a peer can dial");
            }
            if self.hosts[..index].contains(host) {
                bail!("--hosts: {host} is given twice (every node needs its own address)");
            }
        }
        let highest = u32::from(self.base_port) + 2 * self.nodes() as u32;
        if highest > u32::from(u16::MAX) {
            bail!(
                "--base-port {} leaves no room for {} nodes (needs ports up to {highest})",
                self.base_port,
                self.nodes()
            );
        }
        if self.dir.exists()
            && std::fs::read_dir(&self.dir).map(|mut entries| entries.next().is_some()).unwrap_or(true)
        {
            bail!("{}: exists and is not empty; choose another --dir or remove it", self.dir.display());
        }
        Ok(())
    }
}

/// Generates keys, genesis and one initialised home per node (validators, then full nodes).
pub fn create(plan: &TestnetPlan) -> Result<TestnetFile> {
    plan.check()?;
    let accounts_dir = plan.dir.join("accounts");
    std::fs::create_dir_all(&accounts_dir)
        .with_context(|| format!("{}: cannot create", accounts_dir.display()))?;
    let genesis_time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut genesis = Genesis::new(&plan.chain_id, genesis_time_ms);
    if let Some(interval) = plan.checkpoint_interval {
        genesis.consensus.checkpoint_interval = interval;
    }
    if let Some(window) = plan.watermark_window {
        genesis.consensus.watermark_window = window;
    }
    if let Some(timeout) = plan.view_change_timeout_ms {
        genesis.consensus.view_change_timeout_ms = timeout;
    }
    let mut keys = Vec::new();
    for index in 0..plan.nodes() {
        let consensus = KeyFile::generate()?;
        let network = KeyFile::generate()?;
        let placement = plan.placement(index);
        if !placement.full_node {
            genesis.validators.push(GenesisValidator {
                name: placement.name.clone(),
                consensus_key: consensus.public_key(),
                peer_id: identity::peer_id(&network)?.to_string(),
                p2p_address: placement.p2p_address.clone(),
            });
        }
        keys.push((consensus, network));
    }
    for index in 0..plan.accounts {
        let address = match plan.account_seed {
            Some(seed) => crate::ops::bench::account_key(seed, index).public_key(),
            None => {
                let key = KeyFile::generate()?;
                key.write_new(&accounts_dir.join(format!("account-{index}.json")))?;
                key.public_key()
            }
        };
        genesis.accounts.push(GenesisAccount { address, balance: plan.balance });
    }
    genesis.validate().map_err(|problem| anyhow::anyhow!("generated genesis is invalid: {problem}"))?;
    let genesis_path = plan.dir.join("genesis.json");
    genesis.save(&genesis_path)?;
    let state = genesis.ledger_state();
    let mut nodes = Vec::new();
    for (index, (consensus, network)) in keys.into_iter().enumerate() {
        let placement = plan.placement(index);
        let home = Home::new(&plan.dir.join(&placement.name));
        tetrad_genesis::durable::create_dir(&home.dir)
            .with_context(|| format!("{}: cannot create", home.dir.display()))?;
        consensus.write_new(&home.consensus_key())?;
        network.write_new(&home.network_key())?;
        genesis.save(&home.genesis())?;
        let config = Config {
            name: placement.name.clone(),
            p2p_listen: placement.p2p_listen,
            rpc_listen: placement.rpc_listen,
            empty_blocks_after_idle_ms: crate::config::EMPTY_BLOCKS_AFTER_IDLE_MS,
        };
        config.save_new(&home.config())?;
        Store::open_or_init(&home.data(), &state)?;
        nodes.push(TestnetNode {
            name: config.name,
            home: home.dir.clone(),
            rpc_url: placement.rpc_url,
            p2p_address: placement.p2p_address,
            peer_id: identity::peer_id(&network)?.to_string(),
            consensus_key: consensus.public_key().to_hex(),
            full_node: placement.full_node,
            host: placement.host,
        });
    }
    let file = TestnetFile {
        chain_id: plan.chain_id.clone(),
        genesis_hash: genesis.hash().to_hex(),
        genesis: genesis_path,
        accounts_dir,
        accounts: plan.accounts,
        nodes,
    };
    let path = plan.dir.join("testnet.json");
    let text = serde_json::to_string_pretty(&file)? + "\n";
    tetrad_genesis::durable::write_file(
        &path,
        text.as_bytes(),
        0o644,
        tetrad_genesis::durable::Existing::Replace,
    )
    .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(file)
}

/// Starts every node of a testnet as a child process (logs in `HOME/node.log`), prints the RPC
/// URLs, and stops them all on SIGINT/SIGTERM.
pub fn start(file: &TestnetFile) -> Result<()> {
    if let Some(node) = file.nodes.iter().find(|node| node.host.is_some()) {
        bail!(
            "this testnet's nodes listen at their own addresses ({} at {}): start it with scripts/compose.sh up, or each home on its machine",
            node.name,
            node.p2p_address
        );
    }
    let exe = std::env::current_exe().context("locating the tetrad binary")?;
    let mut children: Vec<(String, Child)> = Vec::new();
    for node in &file.nodes {
        match spawn_node(&exe, &node.home) {
            Ok(child) => children.push((node.name.clone(), child)),
            Err(error) => {
                stop_all(&mut children);
                return Err(error);
            }
        }
    }
    println!("started {} validators of chain {}:", file.nodes.len(), file.chain_id);
    for node in &file.nodes {
        println!("  {}  {}  (log {})", node.name, node.rpc_url, node.home.join("node.log").display());
    }
    println!("press Ctrl-C to stop them all");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut poll = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = async { match terminate.as_mut() { Some(signal) => { signal.recv().await; } None => std::future::pending().await } } => break,
                _ = poll.tick() => {
                    for (name, child) in &mut children {
                        if let Ok(Some(status)) = child.try_wait() {
                            eprintln!("{name} exited ({status}); see its node.log");
                        }
                    }
                    children.retain_mut(|(_, child)| matches!(child.try_wait(), Ok(None)));
                    if children.is_empty() {
                        break;
                    }
                }
            }
        }
    });
    stop_all(&mut children);
    println!("stopped");
    Ok(())
}

fn spawn_node(exe: &Path, home: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("node.log"))
        .with_context(|| format!("{}: cannot open node.log", home.display()))?;
    let log_err = log.try_clone()?;
    Command::new(exe)
        .arg("run")
        .arg("--home")
        .arg(home)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .with_context(|| format!("starting {} run --home {}", exe.display(), home.display()))
}

/// SIGTERM to every child, then waits (SIGKILL after five seconds).
fn stop_all(children: &mut Vec<(String, Child)>) {
    for (_, child) in children.iter() {
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for (name, child) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                _ => {
                    eprintln!("{name} did not stop in time; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
    }
    children.clear();
}
