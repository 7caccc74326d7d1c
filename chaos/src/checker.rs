//! The checker: after the faults are healed, what every node holds against what the clients
//! were told. Pure ([`check`]) over data fetched by [`fetch`], so that its verdicts can be
//! tested on planted faults without a network.
//!
//! It trusts nothing a node says that it can recompute: the commit certificate signs only the
//! batch digest, so the header's hash, tx root and transaction list are recomputed from the
//! signed transactions the clients recorded, and the header's state root from a replay.
//!
//! It fails the campaign when:
//! - two nodes hold different blocks at one height (a fork), or a node's chain does not link,
//!   or a block's commit certificate does not verify, or a node could not be read in full
//!   (found while fetching);
//! - a block's transaction list does not hash to its header's tx root, or its transactions
//!   (the signed bytes from the record) do not hash to the batch digest the certificate signs
//!   (`bad_blocks`): a node that altered, added or dropped a transaction under a valid
//!   certificate; checked for every block of every node;
//! - a header's state root is not the root of the replayed state after that block
//!   (`state_mismatches`);
//! - the nodes do not end at the same height (they did not converge after the heal);
//! - a transaction acknowledged as committed is not in the chain, or not at the height the
//!   client was told (`lost`), or a client's acknowledgment carried no verified certificate;
//! - any transaction hash is in the chain more than once (`duplicated`);
//! - the chain holds a transaction no client submitted (`phantom`), or one that was refused;
//! - the record is inconsistent (a hash that is not its transaction's, a transaction recorded
//!   twice);
//! - total supply changed, or an account's balance or nonce on some node differs from a replay
//!   of the committed transfers with the ledger's rules at the height the node's answer names
//!   (each answer's proof checked against that height's header), or a client was told
//!   "executed" of a transfer that the replay says failed (or the reverse).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::Serialize;
use tetrad_consensus::{Batch, Digest, ValidatorSet};
use tetrad_ledger::block::{Account, Header};
use tetrad_ledger::state_tree::StateTree;
use tetrad_ledger::tx::{Address, Tx, TxKind};
use tetrad_rpc::api::{AccountView, BlockView};

use crate::http;
use crate::record::{Answer, TxRecord};
use crate::workload::Endpoint;

/// A block as the checker compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBlock {
    pub height: u64,
    /// What the node said the hash is (checked against the header).
    pub hash: Digest,
    pub header: Header,
    /// The transaction hashes the node listed.
    pub txs: Vec<Digest>,
    /// The batch's own time, as the node said (the header's is never below its parent's).
    pub batch_timestamp_ms: Option<u64>,
    /// The batch's transaction hashes, when the node said the block lists fewer (those whose
    /// nonce was wrong did not execute).
    pub batch_txs: Option<Vec<Digest>>,
}

impl ChainBlock {
    pub fn from_view(view: BlockView) -> ChainBlock {
        ChainBlock {
            height: view.header.height.0,
            hash: view.hash,
            header: view.header,
            txs: view.txs,
            batch_timestamp_ms: view.batch_timestamp_ms,
            batch_txs: view.batch_txs,
        }
    }

    pub fn parent(&self) -> Digest {
        self.header.parent_hash
    }
}

/// What one node holds.
#[derive(Clone, Debug, Default)]
pub struct NodeChain {
    pub name: String,
    /// Heights 1, 2, … in order.
    pub blocks: Vec<ChainBlock>,
    /// Balance and nonce of every account asked about, all read at `accounts_height`.
    pub accounts: BTreeMap<Address, (u64, u64)>,
    /// The height whose state `accounts` describe (every answer named it, and its proof
    /// verified against that height's header).
    pub accounts_height: u64,
    /// What failed while fetching and verifying (each one fails the check).
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub acknowledged: u64,
    pub failed: u64,
    pub unknown: u64,
    /// Unknown ones that the chain holds (committed after all).
    pub unknown_in_chain: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub phantom: u64,
    pub refused_in_chain: u64,
    pub unverified_acks: u64,
    /// Blocks (of any node) whose transaction list is not what the header and certificate
    /// commit to.
    pub bad_blocks: u64,
    /// Heights whose header's state root is not the replay's.
    pub state_mismatches: u64,
    /// Of `duplicated`: later copies that failed their nonce check, the transaction executed
    /// once (the known re-proposal issue: after a view change the new primary proposes again
    /// what the new view re-proposed).
    pub replayed_copies: u64,
    /// Transactions of the agreed chain's batches that their blocks left out (a wrong nonce:
    /// a copy PBFT ordered twice, or one ahead of its sender's sequence; never executed).
    pub left_out: u64,
    pub height: u64,
    pub chain_txs: u64,
    /// Blocks that carry at least one transaction.
    pub blocks_with_txs: u64,
    pub violations: Vec<String>,
    /// What was let through by [`Rules`] (reported, not failed).
    pub allowed: Vec<String>,
}

