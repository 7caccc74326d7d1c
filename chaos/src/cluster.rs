//! The network under test: one `tetrad` process per network namespace (made by
//! `scripts/chaos.sh`), each node at its own address on a bridge, and the faults that act on
//! them: iptables rules and tc classes inside a node's namespace, signals to its process.
//! Every rule this file adds lives in a node's namespace, so deleting the namespaces (the
//! script's exit trap) removes it; [`Cluster::heal`] removes them earlier.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::http;
use crate::workload::Endpoint;

/// The RPC port every node listens on in its namespace (`tetrad testnet --hosts`).
pub const RPC_PORT: u16 = 8545;
/// The interface of a node inside its namespace (the script names it so).
const INTERFACE: &str = "eth0";
/// How long a delayer may take to bind its queue, and to let its packets go and exit.
const DELAYER_READY: Duration = Duration::from_secs(5);
const DELAYER_STOP: Duration = Duration::from_secs(3);

/// A `tetrad-chaos delay` process in `a`'s namespace, delaying what `a` sends to `b`.
struct Delayer {
    a: usize,
    b: usize,
    queue: u16,
    child: Child,
    /// Its stdout, line by line.
    lines: mpsc::Receiver<String>,
}

#[derive(Debug, Deserialize)]
struct TestnetFile {
    nodes: Vec<TestnetNode>,
}

#[derive(Debug, Deserialize)]
struct TestnetNode {
    name: String,
    home: PathBuf,
    #[serde(default)]
    full_node: bool,
    host: Option<String>,
}

pub struct Node {
    pub name: String,
    pub namespace: String,
    pub ip: String,
    pub home: PathBuf,
    pub validator: bool,
    /// Runs this binary instead of the cluster's `tetrad`, with this environment (the Byzantine
    /// validator: `tetrad-byzantine` and `TETRAD_BYZANTINE`).
    pub program: Option<(PathBuf, Vec<(String, String)>)>,
    child: Option<Child>,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    tetrad: PathBuf,
    /// Nodes whose interface has the htb root of throttled links.
    throttled: BTreeSet<usize>,
    /// Nodes found already dead when the campaign went to kill them: reported by
    /// [`Cluster::exited`] like any other exit on its own (a kill must not hide a crash).
    died_before_kill: Vec<(usize, std::process::ExitStatus, String)>,
    /// Running delayers (link faults with a delay).
    delayers: Vec<Delayer>,
}

