//! `tetrad verify` and `tx transfer --wait` against a lying node: a proxy in front of a real
//! validator rewrites its answers in each way a node can lie, after two key rotations. Every
//! lie is refused with a non-zero exit that names what did not verify; the truth is accepted.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, TETRAD, keep_busy, path_str, tail};
use serde_json::{Value, json};
use tetrad_consensus::{Certificate, Checkpoint, Digest, SecretKey, Signed, ValidatorIndex, ValidatorSet};
use tetrad_genesis::KeyFile;
use tetrad_ledger::Header;

/// How the proxy lies.
#[derive(Clone, Debug)]
enum Lie {
    Truth,
    /// A transaction the chain never saw, claimed to be in the block (at `height`) of a real
    /// one (`real`): the block's tx list swapped for it and the tx root recomputed, in the
    /// block (`/blocks/…`) and in the proof (`/proofs/txs/…`). Waiting submissions are answered
    /// "committed" without reaching the chain.
    ForgeTx {
        real: String,
        height: u64,
        fake: Value,
    },
    /// An account's balance and nonce changed.
    Balance,
    /// A flipped sibling hash in the account proof.
    FlippedSibling,
    /// The checkpoint header's state root replaced (a root no certificate signs).
    UncertifiedRoot,
    /// A stale checkpoint (block 1's proof) for a later block.
    StaleCheckpoint(Value),
    /// A validator registry with a swapped key, or an extra key.
    SwappedKey,
    ExtraKey,
    /// The validator chain without its rotations.
    HiddenRotations,
    /// The checkpoint certificate replaced by one signed with retired keys.
    RetiredKeys(Vec<SecretKey>),
    /// A header that does not chain to the checkpoint.
    BrokenChain,
    /// A waiting submission answered "committed" without reaching the chain.
    FakeCommit,
}

/// A minimal HTTP/1.1 proxy: one request per connection, answers JSON and closes.
struct Proxy {
    url: String,
    lie: Arc<Mutex<Lie>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Proxy {
    fn start(upstream: String, genesis_hash: Digest) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let lie = Arc::new(Mutex::new(Lie::Truth));
        let stop = Arc::new(AtomicBool::new(false));
        let (lie_ref, stop_ref) = (lie.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop_ref.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let lie = lie_ref.lock().expect("lie").clone();
                        let upstream = upstream.clone();
                        std::thread::spawn(move || serve(stream, &upstream, &lie, genesis_hash));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { url, lie, stop }
    }

    fn lie(&self, lie: Lie) {
        *self.lie.lock().expect("lie") = lie;
    }
}

fn serve(stream: TcpStream, upstream: &str, lie: &Lie, genesis_hash: Digest) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("GET").to_string(), parts.next().unwrap_or("/").to_string());
    let faking = match lie {
        Lie::FakeCommit => Some(3),
        Lie::ForgeTx { height, .. } => Some(*height),
        _ => None,
    };
    let (status, answer) = if let Some(height) = faking
        && method == "POST"
    {
        let tx: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let hash = serde_json::from_value::<tetrad_ledger::Tx>(tx.clone()).map(|tx| tx.hash()).ok();
        (200, json!({ "hash": hash, "status": "committed", "tx": tx, "height": height, "index": 0 }))
    } else if let Lie::ForgeTx { real, .. } = lie
        && path.starts_with("/proofs/txs/")
    {
        let (status, mut answer) = forward(upstream, &method, &format!("/proofs/txs/{real}"), &body);
        if status == 200 {
            rewrite(lie, &path, &mut answer, genesis_hash);
        }
        (status, answer)
    } else {
        let (status, mut answer) = forward(upstream, &method, &path, &body);
        if status == 200 {
            rewrite(lie, &path, &mut answer, genesis_hash);
        }
        (status, answer)
    };
    let text = answer.to_string();
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn forward(upstream: &str, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let url = format!("{upstream}{path}");
    let agent = common::http();
    let answer = if method == "POST" {
        agent.post(&url).header("content-type", "application/json").send(body)
    } else {
        agent.get(&url).call()
    };
    match answer {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let text = response.body_mut().with_config().limit(64 << 20).read_to_string().unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
        }
        Err(error) => (502, json!({ "error": { "code": -32603, "message": error.to_string() } })),
    }
}