/// What the checker lets through.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rules {
    /// A transaction in the chain twice is allowed when the replay executes it once and its
    /// other copies fail their nonce check (the known re-proposal issue). Counted all the same.
    pub allow_replayed_copies: bool,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Most violations listed one by one (the counters count them all).
const VIOLATIONS_LISTED_MAX: usize = 40;

fn violation(verdict: &mut Verdict, text: String) {
    if verdict.violations.len() < VIOLATIONS_LISTED_MAX {
        verdict.violations.push(text);
    } else if verdict.violations.len() == VIOLATIONS_LISTED_MAX {
        verdict.violations.push("… more violations not listed".to_string());
    }
}

/// The verdict over `chains` (every node's), given the genesis balances and the clients'
/// record.
pub fn check(genesis: &[(Address, u64)], record: &[TxRecord], chains: &[NodeChain], rules: Rules) -> Verdict {
    let mut verdict = Verdict::default();
    for chain in chains {
        for problem in &chain.problems {
            violation(&mut verdict, format!("{}: {problem}", chain.name));
        }
    }
    check_record(record, &mut verdict);
    let submitted: HashMap<Digest, &TxRecord> = record.iter().map(|entry| (entry.hash, entry)).collect();
    for chain in chains {
        check_blocks(chain, &submitted, &mut verdict);
    }
    let Some(reference) = agreed_chain(chains, &mut verdict) else {
        violation(&mut verdict, "no node answered with its chain".to_string());
        return verdict;
    };
    verdict.height = reference.len() as u64;
    // Where every transaction hash is, in the reference chain.
    let mut places: HashMap<Digest, Vec<u64>> = HashMap::new();
    for block in &reference {
        if !block.txs.is_empty() {
            verdict.blocks_with_txs += 1;
        }
        for tx in &block.txs {
            places.entry(*tx).or_default().push(block.height);
            verdict.chain_txs += 1;
        }
    }
    let duplicates: Vec<(Digest, Vec<u64>)> = places
        .iter()
        .filter(|(_, heights)| heights.len() > 1)
        .map(|(tx, heights)| (*tx, heights.clone()))
        .collect();
    verdict.duplicated = duplicates.len() as u64;
    for entry in record {
        let found = places.get(&entry.hash).map(Vec::as_slice).unwrap_or(&[]);
        match entry.answer {
            Answer::Committed => {
                verdict.acknowledged += 1;
                if !entry.certificate_verified {
                    verdict.unverified_acks += 1;
                    violation(
                        &mut verdict,
                        format!(
                            "unverified acknowledgment: transaction {} at height {:?}: {}",
                            entry.hash, entry.height, entry.detail
                        ),
                    );
                }
                let at = entry.height.unwrap_or(0);
                if !found.contains(&at) {
                    verdict.lost += 1;
                    let where_ = if found.is_empty() {
                        "is not in the chain".to_string()
                    } else {
                        format!("is at height(s) {found:?}")
                    };
                    violation(
                        &mut verdict,
                        format!(
                            "lost: transaction {} was acknowledged as committed at height {at} but {where_}",
                            entry.hash
                        ),
                    );
                }
            }
            Answer::Failed => {
                verdict.failed += 1;
                if !found.is_empty() {
                    verdict.refused_in_chain += 1;
                    violation(
                        &mut verdict,
                        format!(
                            "refused but committed: transaction {} was refused ({}) yet is at height(s) {found:?}",
                            entry.hash, entry.detail
                        ),
                    );
                }
            }
            Answer::Unknown => {
                verdict.unknown += 1;
                if !found.is_empty() {
                    verdict.unknown_in_chain += 1;
                }
            }
        }
    }
    for tx in places.keys() {
        if !submitted.contains_key(tx) {
            verdict.phantom += 1;
            violation(
                &mut verdict,
                format!("phantom: transaction {tx} is in the chain but no client submitted it"),
            );
        }
    }
    let executed = replay(genesis, &reference, &submitted, chains, &mut verdict);
    for (tx, heights) in duplicates {
        let text = format!(
            "duplicated: transaction {tx} is in the chain {} times, at heights {heights:?}",
            heights.len()
        );
        if rules.allow_replayed_copies && executed.get(&tx).copied().unwrap_or(0) <= 1 {
            verdict.replayed_copies += 1;
            verdict.allowed.push(format!("{text} (executed once: the known re-proposal issue)"));
        } else {
            violation(&mut verdict, text);
        }
    }
    verdict
}

