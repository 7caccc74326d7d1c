//! Property tests of the deterministic ledger: conservation, the nonce rule, determinism,
//! failure isolation and checked arithmetic.

use proptest::prelude::*;
use tetrad_consensus::{Batch, ValidatorIndex, View};
use tetrad_ledger::block::{ExecutionError, Outcome};
use tetrad_ledger::execute::execute;
use tetrad_ledger::scratch::ScratchDir;
use tetrad_ledger::testkit::{MemoryState, TestChain, account_key};
use tetrad_ledger::tx::{Address, Tx, encode_payload};
use tetrad_ledger::{Header, Store};

const ACCOUNTS: u64 = 6;

/// One generated transaction: sender, recipient (possibly a fresh address), amount, and how far
/// its nonce is off from the sender's next nonce (0 = correct).
#[derive(Clone, Debug)]
struct TxPlan {
    from: u64,
    to: u64,
    amount: u64,
    nonce_offset: i8,
}

fn tx_plan() -> impl Strategy<Value = TxPlan> {
    (
        0..ACCOUNTS + 2,
        0..ACCOUNTS + 3,
        prop_oneof![1..50u64, 1..2000u64, Just(u64::MAX), Just(u64::MAX - 1)],
        prop_oneof![4 => Just(0i8), 1 => -2..3i8],
    )
        .prop_map(|(from, to, amount, nonce_offset)| TxPlan { from, to, amount, nonce_offset })
}

fn blocks() -> impl Strategy<Value = Vec<Vec<TxPlan>>> {
    prop::collection::vec(prop::collection::vec(tx_plan(), 0..12), 1..8)
}

/// Turns plans into signed transactions against the nonces of `state`, tracking the nonces the
/// batch itself will consume.
fn realise(chain: &TestChain, state: &MemoryState, plans: &[TxPlan]) -> Vec<Tx> {
    let mut next = std::collections::HashMap::new();
    plans
        .iter()
        .map(|plan| {
            let address = account_key(plan.from).public_key();
            let nonce = *next
                .entry(plan.from)
                .or_insert_with(|| state.accounts.get(&address).map(|account| account.nonce).unwrap_or(0));
            let used = nonce.saturating_add_signed(i64::from(plan.nonce_offset));
            if plan.nonce_offset == 0 {
                next.insert(plan.from, nonce + 1);
            }
            chain.transfer(plan.from, used, plan.to, plan.amount)
        })
        .collect()
}

fn batch(parent: &Header, txs: &[Tx]) -> Batch {
    Batch {
        view: View(0),
        proposer: ValidatorIndex(0),
        timestamp_ms: parent.timestamp_ms + 1,
        payload: encode_payload(txs),
    }
}

/// Each batch transaction's receipt, or `None` where the block left it out (its nonce was
/// wrong: it never executed).
fn receipts_by_position<'a>(
    txs: &[Tx],
    execution: &'a tetrad_ledger::execute::Execution,
) -> Vec<Option<&'a tetrad_ledger::Receipt>> {
    let mut by_position = vec![None; txs.len()];
    for (receipt, position) in execution.receipts.iter().zip(&execution.positions) {
        by_position[*position as usize] = Some(receipt);
    }
    by_position
}

