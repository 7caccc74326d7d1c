//! Mempool admission against real `tetrad` validators (issue 12, "A backup that changes views
//! alone"): two transfers of one sender sent to two nodes at once used to leave a backup holding
//! nonce 0, which the primary refused because it held nonce 1 and counted that spend first. The
//! backup's view-change timer ran for it, and it changed views alone (or with another backup)
//! against an honest primary.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, tail};

const BALANCE: u64 = 1_000_000_000;

/// The value of an unlabelled metric in `/metrics` of `node`.
fn metric(cluster: &Cluster, node: usize, name: &str) -> Option<f64> {
    let url = format!("{}/metrics", cluster.rpc(node));
    let text = common::http().get(&url).call().ok()?.body_mut().read_to_string().ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
}

#[test]
fn conflicting_transfers_at_two_nodes_make_no_backup_suspect_the_primary() {
    let mut cluster = Cluster::create("admission-lone-view-change", 4, 2);
    cluster.start_all();
    let (sender, other) = (cluster.account_key(0), cluster.account_key(1));
    // Warm up: one block, so gossip reaches everyone.
    let warm = cluster.transfer(&other, 0, sender.public_key(), 1);
    assert_eq!(cluster.submit(0, &warm).0, 202);
    for node in 0..4 {
        cluster.wait_height(node, 1, Duration::from_secs(30));
    }
    let balance = BALANCE + 1;
    // Each of the two alone is payable; both together are not.
    let amount = balance / 2 + 1000;
    let next = cluster.transfer(&sender, 0, other.public_key(), amount);
    let later = cluster.transfer(&sender, 1, other.public_key(), amount);
    // Validator 0 is the primary of view 0; validator 1 a backup. At once.
    let (at_primary, at_backup) = std::thread::scope(|scope| {
        let primary = scope.spawn(|| cluster.submit(0, &later));
        let backup = scope.spawn(|| cluster.submit(1, &next));
        (primary.join().expect("submit"), backup.join().expect("submit"))
    });
    // Nonce 1 is admitted (202) at the primary unless nonce 0's gossip got there first (then the two
    // together overspend). Nonce 0 is admitted whatever arrived first: a lower nonce is never
    // refused for what a higher one would spend.
    assert!(
        at_primary.0 == 202 || at_primary.1["error"]["code"] == -32005,
        "primary: {} {}",
        at_primary.0,
        at_primary.1
    );
    assert_eq!(at_backup.0, 202, "backup: {}", at_backup.1);
    // Nonce 0 commits, in view 0, well within one view-change timeout.
    let deadline = Instant::now() + Duration::from_secs(10);
    let hash = next.hash().to_hex();
    loop {
        let (status, body) = cluster.get(0, &format!("/txs/{hash}"));
        if status == 200 && body["status"] == "committed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nonce 0 did not commit: {status} {body}; primary log:\n{}\nbackup log:\n{}",
            tail(&cluster.log(0)),
            tail(&cluster.log(1))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Two view-change timeouts later nobody has started a view change, and nothing waits.
    std::thread::sleep(Duration::from_secs(5));
    for node in 0..4 {
        let status = cluster.status(node).expect("status");
        assert_eq!(
            (status["view"].as_u64(), status["view_active"].as_bool()),
            (Some(0), Some(true)),
            "node {node}: {status}\nlog:\n{}",
            tail(&cluster.log(node))
        );
        assert_eq!(metric(&cluster, node, "tetrad_view_changes_total"), Some(0.0), "node {node}");
        assert_eq!(status["mempool_txs"], 0, "node {node}: {status}");
    }
    // Nonce 1 could no longer be paid once nonce 0 was in: it is gone everywhere.
    let (status, _) = cluster.get(0, &format!("/txs/{}", later.hash().to_hex()));
    assert_eq!(status, 404);
}