/// The record must be what the clients signed: each hash is its transaction's, the readable
/// fields are the transaction's, and no transaction is recorded twice (a client that recorded
/// two answers for one transaction).
fn check_record(record: &[TxRecord], verdict: &mut Verdict) {
    let mut seen: HashMap<Digest, usize> = HashMap::new();
    for entry in record {
        *seen.entry(entry.hash).or_default() += 1;
        if entry.tx.hash() != entry.hash {
            violation(
                verdict,
                format!("record: transaction {} is recorded with the hash {}", entry.tx.hash(), entry.hash),
            );
            continue;
        }
        let body = &entry.tx.body;
        let fields_agree = match &body.kind {
            TxKind::Transfer { to, amount } => {
                body.from == entry.from
                    && body.nonce == entry.nonce
                    && *to == entry.to
                    && *amount == entry.amount
            }
            TxKind::RotateValidatorKey { .. } => false,
        };
        if !fields_agree {
            violation(
                verdict,
                format!(
                    "record: the fields recorded for transaction {} are not its signed transfer's",
                    entry.hash
                ),
            );
        }
    }
    for (hash, count) in seen {
        if count > 1 {
            violation(verdict, format!("record: transaction {hash} is recorded {count} times"));
        }
    }
}

/// The batch digest of `txs` as a block at `header` executed them: the header copies the
/// batch's view and proposer, and its time is the batch's, but never below the parent's. A
/// primary proposes at least the committed time, but a new view may re-propose an older
/// view's batch above a newer one's, and then the header carries the parent's time: the
/// node's word for the batch's own time (`batch_timestamp_ms`, at most the header's) is tried
/// too. It cannot make other transactions pass: the digest binds the time and the payload
/// together. A new view's empty batch carries time 0 and no payload; an idle primary's empty
/// batch has no payload either.
fn batch_digest_matches(header: &Header, txs: &[Tx], batch_timestamp_ms: Option<u64>) -> bool {
    let mut times = vec![header.timestamp_ms];
    times.extend(batch_timestamp_ms.filter(|time| *time < header.timestamp_ms));
    let mut payloads = vec![tetrad_ledger::tx::encode_payload(txs)];
    if txs.is_empty() {
        payloads.push(Vec::new());
        times.push(0);
    }
    times.iter().any(|timestamp_ms| {
        payloads.iter().any(|payload| {
            Batch {
                view: header.view,
                proposer: header.proposer,
                timestamp_ms: *timestamp_ms,
                payload: payload.clone(),
            }
            .digest()
                == header.batch_digest
        })
    })
}

/// Every block of `chain` on its own: its hash is its header's, its height and parent are
/// the header's, the listed transactions hash to the tx root, and their signed bytes (from the
/// record) to the batch digest that the certificate signs.
fn check_blocks(chain: &NodeChain, submitted: &HashMap<Digest, &TxRecord>, verdict: &mut Verdict) {
    for block in &chain.blocks {
        let header = &block.header;
        let mut wrong: Vec<String> = Vec::new();
        if block.hash != header.hash() {
            wrong.push(format!("its hash {} is not its header's {}", block.hash, header.hash()));
        }
        if header.height.0 != block.height {
            wrong.push(format!("its header is for height {}", header.height.0));
        }
        if usize::try_from(header.tx_count).ok() != Some(block.txs.len())
            || tetrad_ledger::block::tx_root(&block.txs) != header.tx_root
        {
            wrong.push("the listed transactions are not the header's tx root".to_string());
        }
        // The batch: the listed transactions, or all of the batch's when the node says the
        // block left some out (then the listed ones must be among them, in order).
        let batch = match &block.batch_txs {
            Some(batch) => {
                let mut rest = batch.iter();
                if !block.txs.iter().all(|listed| rest.any(|hash| hash == listed)) {
                    wrong.push("it lists transactions that are not its batch's, in its order".to_string());
                }
                batch
            }
            None => &block.txs,
        };
        let txs: Option<Vec<Tx>> =
            batch.iter().map(|hash| submitted.get(hash).map(|entry| entry.tx.clone())).collect();
        match txs {
            Some(txs) if !batch_digest_matches(header, &txs, block.batch_timestamp_ms) => {
                wrong.push(format!(
                    "its transactions do not hash to the batch digest {} the certificate signs",
                    header.batch_digest
                ))
            }
            Some(_) => {}
            // A transaction nobody recorded: a phantom (reported as such); the batch cannot be
            // rebuilt without its bytes.
            None => {}
        }
        if !wrong.is_empty() {
            verdict.bad_blocks += 1;
            violation(
                verdict,
                format!("bad block: {} block {}: {}", chain.name, block.height, wrong.join("; ")),
            );
        }
    }
}

