//! Re-gossip against real `tetrad` processes: a transaction that waits (no quorum) is gossiped
//! again every 2 s, and a node that missed its first gossip (a full node started afterwards)
//! receives it that way. It used not to: gossipsub's message id was the hash of the message's
//! bytes, a re-gossip of the same lone transaction had the same bytes, and gossipsub refused to
//! publish it again ("duplicate").

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, FullNode, tail};

/// Waits until `get(path)` says the transaction is pending; false after `timeout`.
fn wait_pending(get: impl Fn(&str) -> Option<serde_json::Value>, hash: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if get(&format!("/txs/{hash}")).is_some_and(|view| view["status"] == "pending") {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn full_node_log(full: &FullNode) -> String {
    tail(&std::fs::read_to_string(full.home.join("node.log")).unwrap_or_default())
}

#[test]
fn a_node_that_missed_the_first_gossip_gets_a_waiting_transaction_by_regossip() {
    let mut cluster = Cluster::create("regossip", 4, 2);
    // Two validators of four: no quorum, so a submitted transaction waits in the mempools.
    cluster.start(0);
    cluster.start(1);
    cluster.wait_up(0, Duration::from_secs(30));
    cluster.wait_up(1, Duration::from_secs(30));
    let key = cluster.account_key(0);
    let to = cluster.account_key(1).public_key();
    let tx = cluster.transfer(&key, 0, to, 5);
    let hash = tx.hash().to_hex();
    // Validator 1 is a backup: it never proposes, so what waits there is gossiped again.
    let (code, body) = cluster.submit(1, &tx);
    assert_eq!(code, 202, "{body}");
    // The first gossip (or the first re-gossip) reaches validator 0.
    assert!(
        wait_pending(|path| Some(cluster.get(0, path).1), &hash, Duration::from_secs(30)),
        "validator 0 never saw the transaction; log:\n{}",
        tail(&cluster.log(0))
    );
    // Past gossipsub's message cache (2.5 s here), so nothing of the first publish is left to
    // hand to a newcomer.
    std::thread::sleep(Duration::from_secs(4));
    let full = cluster.start_full_node("late");
    let seen = wait_pending(|path| full.get(path), &hash, Duration::from_secs(40));
    assert!(
        seen,
        "the full node started after the first gossip never received the waiting transaction \
         (re-gossip did not reach it); full node log:\n{}\nvalidator 1 log:\n{}",
        full_node_log(&full),
        tail(&cluster.log(1))
    );
    // Nothing committed meanwhile: it came by gossip, not in a block.
    assert_eq!(cluster.height(0), Some(0));
}
