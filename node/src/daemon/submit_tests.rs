//! Submission through the node's API over a real store and mempool: what admission must cost
//! the sender, or refuse (issue 12, "Free mempool jams"). Each of these was admitted for free
//! before (the test failed on that code).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tetrad_consensus::{Height, SecretKey, ValidatorIndex};
use tetrad_genesis::Genesis;
use tetrad_ledger::Store;
use tetrad_ledger::scratch::ScratchDir;
use tetrad_ledger::testkit::{TestChain, account_key, validator_key};
use tetrad_ledger::tx::{Tx, TxBody, TxKind, chain_tag};
use tetrad_ledger::validators::possession_digest;
use tetrad_rpc::api::SubmitError;
use tokio::sync::{broadcast, mpsc};

use crate::daemon::api::Api;
use crate::daemon::driver::ConsensusStatus;
use crate::daemon::keys::SharedSchedule;
use crate::daemon::mempool::{Mempool, MempoolConfig};

struct Node {
    api: Api,
    chain: TestChain,
    _gossip: mpsc::Receiver<Tx>,
    _dir: ScratchDir,
}

/// A node's API over a fresh store of a 4-validator test chain with `accounts` accounts of
/// 1000 each, and a mempool of at most `txs_max` transactions.
fn node(label: &str, accounts: u64, txs_max: usize) -> Node {
    let dir = ScratchDir::new(label).expect("scratch dir");
    let chain = TestChain::new(4, accounts, 1000);
    let store = Arc::new(Store::open_or_init(&dir.join("data"), &chain.genesis).expect("store"));
    let schedule = SharedSchedule::new(store.registry().schedule(Height::GENESIS).expect("schedule"));
    let (gossip, gossip_rx) = mpsc::channel(1 << 16);
    let api = Api {
        name: "test".into(),
        genesis: Arc::new(Genesis::new("tetrad-test", 0)),
        genesis_hash: chain.genesis_hash,
        schedule,
        store,
        mempool: Arc::new(Mutex::new(Mempool::new(MempoolConfig { txs_max, ..MempoolConfig::default() }))),
        status: Arc::new(RwLock::new(ConsensusStatus::new(None, Duration::from_secs(6)))),
        peers: Arc::new(Mutex::new(0)),
        waiters: Arc::new(Mutex::new(HashMap::new())),
        blocks: broadcast::channel(16).0,
        gossip,
        new_txs: Arc::new(tokio::sync::Notify::new()),
        timings: Default::default(),
        backpressure: Arc::new(crate::daemon::backpressure::Backpressure::new(Duration::from_secs(2), 2000)),
    };
    Node { api, chain, _gossip: gossip_rx, _dir: dir }
}

fn rotation(node: &Node, signer: &SecretKey, nonce: u64, validator: u16) -> Tx {
    let new = SecretKey::from_seed([0x5a; 32]);
    let validator = ValidatorIndex(validator);
    let digest =
        possession_digest(&node.chain.genesis_hash, validator, &signer.public_key(), &new.public_key());
    let body = TxBody {
        chain: chain_tag(&node.chain.genesis_hash),
        from: signer.public_key(),
        nonce,
        kind: TxKind::RotateValidatorKey {
            validator,
            new_key: new.public_key(),
            proof_of_possession: new.sign_digest(&digest),
        },
    };
    Tx::sign(body, signer, &node.chain.genesis_hash)
}

fn pending(node: &Node, tx: &Tx) -> bool {
    node.api.mempool.lock().expect("mempool").contains(&tx.hash())
}

#[test]
fn a_key_rotation_is_admitted_only_from_that_validators_current_key() {
    let node = node("submit-rotation", 2, 1000);
    // A fresh key with no account, and a validator's key rotating another validator: both
    // used to be admitted (amount 0, no balance needed) and to wait forever behind nonce gaps.
    let stranger = account_key(900);
    for nonce in [0, 5] {
        assert_eq!(
            node.api.admit(rotation(&node, &stranger, nonce, 0)),
            Err(SubmitError::NotValidator { from: stranger.public_key(), validator: 0 })
        );
    }
    let v1 = validator_key(1);
    assert_eq!(
        node.api.admit(rotation(&node, &v1, 0, 2)),
        Err(SubmitError::NotValidator { from: v1.public_key(), validator: 2 })
    );
    let own = rotation(&node, &v1, 0, 1);
    assert_eq!(node.api.admit(own.clone()), Ok(own.hash()));
}

#[test]
fn a_transfer_from_an_address_without_an_account_is_refused_as_such() {
    let node = node("submit-no-account", 2, 1000);
    let tx = node.chain.transfer(901, 0, 0, 1);
    assert_eq!(node.api.admit(tx), Err(SubmitError::NoAccount { from: account_key(901).public_key() }));
}

#[test]
fn one_sender_cannot_queue_more_than_its_share() {
    let node = node("submit-sender-share", 2, 100_000);
    // Nonces 1.. with nonce 0 never sent: none of them is ever proposable.
    let results: Vec<Result<_, SubmitError>> =
        (1..=400).map(|nonce| node.api.admit(node.chain.transfer(0, nonce, 1, 1))).collect();
    let admitted = results.iter().filter(|result| result.is_ok()).count();
    assert!(admitted <= 128, "one sender queued {admitted} unproposable transactions");
    for result in results.iter().filter(|result| result.is_err()) {
        assert!(
            matches!(result, Err(SubmitError::NonceTooFarAhead { .. } | SubmitError::SenderQueueFull { .. })),
            "{result:?}"
        );
    }
}

/// The root of the lone view change: a backup held nonce 0 and the primary refused it because
/// it held nonce 1, whose spend counted against nonce 0. A sender's next transaction is never
/// refused for what its later ones would spend; they make room.
#[test]
fn a_lower_nonce_is_admitted_when_higher_ones_would_overspend() {
    let node = node("submit-lower-nonce", 2, 1000);
    let later = node.chain.transfer(0, 1, 1, 600);
    assert_eq!(node.api.admit(later.clone()), Ok(later.hash()));
    let next = node.chain.transfer(0, 0, 1, 600);
    assert_eq!(node.api.admit(next.clone()), Ok(next.hash()));
    assert!(pending(&node, &next));
    assert!(!pending(&node, &later), "the later transfer can no longer be paid and must go");
    // A later one that the run cannot pay for is refused.
    assert_eq!(
        node.api.admit(node.chain.transfer(0, 1, 1, 500)),
        Err(SubmitError::InsufficientBalance { balance: 400, amount: 500 })
    );
}

#[test]
fn a_full_mempool_makes_room_for_proposable_work_by_dropping_gapped_work() {
    let node = node("submit-full", 8, 10);
    // Ten transactions behind nonce gaps fill the pool.
    for from in 0..5 {
        for nonce in [1, 2] {
            let tx = node.chain.transfer(from, nonce, 7, 1);
            assert_eq!(node.api.admit(tx.clone()), Ok(tx.hash()));
        }
    }
    // More gapped work is refused…
    assert!(matches!(
        node.api.admit(node.chain.transfer(5, 1, 7, 1)),
        Err(SubmitError::MempoolFull { txs: 10, .. })
    ));
    // …but a transaction that could be proposed now is admitted.
    let ready = node.chain.transfer(6, 0, 7, 1);
    assert_eq!(node.api.admit(ready.clone()), Ok(ready.hash()));
    assert_eq!(node.api.mempool.lock().expect("mempool").len(), 10);
}
