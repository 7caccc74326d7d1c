//! Key rotation on a real network: all four validators rotate one after another while
//! transfers continue; commits never pause for long; every certificate verifies against the
//! validator set of its height; a node started from genesis syncs across every rotation.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, Net, StopOnDrop, TETRAD, keep_busy, keys_at, path_str, signs_soon, tail};
use tetrad_consensus::{CommitCertificate, PublicKey, ValidatorIndex, ValidatorSet};
use tetrad_genesis::KeyFile;
use tetrad_ledger::tx::{Tx, TxBody, TxKind, chain_tag};
use tetrad_ledger::validators::possession_digest;

const ACCOUNTS: u64 = 8;
const VIEW_CHANGE_TIMEOUT_MS: u64 = 2000;

fn create() -> Cluster {
    // K = 4 and W = 8 keep activations about a dozen blocks after each rotation.
    Cluster::create_with("rotation", 4, ACCOUNTS, &["--checkpoint-interval", "4", "--watermark-window", "8"])
}

/// An idle primary fills up to the next checkpoint boundary 150 ms after the chain went quiet,
/// and a rotation takes effect at the first boundary after its commit: the activation follows
/// the commit within a second. Tests that act between the two (a retried command, a crash
/// inside the swap) hold the fill off for longer than they run; load moves the chain on.
const HOLD_THE_CHAIN_MS: u64 = 3_600_000;

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
        // The command returns once the rotation is final; under load the node may have switched
        // keys already, so the new key is read from its output.
        let new: PublicKey = stdout
            .lines()
            .find_map(|line| line.strip_prefix("new consensus key "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|hex| PublicKey::from_hex(hex).ok())
            .unwrap_or_else(|| panic!("no new key in: {stdout}"));
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

/// A crash at every step of a rotation: validator 1 is killed (`kill -9`) and restarted
/// - before the submit (the next key is on disk, a torn temporary file beside it),
/// - after the submit (the client died before the answer; the retry finds or resubmits it),
/// - after the commit, in the states a crash inside the node's key swap leaves: the first link of
///   the swap, and the old binary's half-done erase (the current file zeroed in place),
/// - after the swap, with the old key still waiting to be erased;
///
/// each time it comes back with the right key (it signs, or it finishes the swap), and at the
/// end no file of its home holds the old secret. The swap's every syscall is covered by the
/// unit tests of `daemon::keys`; these are the states a real process must start from.
#[test]
fn a_rotating_validator_survives_a_crash_at_every_step() {
    let mut cluster = create();
    cluster.set_empty_blocks_after_idle_ms(HOLD_THE_CHAIN_MS);
    cluster.start_all();
    let home = cluster.home(1);
    let current_path = home.join("consensus_key.json");
    let next = home.join("consensus_key.next.json");
    let retired = home.join("consensus_key.retired.json");
    let old = KeyFile::read(&current_path).expect("key");
    let restart = |cluster: &mut Cluster| {
        cluster.kill9(1);
        cluster.start(1);
        cluster.wait_up(1, Duration::from_secs(30));
    };

    // Before the submit: the next key is on disk (and a torn temporary file of a client killed
    // while writing another one), nothing was submitted.
    let output =
        Command::new(TETRAD).args(["keys", "generate", "--out", path_str(&next)]).output().expect("generate");
    assert!(output.status.success());
    std::fs::write(home.join("consensus_key.next.json.tmp"), b"{\"type\": \"ed2").expect("torn temp");
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

    // After the submit: the rotation went to the node, and the node died at once. The retried
    // command finds it committed or submits the same transaction again.
    let next_key = KeyFile::read(&next).expect("next");
    let tx = rotation_tx(&cluster, 1, &old, &next_key, nonce_of(&cluster, &old.public_key()));
    let _ = cluster.submit(1, &tx);
    restart(&mut cluster);
    // The chain is held: the rotation commits but is not final yet, which the command says.
    let (ok, output) = rotate_within(&home, 5_000);
    assert!(ok || output.contains("not proven final"), "the retried rotate after a crash: {output}");
    assert!(output.contains("reusing the next key") || output.contains("already committed"), "{output}");
    assert_eq!(KeyFile::read(&next).expect("next").public_key(), next_key.public_key());

    // After the commit, inside the swap: its first step (the old key also linked as retired).
    cluster.kill9(1);
    std::fs::hard_link(&current_path, &retired).expect("link");
    cluster.start(1);
    cluster.wait_up(1, Duration::from_secs(30));
    // The old binary's crash between zeroing the old key in place and the rename.
    cluster.kill9(1);
    let length = std::fs::metadata(&current_path).expect("key").len() as usize;
    std::fs::write(&current_path, vec![0u8; length]).expect("zero");
    cluster.start(1);
    cluster.wait_up(1, Duration::from_secs(30));
    let (stop, load) = keep_busy(&cluster);
    wait_rotation_finished(&cluster, 1);
    assert_eq!(KeyFile::read(&current_path).expect("key").public_key(), next_key.public_key());
    assert!(!retired.exists(), "the retired key file was not erased");
    drop(stop);
    let _ = load.join();

    // After the swap, before the erase: the old key waits in the retired file.
    cluster.kill9(1);
    old.write_new(&retired).expect("retired");
    cluster.start(1);
    cluster.wait_up(1, Duration::from_secs(30));
    let (stop, load) = keep_busy(&cluster);
    let from = cluster.height(0).expect("height");
    assert!(
        signs_soon(&cluster, 1, from),
        "v1 did not sign with its new key after restarting; log:\n{}",
        tail(&cluster.log(1))
    );
    assert_eq!(keys_at(&cluster, cluster.height(0).expect("height"))[1], next_key.public_key());
    let deadline = Instant::now() + Duration::from_secs(30);
    while retired.exists() {
        assert!(Instant::now() < deadline, "the retired key was not erased; log:\n{}", tail(&cluster.log(1)));
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(stop);
    let _ = load.join();
    assert_no_file_holds(&home, &old);
}

/// A `RotateValidatorKey` transaction as `keys rotate` makes it.
fn rotation_tx(cluster: &Net, validator: u16, current: &KeyFile, next: &KeyFile, nonce: u64) -> Tx {
    let genesis_hash = cluster.genesis_hash;
    let index = ValidatorIndex(validator);
    let digest = possession_digest(&genesis_hash, index, &current.public_key(), &next.public_key());
    let kind = TxKind::RotateValidatorKey {
        validator: index,
        new_key: next.public_key(),
        proof_of_possession: next.secret.sign_digest(&digest),
    };
    let body = TxBody { chain: chain_tag(&genesis_hash), from: current.public_key(), nonce, kind };
    Tx::sign(body, &current.secret, &genesis_hash)
}

/// No file in `home` outside the databases holds `key`'s secret (hex, as key files write it).
fn assert_no_file_holds(home: &std::path::Path, key: &KeyFile) {
    let secret = hex::encode(key.secret.seed());
    for entry in std::fs::read_dir(home).expect("home") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            let bytes = std::fs::read(&path).expect("read");
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&secret),
                "{} still holds the old secret",
                path.display()
            );
        }
    }
}