/// Every node's blocks compared height by height; the longest chain if they agree. Nodes must
/// also end at the same height (they had time to converge after the heal).
fn agreed_chain(chains: &[NodeChain], verdict: &mut Verdict) -> Option<Vec<ChainBlock>> {
    let longest = chains.iter().max_by_key(|chain| chain.blocks.len())?;
    for chain in chains {
        let mut parent: Option<Digest> = None;
        for (index, block) in chain.blocks.iter().enumerate() {
            if block.height != index as u64 + 1 {
                violation(
                    verdict,
                    format!("{}: block {} at position {}", chain.name, block.height, index + 1),
                );
                break;
            }
            if let Some(parent) = parent
                && block.parent() != parent
            {
                violation(
                    verdict,
                    format!("{}: block {} does not link to block {}", chain.name, block.height, index),
                );
            }
            parent = Some(block.hash);
        }
        for (mine, theirs) in chain.blocks.iter().zip(&longest.blocks) {
            if mine.hash != theirs.hash || mine.txs != theirs.txs {
                violation(
                    verdict,
                    format!(
                        "fork: at height {} {} holds {} but {} holds {}{}",
                        mine.height,
                        chain.name,
                        mine.hash,
                        longest.name,
                        theirs.hash,
                        if mine.hash == theirs.hash { " (same header, other transactions)" } else { "" }
                    ),
                );
                break;
            }
        }
        if chain.blocks.len() != longest.blocks.len() {
            violation(
                verdict,
                format!(
                    "not converged: {} is at height {}, {} at {}",
                    chain.name,
                    chain.blocks.len(),
                    longest.name,
                    longest.blocks.len()
                ),
            );
        }
    }
    Some(longest.blocks.clone())
}

/// After a change to the header or transactions of block `from` (index), recomputes its tx
/// count, tx root and hash, and the parent links and hashes of every later block: the chain a
/// node that altered a block would serve, consistent everywhere but under the certificate's
/// batch digest and the replay (the negative controls and the tests plant it).
pub(crate) fn rehash(blocks: &mut [ChainBlock], from: usize) {
    for index in from..blocks.len() {
        if index > 0 {
            blocks[index].header.parent_hash = blocks[index - 1].hash;
        }
        let block = &mut blocks[index];
        block.header.tx_count = block.txs.len() as u32;
        block.header.tx_root = tetrad_ledger::block::tx_root(&block.txs);
        block.hash = block.header.hash();
    }
}

/// An account in the replay: balance, nonce and its slot in the state tree.
#[derive(Clone, Copy, Debug)]
struct Replayed {
    balance: u64,
    nonce: u64,
    slot: u64,
}

/// The replayed state: accounts, and the next free slot.
#[derive(Clone, Debug, Default)]
struct ReplayState {
    accounts: BTreeMap<Address, Replayed>,
}

impl ReplayState {
    /// Genesis: accounts in address order take slots 0.. (as `genesis_state` does).
    fn genesis(genesis: &[(Address, u64)]) -> ReplayState {
        let mut sorted = genesis.to_vec();
        sorted.sort_by_key(|(address, _)| *address);
        let accounts = sorted
            .iter()
            .enumerate()
            .map(|(slot, (address, balance))| {
                (*address, Replayed { balance: *balance, nonce: 0, slot: slot as u64 })
            })
            .collect();
        ReplayState { accounts }
    }

    fn get_or_new(&mut self, address: &Address) -> &mut Replayed {
        let next = self.accounts.len() as u64;
        self.accounts.entry(*address).or_insert(Replayed { balance: 0, nonce: 0, slot: next })
    }