fn flip(hex: &mut Value) {
    let text = hex.as_str().expect("hex").to_string();
    let first = if text.starts_with('0') { "1" } else { "0" };
    *hex = Value::String(format!("{first}{}", &text[1..]));
}

/// The header a block proof proves (the first of the chain, or the checkpoint's).
fn proven_header(block: &mut Value) -> &mut Value {
    if block["headers"].as_array().is_some_and(|headers| !headers.is_empty()) {
        &mut block["headers"][0]
    } else {
        &mut block["checkpoint"]["header"]
    }
}

fn rewrite(lie: &Lie, path: &str, answer: &mut Value, genesis_hash: Digest) {
    match lie {
        Lie::ForgeTx { fake, .. } if path.starts_with("/proofs/txs/") => {
            let tx: tetrad_ledger::Tx = serde_json::from_value(fake.clone()).expect("tx");
            answer["tx"] = fake.clone();
            answer["receipt"]["tx_hash"] = json!(tx.hash());
            let root = tetrad_ledger::block::tx_root(&[tx.hash()]);
            let header = proven_header(&mut answer["block"]);
            header["tx_root"] = json!(root);
            header["tx_count"] = json!(1);
            answer["tx_proof"] = json!({ "index": 0, "count": 1, "siblings": [] });
            answer["receipt"]["index"] = json!(0);
        }
        Lie::ForgeTx { height, fake, .. } if path == format!("/blocks/{height}") => {
            let tx: tetrad_ledger::Tx = serde_json::from_value(fake.clone()).expect("tx");
            answer["txs"] = json!([tx.hash()]);
            answer["header"]["tx_root"] = json!(tetrad_ledger::block::tx_root(&[tx.hash()]));
            answer["header"]["tx_count"] = json!(1);
        }
        Lie::Balance if path.starts_with("/proofs/accounts/") => {
            let balance = answer["account"]["account"]["balance"].as_u64().expect("balance");
            answer["account"]["account"]["balance"] = json!(balance + 1_000_000);
        }
        Lie::FlippedSibling if path.starts_with("/proofs/accounts/") => {
            flip(&mut answer["account"]["proof"]["siblings"][0]);
        }
        Lie::UncertifiedRoot if path.starts_with("/proofs/accounts/") => {
            flip(&mut answer["block"]["checkpoint"]["header"]["state_root"]);
        }
        Lie::StaleCheckpoint(stale) if path.starts_with("/proofs/txs/") => {
            let height = answer["block"]["height"].clone();
            answer["block"] = stale.clone();
            answer["block"]["height"] = height;
        }
        Lie::SwappedKey if path.starts_with("/proofs/validators") => {
            flip(&mut answer["links"][0]["registry"]["epochs"][1][1][1]);
        }
        Lie::ExtraKey if path.starts_with("/proofs/validators") => {
            let key = SecretKey::from_seed([42; 32]).public_key();
            answer["links"][0]["registry"]["epochs"][1][1].as_array_mut().expect("keys").push(json!(key));
        }
        Lie::HiddenRotations if path.starts_with("/proofs/validators") => {
            answer["links"] = json!([]);
        }
        Lie::RetiredKeys(keys) if path.starts_with("/proofs/blocks/") || path.starts_with("/proofs/txs/") => {
            let block = if path.starts_with("/proofs/txs/") { &mut answer["block"] } else { answer };
            let header: Header =
                serde_json::from_value(block["checkpoint"]["header"].clone()).expect("header");
            let set = ValidatorSet::new(genesis_hash, keys.iter().map(SecretKey::public_key).collect())
                .expect("set");
            let statement = Checkpoint {
                height: header.height,
                header_hash: header.hash(),
                state_root: header.state_root,
            };
            let votes: Vec<Signed<Checkpoint>> = (0..3)
                .map(|index| {
                    Signed::sign(statement.clone(), ValidatorIndex(index as u16), &keys[index], &set)
                })
                .collect();
            block["checkpoint"]["certificate"] = json!(Certificate::from_votes(statement, &votes));
        }
        Lie::BrokenChain if path.starts_with("/proofs/txs/") => {
            let headers = answer["block"]["headers"].as_array_mut().expect("headers");
            if headers.is_empty() {
                flip(&mut answer["block"]["checkpoint"]["header"]["parent_hash"]);
            } else {
                flip(&mut headers[0]["parent_hash"]);
                // The proven header's own hash changes: link the next one to it, so only the
                // chain to the checkpoint is broken, not the first step.
                if headers.len() > 1 {
                    let first: Header = serde_json::from_value(headers[0].clone()).expect("header");
                    headers[1]["parent_hash"] = json!(first.hash());
                }
            }
        }
        _ => {}
    }
}

