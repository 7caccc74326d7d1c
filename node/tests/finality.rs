//! Finality that does not wait for traffic: on an idle 4-validator network, one transfer is
//! covered by a stable checkpoint (a finalized header) soon after it commits, because the
//! primary proposes empty batches up to the next checkpoint boundary; then the chain stops at
//! that boundary, and `/health` says `idle`.
//!
//! Before the empty batches, the checkpoint never came: the transfer's height stayed above the
//! last stable checkpoint for as long as nobody sent another transaction.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, tail};
use serde_json::Value;

/// The checkpoint interval of `tetrad testnet`'s genesis (the default K).
const K: u64 = 16;

/// How long a committed block may wait for its stable checkpoint before the test gives up: far
/// above the few hundred milliseconds it takes on an idle machine (a bound on the wait, not a
/// speed assertion).
const FINALITY_WAIT: Duration = Duration::from_secs(30);

/// Submits a transfer and waits for its commit; returns its height.
fn commit_transfer(cluster: &Cluster, nonce: u64) -> u64 {
    let key = cluster.account_key(0);
    let to = cluster.account_key(1).public_key();
    let tx = cluster.transfer(&key, nonce, to, 7);
    let (code, body) =
        cluster.post(0, "/txs?wait=true&timeout_ms=20000", &serde_json::to_value(&tx).expect("json"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "committed", "{body}");
    body["height"].as_u64().expect("height")
}

/// The height of `node`'s latest stable checkpoint (`/checkpoints/latest`), if it has one.
fn latest_checkpoint(cluster: &Cluster, node: usize) -> Option<u64> {
    match cluster.get(node, "/checkpoints/latest") {
        (200, checkpoint) => checkpoint["height"].as_u64(),
        _ => None,
    }
}

/// Waits (bounded) until every node holds a stable checkpoint at or above `height`, in
/// `/checkpoints/latest` and in `/status`; returns the checkpoint height node 0 reports.
fn wait_finalized(cluster: &Cluster, height: u64) -> u64 {
    let deadline = Instant::now() + FINALITY_WAIT;
    loop {
        let checkpoints: Vec<Option<u64>> = (0..4).map(|node| latest_checkpoint(cluster, node)).collect();
        let stable: Vec<Option<u64>> = (0..4)
            .map(|node| cluster.status(node).and_then(|status| status["stable_checkpoint"].as_u64()))
            .collect();
        if checkpoints.iter().chain(&stable).all(|at| at.is_some_and(|at| at >= height)) {
            return checkpoints[0].unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "no stable checkpoint covers height {height} after {FINALITY_WAIT:?}: \
             /checkpoints/latest {checkpoints:?}, /status stable_checkpoint {stable:?}, heights {:?}; \
             node 0 log:\n{}",
            (0..4).map(|node| cluster.height(node)).collect::<Vec<_>>(),
            tail(&cluster.log(0))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until every node is at `height`, then checks that the heights stay there
/// (nothing more is proposed) for a while, and that `/health` says `idle`.
fn assert_stops_at(cluster: &Cluster, height: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(0..4).all(|node| cluster.height(node) == Some(height)) {
        assert!(
            Instant::now() < deadline,
            "the nodes did not all reach height {height}: {:?}",
            (0..4).map(|node| cluster.height(node)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Many idle delays (150 ms each) long: an endless fill would have moved the height.
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        let heights: Vec<Option<u64>> = (0..4).map(|node| cluster.height(node)).collect();
        assert!(
            heights.iter().all(|at| *at == Some(height)),
            "the idle chain moved past the boundary {height}: {heights:?}; node 0 log:\n{}",
            tail(&cluster.log(0))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for node in 0..4 {
        let (code, health) = cluster.get(node, "/health");
        assert_eq!((code, health["status"].as_str()), (200, Some("idle")), "node {node}: {health}");
    }
}

/// `tetrad_empty_batches_proposed_total` of `node`'s `/metrics`.
fn empty_batches_counted(cluster: &Cluster, node: usize) -> u64 {
    let url = format!("{}/metrics", cluster.rpc(node));
    let text = common::http()
        .get(&url)
        .call()
        .ok()
        .and_then(|mut response| response.body_mut().read_to_string().ok())
        .unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("tetrad_empty_batches_proposed_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
        .unwrap_or_else(|| panic!("node {node}: no tetrad_empty_batches_proposed_total in /metrics"))
}

#[test]
fn an_idle_network_finalizes_a_lone_transfer_then_stops_at_the_checkpoint_boundary() {
    let mut cluster = Cluster::create("finality", 4, 2);
    cluster.start_all();
    // A new chain is at a boundary (genesis): idle, it makes no block at all.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(cluster.height(0), Some(0));

    let mut waits_ms = Vec::new();
    for (round, nonce) in (0..3).enumerate() {
        let height = commit_transfer(&cluster, nonce);
        let committed_at = Instant::now();
        let boundary = height.div_ceil(K) * K;
        assert_eq!(height, round as u64 * K + 1, "the transfer is the first block after a boundary");
        let checkpoint = wait_finalized(&cluster, height);
        waits_ms.push(committed_at.elapsed().as_millis());
        assert_eq!(checkpoint, boundary, "the checkpoint is the next boundary");
        // The blocks that filled the gap are empty, proposed by the primary, and certified.
        for filler in height + 1..=boundary {
            let (code, block) = cluster.get(0, &format!("/blocks/{filler}"));
            assert_eq!(code, 200, "{block}");
            assert_eq!(block["header"]["tx_count"], 0, "height {filler}: {block}");
            assert_eq!(block["txs"], Value::Array(Vec::new()), "height {filler}: {block}");
        }
        assert_stops_at(&cluster, boundary);
    }
    // The primary counted what it filled in (view 0's primary, unless a view change moved the
    // role: then the new primary filled some, or re-proposed them through its new view).
    let counted: u64 = (0..4).map(|node| empty_batches_counted(&cluster, node)).sum();
    assert!((1..=3 * (K - 1)).contains(&counted), "tetrad_empty_batches_proposed_total: {counted}");
    // The figure the README quotes (commit seen by the client → stable checkpoint on all four).
    eprintln!("commit-to-stable-checkpoint waits (ms): {waits_ms:?}");
}