    /// Whether `tx` carries its sender's next nonce (and may execute, successfully or not).
    fn nonce_is_next(&self, tx: &Tx) -> bool {
        let expected = self.accounts.get(&tx.body.from).map_or(0, |account| account.nonce);
        tx.body.nonce == expected && expected != u64::MAX
    }

    /// One transfer with the ledger's rules: only the sender's next nonce; one that cannot pay
    /// (or would overflow the recipient) fails and uses up the nonce, creating the sender's
    /// account if it had none. True if it executed.
    fn apply(&mut self, tx: &Tx) -> bool {
        if !self.nonce_is_next(tx) {
            return false;
        }
        let from = tx.body.from;
        let expected = tx.body.nonce;
        let TxKind::Transfer { to, amount } = tx.body.kind else {
            // The clients send transfers only (check_record flags anything else).
            self.get_or_new(&from).nonce = expected + 1;
            return false;
        };
        let Some(sender) = self.accounts.get(&from).copied() else {
            self.get_or_new(&from).nonce = expected + 1;
            return false;
        };
        let Some(balance_after) = sender.balance.checked_sub(amount) else {
            self.get_or_new(&from).nonce = expected + 1;
            return false;
        };
        if to == from {
            self.get_or_new(&from).nonce = expected + 1;
            return true;
        }
        let recipient_balance = self.accounts.get(&to).map_or(0, |account| account.balance);
        if recipient_balance.checked_add(amount).is_none() {
            self.get_or_new(&from).nonce = expected + 1;
            return false;
        }
        let sender = self.get_or_new(&from);
        sender.balance = balance_after;
        sender.nonce = expected + 1;
        self.get_or_new(&to).balance = recipient_balance + amount;
        true
    }

    /// The state tree's root over every account's leaf at its slot.
    fn root(&self) -> Digest {
        let mut leaves = vec![Digest::ZERO; self.accounts.len()];
        for (address, account) in &self.accounts {
            let leaf =
                Account { balance: account.balance, nonce: account.nonce, slot: account.slot }.leaf(address);
            if let Some(place) = leaves.get_mut(account.slot as usize) {
                *place = leaf;
            }
        }
        StateTree::from_leaves(leaves).root()
    }

    fn balance_and_nonce(&self, address: &Address) -> (u64, u64) {
        self.accounts.get(address).map_or((0, 0), |account| (account.balance, account.nonce))
    }
}

