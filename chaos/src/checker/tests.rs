//! The checker on planted faults: each must be caught (the negative controls), and a clean
//! history must pass.

use super::*;
use tetrad_consensus::PublicKey;

fn address(byte: u8) -> Address {
    PublicKey([byte; 32])
}

fn hash(byte: u8) -> Digest {
    Digest([byte; 32])
}

fn transfer(
    id: u8,
    from: u8,
    to: u8,
    amount: u64,
    nonce: u64,
    answer: Answer,
    height: Option<u64>,
) -> TxRecord {
    TxRecord {
        hash: hash(id),
        from: address(from),
        to: address(to),
        amount,
        nonce,
        answer,
        height,
        executed: answer == Answer::Committed,
        certificate_verified: answer == Answer::Committed,
        nodes: vec!["v0".to_string()],
        detail: String::new(),
        submitted_ms: 0,
        resolved_ms: 0,
    }
}

fn blocks(txs_per_height: &[&[u8]]) -> Vec<ChainBlock> {
    let mut parent = hash(0);
    txs_per_height
        .iter()
        .enumerate()
        .map(|(index, txs)| {
            let height = index as u64 + 1;
            let mut bytes = [200u8; 32];
            bytes[0] = height as u8;
            bytes[1] = txs.first().copied().unwrap_or(0);
            let block = ChainBlock {
                height,
                hash: Digest(bytes),
                parent,
                txs: txs.iter().map(|id| hash(*id)).collect(),
            };
            parent = block.hash;
            block
        })
        .collect()
}

const GENESIS: [(u8, u64); 2] = [(1, 1_000), (2, 1_000)];

fn genesis() -> Vec<(Address, u64)> {
    GENESIS.iter().map(|(byte, balance)| (address(*byte), *balance)).collect()
}

/// Two transfers acknowledged at heights 1 and 2, an unknown one that made it (height 3), an
/// unknown one that did not, and a refused one.
fn history() -> (Vec<TxRecord>, Vec<ChainBlock>) {
    let record = vec![
        transfer(10, 1, 2, 100, 0, Answer::Committed, Some(1)),
        transfer(11, 2, 1, 30, 0, Answer::Committed, Some(2)),
        transfer(12, 1, 2, 5, 1, Answer::Unknown, None),
        transfer(13, 2, 1, 7, 1, Answer::Unknown, None),
        transfer(14, 1, 2, 5_000, 2, Answer::Failed, None),
    ];
    (record, blocks(&[&[10], &[11], &[12]]))
}

fn node(name: &str, blocks: Vec<ChainBlock>, balances: &[(u8, u64, u64)]) -> NodeChain {
    NodeChain {
        name: name.to_string(),
        blocks,
        accounts: balances
            .iter()
            .map(|(byte, balance, nonce)| (address(*byte), (*balance, *nonce)))
            .collect(),
        problems: Vec::new(),
    }
}

/// What every honest node holds after `history`.
const BALANCES: [(u8, u64, u64); 2] = [(1, 925, 2), (2, 1_075, 1)];

fn nodes(chain: &[ChainBlock]) -> Vec<NodeChain> {
    ["v0", "v1", "v2", "v3", "full0"].iter().map(|name| node(name, chain.to_vec(), &BALANCES)).collect()
}

#[test]
fn a_clean_history_passes() {
    let (record, chain) = history();
    let verdict = check(&genesis(), &record, &nodes(&chain), Rules::default());
    assert!(verdict.passed(), "{:#?}", verdict.violations);
    assert_eq!((verdict.acknowledged, verdict.failed, verdict.unknown), (2, 1, 2));
    assert_eq!((verdict.lost, verdict.duplicated, verdict.phantom), (0, 0, 0));
    assert_eq!(verdict.unknown_in_chain, 1);
}