/// Runs `tetrad ARGS`: (success, stdout, stderr).
fn tetrad(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(TETRAD).args(args).output().expect("run tetrad");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `tetrad tx transfer --wait` of `amount` from the key file `from` to the key file `to`.
fn transfer_wait(
    from: &Path,
    to: &Path,
    amount: &str,
    genesis: &Path,
    rpc: &str,
    timeout_ms: Option<&str>,
) -> (bool, String, String) {
    let mut args = vec!["tx", "transfer", "--key", path_str(from), "--to", path_str(to), "--amount", amount];
    args.extend_from_slice(&["--genesis", path_str(genesis), "--wait", "--rpc", rpc]);
    if let Some(timeout_ms) = timeout_ms {
        args.extend_from_slice(&["--timeout-ms", timeout_ms]);
    }
    tetrad(&args)
}

fn verify(genesis: &Path, rpc: &str, what: &[&str]) -> (bool, String, String) {
    let mut args = vec!["verify"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["--genesis", path_str(genesis), "--rpc", rpc, "--timeout-ms", "60000"]);
    tetrad(&args)
}

fn expect_refused(proxy: &Proxy, lie: Lie, genesis: &Path, what: &[&str], fragment: &str) {
    let name = format!("{lie:?}");
    let name = &name[..name.len().min(40)];
    proxy.lie(lie);
    let (ok, stdout, stderr) = verify(genesis, &proxy.url, what);
    assert!(!ok, "lie {name} on `verify {what:?}` was accepted:\n{stdout}");
    assert!(
        stderr.contains(fragment),
        "lie {name} on `verify {what:?}` was refused without saying `{fragment}`:\n{stderr}"
    );
    assert!(!stdout.contains("proven final"), "lie {name}: printed as proven:\n{stdout}");
}

fn rotate(cluster: &Cluster, node: usize) {
    let home = cluster.home(node);
    let (ok, stdout, stderr) =
        tetrad(&["keys", "rotate", "--home", path_str(&home), "--timeout-ms", "120000"]);
    assert!(ok, "rotating v{node}: {stdout}\n{stderr}\nlog:\n{}", tail(&cluster.log(node)));
    assert!(stdout.contains("proven final by the checkpoint"), "{stdout}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while ["consensus_key.next.json", "consensus_key.retired.json"]
        .iter()
        .any(|name| home.join(name).exists())
    {
        assert!(
            Instant::now() < deadline,
            "v{node} did not finish its rotation:\n{}",
            tail(&cluster.log(node))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_lying_node_cannot_fool_verify_or_a_waiting_transfer() {
    let mut cluster = Cluster::create("verify", 4, 4);
    cluster.start_all();
    let genesis: PathBuf = cluster.home(0).join("genesis.json");
    let old_keys: Vec<SecretKey> = (0..4)
        .map(|node| KeyFile::read(&cluster.home(node).join("consensus_key.json")).expect("key").secret)
        .collect();
    {
        let (_busy, _thread) = keep_busy(&cluster);
        rotate(&cluster, 1);
        rotate(&cluster, 2);
    }

    // A transfer, waited for and proven from the genesis file through both rotations.
    let accounts = PathBuf::from(cluster.testnet["accounts_dir"].as_str().expect("accounts dir"));
    let (from, to) = (accounts.join("account-2.json"), accounts.join("account-3.json"));
    let rpc = cluster.rpc(0);
    let (ok, stdout, stderr) = transfer_wait(&from, &to, "7", &genesis, &rpc, None);
    assert!(ok, "transfer --wait: {stdout}\n{stderr}");
    assert!(stdout.contains("proven final by the checkpoint"), "{stdout}");
    assert!(stdout.contains("through 2 key rotations"), "{stdout}");
    let hash = stdout
        .lines()
        .find_map(|line| line.strip_prefix("tx "))
        .expect("the tx hash is printed")
        .trim()
        .to_string();

    // The truth, from the genesis file alone, directly and through an honest proxy.
    let proxy = Proxy::start(rpc.clone(), cluster.genesis_hash);
    for target in [rpc.as_str(), proxy.url.as_str()] {
        let (ok, stdout, stderr) = verify(&genesis, target, &["tx", &hash]);
        assert!(ok && stdout.contains(": success"), "verify tx: {stdout}\n{stderr}");
        let (ok, stdout, stderr) = verify(&genesis, target, &["account", path_str(&to)]);
        assert!(ok && stdout.contains("balance "), "verify account: {stdout}\n{stderr}");
        let (ok, stdout, stderr) = verify(&genesis, target, &["validators"]);
        assert!(ok && stdout.contains("through 2 key rotations"), "verify validators: {stdout}\n{stderr}");
        let new_key = KeyFile::read(&cluster.home(1).join("consensus_key.json")).expect("key").public_key();
        assert!(stdout.contains(&new_key.to_string()), "the rotated key of v1 is listed: {stdout}");
        let (ok, stdout, stderr) = verify(&genesis, target, &["block", "2"]);
        assert!(ok && stdout.contains("proven final"), "verify block: {stdout}\n{stderr}");
        let (ok, stdout, stderr) = verify(&genesis, target, &["checkpoint"]);
        assert!(ok && stdout.contains("checkpoint "), "verify checkpoint: {stdout}\n{stderr}");
    }
    // Both nodes at once: both prove it.
    let both = format!("{rpc},{}", proxy.url);
    let (ok, stdout, stderr) = verify(&genesis, &both, &["tx", &hash]);
    assert!(ok && stdout.contains("2 of 2 nodes"), "{stdout}\n{stderr}");

    // Every lie is refused, and says what did not verify. First a transaction the chain never
    // saw (the next transfer `tx transfer` would sign), claimed in the block of a real one.
    let sender = KeyFile::read(&from).expect("key");
    let nonce =
        cluster.get(0, &format!("/accounts/{}", sender.public_key())).1["nonce"].as_u64().expect("nonce");
    let receiver = KeyFile::read(&to).expect("key").public_key();
    let fake = cluster.transfer(&sender, nonce, receiver, 1);
    let fake_hash = fake.hash().to_string();
    let (_, real) = cluster.get(0, &format!("/txs/{hash}"));
    let height = real["height"].as_u64().expect("height");
    let forge = Lie::ForgeTx { real: hash.clone(), height, fake: serde_json::to_value(&fake).expect("tx") };
    expect_refused(&proxy, forge.clone(), &genesis, &["tx", &fake_hash], "does not verify");
    proxy.lie(forge);
    let (ok, stdout, stderr) = transfer_wait(&from, &to, "1", &genesis, &proxy.url, Some("5000"));
    assert!(!ok, "a forged commit was accepted:\n{stdout}");
    assert!(stderr.contains(&format!("the proof of transaction {fake_hash} does not verify")), "{stderr}");
    assert!(!stdout.contains("committed at height"), "{stdout}");
    expect_refused(
        &proxy,
        Lie::Balance,
        &genesis,
        &["account", path_str(&to)],
        "does not prove against the state root",
    );
    expect_refused(
        &proxy,
        Lie::FlippedSibling,
        &genesis,
        &["account", path_str(&to)],
        "does not prove against the state root",
    );
    expect_refused(
        &proxy,
        Lie::UncertifiedRoot,
        &genesis,
        &["account", path_str(&to)],
        "is over another header or state root",
    );
    proxy.lie(Lie::Truth);
    let (_, stale) = forward(&rpc, "GET", "/proofs/blocks/1", &[]);
    expect_refused(&proxy, Lie::StaleCheckpoint(stale), &genesis, &["tx", &hash], "does not verify");
    expect_refused(
        &proxy,
        Lie::SwappedKey,
        &genesis,
        &["validators"],
        "does not match its header's validators hash",
    );
    expect_refused(
        &proxy,
        Lie::ExtraKey,
        &genesis,
        &["validators"],
        "does not match its header's validators hash",
    );
    expect_refused(
        &proxy,
        Lie::HiddenRotations,
        &genesis,
        &["tx", &hash],
        "withheld or altered a key rotation",
    );
    // The retired keys of v1 and v2 with v0's current key: a quorum of signatures, two of them
    // by keys that no longer sign.
    let retired = vec![old_keys[0].clone(), old_keys[1].clone(), old_keys[2].clone(), old_keys[3].clone()];
    expect_refused(
        &proxy,
        Lie::RetiredKeys(retired),
        &genesis,
        &["tx", &hash],
        "does not verify against the keys of epoch",
    );
    expect_refused(&proxy, Lie::BrokenChain, &genesis, &["tx", &hash], "does not verify");

    // `tx transfer --wait` through the liar: a commit the chain never saw, and a swapped tx.
    proxy.lie(Lie::FakeCommit);
    let (ok, stdout, stderr) = transfer_wait(&from, &to, "1", &genesis, &proxy.url, Some("5000"));
    assert!(!ok, "a faked commit was accepted:\n{stdout}");
    assert!(stderr.contains("no committed transaction"), "{stderr}");
    assert!(!stdout.contains("committed at height"), "{stdout}");
}

/// The attack of issue 14 alone, as the old client met it: a waiting transfer answered
/// "committed" by a node that never passed it on, and the block it names rewritten to hold it
/// (tx list swapped, tx root recomputed; the commit certificate, which signs the batch digest,
/// still verifies). The client must not print "committed".
#[test]
fn a_commit_the_chain_never_saw_is_not_printed() {
    let mut cluster = Cluster::create("forged-commit", 4, 4);
    cluster.start_all();
    let genesis: PathBuf = cluster.home(0).join("genesis.json");
    let accounts = PathBuf::from(cluster.testnet["accounts_dir"].as_str().expect("accounts dir"));
    let (from, to) = (accounts.join("account-0.json"), accounts.join("account-1.json"));
    let rpc = cluster.rpc(0);
    // A real transfer to put a real block under the lie.
    let (ok, stdout, stderr) = transfer_wait(&from, &to, "3", &genesis, &rpc, None);
    assert!(ok, "a real transfer: {stdout}\n{stderr}");
    let hash = stdout.lines().find_map(|line| line.strip_prefix("tx ")).expect("tx hash").trim().to_string();
    let height = cluster.get(0, &format!("/txs/{hash}")).1["height"].as_u64().expect("height");

    // The transfer `tx transfer` signs next (same key, nonce and amount: the same bytes).
    let sender = KeyFile::read(&from).expect("key");
    let nonce =
        cluster.get(0, &format!("/accounts/{}", sender.public_key())).1["nonce"].as_u64().expect("nonce");
    let fake = cluster.transfer(&sender, nonce, KeyFile::read(&to).expect("key").public_key(), 1);
    let proxy = Proxy::start(rpc.clone(), cluster.genesis_hash);
    proxy.lie(Lie::ForgeTx { real: hash, height, fake: serde_json::to_value(&fake).expect("tx") });
    let (ok, stdout, _) = transfer_wait(&from, &to, "1", &genesis, &proxy.url, Some("5000"));
    assert!(!ok, "a commit the chain never saw was accepted:\n{stdout}");
    assert!(!stdout.contains("committed at height"), "{stdout}");
    // The chain indeed never saw it.
    assert_eq!(cluster.get(0, &format!("/txs/{}", fake.hash())).0, 404);
}

/// The README's `tetrad verify` session, run verbatim against a live network (its v2 rotates
/// its key in the session).
#[test]
fn readme_verify_session() {
    let mut cluster = Cluster::create("readme-verify", 4, 4);
    cluster.start_all();
    let stdout = common::run_readme_block(&cluster, "readme-verify");
    for expected in [
        "rotation of validator 2 committed at height",
        ": success",
        "proven final by the checkpoint at height",
        "through 1 key rotation",
        "has no account at height",
        "the validator set of height",
        "{\"tx\":{",
    ] {
        assert!(stdout.contains(expected), "`{expected}` missing from the session's output:\n{stdout}");
    }
    println!("{stdout}");
}
