//! Key rotation on a real network: all four validators rotate one after another while
//! transfers continue; commits never pause for long; every certificate verifies against the
//! validator set of its height; a node started from genesis syncs across every rotation.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, Net, TETRAD, path_str, tail};
use tetrad_consensus::{CommitCertificate, PublicKey, ValidatorSet};
use tetrad_genesis::KeyFile;

const ACCOUNTS: u64 = 8;
const VIEW_CHANGE_TIMEOUT_MS: u64 = 2000;

fn create() -> Cluster {
    // K = 4 and W = 8 keep activations about a dozen blocks after each rotation.
    Cluster::create_with("rotation", 4, ACCOUNTS, &["--checkpoint-interval", "4", "--watermark-window", "8"])
}

/// Sets a flag when dropped, so helper threads stop also when the test panics (the test owns
/// the cluster; its processes die with it).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn all_four_validators_rotate_while_transfers_continue() {
    let mut cluster = create();
    cluster.start_all();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_threads = StopOnDrop(stop.clone());

    // Load: every 100 ms, a transfer from each account in turn, through the nodes in turn.
    let load = {
        let (cluster, stop) = (cluster.net.clone(), stop.clone());
        std::thread::spawn(move || {
            let keys: Vec<KeyFile> = (0..ACCOUNTS).map(|index| cluster.account_key(index)).collect();
            let mut nonces = vec![0u64; keys.len()];
            let mut sent = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let index = sent % keys.len();
                let to = keys[(index + 1) % keys.len()].public_key();
                let tx = cluster.transfer(&keys[index], nonces[index], to, 1);
                let (status, _) = cluster.submit(sent % 4, &tx);
                if status == 200 || status == 202 {
                    nonces[index] += 1;
                }
                sent += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // Watch: the longest time node 0's height stood still.
    let longest_pause = Arc::new(AtomicU64::new(0));
    let watch = {
        let (cluster, stop, longest_pause) = (cluster.net.clone(), stop.clone(), longest_pause.clone());
        std::thread::spawn(move || {
            let (mut last_height, mut since) = (0u64, Instant::now());
            while !stop.load(Ordering::SeqCst) {
                if let Some(height) = cluster.height(0) {
                    if height > last_height {
                        last_height = height;
                        since = Instant::now();
                    }
                    longest_pause.fetch_max(since.elapsed().as_millis() as u64, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    cluster.wait_height(0, 3, Duration::from_secs(30));

    let mut rotated: Vec<(u64, PublicKey)> = Vec::new();
    for validator in 0..4 {
        let home = cluster.home(validator);
        let old = KeyFile::read(&home.join("consensus_key.json")).expect("key").public_key();
        let output = Command::new(TETRAD)
            .args(["keys", "rotate", "--home", path_str(&home)])
            .output()
            .expect("rotate");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "rotate v{validator}: {}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        let activation: u64 = stdout
            .lines()
            .find_map(|line| line.split("signs heights from ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("no activation height in: {stdout}"));
        let new = KeyFile::read(&home.join("consensus_key.next.json")).expect("next key").public_key();
        assert_ne!(new, old);
        // The node switches at the activation height and then erases the old key.
        let deadline = Instant::now() + Duration::from_secs(90);
        while home.join("consensus_key.next.json").exists() {
            assert!(
                Instant::now() < deadline,
                "v{validator} did not finish its rotation; log:\n{}",
                tail(&cluster.log(validator))
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let current = KeyFile::read(&home.join("consensus_key.json")).expect("key").public_key();
        assert_eq!(current, new, "v{validator}: consensus_key.json is not the new key");
        // Erased once everything the old key signed (heights below the activation) is final.
        assert!(cluster.height(0).expect("height") + 1 >= activation);
        rotated.push((activation, new));
    }
    // A few more blocks under the new keys only.
    let after = cluster.height(0).expect("height") + 5;
    cluster.wait_height(0, after, Duration::from_secs(60));
    stop.store(true, Ordering::SeqCst);
    let _ = load.join();
    let _ = watch.join();
    let pause = longest_pause.load(Ordering::SeqCst);
    assert!(pause <= 2 * VIEW_CHANGE_TIMEOUT_MS, "commits paused for {pause} ms");

    // Every block's certificate verifies against the validator set of its height, and that set
    // holds each new key exactly from its activation height.
    let head = cluster.height(0).expect("height");
    let genesis_hash = cluster.genesis_hash;
    let genesis_keys: Vec<PublicKey> = keys_at(&cluster, 1);
    for height in 1..=head {
        let keys = keys_at(&cluster, height);
        for (validator, (activation, new)) in rotated.iter().enumerate() {
            let expected = if height >= *activation { *new } else { genesis_keys[validator] };
            assert_eq!(keys[validator], expected, "height {height}, validator {validator}");
        }
        let (_, block) = cluster.get(0, &format!("/blocks/{height}"));
        let certificate: CommitCertificate =
            serde_json::from_value(block["certificate"].clone()).expect("certificate");
        let set = ValidatorSet::new(genesis_hash, keys).expect("set");
        certificate.verify(&set).unwrap_or_else(|error| panic!("certificate of height {height}: {error}"));
    }

    // A node started from genesis syncs across all four rotations.
    let late = cluster.start_full_node("late");
    late.wait_height(head, Duration::from_secs(90));
    late.assert_chain(&cluster.chain(0, head));
}

fn keys_at(cluster: &Net, height: u64) -> Vec<PublicKey> {
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
fn signed_between(cluster: &Net, index: u64, from: u64, to: u64) -> bool {
    (from + 1..=to).any(|height| {
        let (_, block) = cluster.get(0, &format!("/blocks/{height}"));
        let certificate: CommitCertificate =
            serde_json::from_value(block["certificate"].clone()).expect("certificate");
        let set = ValidatorSet::new(cluster.genesis_hash, keys_at(cluster, height)).expect("set");
        certificate.verify(&set).is_ok() && certificate.signers().any(|signer| u64::from(signer.0) == index)
    })
}

/// Whether validator `index` signs a certificate above `from` within a minute of blocks. A
/// certificate holds the first quorum of commits: a replica that just restarted and caught up
/// may be the slowest for a while, so it gets blocks until it is among them.
fn signs_soon(cluster: &Net, index: usize, from: u64) -> bool {
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
fn keep_busy(cluster: &Net) -> (StopOnDrop, std::thread::JoinHandle<()>) {
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
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    (StopOnDrop(stop), handle)
}

/// Restarts validator 1 with `kill -9` before its rotation is committed, between the commit and
/// the activation, and after the activation; each time it comes back signing with the right key.
#[test]
fn a_rotating_validator_restarts_with_the_right_key() {
    let mut cluster = create();
    cluster.start_all();
    let (stop, load) = keep_busy(&cluster);
    let home = cluster.home(1);
    let restart = |cluster: &mut Cluster| {
        cluster.kill9(1);
        cluster.start(1);
        cluster.wait_up(1, Duration::from_secs(30));
    };
    drop(stop);
    let _ = load.join();

    // Before the commit: a next key is on disk, but nothing was submitted.
    let next = home.join("consensus_key.next.json");
    let output =
        Command::new(TETRAD).args(["keys", "generate", "--out", path_str(&next)]).output().expect("generate");
    assert!(output.status.success());
    restart(&mut cluster);
    let (stop, load) = keep_busy(&cluster);
    let from = cluster.height(0).expect("height");
    assert!(
        signs_soon(&cluster, 1, from),
        "v1 did not sign with its old key; log:\n{}",
        tail(&cluster.log(1))
    );
    drop(stop);
    let _ = load.join();

    // Between the commit and the activation: rotate (reusing that next key), then kill at once.
    let output =
        Command::new(TETRAD).args(["keys", "rotate", "--home", path_str(&home)]).output().expect("rotate");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("reusing the next key"), "{stdout}");
    let new = KeyFile::read(&next).expect("next").public_key();
    restart(&mut cluster);
    assert!(next.exists(), "the next key vanished before the activation");
    let (stop, load) = keep_busy(&cluster);
    let deadline = Instant::now() + Duration::from_secs(90);
    while next.exists() {
        assert!(Instant::now() < deadline, "v1 did not finish the rotation; log:\n{}", tail(&cluster.log(1)));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(KeyFile::read(&home.join("consensus_key.json")).expect("key").public_key(), new);
    drop(stop);
    let _ = load.join();

    // After the activation: it comes back with the new key only, and signs with it.
    restart(&mut cluster);
    let (stop, load) = keep_busy(&cluster);
    let from = cluster.height(0).expect("height");
    assert!(
        signs_soon(&cluster, 1, from),
        "v1 did not sign with its new key after restarting; log:\n{}",
        tail(&cluster.log(1))
    );
    assert_eq!(keys_at(&cluster, cluster.height(0).expect("height"))[1], new);
    drop(stop);
    let _ = load.join();
}