#[test]
fn a_forged_acknowledgment_is_lost() {
    let (mut record, chain) = history();
    // The client was "told" that a transfer it signed committed, but no block holds it.
    record.push(transfer(15, 2, 1, 1, 1, Answer::Committed, Some(3)));
    let verdict = check(&genesis(), &record, &nodes(&chain), Rules::default());
    assert!(!verdict.passed());
    assert_eq!(verdict.lost, 1, "{:#?}", verdict.violations);
}

#[test]
fn an_acknowledgment_at_the_wrong_height_is_lost() {
    let (mut record, chain) = history();
    record[1].height = Some(3);
    let verdict = check(&genesis(), &record, &nodes(&chain), Rules::default());
    assert_eq!(verdict.lost, 1, "{:#?}", verdict.violations);
}

#[test]
fn an_unverified_acknowledgment_fails() {
    let (mut record, chain) = history();
    record[0].certificate_verified = false;
    let verdict = check(&genesis(), &record, &nodes(&chain), Rules::default());
    assert_eq!(verdict.unverified_acks, 1);
    assert!(!verdict.passed());
}

#[test]
fn a_transaction_twice_in_the_chain_is_duplicated() {
    let (record, _) = history();
    // A view change re-proposed transaction 11 and the new primary cut it again: the second
    // copy fails its nonce check, but the hash is in the chain twice.
    let chain = blocks(&[&[10], &[11], &[12, 11]]);
    let verdict = check(&genesis(), &record, &nodes(&chain), Rules::default());
    assert_eq!(verdict.duplicated, 1, "{:#?}", verdict.violations);
    assert!(!verdict.passed());
}

#[test]
fn a_transaction_nobody_submitted_is_a_phantom() {
    let (record, _) = history();
    let chain = blocks(&[&[10], &[11], &[12, 99]]);
    let verdict = check(&genesis(), &record, &nodes(&chain), Rules::default());
    assert_eq!(verdict.phantom, 1, "{:#?}", verdict.violations);
}

#[test]
fn a_refused_transaction_in_the_chain_fails() {
    let (record, _) = history();
    let chain = blocks(&[&[10], &[11], &[12, 14]]);
    let verdict = check(&genesis(), &record, &nodes(&chain), Rules::default());
    assert_eq!(verdict.refused_in_chain, 1, "{:#?}", verdict.violations);
}

#[test]
fn a_fork_is_caught() {
    let (record, chain) = history();
    let mut chains = nodes(&chain);
    chains[2].blocks[1].hash = hash(77);
    let verdict = check(&genesis(), &record, &chains, Rules::default());
    assert!(verdict.violations.iter().any(|text| text.starts_with("fork")), "{:#?}", verdict.violations);
}

#[test]
fn a_rolled_back_node_is_caught() {
    // v3's database was rolled back to height 1 and it kept running: it did not converge, and
    // its balances are those of an older state.
    let (record, chain) = history();
    let mut chains = nodes(&chain);
    chains[3] = node("v3", chain[..1].to_vec(), &[(1, 900, 1), (2, 1_100, 0)]);
    let verdict = check(&genesis(), &record, &chains, Rules::default());
    assert!(
        verdict.violations.iter().any(|text| text.starts_with("not converged")),
        "{:#?}",
        verdict.violations
    );
    assert!(verdict.violations.iter().any(|text| text.starts_with("balance")), "{:#?}", verdict.violations);
}

#[test]
fn a_balance_that_is_not_the_replay_fails_and_so_does_created_money() {
    let (record, chain) = history();
    let mut chains = nodes(&chain);
    chains[0].accounts.insert(address(2), (1_076, 1));
    let verdict = check(&genesis(), &record, &chains, Rules::default());
    assert!(verdict.violations.iter().any(|text| text.starts_with("balance")), "{:#?}", verdict.violations);
    assert!(verdict.violations.iter().any(|text| text.starts_with("supply")), "{:#?}", verdict.violations);
}

#[test]
fn a_receipt_the_replay_contradicts_fails() {
    let (mut record, chain) = history();
    // The client was told the transfer at height 2 failed, but it had the right nonce and funds.
    record[1].executed = false;
    let verdict = check(&genesis(), &record, &nodes(&chain), Rules::default());
    assert!(verdict.violations.iter().any(|text| text.starts_with("receipt")), "{:#?}", verdict.violations);
}

