//! The checker on planted faults: each must be caught (the negative controls), and a clean
//! history must pass. The chains are real: blocks executed by the ledger (`execute` on an
//! in-memory state), so that headers, batch digests and state roots are what nodes produce.

use super::*;
use tetrad_consensus::{ValidatorIndex, View};
use tetrad_ledger::testkit::{MemoryState, TestChain};

/// Accounts 0 and 1, 1,000 each.
fn world() -> TestChain {
    TestChain::new(4, 2, 1_000)
}

fn genesis(world: &TestChain) -> Vec<(Address, u64)> {
    world.genesis.accounts.iter().map(|(address, account)| (*address, account.balance)).collect()
}

fn transfer(
    world: &TestChain,
    from: u64,
    to: u64,
    amount: u64,
    nonce: u64,
    answer: Answer,
    height: Option<u64>,
) -> TxRecord {
    let tx = world.transfer(from, nonce, to, amount);
    TxRecord {
        hash: tx.hash(),
        from: tx.body.from,
        to: world.addresses[to as usize],
        amount,
        nonce,
        tx,
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

/// How a block's batch was made.
#[derive(Clone, Copy)]
enum Made {
    /// By a primary with transactions (or an idle primary's empty batch): its clock.
    Proposed,
    /// A new view's null batch: time 0, no payload.
    NullOfNewView,
    /// An older view's batch that a new view re-proposed above a newer view's batch: its time
    /// is below its parent's, so the header carries the parent's time.
    Earlier,
}

/// Executes each block's transactions with the ledger, as a node does: the blocks and the
/// state after each height (index 0: genesis).
fn build_made(world: &TestChain, blocks: &[(&[&Tx], Made)]) -> (Vec<ChainBlock>, Vec<MemoryState>) {
    let mut state = MemoryState::from_genesis(&world.genesis);
    let mut states = vec![state.clone()];
    let mut parent = world.genesis.header.clone();
    let mut chain = Vec::new();
    for (index, (txs, made)) in blocks.iter().enumerate() {
        let txs: Vec<Tx> = txs.iter().map(|tx| (*tx).clone()).collect();
        let batch = match made {
            Made::Proposed => Batch {
                view: View(0),
                proposer: ValidatorIndex(0),
                timestamp_ms: parent.timestamp_ms + 1 + index as u64,
                payload: if txs.is_empty() { Vec::new() } else { tetrad_ledger::tx::encode_payload(&txs) },
            },
            Made::NullOfNewView => Batch::empty(View(1), ValidatorIndex(1)),
            Made::Earlier => Batch {
                view: View(0),
                proposer: ValidatorIndex(0),
                timestamp_ms: parent.timestamp_ms - 1,
                payload: tetrad_ledger::tx::encode_payload(&txs),
            },
        };
        let execution = match tetrad_ledger::execute(&state, &parent, &batch, &txs) {
            Ok(execution) => execution,
            Err(never) => match never {},
        };
        state.apply(&execution);
        states.push(state.clone());
        let header = execution.header.clone();
        let batch_txs: Vec<Digest> = txs.iter().map(Tx::hash).collect();
        chain.push(ChainBlock {
            height: header.height.0,
            hash: header.hash(),
            header: header.clone(),
            batch_txs: (batch_txs != execution.tx_hashes).then_some(batch_txs),
            txs: execution.tx_hashes,
            batch_timestamp_ms: Some(batch.timestamp_ms),
        });
        parent = header;
    }
    (chain, states)
}

/// Block `index` as a node served it before blocks left out what did not execute: every
/// transaction of its batch listed, a copy that failed its nonce check among them (the header's
/// tx root and count, and the hashes above, follow).
fn listing_the_copies(chain: &mut [ChainBlock], index: usize) {
    let batch = chain[index].batch_txs.take().expect("the block left a transaction out");
    chain[index].txs = batch;
    rehash(chain, index);
}

fn build(world: &TestChain, blocks: &[&[&Tx]]) -> (Vec<ChainBlock>, Vec<MemoryState>) {
    let made: Vec<(&[&Tx], Made)> = blocks.iter().map(|txs| (*txs, Made::Proposed)).collect();
    build_made(world, &made)
}

/// Two transfers acknowledged at heights 1 and 2, an unknown one that made it (height 3), an
/// unknown one that did not, and a refused one.
fn history(world: &TestChain) -> Vec<TxRecord> {
    vec![
        transfer(world, 0, 1, 100, 0, Answer::Committed, Some(1)),
        transfer(world, 1, 0, 30, 0, Answer::Committed, Some(2)),
        transfer(world, 0, 1, 5, 1, Answer::Unknown, None),
        transfer(world, 1, 0, 7, 1, Answer::Unknown, None),
        transfer(world, 0, 1, 5_000, 2, Answer::Failed, None),
    ]
}

/// The chain of `history`: record entries 0, 1, 2 at heights 1, 2, 3.
fn history_chain(world: &TestChain, record: &[TxRecord]) -> (Vec<ChainBlock>, Vec<MemoryState>) {
    build(world, &[&[&record[0].tx], &[&record[1].tx], &[&record[2].tx]])
}

fn balances(state: &MemoryState) -> BTreeMap<Address, (u64, u64)> {
    state.accounts.iter().map(|(address, account)| (*address, (account.balance, account.nonce))).collect()
}

fn node(name: &str, blocks: Vec<ChainBlock>, state: &MemoryState) -> NodeChain {
    NodeChain {
        name: name.to_string(),
        accounts_height: blocks.len() as u64,
        blocks,
        accounts: balances(state),
        problems: Vec::new(),
    }
}

/// Every node holding `chain`, its balances read at its last height.
fn nodes(chain: &[ChainBlock], states: &[MemoryState]) -> Vec<NodeChain> {
    let last = &states[chain.len()];
    ["v0", "v1", "v2", "v3", "full0"].iter().map(|name| node(name, chain.to_vec(), last)).collect()
}

fn has(verdict: &Verdict, prefix: &str) -> bool {
    verdict.violations.iter().any(|text| text.starts_with(prefix))
}

#[test]
fn a_clean_history_passes() {
    let world = world();
    let record = history(&world);
    let (chain, states) = history_chain(&world, &record);
    let verdict = check(&genesis(&world), &record, &nodes(&chain, &states), Rules::default());
    assert!(verdict.passed(), "{:#?}", verdict.violations);
    assert_eq!((verdict.acknowledged, verdict.failed, verdict.unknown), (2, 1, 2));
    assert_eq!((verdict.lost, verdict.duplicated, verdict.phantom), (0, 0, 0));
    assert_eq!((verdict.bad_blocks, verdict.state_mismatches), (0, 0));
    assert_eq!(verdict.unknown_in_chain, 1);
    assert_eq!(verdict.blocks_with_txs, 3);
}

#[test]
fn empty_blocks_of_a_new_view_and_of_an_idle_primary_pass() {
    let world = world();
    let record = history(&world);
    let (chain, states) = build_made(
        &world,
        &[
            (&[&record[0].tx], Made::Proposed),
            (&[], Made::NullOfNewView),
            (&[&record[1].tx], Made::Proposed),
            (&[], Made::Proposed),
            (&[&record[2].tx], Made::Proposed),
        ],
    );
    let mut record = record;
    record[1].height = Some(3);
    let verdict = check(&genesis(&world), &record, &nodes(&chain, &states), Rules::default());
    assert!(verdict.passed(), "{:#?}", verdict.violations);
    assert_eq!((verdict.height, verdict.blocks_with_txs), (5, 3));
}

/// Seed 23 (a Byzantine v2, every fault kind): block 80 held a batch of view 0 that view 2
/// re-proposed above view 1's batch at 79, so its header carried block 79's time. The checker
/// rebuilt the batch digest with the header's time and called the block bad on every node;
/// with the node's word for the batch's time it passes, and a wrong word is still caught.
#[test]
fn a_re_proposed_batch_older_than_its_parent_passes_with_its_own_time() {
    let world = world();
    let record = history(&world);
    let (chain, states) = build_made(
        &world,
        &[
            (&[&record[0].tx], Made::Proposed),
            (&[&record[1].tx], Made::Proposed),
            // Its batch's time is two or more (the second block's is at least three), so the
            // lie below stays under the header's time without wrapping.
            (&[&record[2].tx], Made::Earlier),
        ],
    );
    assert_eq!(
        chain[2].header.timestamp_ms, chain[1].header.timestamp_ms,
        "the header took its parent's time"
    );
    let verdict = check(&genesis(&world), &record, &nodes(&chain, &states), Rules::default());
    assert!(verdict.passed(), "{:#?}", verdict.violations);
    // What the checker did before nodes reported the batch's time: a bad block on every node.
    let mut unsaid = chain.clone();
    unsaid[2].batch_timestamp_ms = None;
    let verdict = check(&genesis(&world), &record, &nodes(&unsaid, &states), Rules::default());
    assert_eq!(verdict.bad_blocks, 5, "{:#?}", verdict.violations);
    // A node that names another time does not pass.
    let mut lying = chain.clone();
    lying[2].batch_timestamp_ms = lying[2].batch_timestamp_ms.map(|time| time - 1);
    let verdict = check(&genesis(&world), &record, &nodes(&lying, &states), Rules::default());
    assert_eq!(verdict.bad_blocks, 5, "{:#?}", verdict.violations);
}

#[test]
fn a_forged_acknowledgment_is_lost() {
    let world = world();
    let mut record = history(&world);
    let (chain, states) = history_chain(&world, &record);
    // The client was "told" that a transfer it signed committed, but no block holds it.
    record.push(transfer(&world, 1, 0, 1, 1, Answer::Committed, Some(3)));
    let verdict = check(&genesis(&world), &record, &nodes(&chain, &states), Rules::default());
    assert!(!verdict.passed());
    assert_eq!(verdict.lost, 1, "{:#?}", verdict.violations);
}

#[test]
fn an_acknowledgment_at_the_wrong_height_is_lost() {
    let world = world();
    let mut record = history(&world);
    let (chain, states) = history_chain(&world, &record);
    record[1].height = Some(3);
    let verdict = check(&genesis(&world), &record, &nodes(&chain, &states), Rules::default());
    assert_eq!(verdict.lost, 1, "{:#?}", verdict.violations);
}

#[test]
fn an_unverified_acknowledgment_fails() {
    let world = world();
    let mut record = history(&world);
    let (chain, states) = history_chain(&world, &record);
    record[0].certificate_verified = false;
    let verdict = check(&genesis(&world), &record, &nodes(&chain, &states), Rules::default());
    assert_eq!(verdict.unverified_acks, 1);
    assert!(!verdict.passed());
}

#[test]
fn a_transaction_twice_in_the_chain_is_duplicated() {
    let world = world();
    let record = history(&world);
    // A view change re-proposed the second transfer and the new primary cut it again: the
    // second copy fails its nonce check; a node that lists it has the hash in the chain twice.
    let (mut chain, states) =
        build(&world, &[&[&record[0].tx], &[&record[1].tx], &[&record[2].tx, &record[1].tx]]);
    listing_the_copies(&mut chain, 2);
    let verdict = check(&genesis(&world), &record, &nodes(&chain, &states), Rules::default());
    assert_eq!(verdict.duplicated, 1, "{:#?}", verdict.violations);
    assert!(!verdict.passed());
}

/// Seed 23 (a Byzantine v2, every fault kind): an older view's batch, prepared by too few to be
/// in the next new-view, came back in a later view above the newer view's copy of its
/// transactions; each executed once, but blocks listed the copies, 5 transactions twice. A
/// block now lists what executed and says its batch's transactions beside: the chain holds each
/// once and the batch digest still checks.
#[test]
fn a_copy_the_block_left_out_is_in_the_chain_once_and_its_batch_still_checks() {
    let world = world();
    let record = history(&world);
    let (chain, states) =
        build(&world, &[&[&record[0].tx], &[&record[1].tx], &[&record[2].tx, &record[1].tx]]);
    assert_eq!(chain[2].txs, vec![record[2].hash], "the copy is left out");
    assert_eq!(chain[2].batch_txs, Some(vec![record[2].hash, record[1].hash]));
    let verdict = check(&genesis(&world), &record, &nodes(&chain, &states), Rules::default());
    assert!(verdict.passed(), "{:#?}", verdict.violations);
    assert_eq!((verdict.duplicated, verdict.bad_blocks, verdict.left_out), (0, 0, 1));
    // Without the batch's transactions the digest cannot be rebuilt: a bad block everywhere.
    let mut unsaid = chain.clone();
    unsaid[2].batch_txs = None;
    let verdict = check(&genesis(&world), &record, &nodes(&unsaid, &states), Rules::default());
    assert_eq!(verdict.bad_blocks, 5, "{:#?}", verdict.violations);
    // A node that leaves out a transaction that executed (its nonce was right) is caught, and
    // so is one that lists a transaction its batch does not hold.
    let mut hiding = chain.clone();
    hiding[1].batch_txs = Some(hiding[1].txs.clone());
    hiding[1].txs.clear();
    rehash(&mut hiding, 1);
    let verdict = check(&genesis(&world), &record, &nodes(&hiding, &states), Rules::default());
    assert!(has(&verdict, "left out"), "{:#?}", verdict.violations);
    let mut inventing = chain.clone();
    inventing[2].txs = vec![record[3].hash];
    rehash(&mut inventing, 2);
    let verdict = check(&genesis(&world), &record, &nodes(&inventing, &states), Rules::default());
    assert!(has(&verdict, "bad block"), "{:#?}", verdict.violations);
}

#[test]
fn a_transaction_nobody_submitted_is_a_phantom() {
    let world = world();
    let record = history(&world);
    let stranger = world.transfer(1, 1, 0, 3);
    let (chain, states) = build(&world, &[&[&record[0].tx], &[&record[1].tx], &[&record[2].tx, &stranger]]);
    let verdict = check(&genesis(&world), &record, &nodes(&chain, &states), Rules::default());
    assert_eq!(verdict.phantom, 1, "{:#?}", verdict.violations);
}

#[test]
fn a_refused_transaction_in_the_chain_fails() {
    let world = world();
    let record = history(&world);
    let (chain, states) =
        build(&world, &[&[&record[0].tx], &[&record[1].tx], &[&record[2].tx, &record[4].tx]]);
    let verdict = check(&genesis(&world), &record, &nodes(&chain, &states), Rules::default());
    assert_eq!(verdict.refused_in_chain, 1, "{:#?}", verdict.violations);
}

#[test]
fn a_fork_is_caught() {
    let world = world();
    let record = history(&world);
    let (chain, states) = history_chain(&world, &record);
    let mut chains = nodes(&chain, &states);
    chains[2].blocks[1].hash = Digest([77; 32]);
    let verdict = check(&genesis(&world), &record, &chains, Rules::default());
    assert!(has(&verdict, "fork"), "{:#?}", verdict.violations);
}

#[test]
fn a_rolled_back_node_is_caught() {
    // v3's database was rolled back to height 1 and it kept running: it did not converge, and
    // it claims its balances of height 1 are those of height 3.
    let world = world();
    let record = history(&world);
    let (chain, states) = history_chain(&world, &record);
    let mut chains = nodes(&chain, &states);
    chains[3] = node("v3", chain[..1].to_vec(), &states[1]);
    chains[3].accounts_height = 3;
    let verdict = check(&genesis(&world), &record, &chains, Rules::default());
    assert!(has(&verdict, "not converged"), "{:#?}", verdict.violations);
    assert!(has(&verdict, "balance"), "{:#?}", verdict.violations);
}

#[test]
fn a_balance_that_is_not_the_replay_fails_and_so_does_created_money() {
    let world = world();
    let record = history(&world);
    let (chain, states) = history_chain(&world, &record);
    let mut chains = nodes(&chain, &states);
    let account = chains[0].accounts.get_mut(&world.addresses[1]).expect("account 1");
    account.0 += 1;
    let verdict = check(&genesis(&world), &record, &chains, Rules::default());
    assert!(has(&verdict, "balance"), "{:#?}", verdict.violations);
    assert!(has(&verdict, "supply"), "{:#?}", verdict.violations);
}

#[test]
fn a_receipt_the_replay_contradicts_fails() {
    let world = world();
    let mut record = history(&world);
    let (chain, states) = history_chain(&world, &record);
    // The client was told the transfer at height 2 failed, but it had the right nonce and funds.
    record[1].executed = false;
    let verdict = check(&genesis(&world), &record, &nodes(&chain, &states), Rules::default());
    assert!(has(&verdict, "receipt"), "{:#?}", verdict.violations);
}

#[test]
fn fetch_problems_fail_the_check() {
    let world = world();
    let record = history(&world);
    let (chain, states) = history_chain(&world, &record);
    let mut chains = nodes(&chain, &states);
    chains[1].problems.push("block 2: commit certificate: too few signatures".to_string());
    let verdict = check(&genesis(&world), &record, &chains, Rules::default());
    assert!(!verdict.passed());
}

#[test]
fn a_replayed_copy_is_counted_and_let_through_only_when_allowed() {
    let world = world();
    let record = history(&world);
    let (mut chain, states) =
        build(&world, &[&[&record[0].tx], &[&record[1].tx], &[&record[2].tx, &record[1].tx]]);
    listing_the_copies(&mut chain, 2);
    let allowed =
        check(&genesis(&world), &record, &nodes(&chain, &states), Rules { allow_replayed_copies: true });
    assert!(allowed.passed(), "{:#?}", allowed.violations);
    assert_eq!((allowed.duplicated, allowed.replayed_copies), (1, 1));
    assert_eq!(allowed.allowed.len(), 1);
}

#[test]
fn a_copy_that_executes_twice_is_never_let_through() {
    // The first transfer (nonce 0 of account 0) at heights 1 and 2: the replay executes only
    // the first. Nodes whose balances and state roots say both executed must still fail.
    let world = world();
    let record = vec![transfer(&world, 0, 1, 100, 0, Answer::Committed, Some(1))];
    let (mut chain, states) = build(&world, &[&[&record[0].tx], &[&record[0].tx]]);
    listing_the_copies(&mut chain, 1);
    let twice = |(address, (balance, nonce)): (Address, (u64, u64))| {
        if address == world.addresses[0] {
            (address, (balance - 100, nonce + 1))
        } else {
            (address, (balance + 100, nonce))
        }
    };
    let mut chains = nodes(&chain, &states);
    for node in &mut chains {
        node.accounts = node.accounts.clone().into_iter().map(&twice).collect();
    }
    let verdict = check(&genesis(&world), &record, &chains, Rules { allow_replayed_copies: true });
    assert!(!verdict.passed());
    assert!(has(&verdict, "balance"), "{:#?}", verdict.violations);
    // The same with the header of height 2 carrying the state root of a second execution.
    chain[1].header.state_root = Digest([9; 32]);
    rehash(&mut chain, 1);
    let verdict =
        check(&genesis(&world), &record, &nodes(&chain, &states), Rules { allow_replayed_copies: true });
    assert!(has(&verdict, "state root"), "{:#?}", verdict.violations);
}

/// Every node serves block `height` with `alter` applied to its transaction list, the header's
/// tx root, count and hash (and every later parent link) recomputed to match: the certificate
/// (over the batch digest) still verifies, the chain links, the nodes agree.
fn altered_everywhere(chains: &mut [NodeChain], height: usize, alter: &dyn Fn(&mut Vec<Digest>)) {
    for chain in chains {
        alter(&mut chain.blocks[height - 1].txs);
        rehash(&mut chain.blocks, height - 1);
    }
}

#[test]
fn a_transaction_dropped_from_a_block_under_a_valid_certificate_is_caught() {
    let world = world();
    let record = history(&world);
    let (chain, states) =
        build(&world, &[&[&record[0].tx], &[&record[1].tx], &[&record[2].tx, &record[3].tx]]);
    let mut chains = nodes(&chain, &states);
    altered_everywhere(&mut chains, 3, &|txs| {
        txs.pop();
    });
    let verdict = check(&genesis(&world), &record, &chains, Rules::default());
    assert_eq!(verdict.bad_blocks, chains.len() as u64, "{:#?}", verdict.violations);
    assert!(verdict.violations.iter().any(|text| text.contains("batch digest")), "{:#?}", verdict.violations);
}

#[test]
fn a_transaction_added_or_replaced_under_a_valid_certificate_is_caught() {
    let world = world();
    let record = history(&world);
    let (chain, states) = history_chain(&world, &record);
    // Added: the unknown transfer that never made it, now listed at height 3.
    let mut chains = nodes(&chain, &states);
    let extra = record[3].hash;
    altered_everywhere(&mut chains, 3, &|txs| txs.push(extra));
    let verdict = check(&genesis(&world), &record, &chains, Rules::default());
    assert!(verdict.bad_blocks > 0, "{:#?}", verdict.violations);
    // Replaced: the unknown transfer instead of the one executed at height 3.
    let mut chains = nodes(&chain, &states);
    altered_everywhere(&mut chains, 3, &|txs| txs[0] = extra);
    let verdict = check(&genesis(&world), &record, &chains, Rules::default());
    assert!(verdict.bad_blocks > 0, "{:#?}", verdict.violations);
}

#[test]
fn one_node_listing_other_transactions_under_the_same_header_is_caught() {
    // v2 serves the right header (same hash as everyone) with another transaction list.
    let world = world();
    let record = history(&world);
    let (chain, states) = history_chain(&world, &record);
    let mut chains = nodes(&chain, &states);
    chains[2].blocks[2].txs = vec![record[3].hash];
    let verdict = check(&genesis(&world), &record, &chains, Rules::default());
    assert_eq!(verdict.bad_blocks, 1, "{:#?}", verdict.violations);
    assert!(has(&verdict, "fork"), "{:#?}", verdict.violations);
}

#[test]
fn a_header_whose_state_root_is_not_the_replay_is_caught() {
    // Every node executed height 2 wrongly (or lies about it) and agrees: the chain links,
    // the certificates verify, the balances served are the replay's.
    let world = world();
    let record = history(&world);
    let (mut chain, states) = history_chain(&world, &record);
    chain[1].header.state_root = states[1].tree.root();
    rehash(&mut chain, 1);
    let verdict = check(&genesis(&world), &record, &nodes(&chain, &states), Rules::default());
    assert_eq!(verdict.state_mismatches, 1, "{:#?}", verdict.violations);
}

#[test]
fn balances_are_compared_at_the_height_they_were_read() {
    let world = world();
    let record = history(&world);
    let (chain, states) = history_chain(&world, &record);
    // v1 answered for height 2 (it read its balances before height 3 committed): that is the
    // replay of height 2, no difference.
    let mut chains = nodes(&chain, &states);
    chains[1].accounts = balances(&states[2]);
    chains[1].accounts_height = 2;
    let verdict = check(&genesis(&world), &record, &chains, Rules::default());
    assert!(verdict.passed(), "{:#?}", verdict.violations);
    // v1 serves the balances of height 2 as those of height 3: a difference.
    chains[1].accounts_height = 3;
    let verdict = check(&genesis(&world), &record, &chains, Rules::default());
    assert!(has(&verdict, "balance"), "{:#?}", verdict.violations);
    // Balances for a height beyond the chain cannot be checked: a violation.
    chains[1].accounts_height = 4;
    let verdict = check(&genesis(&world), &record, &chains, Rules::default());
    assert!(has(&verdict, "balance"), "{:#?}", verdict.violations);
}

#[test]
fn a_record_that_is_not_what_was_signed_fails() {
    let world = world();
    let record = history(&world);
    let (chain, states) = history_chain(&world, &record);
    // The client recorded another amount than it signed.
    let mut wrong_amount = record.clone();
    wrong_amount[3].amount += 1;
    let verdict = check(&genesis(&world), &wrong_amount, &nodes(&chain, &states), Rules::default());
    assert!(has(&verdict, "record"), "{:#?}", verdict.violations);
    // The client recorded one transaction twice, with two answers.
    let mut twice = record.clone();
    let mut again = record[3].clone();
    again.answer = Answer::Failed;
    twice.push(again);
    let verdict = check(&genesis(&world), &twice, &nodes(&chain, &states), Rules::default());
    assert!(has(&verdict, "record"), "{:#?}", verdict.violations);
    // A hash that is not its transaction's.
    let mut rehashed = record;
    rehashed[4].hash = Digest([5; 32]);
    let verdict = check(&genesis(&world), &rehashed, &nodes(&chain, &states), Rules::default());
    assert!(has(&verdict, "record"), "{:#?}", verdict.violations);
}

#[test]
fn a_truncated_record_line_is_an_error_not_skipped() {
    let world = world();
    let record = history(&world);
    let dir = std::env::temp_dir().join(format!("tetrad-chaos-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("record.jsonl");
    let _ = std::fs::remove_file(&path);
    let mut writer = crate::record::RecordWriter::create(&path).expect("writer");
    for entry in &record {
        writer.append(entry).expect("append");
    }
    assert_eq!(crate::record::read(&path).expect("read").len(), record.len());
    // A campaign killed in the middle of a write leaves half a line.
    let text = std::fs::read_to_string(&path).expect("read back");
    std::fs::write(&path, &text[..text.len() - 40]).expect("truncate");
    assert!(crate::record::read(&path).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_wrong_height_control_is_caught_when_the_first_acknowledged_transaction_has_a_replayed_copy() {
    // The transfer acknowledged at height 2 has a replayed copy at height 3 (let through by
    // --allow-replayed-copies). Moving its acknowledgment to height 3 planted nothing the
    // checker could see: the control must pick a transaction that is in the chain once.
    let world = world();
    let mut record = history(&world);
    let (mut chain, states) =
        build(&world, &[&[&record[0].tx], &[&record[1].tx], &[&record[2].tx, &record[1].tx]]);
    listing_the_copies(&mut chain, 2);
    record.swap(0, 1);
    let rules = Rules { allow_replayed_copies: true };
    let chains = nodes(&chain, &states);
    assert!(check(&genesis(&world), &record, &chains, rules).passed());
    let controls = crate::campaign::negative_controls(&genesis(&world), &record, &chains, rules);
    assert_eq!(controls.len(), 8);
    for control in &controls {
        assert!(control.caught, "not caught: {}", control.planted);
    }
}

#[test]
fn every_negative_control_is_caught_by_its_own_detector_on_a_clean_history() {
    let world = world();
    let record = history(&world);
    let (chain, states) = history_chain(&world, &record);
    let chains = nodes(&chain, &states);
    let rules = Rules::default();
    assert!(check(&genesis(&world), &record, &chains, rules).passed());
    let controls = crate::campaign::negative_controls(&genesis(&world), &record, &chains, rules);
    assert_eq!(controls.len(), 8);
    for control in &controls {
        assert!(control.caught, "not caught: {}", control.planted);
    }
}

#[test]
fn a_control_that_cannot_be_planted_is_not_caught() {
    // Nothing was acknowledged (every answer failed): the acknowledgment controls have nothing
    // to be planted on, and must say so instead of silently not running.
    let world = world();
    let record = history(&world);
    let (chain, states) = history_chain(&world, &record);
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
    let controls = crate::campaign::negative_controls(
        &genesis(&world),
        &failed,
        &nodes(&chain[..0], &states),
        Rules::default(),
    );
    assert!(controls.iter().any(|control| !control.caught && control.planted.contains("no committed")));
    assert!(
        controls.iter().any(|control| !control.caught && control.planted.contains("fewer than two chains"))
    );
}