/// Replays the chain's transfers (the signed bytes from the record) with the ledger's rules,
/// compares every header's state root with the replayed state after its block, each node's
/// balances with the replay at the height they were read at, and the clients' receipts.
fn replay(
    genesis: &[(Address, u64)],
    chain: &[ChainBlock],
    submitted: &HashMap<Digest, &TxRecord>,
    chains: &[NodeChain],
    verdict: &mut Verdict,
) -> HashMap<Digest, u64> {
    let mut state = ReplayState::genesis(genesis);
    let supply: u128 = genesis.iter().map(|(_, balance)| u128::from(*balance)).sum();
    let mut executed: HashMap<Digest, u64> = HashMap::new();
    // The heights at which some node's balances were read: the replayed state there.
    let wanted: BTreeSet<u64> = chains.iter().map(|node| node.accounts_height).collect();
    let mut snapshots: BTreeMap<u64, ReplayState> = BTreeMap::new();
    if wanted.contains(&0) {
        snapshots.insert(0, state.clone());
    }
    let mut phantom_seen = false;
    for block in chain {
        // The batch in order; what the block left out must have had a wrong nonce there.
        let mut listed = block.txs.iter().peekable();
        for hash in block.batch_txs.as_ref().unwrap_or(&block.txs) {
            if listed.next_if(|listed| *listed == hash).is_none() {
                verdict.left_out += 1;
                if let Some(entry) = submitted.get(hash)
                    && state.nonce_is_next(&entry.tx)
                {
                    violation(
                        verdict,
                        format!(
                            "left out: block {} leaves out transaction {hash}, whose nonce was its sender's next",
                            block.height
                        ),
                    );
                }
                continue;
            }
            let Some(entry) = submitted.get(hash) else {
                phantom_seen = true;
                continue;
            };
            if state.apply(&entry.tx) {
                *executed.entry(*hash).or_default() += 1;
            }
        }
        // Past a phantom the replay cannot know the state (the phantom is reported as such).
        if !phantom_seen && state.root() != block.header.state_root {
            verdict.state_mismatches += 1;
            violation(
                verdict,
                format!(
                    "state root: block {} says {}, the replay of the chain up to it gives {}",
                    block.height,
                    block.header.state_root,
                    state.root()
                ),
            );
        }
        if wanted.contains(&block.height) {
            snapshots.insert(block.height, state.clone());
        }
    }
    let total: u128 = state.accounts.values().map(|account| u128::from(account.balance)).sum();
    if total != supply {
        violation(verdict, format!("supply: the replay ends with {total}, genesis had {supply}"));
    }
    for (hash, count) in &executed {
        if *count > 1 {
            violation(verdict, format!("double execution: transaction {hash} executed {count} times"));
        }
    }
    for tx in submitted.values() {
        if tx.answer == Answer::Committed && tx.executed != executed.contains_key(&tx.hash) {
            violation(
                verdict,
                format!(
                    "receipt: the client was told transaction {} {} but the replay says it {}",
                    tx.hash,
                    if tx.executed { "executed" } else { "failed" },
                    if executed.contains_key(&tx.hash) { "executed" } else { "did not execute" }
                ),
            );
        }
    }
    for node in chains {
        if node.accounts.is_empty() {
            continue;
        }
        let Some(replayed) = snapshots.get(&node.accounts_height) else {
            violation(
                verdict,
                format!(
                    "balance: {} answered for height {}, beyond the chain (height {})",
                    node.name,
                    node.accounts_height,
                    chain.len()
                ),
            );
            continue;
        };
        let mut node_total: u128 = 0;
        for (address, held) in &node.accounts {
            node_total += u128::from(held.0);
            let replayed = replayed.balance_and_nonce(address);
            if *held != replayed {
                violation(
                    verdict,
                    format!(
                        "balance: {} says account {address} has balance {} nonce {} at height {}, the replay {} nonce {}",
                        node.name, held.0, held.1, node.accounts_height, replayed.0, replayed.1
                    ),
                );
            }
        }
        if node_total != supply {
            violation(
                verdict,
                format!("supply: {} holds {node_total} in all, genesis had {supply}", node.name),
            );
        }
    }
    executed
}

/// How long the final fetch waits for a node that is behind another to reach its height (a
/// block committed while the nodes were being read), and for balances read at one height.
const CATCH_UP: Duration = Duration::from_secs(10);