#[test]
fn fetch_problems_fail_the_check() {
    let (record, chain) = history();
    let mut chains = nodes(&chain);
    chains[1].problems.push("block 2: commit certificate: too few signatures".to_string());
    let verdict = check(&genesis(), &record, &chains, Rules::default());
    assert!(!verdict.passed());
}

#[test]
fn a_replayed_copy_is_counted_and_let_through_only_when_allowed() {
    let (record, _) = history();
    let chain = blocks(&[&[10], &[11], &[12, 11]]);
    let allowed = check(&genesis(), &record, &nodes(&chain), Rules { allow_replayed_copies: true });
    assert!(allowed.passed(), "{:#?}", allowed.violations);
    assert_eq!((allowed.duplicated, allowed.replayed_copies), (1, 1));
    assert_eq!(allowed.allowed.len(), 1);
}

#[test]
fn a_copy_that_executes_twice_is_never_let_through() {
    // Transaction 10 (nonce 0 of account 1) at heights 1 and 2: the replay executes only the
    // first. A history where both executed (balances of two executions) must still fail.
    let record = vec![transfer(10, 1, 2, 100, 0, Answer::Committed, Some(1))];
    let chain = blocks(&[&[10], &[10]]);
    let mut chains = nodes(&chain);
    for node in &mut chains {
        node.accounts = [(address(1), (800, 2)), (address(2), (1_200, 0))].into_iter().collect();
    }
    let verdict = check(&genesis(), &record, &chains, Rules { allow_replayed_copies: true });
    assert!(!verdict.passed());
    assert!(verdict.violations.iter().any(|text| text.starts_with("balance")), "{:#?}", verdict.violations);
}

#[test]
fn the_wrong_height_control_is_caught_when_the_first_acknowledged_transaction_has_a_replayed_copy() {
    // Transaction 11, acknowledged at height 2, has a replayed copy at height 3 (let through by
    // --allow-replayed-copies). Moving its acknowledgment to height 3 planted nothing the checker
    // could see: the control must pick a transaction that is in the chain once.
    let (mut record, _) = history();
    record.swap(0, 1);
    let chain = blocks(&[&[10], &[11], &[12, 11]]);
    let rules = Rules { allow_replayed_copies: true };
    assert!(check(&genesis(), &record, &nodes(&chain), rules).passed());
    let controls = crate::campaign::negative_controls(&genesis(), &record, &nodes(&chain), rules);
    assert_eq!(controls.len(), 5);
    for control in &controls {
        assert!(control.caught, "not caught: {}", control.planted);
    }
}

#[test]
fn every_negative_control_is_caught_by_its_own_detector_on_a_clean_history() {
    let (record, chain) = history();
    let rules = Rules::default();
    assert!(check(&genesis(), &record, &nodes(&chain), rules).passed());
    let controls = crate::campaign::negative_controls(&genesis(), &record, &nodes(&chain), rules);
    assert_eq!(controls.len(), 5);
    for control in &controls {
        assert!(control.caught, "not caught: {}", control.planted);
    }
}

#[test]
fn a_control_that_cannot_be_planted_is_not_caught() {
    // Nothing was acknowledged (every answer failed): the acknowledgment controls have nothing
    // to be planted on, and must say so instead of silently not running.
    let (record, chain) = history();
    let failed: Vec<TxRecord> = record
        .into_iter()
        .map(|mut entry| {
            entry.answer = Answer::Failed;
            entry.height = None;
            entry.executed = false;
            entry.certificate_verified = false;
            entry
        })
        .collect();
    let controls =
        crate::campaign::negative_controls(&genesis(), &failed, &nodes(&chain[..0]), Rules::default());
    assert!(controls.iter().any(|control| !control.caught && control.planted.contains("no committed")));
    assert!(
        controls.iter().any(|control| !control.caught && control.planted.contains("fewer than two chains"))
    );
}