/// Runs `program args` and fails with its stderr if it does not succeed.
fn run(program: &str, args: &[&str]) -> Result<()> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))?;
    if !output.status.success() {
        bail!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

impl Cluster {
    /// The nodes of `DIR/testnet.json` (made with `--hosts`), in namespaces `PREFIX + name`.
    pub fn load(dir: &Path, tetrad: &Path, prefix: &str) -> Result<Cluster> {
        let path = dir.join("testnet.json");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        let file: TestnetFile = serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let mut nodes = Vec::new();
        for node in file.nodes {
            let Some(ip) = node.host else {
                bail!(
                    "{}: node {} has no host address (make it with tetrad testnet --hosts)",
                    path.display(),
                    node.name
                );
            };
            nodes.push(Node {
                namespace: format!("{prefix}{}", node.name),
                name: node.name,
                ip,
                home: node.home,
                validator: !node.full_node,
                program: None,
                child: None,
            });
        }
        Ok(Cluster {
            nodes,
            tetrad: tetrad.to_path_buf(),
            throttled: BTreeSet::new(),
            died_before_kill: Vec::new(),
            delayers: Vec::new(),
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.name.clone()).collect()
    }

    pub fn validators(&self) -> usize {
        self.nodes.iter().filter(|node| node.validator).count()
    }

    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.nodes
            .iter()
            .map(|node| Endpoint { name: node.name.clone(), rpc: format!("http://{}:{RPC_PORT}", node.ip) })
            .collect()
    }

    /// Starts node `index` in its namespace (its output appended to `HOME/node.log`).
    pub fn start(&mut self, index: usize) -> Result<()> {
        self.start_with(index, &[])
    }

    /// Starts node `index` with these extra environment variables (a skewed clock).
    pub fn start_with(&mut self, index: usize, env: &[(&str, String)]) -> Result<()> {
        let node = &mut self.nodes[index];
        if node.child.is_some() {
            return Ok(());
        }
        let (tetrad, base_env) = node.program.clone().unwrap_or_else(|| (self.tetrad.clone(), Vec::new()));
        let log_path = node.home.join("node.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("{}: cannot open", log_path.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &node.namespace])
            .arg(&tetrad)
            .arg("run")
            .arg("--home")
            .arg(&node.home)
            .envs(base_env.iter().map(|(key, value)| (key.as_str(), value.as_str())))
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} in namespace {}", node.name, node.namespace))?;
        node.child = Some(child);
        Ok(())
    }

    pub fn running(&self, index: usize) -> bool {
        self.nodes[index].child.is_some()
    }

    /// kill -9 (SIGKILL) of node `index`, and reaps it. A node that had already exited is
    /// remembered and reported by the next [`Cluster::exited`].
    pub fn kill(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if let Some(mut child) = node.child.take() {
            if let Ok(Some(status)) = child.try_wait() {
                let what = format!(
                    "{} exited on its own ({status}) before the campaign killed it; see {}/node.log",
                    node.name,
                    node.home.display()
                );
                self.died_before_kill.push((index, status, what));
                return;
            }
            // A paused process dies of SIGKILL too.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, index: usize, signal: &str) -> Result<()> {
        let Some(child) = &self.nodes[index].child else {
            bail!("{} is not running", self.nodes[index].name);
        };
        run("kill", &[signal, &child.id().to_string()])
    }

    pub fn pause(&self, index: usize) -> Result<()> {
        self.signal(index, "-STOP")
    }

    pub fn resume(&self, index: usize) -> Result<()> {
        self.signal(index, "-CONT")
    }

    /// Nodes that exited without being killed by the campaign: `(index, status, what
    /// happened)`. They are marked stopped (the caller decides whether to start them again).
    pub fn exited(&mut self) -> Vec<(usize, std::process::ExitStatus, String)> {
        let mut exited = std::mem::take(&mut self.died_before_kill);
        for (index, node) in self.nodes.iter_mut().enumerate() {
            if let Some(child) = &mut node.child
                && let Ok(Some(status)) = child.try_wait()
            {
                let what = format!(
                    "{} exited on its own ({status}); see {}/node.log",
                    node.name,
                    node.home.display()
                );
                exited.push((index, status, what));
                node.child = None;
            }
        }
        exited
    }

    /// The primary of the current view, by a majority of the validators that answer.
    pub fn primary(&self) -> Option<usize> {
        let agent = http::agent(Duration::from_millis(800));
        let mut votes = vec![0usize; self.nodes.len()];
        for node in self.nodes.iter().filter(|node| node.validator) {
            if let Ok((200, status)) = http::get(&agent, &format!("http://{}:{RPC_PORT}/status", node.ip))
                && let Some(primary) = status["primary"].as_u64()
                && (primary as usize) < votes.len()
            {
                votes[primary as usize] += 1;
            }
        }
        let (index, count) = votes.iter().enumerate().max_by_key(|(_, count)| **count)?;
        (*count > 0).then_some(index)
    }

    fn in_namespace(&self, index: usize, args: &[&str]) -> Result<()> {
        let mut full = vec!["netns", "exec", self.nodes[index].namespace.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// No packets between `a` and `b`, either way (rules in `a`'s namespace).
    pub fn cut(&self, a: usize, b: usize) -> Result<()> {
        let peer = self.nodes[b].ip.clone();
        self.in_namespace(a, &["iptables", "-A", "INPUT", "-s", &peer, "-j", "DROP"])?;
        self.in_namespace(a, &["iptables", "-A", "OUTPUT", "-d", &peer, "-j", "DROP"])
    }

    /// Node `a` receives nothing from any peer (`inbound`), or sends nothing to any peer.
    /// Clients (the host) still reach it.
    pub fn cut_one_way(&self, a: usize, inbound: bool) -> Result<()> {
        for b in 0..self.nodes.len() {
            if b == a {
                continue;
            }
            let peer = self.nodes[b].ip.clone();
            if inbound {
                self.in_namespace(a, &["iptables", "-A", "INPUT", "-s", &peer, "-j", "DROP"])?;
            } else {
                self.in_namespace(a, &["iptables", "-A", "OUTPUT", "-d", &peer, "-j", "DROP"])?;
            }
        }
        Ok(())
    }

    /// Loss, duplication and a throttle on the packets `a` sends to `b`.
    pub fn damage(
        &mut self,
        a: usize,
        b: usize,
        loss_percent: u64,
        duplicate_percent: u64,
        throttle_kbit: u64,
    ) -> Result<()> {
        let peer = self.nodes[b].ip.clone();
        if loss_percent > 0 {
            let probability = format!("{:.2}", loss_percent as f64 / 100.0);
            self.in_namespace(
                a,
                &[
                    "iptables",
                    "-A",
                    "OUTPUT",
                    "-d",
                    &peer,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &probability,
                    "-j",
                    "DROP",
                ],
            )?;
        }
        if duplicate_percent > 0 {
            // TEE sends a copy of the packet to the peer as well: the peer gets it twice.
            let probability = format!("{:.2}", duplicate_percent as f64 / 100.0);
            self.in_namespace(
                a,
                &[
                    "iptables",
                    "-t",
                    "mangle",
                    "-A",
                    "POSTROUTING",
                    "-d",
                    &peer,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &probability,
                    "-j",
                    "TEE",
                    "--gateway",
                    &peer,
                ],
            )?;
        }
        if throttle_kbit > 0 {
            if self.throttled.insert(a) {
                self.in_namespace(
                    a,
                    &["tc", "qdisc", "add", "dev", INTERFACE, "root", "handle", "1:", "htb", "default", "1"],
                )?;
                self.in_namespace(
                    a,
                    &[
                        "tc", "class", "add", "dev", INTERFACE, "parent", "1:", "classid", "1:1", "htb",
                        "rate", "1gbit",
                    ],
                )?;
            }
            let class = format!("1:{}", 10 + b);
            let rate = format!("{throttle_kbit}kbit");
            self.in_namespace(
                a,
                &[
                    "tc", "class", "add", "dev", INTERFACE, "parent", "1:", "classid", &class, "htb", "rate",
                    &rate,
                ],
            )?;
            let destination = format!("{peer}/32");
            self.in_namespace(
                a,
                &[
                    "tc",
                    "filter",
                    "add",
                    "dev",
                    INTERFACE,
                    "parent",
                    "1:",
                    "protocol",
                    "ip",
                    "prio",
                    "1",
                    "u32",
                    "match",
                    "ip",
                    "dst",
                    &destination,
                    "flowid",
                    &class,
                ],
            )?;
        }
        Ok(())
    }

    /// Every packet `a` sends to `b` held for `delay_ms` plus or minus up to `jitter_ms`
    /// (which reorders them), by a `tetrad-chaos delay` in `a`'s namespace bound to an NFQUEUE
    /// of its own. Rules are appended: loss drops a packet before it is queued.
    pub fn delay(&mut self, a: usize, b: usize, delay_ms: u64, jitter_ms: u64, seed: u64) -> Result<()> {
        let queue = 100 + (a * 32 + b) as u16;
        let program = std::env::current_exe().context("the path of tetrad-chaos")?;
        let node = &self.nodes[a];
        let mut child = Command::new("ip")
            .args(["netns", "exec", &node.namespace])
            .arg(&program)
            .arg("delay")
            .args(["--queue", &queue.to_string()])
            .args(["--delay-ms", &delay_ms.to_string()])
            .args(["--jitter-ms", &jitter_ms.to_string()])
            .args(["--seed", &seed.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting a delayer in {}", node.namespace))?;
        let (sender, lines) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines().map_while(|line| line.ok()) {
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let ready = lines.recv_timeout(DELAYER_READY);
        let mut delayer = Delayer { a, b, queue, child, lines };
        match ready {
            Ok(line) if line.starts_with("delay: bound queue") => {}
            other => {
                let _ = delayer.child.kill();
                let status = delayer.child.wait();
                bail!(
                    "the delayer for {} -> {} did not bind queue {queue} within {} s ({other:?}, {status:?})",
                    self.nodes[a].name,
                    self.nodes[b].name,
                    DELAYER_READY.as_secs()
                );
            }
        }
        self.delayers.push(delayer);
        let peer = self.nodes[b].ip.clone();
        self.in_namespace(
            a,
            &[
                "iptables",
                "-A",
                "OUTPUT",
                "-d",
                &peer,
                "-j",
                "NFQUEUE",
                "--queue-num",
                &queue.to_string(),
                "--queue-bypass",
            ],
        )
    }

    /// Removes the delayers' rules, then stops them (SIGTERM: each lets what it holds through and
    /// prints its counters). Returns one line per delayer (`a->b delayed N reordered M ...`) and
    /// the problems (a delayer that had died, or did not stop).
    pub fn stop_delayers(&mut self) -> (Vec<String>, Vec<String>) {
        let mut notes = Vec::new();
        let mut problems = Vec::new();
        for mut delayer in std::mem::take(&mut self.delayers) {
            let peer = self.nodes[delayer.b].ip.clone();
            let queue = delayer.queue.to_string();
            let link = format!("{}->{}", self.nodes[delayer.a].name, self.nodes[delayer.b].name);
            let rule = [
                "iptables",
                "-D",
                "OUTPUT",
                "-d",
                &peer,
                "-j",
                "NFQUEUE",
                "--queue-num",
                &queue,
                "--queue-bypass",
            ];
            if let Err(error) = self.in_namespace(delayer.a, &rule) {
                problems.push(format!("{link}: {error:#}"));
            }
            if let Ok(Some(status)) = delayer.child.try_wait() {
                problems.push(format!("{link}: the delayer exited during the fault ({status})"));
                continue;
            }
            let _ = run("kill", &["-TERM", &delayer.child.id().to_string()]);
            let deadline = Instant::now() + DELAYER_STOP;
            let status = loop {
                match delayer.child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    _ => break None,
                }
            };
            match status {
                Some(status) if status.success() => {
                    let last = delayer.lines.recv_timeout(Duration::from_secs(1)).ok();
                    let counters = last
                        .as_deref()
                        .and_then(|line| line.split_once(&format!("queue {queue} ")))
                        .map_or("no counters", |(_, counters)| counters)
                        .to_string();
                    notes.push(format!("{link} {counters}"));
                }
                Some(status) => problems.push(format!("{link}: the delayer failed ({status})")),
                None => {
                    let _ = delayer.child.kill();
                    let _ = delayer.child.wait();
                    problems.push(format!(
                        "{link}: the delayer did not stop within {} s of SIGTERM",
                        DELAYER_STOP.as_secs()
                    ));
                }
            }
        }
        (notes, problems)
    }

    /// Removes every rule and qdisc the faults added, in every node's namespace, and stops
    /// any delayer still running.
    pub fn heal(&mut self) -> Vec<String> {
        let (_, mut problems) = self.stop_delayers();
        for index in 0..self.nodes.len() {
            for args in [&["iptables", "-F"][..], &["iptables", "-t", "mangle", "-F"][..]] {
                if let Err(error) = self.in_namespace(index, args) {
                    problems.push(format!("{error:#}"));
                }
            }
            if self.throttled.remove(&index)
                && let Err(error) =
                    self.in_namespace(index, &["tc", "qdisc", "del", "dev", INTERFACE, "root"])
            {
                problems.push(format!("{error:#}"));
            }
        }
        problems
    }
}

impl Drop for Cluster {
    /// Whatever happens to the campaign, no node outlives it.
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
        for delayer in &mut self.delayers {
            let _ = delayer.child.kill();
            let _ = delayer.child.wait();
        }
    }
}