/// Runs `tetrad keys rotate` for `home`; its exit status and stdout (stderr appended).
fn rotate(home: &std::path::Path) -> (bool, String) {
    rotate_within(home, 60_000)
}

/// `keys rotate --timeout-ms TIMEOUT`.
fn rotate_within(home: &std::path::Path, timeout_ms: u64) -> (bool, String) {
    let output = Command::new(TETRAD)
        .args(["keys", "rotate", "--home", path_str(home), "--timeout-ms", &timeout_ms.to_string()])
        .output()
        .expect("rotate");
    let text = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Waits (bounded) until the node has erased its old key: no next key file is left.
fn wait_rotation_finished(cluster: &Cluster, node: usize) {
    let home = cluster.home(node);
    let deadline = Instant::now() + Duration::from_secs(90);
    // The swap renames the next key over the current one, then erases the retired copy: the
    // rotation is finished once both files are gone.
    let pending = ["consensus_key.next.json", "consensus_key.retired.json"];
    while let Some(left) = pending.iter().find(|name| home.join(name).exists()) {
        assert!(
            Instant::now() < deadline,
            "v{node} did not finish its rotation ({left} is still there); log:\n{}",
            tail(&cluster.log(node))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The nonce of `address` on node 0 (0 for an account the chain has never seen).
fn nonce_of(cluster: &Net, address: &PublicKey) -> u64 {
    match cluster.get(0, &format!("/accounts/{address}")) {
        (200, account) => account["nonce"].as_u64().expect("nonce"),
        _ => 0,
    }
}

/// The operator's retry of `keys rotate` between the commit and the activation (the chain is
/// idle and its primary does not fill up to the boundary, so the activation waits): the retry
/// finds the committed rotation, reports it, submits nothing, and the scheduled key stays on
/// disk; the node later switches to it.
#[test]
fn a_retried_rotation_keeps_the_scheduled_key() {
    let mut cluster = create();
    cluster.set_empty_blocks_after_idle_ms(HOLD_THE_CHAIN_MS);
    cluster.start_all();
    let home = cluster.home(1);
    let old = KeyFile::read(&home.join("consensus_key.json")).expect("key").public_key();
    // The chain is held before the checkpoint that would make the rotation final: the command
    // says it is committed but not proven, and fails (a retry is the way to check again).
    let (ok, first) = rotate_within(&home, 5_000);
    assert!(
        !ok && first.contains("committed at height") && first.contains("not proven final"),
        "first rotate: {first}"
    );
    let next = home.join("consensus_key.next.json");
    let new = KeyFile::read(&next).expect("next key").public_key();
    let nonce = nonce_of(&cluster, &old);

    let (_, retry) = rotate_within(&home, 5_000);
    assert!(
        retry.contains("already committed"),
        "a retried rotate must report the committed rotation: {retry}"
    );
    assert!(next.exists(), "the retry deleted the scheduled key; output:\n{retry}");
    assert_eq!(KeyFile::read(&next).expect("next key").public_key(), new);
    assert_eq!(nonce_of(&cluster, &old), nonce, "the retry submitted another rotation");

    // The node switches to the scheduled key and erases the old one.
    let (stop, load) = keep_busy(&cluster);
    wait_rotation_finished(&cluster, 1);
    assert_eq!(KeyFile::read(&home.join("consensus_key.json")).expect("key").public_key(), new);
    let from = cluster.height(0).expect("height");
    assert!(
        signs_soon(&cluster, 1, from),
        "v1 does not sign after its rotation; log:\n{}",
        tail(&cluster.log(1))
    );
    drop(stop);
    let _ = load.join();
}

/// The README's resync after a rotation: stop, delete `data/`, start. The node finds its key in
/// the validator registry once it has synced the rotation, and validates again without a second
/// restart.
#[test]
fn a_rotated_validator_resynced_from_scratch_is_still_a_validator() {
    let mut cluster = create();
    cluster.start_all();
    let home = cluster.home(1);
    let (stop, load) = keep_busy(&cluster);
    let (ok, output) = rotate(&home);
    assert!(ok, "rotate: {output}");
    wait_rotation_finished(&cluster, 1);
    // Let the new key sign a while, so the resync crosses the rotation.
    let after = cluster.height(0).expect("height") + 8;
    cluster.wait_height(0, after, Duration::from_secs(60));

    // The chain stands still while v1 resyncs (a resync under load chases a moving head).
    drop(stop);
    let _ = load.join();
    cluster.stop(1);
    std::fs::remove_dir_all(home.join("data")).expect("remove data/");
    cluster.start(1);
    cluster.wait_up(1, Duration::from_secs(30));
    let target = cluster.height(0).expect("height");
    cluster.wait_height(1, target, Duration::from_secs(90));
    let (stop, load) = keep_busy(&cluster);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = cluster.status(1).expect("status");
        if status["validating"].as_bool() == Some(true) && status["validator"].as_u64() == Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "v1 is not a validator after the resync: {status}; log:\n{}",
            tail(&cluster.log(1))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let from = cluster.height(0).expect("height");
    assert!(
        signs_soon(&cluster, 1, from),
        "v1 does not sign after the resync; log:\n{}",
        tail(&cluster.log(1))
    );
    drop(stop);
    let _ = load.join();
}
