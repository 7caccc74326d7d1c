//! `/health` of real validators says whether consensus makes progress: idle or progressing
//! while the network commits, `stalled` (503) while work waits without a quorum, healthy again
//! once the quorum is back. It used to answer `{"status": "ok"}` whatever happened.
//!
//! A node whose executor cannot go on (here: its data directory's disk is full) exits non-zero
//! with the reason in its log, so that a supervisor restarts it once there is room, instead of
//! serving RPC and `/health` with a ledger that no longer follows the chain.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Cluster, tail};
use serde_json::Value;

/// Waits until `/health` of `node` answers `code` with one of `statuses`; returns the body.
fn wait_health(cluster: &Cluster, node: usize, code: u16, statuses: &[&str], timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (found, body) = cluster.get(node, "/health");
        if found == code && statuses.iter().any(|status| body["status"] == *status) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "node {node} /health is {found} {body}, expected {code} {statuses:?}; log:\n{}",
            tail(&cluster.log(node))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn health_follows_progress_stall_and_recovery() {
    let mut cluster = Cluster::create("health", 4, 2);
    cluster.start_all();
    let idle = wait_health(&cluster, 0, 200, &["idle", "progressing"], Duration::from_secs(20));
    assert_eq!(idle["stall_after_ms"], 6000, "three view-change timeouts of the testnet's genesis");

    let key = cluster.account_key(0);
    let to = cluster.account_key(1).public_key();
    let tx = cluster.transfer(&key, 0, to, 5);
    let (code, body) =
        cluster.post(0, "/txs?wait=true&timeout_ms=20000", &serde_json::to_value(&tx).expect("json"));
    assert_eq!(code, 200, "{body}");
    wait_health(&cluster, 0, 200, &["idle", "progressing"], Duration::from_secs(10));

    // Two of four down: no quorum. Work waits on node 0 and nothing commits.
    cluster.kill9(2);
    cluster.kill9(3);
    let stuck = cluster.transfer(&key, 1, to, 5);
    let (code, body) = cluster.submit(0, &stuck);
    assert_eq!(code, 202, "{body}");
    let stalled = wait_health(&cluster, 0, 503, &["stalled"], Duration::from_secs(30));
    assert_eq!(stalled["pending_work"], true);
    assert!(stalled["last_progress_ms"].as_u64().is_some_and(|ms| ms > 6000), "{stalled}");
    assert!(!stalled["reason"].as_str().unwrap_or_default().is_empty(), "{stalled}");
    // /status still answers while /health says stalled.
    assert!(cluster.status(0).is_some());

    // The quorum is back: the waiting transaction commits and health recovers.
    cluster.start(2);
    cluster.start(3);
    wait_health(&cluster, 0, 200, &["idle", "progressing", "syncing"], Duration::from_secs(90));
    let hash = body["hash"].as_str().expect("hash").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.get(0, &format!("/txs/{hash}")).1["status"] != "committed" {
        assert!(
            Instant::now() < deadline,
            "the waiting transaction did not commit; log:\n{}",
            tail(&cluster.log(0))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A small ext2 filesystem (no fallocate, so RocksDB cannot reserve its log ahead) mounted on
/// `at` from an image file; unmounted (lazily, so a process still inside cannot keep it) when
/// dropped.
struct SmallDisk {
    at: PathBuf,
}

impl SmallDisk {
    fn mount(image: &Path, at: &Path, megabytes: u64) -> SmallDisk {
        let is_root =
            Command::new("id").arg("-u").output().is_ok_and(|output| output.stdout.trim_ascii() == b"0");
        assert!(
            is_root,
            "this test mounts a small filesystem: it needs root (the test command runs as root)"
        );
        std::fs::File::create(image).and_then(|file| file.set_len(megabytes << 20)).expect("image file");
        let run = |command: &mut Command| {
            let output = command.output().expect("run");
            assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        run(Command::new("mkfs.ext2").args(["-q", "-F", "-m", "0"]).arg(image));
        std::fs::create_dir_all(at).expect("mount point");
        run(Command::new("mount").args(["-o", "loop"]).arg(image).arg(at));
        SmallDisk { at: at.to_path_buf() }
    }

    /// Writes one file until the filesystem has no space left, down to the last byte.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.at.join("filler")).expect("filler");
        for size in [64 << 10, 4 << 10, 512, 1] {
            let chunk = vec![0xa5u8; size];
            while file.write_all(&chunk).and_then(|()| file.sync_data()).is_ok() {}
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

#[test]
fn a_node_whose_disk_fills_up_exits_non_zero_with_the_reason() {
    let mut cluster = Cluster::create("disk-full", 4, 2);
    let disk = SmallDisk::mount(&cluster.dir.join("disk3.img"), &cluster.home(3).join("data"), 32);
    cluster.start_all();
    let key = cluster.account_key(0);
    let to = cluster.account_key(1).public_key();
    let tx = cluster.transfer(&key, 0, to, 5);
    let (code, body) =
        cluster.post(0, "/txs?wait=true&timeout_ms=20000", &serde_json::to_value(&tx).expect("json"));
    assert_eq!(code, 200, "{body}");
    let height = body["height"].as_u64().expect("height");
    cluster.wait_height(3, height, Duration::from_secs(20));

    // Node 3's disk fills up; the other three go on committing, so node 3 must execute and
    // store blocks it has no room for.
    disk.fill();
    for nonce in 1..4 {
        let tx = cluster.transfer(&key, nonce, to, 5);
        let (code, body) =
            cluster.post(0, "/txs?wait=true&timeout_ms=20000", &serde_json::to_value(&tx).expect("json"));
        assert_eq!(code, 200, "the three with room stopped committing: {body}");
    }
    let exited = cluster.wait_exit(3, Duration::from_secs(30));
    let log = cluster.log(3);
    let status = exited.unwrap_or_else(|| {
        panic!(
            "node 3 still runs with a full disk (/health: {:?}); log:\n{}",
            cluster.get(3, "/health"),
            tail(&log)
        )
    });
    assert!(!status.success(), "node 3 exited 0 with its executor stopped");
    assert!(
        log.contains("No space left") && log.contains("stopping"),
        "the log does not say why node 3 stopped:\n{}",
        tail(&log)
    );
}
