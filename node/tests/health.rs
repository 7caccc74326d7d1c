//! `/health` of real validators says whether consensus makes progress: idle or progressing
//! while the network commits, `stalled` (503) while work waits without a quorum, healthy again
//! once the quorum is back. It used to answer `{"status": "ok"}` whatever happened.

mod common;

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