/// Executes all blocks on a memory state; returns the headers and the final state.
fn run(chain: &TestChain, blocks: &[Vec<TxPlan>]) -> (Vec<Header>, MemoryState, Vec<Vec<Tx>>) {
    let mut state = MemoryState::from_genesis(&chain.genesis);
    let mut parent = chain.genesis.header.clone();
    let mut headers = Vec::new();
    let mut all_txs = Vec::new();
    for plans in blocks {
        let txs = realise(chain, &state, plans);
        let execution =
            execute(&state, &parent, &batch(&parent, &txs), &txs).unwrap_or_else(|never| match never {});
        state.apply(&execution);
        parent = execution.header.clone();
        headers.push(execution.header);
        all_txs.push(txs);
    }
    (headers, state, all_txs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn total_supply_is_conserved(blocks in blocks()) {
        let chain = TestChain::new(4, ACCOUNTS, 1000);
        let start = MemoryState::from_genesis(&chain.genesis).total_balance();
        let (_, state, _) = run(&chain, &blocks);
        prop_assert_eq!(state.total_balance(), start);
        // The tree commits to every account.
        prop_assert_eq!(state.tree.count() as usize, state.accounts.len());
    }

    #[test]
    fn a_nonce_executes_at_most_once_and_only_in_order(blocks in blocks()) {
        let chain = TestChain::new(4, ACCOUNTS, 1000);
        let mut state = MemoryState::from_genesis(&chain.genesis);
        let mut parent = chain.genesis.header.clone();
        let mut executed: std::collections::HashSet<(Address, u64)> = Default::default();
        // Every transaction hash any block lists: a chain holds each once.
        let mut listed: std::collections::HashSet<tetrad_consensus::Digest> = Default::default();
        for plans in &blocks {
            let txs = realise(&chain, &state, plans);
            let mut nonces: std::collections::HashMap<Address, u64> = Default::default();
            let execution = execute(&state, &parent, &batch(&parent, &txs), &txs).unwrap_or_else(|never| match never {});
            prop_assert_eq!(execution.header.tx_count as usize, execution.receipts.len());
            for (tx, receipt) in txs.iter().zip(receipts_by_position(&txs, &execution)) {
                let from = tx.body.from;
                let expected = *nonces.entry(from).or_insert_with(|| state.accounts.get(&from).map(|a| a.nonce).unwrap_or(0));
                // Executed (successfully or not) and in the block unless its nonce was wrong;
                // either way a used nonce is used up.
                match receipt {
                    None => prop_assert_ne!(tx.body.nonce, expected, "the next nonce always executes"),
                    Some(receipt) => {
                        prop_assert_eq!(tx.body.nonce, expected, "only the next nonce executes");
                        prop_assert!(executed.insert((from, tx.body.nonce)), "nonce executed twice");
                        prop_assert!(listed.insert(receipt.tx_hash), "a transaction listed twice");
                        nonces.insert(from, expected + 1);
                    }
                }
            }
            state.apply(&execution);
            parent = execution.header.clone();
        }
        // Replaying every transaction that executed (successfully or not) executes none of
        // them again, and the block lists none of them.
        let (_, _, all_txs) = run(&chain, &blocks);
        let replay: Vec<Tx> = all_txs.into_iter().flatten().filter(|tx| executed.contains(&(tx.body.from, tx.body.nonce))).collect();
        let execution = execute(&state, &parent, &batch(&parent, &replay), &replay).unwrap_or_else(|never| match never {});
        prop_assert!(execution.receipts.is_empty(), "a replayed transaction executed");
        prop_assert_eq!(execution.header.tx_count, 0);
        prop_assert_eq!(execution.header.state_root, parent.state_root);
    }

    #[test]
    fn execution_is_deterministic(blocks in blocks()) {
        let chain = TestChain::new(4, ACCOUNTS, 1000);
        let (first, _, _) = run(&chain, &blocks);
        let (second, _, _) = run(&chain, &blocks);
        prop_assert_eq!(first, second);
    }

    #[test]
    fn a_failed_transaction_moves_nothing_and_uses_up_only_a_right_nonce(plans in prop::collection::vec(tx_plan(), 1..12)) {
        let chain = TestChain::new(4, ACCOUNTS, 1000);
        let state = MemoryState::from_genesis(&chain.genesis);
        let parent = chain.genesis.header.clone();
        let txs = realise(&chain, &state, &plans);
        let full = execute(&state, &parent, &batch(&parent, &txs), &txs).unwrap_or_else(|never| match never {});
        // The state after each prefix of the batch: a failed transaction's step changes no
        // balance and no other account; its sender's nonce moves by one unless the nonce was
        // wrong (then nothing changes at all).
        let after = |count: usize| {
            let prefix = &txs[..count];
            let execution = execute(&state, &parent, &batch(&parent, prefix), prefix).unwrap_or_else(|never| match never {});
            let mut accounts = state.accounts.clone();
            accounts.extend(execution.changes);
            accounts
        };
        for (index, (tx, receipt)) in txs.iter().zip(receipts_by_position(&txs, &full)).enumerate() {
            // Left out of the block (a wrong nonce): nothing changes at all.
            let error = match receipt.map(|receipt| &receipt.outcome) {
                Some(Outcome::Success) => continue,
                Some(Outcome::Failed { error }) => Some(error),
                None => None,
            };
            let (before, later) = (after(index), after(index + 1));
            let from = tx.body.from;
            let mut expected = before.clone();
            if error.is_some() {
                let account = before.get(&from).copied().unwrap_or(tetrad_ledger::Account { balance: 0, nonce: 0, slot: 0 });
                let slot = later.get(&from).map(|account| account.slot).unwrap_or(account.slot);
                expected.insert(from, tetrad_ledger::Account { nonce: account.nonce + 1, slot, ..account });
            }
            prop_assert_eq!(&later, &expected, "transaction {} ({:?})", index, error);
        }
    }

    #[test]
    fn balances_never_wrap(amounts in prop::collection::vec(prop_oneof![Just(u64::MAX), Just(u64::MAX / 2 + 1), 1..10u64], 1..10)) {
        // Account 0 holds nearly everything; account 1 receives until it would overflow.
        let mut chain = TestChain::new(4, 2, 0);
        let rich = chain.addresses[0];
        chain.genesis.accounts.get_mut(&rich).expect("account 0").balance = u64::MAX - 5;
        let poor = chain.addresses[1];
        chain.genesis.accounts.get_mut(&poor).expect("account 1").balance = 5;
        let state = MemoryState::from_genesis(&chain.genesis);
        let plans: Vec<TxPlan> = amounts.iter().map(|&amount| TxPlan { from: 0, to: 1, amount, nonce_offset: 0 }).collect();
        let txs = realise(&chain, &state, &plans);
        let parent = chain.genesis.header.clone();
        let execution = execute(&state, &parent, &batch(&parent, &txs), &txs).unwrap_or_else(|never| match never {});
        let mut after = state.clone();
        after.apply(&execution);
        prop_assert_eq!(after.total_balance(), u128::from(u64::MAX));
        for receipt in &execution.receipts {
            if let Outcome::Failed { error } = &receipt.outcome {
                let expected = matches!(error, ExecutionError::InsufficientBalance { .. } | ExecutionError::BalanceOverflow { .. });
                prop_assert!(expected);
            }
        }
    }
}

#[test]
fn recipient_overflow_is_a_failed_receipt() {
    let mut chain = TestChain::new(4, 2, 0);
    let (a, b) = (chain.addresses[0], chain.addresses[1]);
    chain.genesis.accounts.get_mut(&a).expect("a").balance = 10;
    chain.genesis.accounts.get_mut(&b).expect("b").balance = u64::MAX - 10;
    let state = MemoryState::from_genesis(&chain.genesis);
    let txs = vec![chain.transfer(0, 0, 1, 10)];
    let parent = chain.genesis.header.clone();
    let execution =
        execute(&state, &parent, &batch(&parent, &txs), &txs).unwrap_or_else(|never| match never {});
    assert_eq!(execution.receipts[0].outcome, Outcome::Success);
    // Overflowing u64: only possible here because the genesis was edited past a valid supply.
    let mut chain = chain;
    chain.genesis.accounts.get_mut(&b).expect("b").balance = u64::MAX - 5;
    let state = MemoryState::from_genesis(&chain.genesis);
    let execution =
        execute(&state, &parent, &batch(&parent, &txs), &txs).unwrap_or_else(|never| match never {});
    assert_eq!(
        execution.receipts[0].outcome,
        Outcome::Failed { error: ExecutionError::BalanceOverflow { balance: u64::MAX - 5, amount: 10 } }
    );
    // Nothing moved; only the sender's nonce is used up.
    let sender = state.accounts[&a];
    assert_eq!(
        execution.changes.into_iter().collect::<Vec<_>>(),
        vec![(a, tetrad_ledger::Account { nonce: 1, ..sender })]
    );
}

/// A transfer that fails at execution uses up its nonce, so the same signed bytes cannot
/// succeed later once the sender can pay (or once a sender with no account has one).
#[test]
fn a_failed_transaction_uses_up_its_nonce_and_never_executes_later() {
    let chain = TestChain::new(4, 3, 1000);
    let dir = ScratchDir::new("failed-nonce").expect("scratch dir");
    let store = Store::open_or_init(&dir.join("db"), &chain.genesis).expect("open");
    let nobody = account_key(77).public_key();
    let too_much = chain.transfer(0, 0, 1, 1500);
    let from_nobody = chain.transfer(77, 0, 1, 10);
    let execution = chain.commit(&store, &[too_much.clone(), from_nobody.clone()]).expect("commit");
    assert_eq!(
        execution.receipts[0].outcome,
        Outcome::Failed { error: ExecutionError::InsufficientBalance { balance: 1000, amount: 1500 } }
    );
    assert_eq!(
        execution.receipts[1].outcome,
        Outcome::Failed { error: ExecutionError::InsufficientBalance { balance: 0, amount: 10 } }
    );
    let sender = store.account(&chain.addresses[0]).expect("read").expect("account 0");
    assert_eq!((sender.balance, sender.nonce), (1000, 1));
    let created = store.account(&nobody).expect("read").expect("an empty account holds the used nonce");
    assert_eq!((created.balance, created.nonce), (0, 1));
    // Both senders get the funds they lacked; the same bytes are submitted again.
    chain
        .commit(&store, &[chain.transfer(1, 0, 0, 1000), chain.transfer_to(2, 0, nobody, 500)])
        .expect("commit");
    let replay = chain.commit(&store, &[too_much.clone(), from_nobody.clone()]).expect("commit");
    assert!(replay.receipts.is_empty(), "neither executed again, and the block lists neither");
    assert_eq!(store.account(&chain.addresses[0]).expect("read").expect("account 0").balance, 2000);
    assert_eq!(store.account(&nobody).expect("read").expect("account").balance, 500);
    // The index still points at the block where each was executed (and failed).
    for tx in [&too_much, &from_nobody] {
        let (_, receipt) = store.tx(&tx.hash()).expect("read").expect("indexed");
        assert_eq!(receipt.height.0, 1);
    }
}

#[test]
fn same_batches_give_the_same_root_after_reopening_the_store() {
    let chain = TestChain::new(4, ACCOUNTS, 1000);
    let plans: Vec<Vec<TxPlan>> = (0..12u64)
        .map(|round| {
            (0..5u64)
                .map(|k| TxPlan {
                    from: (round + k) % ACCOUNTS,
                    to: (round * 3 + k) % (ACCOUNTS + 2),
                    amount: 7 + k,
                    nonce_offset: 0,
                })
                .collect()
        })
        .collect();
    let (headers, memory, _) = run(&chain, &plans);
    let dir = ScratchDir::new("determinism").expect("scratch dir");
    let path = dir.join("db");
    {
        let store = Store::open_or_init(&path, &chain.genesis).expect("open");
        for block in &plans[..6] {
            let snapshot = memory_of(&store, &chain);
            let txs = realise(&chain, &snapshot, block);
            chain.commit(&store, &txs).expect("commit");
        }
    }
    let store = Store::open(&path).expect("reopen");
    assert_eq!(store.head(), headers[5]);
    for block in &plans[6..] {
        let snapshot = memory_of(&store, &chain);
        let txs = realise(&chain, &snapshot, block);
        chain.commit(&store, &txs).expect("commit");
    }
    assert_eq!(store.head(), headers[11]);
    assert_eq!(store.head().state_root, memory.tree.root());
    for (index, header) in headers.iter().enumerate() {
        let stored = store.header(header.height).expect("read").expect("present");
        assert_eq!(&stored, header, "height {}", index + 1);
    }
}

/// The accounts of the test chain as stored, for planning the next block's nonces.
fn memory_of(store: &Store, chain: &TestChain) -> MemoryState {
    let mut state = MemoryState::from_genesis(&chain.genesis);
    state.accounts.clear();
    for index in 0..ACCOUNTS + 3 {
        let address = account_key(index).public_key();
        if let Some(account) = store.account(&address).expect("read") {
            state.accounts.insert(address, account);
        }
    }
    state
}

#[test]
fn account_proofs_verify_against_the_head_root() {
    let chain = TestChain::new(4, ACCOUNTS, 1000);
    let dir = ScratchDir::new("proofs").expect("scratch dir");
    let store = Store::open_or_init(&dir.join("db"), &chain.genesis).expect("open");
    chain
        .commit(&store, &[chain.transfer(0, 0, ACCOUNTS + 1, 5), chain.transfer(1, 0, 2, 9)])
        .expect("commit");
    let root = store.head().state_root;
    for index in (0..ACCOUNTS).chain([ACCOUNTS + 1]) {
        let address = account_key(index).public_key();
        let (proof, header) = store.prove_account(&address).expect("read").expect("account exists");
        assert_eq!(header.state_root, root);
        assert!(tetrad_ledger::verify_account_proof(&root, &proof), "account {index}");
        let mut forged = proof.clone();
        forged.account.balance += 1;
        assert!(!tetrad_ledger::verify_account_proof(&root, &forged));
        let mut moved = proof.clone();
        moved.account.slot = (moved.account.slot + 1) % (ACCOUNTS + 1);
        assert!(!tetrad_ledger::verify_account_proof(&root, &moved));
    }
    assert!(store.prove_account(&account_key(999).public_key()).expect("read").is_none());
}

/// PBFT may order one transaction twice: an older view's batch that a new view missed comes
/// back in a later view above the newer view's copy (seed 23: 5 transactions twice), and a
/// Byzantine primary may propose a copy of one that executed. The copy never executes; the
/// block leaves it out, so the chain holds the transaction once, where it executed. (Before,
/// the block listed it with a failed receipt: `tx_count` 1 here.)
#[test]
fn a_copy_of_a_transaction_that_executed_is_left_out_of_its_block() {
    let chain = TestChain::new(4, ACCOUNTS, 1000);
    let dir = ScratchDir::new("reinclusion").expect("scratch dir");
    let store = Store::open_or_init(&dir.join("db"), &chain.genesis).expect("open");
    let tx = chain.transfer(0, 0, 1, 5);
    let other = chain.transfer(1, 0, 2, 7);
    chain.commit(&store, std::slice::from_ref(&tx)).expect("commit");
    let execution = chain.commit(&store, &[tx.clone(), other.clone()]).expect("commit");
    assert_eq!(execution.header.tx_count, 1, "the copy is not in the block");
    assert_eq!(execution.tx_hashes, vec![other.hash()]);
    assert_eq!(execution.positions, vec![1]);
    assert_eq!(execution.header.tx_root, tetrad_ledger::block::tx_root(&[other.hash()]));
    let (_, receipt) = store.tx(&tx.hash()).expect("read").expect("indexed");
    assert_eq!((receipt.height.0, receipt.outcome), (1, Outcome::Success));
    // The other transaction is at index 0 of block 2, and proves there.
    let proven = store.prove_tx(&other.hash()).expect("read").expect("indexed");
    assert_eq!((proven.receipt.height.0, proven.receipt.index), (2, 0));
    assert!(tetrad_ledger::block::verify_tx_proof(&proven.header.tx_root, &other.hash(), &proven.tx_proof));
    assert_eq!(proven.tx, other);
    // The stored batch still holds both (what the certificate signs).
    let block = store.block(tetrad_consensus::Height(2)).expect("read").expect("block 2");
    assert_eq!(block.batch_txs().expect("decodes"), vec![tx, other]);
}

#[test]
fn a_transaction_twice_in_one_block_is_listed_once_where_it_executed() {
    let chain = TestChain::new(4, ACCOUNTS, 1000);
    let dir = ScratchDir::new("duplicate-in-block").expect("scratch dir");
    let store = Store::open_or_init(&dir.join("db"), &chain.genesis).expect("open");
    let tx = chain.transfer(0, 0, 1, 5);
    // A Byzantine primary put the same transaction twice into one batch.
    let execution = chain.commit(&store, &[tx.clone(), tx.clone()]).expect("commit");
    assert_eq!(execution.receipts.len(), 1);
    assert_eq!(execution.receipts[0].outcome, Outcome::Success);
    assert_eq!(execution.positions, vec![0]);
    let (_, receipt) = store.tx(&tx.hash()).expect("read").expect("indexed");
    assert_eq!((receipt.height.0, receipt.index, receipt.outcome), (1, 0, Outcome::Success));
}

/// A transaction ahead of its sender's sequence (its nonce not yet reached: possible when a new
/// view brings an older view's batch back above a newer one) never executed either: left out
/// too, so it can still execute later and be in the chain once.
#[test]
fn a_transaction_ahead_of_its_nonce_is_left_out_and_executes_later() {
    let chain = TestChain::new(4, ACCOUNTS, 1000);
    let dir = ScratchDir::new("ahead").expect("scratch dir");
    let store = Store::open_or_init(&dir.join("db"), &chain.genesis).expect("open");
    let first = chain.transfer(0, 0, 1, 5);
    let second = chain.transfer(0, 1, 1, 6);
    let execution = chain.commit(&store, std::slice::from_ref(&second)).expect("commit");
    assert!(execution.receipts.is_empty());
    chain.commit(&store, &[first.clone(), second.clone()]).expect("commit");
    for tx in [&first, &second] {
        let (_, receipt) = store.tx(&tx.hash()).expect("read").expect("indexed");
        assert_eq!((receipt.height.0, receipt.outcome), (2, Outcome::Success));
    }
}