/// Fetches every node's chain (verifying each block's certificate, hash and tx root) and the
/// balances of `addresses`, pinned: every account of a node is read at one height, with a
/// proof against that height's header, and a node found behind another is given
/// [`CATCH_UP`] to reach that height (what it still lacks then is a real difference). One
/// thread per node.
pub fn fetch(endpoints: &[Endpoint], set: &ValidatorSet, addresses: &[Address]) -> Vec<NodeChain> {
    let mut chains: Vec<NodeChain> = std::thread::scope(|scope| {
        let handles: Vec<_> = endpoints
            .iter()
            .map(|endpoint| scope.spawn(move || fetch_one(endpoint, set, addresses)))
            .collect();
        handles
            .into_iter()
            .zip(endpoints)
            .map(|(handle, endpoint)| {
                handle.join().unwrap_or_else(|_| NodeChain {
                    name: endpoint.name.clone(),
                    problems: vec!["the fetch thread panicked".to_string()],
                    ..NodeChain::default()
                })
            })
            .collect()
    });
    let target = chains.iter().map(|chain| chain.blocks.len() as u64).max().unwrap_or(0);
    let agent = http::agent(Duration::from_secs(10));
    let deadline = Instant::now() + CATCH_UP;
    for (chain, endpoint) in chains.iter_mut().zip(endpoints) {
        while (chain.blocks.len() as u64) < target && chain.problems.is_empty() {
            if let Err(problem) = extend(&agent, endpoint, set, chain, target) {
                if Instant::now() >= deadline {
                    chain.problems.push(problem);
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
    chains
}

/// Fetches blocks after the last one of `chain` up to `to`. `Err` if one is not there (yet) or
/// the node did not answer; a block that is there but does not verify is a problem of the chain.
fn extend(
    agent: &ureq::Agent,
    endpoint: &Endpoint,
    set: &ValidatorSet,
    chain: &mut NodeChain,
    to: u64,
) -> Result<(), String> {
    for h in chain.blocks.len() as u64 + 1..=to {
        let (status, body) = http::get(agent, &format!("{}/blocks/{h}", endpoint.rpc))
            .map_err(|error| format!("{error:#}"))?;
        if status != 200 {
            return Err(format!("GET /blocks/{h}: {status} {body}"));
        }
        let view =
            serde_json::from_value::<BlockView>(body).map_err(|error| format!("block {h}: {error}"))?;
        if let Err(problem) = crate::verify::block(set, &view, h) {
            chain.problems.push(problem);
        }
        chain.blocks.push(ChainBlock::from_view(view));
    }
    Ok(())
}

/// What a node served of each account, with the state root its proof was checked against.
type AccountsRead = BTreeMap<Address, (u64, u64, Digest)>;

/// Reads every account of `addresses` from `endpoint`: `(height, balances)` when every answer
/// names one height and its proof verifies against the state root it names.
fn read_accounts(
    agent: &ureq::Agent,
    endpoint: &Endpoint,
    addresses: &[Address],
) -> Result<(u64, AccountsRead), String> {
    let mut height = None;
    let mut accounts = BTreeMap::new();
    for address in addresses {
        let (status, body) = http::get(agent, &format!("{}/accounts/{address}", endpoint.rpc))
            .map_err(|error| format!("{error:#}"))?;
        if status != 200 {
            // Every account asked about is a genesis account: it exists at every height.
            return Err(format!("GET /accounts/{address}: {status} {body}"));
        }
        let view: AccountView =
            serde_json::from_value(body).map_err(|error| format!("account {address}: {error}"))?;
        let proof = &view.proof;
        if view.address != *address
            || proof.address != *address
            || (proof.account.balance, proof.account.nonce) != (view.balance, view.nonce)
            || !tetrad_ledger::block::verify_account_proof(&view.state_root, proof)
        {
            return Err(format!(
                "account {address}: the balance {} nonce {} does not verify against the state root {} it names",
                view.balance, view.nonce, view.state_root
            ));
        }
        match height {
            None => height = Some(view.height.0),
            Some(first) if first != view.height.0 => {
                return Err(format!("the accounts were read at heights {first} and {}", view.height.0));
            }
            Some(_) => {}
        }
        accounts.insert(*address, (view.balance, view.nonce, view.state_root));
    }
    Ok((height.unwrap_or(0), accounts))
}

fn fetch_one(endpoint: &Endpoint, set: &ValidatorSet, addresses: &[Address]) -> NodeChain {
    let agent = http::agent(Duration::from_secs(10));
    let mut chain = NodeChain { name: endpoint.name.clone(), ..NodeChain::default() };
    let height = match http::get(&agent, &format!("{}/status", endpoint.rpc)) {
        Ok((200, status)) => match status["height"].as_u64() {
            Some(height) => height,
            None => {
                chain.problems.push(format!("GET /status: no height in {status}"));
                return chain;
            }
        },
        Ok((status, _)) => {
            chain.problems.push(format!("GET /status: {status}"));
            return chain;
        }
        Err(error) => {
            chain.problems.push(format!("{error:#}"));
            return chain;
        }
    };
    if let Err(problem) = extend(&agent, endpoint, set, &mut chain, height) {
        chain.problems.push(problem);
        return chain;
    }
    // The balances, all at one height (a block may commit between two reads: read again), and
    // that height's header must hold the state root the proofs verify against.
    let deadline = Instant::now() + CATCH_UP;
    let (at, accounts) = loop {
        match read_accounts(&agent, endpoint, addresses) {
            Ok(read) => break read,
            Err(problem) if Instant::now() >= deadline => {
                chain.problems.push(problem);
                return chain;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    };
    if at > chain.blocks.len() as u64
        && let Err(problem) = extend(&agent, endpoint, set, &mut chain, at)
    {
        chain.problems.push(problem);
        return chain;
    }
    let header_root = match at {
        0 => None,
        at => chain.blocks.get(at as usize - 1).map(|block| block.header.state_root),
    };
    if let Some((_, _, root)) = accounts.values().find(|(_, _, root)| Some(*root) != header_root) {
        chain.problems.push(format!(
            "the balances name height {at} and state root {root}, but its header holds {header_root:?}"
        ));
    }
    chain.accounts_height = at;
    chain.accounts =
        accounts.into_iter().map(|(address, (balance, nonce, _))| (address, (balance, nonce))).collect();
    chain
}

#[cfg(test)]
mod tests;
