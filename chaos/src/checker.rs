//! The checker: after the faults are healed, what every node holds against what the clients
//! were told. Pure ([`check`]) over data fetched by [`fetch`], so that its verdicts can be
//! tested on planted faults without a network.
//!
//! It fails the campaign when:
//! - two nodes hold different blocks at one height (a fork), or a node's chain does not link,
//!   or a block's commit certificate does not verify (found while fetching);
//! - the nodes do not end at the same height (they did not converge after the heal);
//! - a transaction acknowledged as committed is not in the chain, or not at the height the
//!   client was told (`lost`), or a client's acknowledgment carried no verified certificate;
//! - any transaction hash is in the chain more than once (`duplicated`);
//! - the chain holds a transaction no client submitted (`phantom`), or one that was refused;
//! - total supply changed, or an account's balance or nonce on some node differs from a replay
//!   of the committed transfers with the ledger's rules, or a client was told "executed" of a
//!   transfer that the replay says failed (or the reverse).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;
use tetrad_consensus::{Digest, ValidatorSet};
use tetrad_ledger::tx::Address;
use tetrad_rpc::api::BlockView;

use crate::http;
use crate::record::{Answer, TxRecord};
use crate::workload::Endpoint;

/// A block as the checker compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBlock {
    pub height: u64,
    pub hash: Digest,
    pub parent: Digest,
    pub txs: Vec<Digest>,
}

/// What one node holds.
#[derive(Clone, Debug, Default)]
pub struct NodeChain {
    pub name: String,
    /// Heights 1, 2, … in order.
    pub blocks: Vec<ChainBlock>,
    /// Balance and nonce of every account asked about (absent: no account).
    pub accounts: BTreeMap<Address, (u64, u64)>,
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
    /// Of `duplicated`: later copies that failed their nonce check, the transaction executed
    /// once (the known re-proposal issue: after a view change the new primary proposes again
    /// what the new view re-proposed).
    pub replayed_copies: u64,
    pub height: u64,
    pub chain_txs: u64,
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
    let Some(reference) = agreed_chain(chains, &mut verdict) else {
        violation(&mut verdict, "no node answered with its chain".to_string());
        return verdict;
    };
    verdict.height = reference.len() as u64;
    // Where every transaction hash is, in the reference chain.
    let mut places: HashMap<Digest, Vec<u64>> = HashMap::new();
    for block in &reference {
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
    let submitted: HashMap<Digest, &TxRecord> = record.iter().map(|entry| (entry.hash, entry)).collect();
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
                && block.parent != parent
            {
                violation(
                    verdict,
                    format!("{}: block {} does not link to block {}", chain.name, block.height, index),
                );
            }
            parent = Some(block.hash);
        }
        for (mine, theirs) in chain.blocks.iter().zip(&longest.blocks) {
            if mine.hash != theirs.hash {
                violation(
                    verdict,
                    format!(
                        "fork: at height {} {} holds {} but {} holds {}",
                        mine.height, chain.name, mine.hash, longest.name, theirs.hash
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

/// Replays the chain's transfers with the ledger's rules (a transfer executes only with the
/// sender's next nonce; one that cannot pay fails and uses up the nonce) and compares with
/// what the nodes hold and what the clients were told.
fn replay(
    genesis: &[(Address, u64)],
    chain: &[ChainBlock],
    submitted: &HashMap<Digest, &TxRecord>,
    chains: &[NodeChain],
    verdict: &mut Verdict,
) -> HashMap<Digest, u64> {
    let mut state: BTreeMap<Address, (u64, u64)> =
        genesis.iter().map(|(address, balance)| (*address, (*balance, 0))).collect();
    let supply: u128 = genesis.iter().map(|(_, balance)| u128::from(*balance)).sum();
    let mut executed: HashMap<Digest, u64> = HashMap::new();
    for block in chain {
        for hash in &block.txs {
            let Some(tx) = submitted.get(hash) else { continue };
            let (balance, nonce) = state.get(&tx.from).copied().unwrap_or((0, 0));
            if tx.nonce != nonce {
                continue;
            }
            if balance < tx.amount {
                state.insert(tx.from, (balance, nonce + 1));
                continue;
            }
            state.insert(tx.from, (balance - tx.amount, nonce + 1));
            if tx.to != tx.from {
                let entry = state.entry(tx.to).or_insert((0, 0));
                entry.0 += tx.amount;
            } else {
                state.insert(tx.from, (balance, nonce + 1));
            }
            *executed.entry(*hash).or_default() += 1;
        }
    }
    let total: u128 = state.values().map(|(balance, _)| u128::from(*balance)).sum();
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
        let mut node_total: u128 = 0;
        for (address, held) in &node.accounts {
            node_total += u128::from(held.0);
            let replayed = state.get(address).copied().unwrap_or((0, 0));
            if *held != replayed {
                violation(
                    verdict,
                    format!(
                        "balance: {} says account {address} has balance {} nonce {}, the replay {} nonce {}",
                        node.name, held.0, held.1, replayed.0, replayed.1
                    ),
                );
            }
        }
        if !node.accounts.is_empty() && node_total != supply {
            violation(
                verdict,
                format!("supply: {} holds {node_total} in all, genesis had {supply}", node.name),
            );
        }
    }
    executed
}

/// Fetches every node's chain (verifying each block's certificate, hash and tx root) and the
/// balances of `addresses`. One thread per node.
pub fn fetch(endpoints: &[Endpoint], set: &ValidatorSet, addresses: &[Address]) -> Vec<NodeChain> {
    std::thread::scope(|scope| {
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
    })
}

fn fetch_one(endpoint: &Endpoint, set: &ValidatorSet, addresses: &[Address]) -> NodeChain {
    let agent = http::agent(Duration::from_secs(10));
    let mut chain = NodeChain { name: endpoint.name.clone(), ..NodeChain::default() };
    let height = match http::get(&agent, &format!("{}/status", endpoint.rpc)) {
        Ok((200, status)) => status["height"].as_u64().unwrap_or(0),
        Ok((status, _)) => {
            chain.problems.push(format!("GET /status: {status}"));
            return chain;
        }
        Err(error) => {
            chain.problems.push(format!("{error:#}"));
            return chain;
        }
    };
    for h in 1..=height {
        let fetched = http::get(&agent, &format!("{}/blocks/{h}", endpoint.rpc))
            .map_err(|error| format!("{error:#}"))
            .and_then(|(status, body)| {
                if status != 200 {
                    return Err(format!("GET /blocks/{h}: {status} {body}"));
                }
                serde_json::from_value::<BlockView>(body).map_err(|error| format!("block {h}: {error}"))
            });
        let view = match fetched {
            Ok(view) => view,
            Err(problem) => {
                chain.problems.push(problem);
                return chain;
            }
        };
        if let Err(problem) = crate::verify::block(set, &view, h) {
            chain.problems.push(problem);
        }
        chain.blocks.push(ChainBlock {
            height: h,
            hash: view.hash,
            parent: view.header.parent_hash,
            txs: view.txs,
        });
    }
    for address in addresses {
        match http::get(&agent, &format!("{}/accounts/{address}", endpoint.rpc)) {
            Ok((200, account)) => {
                let balance = account["balance"].as_u64().unwrap_or(0);
                let nonce = account["nonce"].as_u64().unwrap_or(0);
                chain.accounts.insert(*address, (balance, nonce));
            }
            Ok((404, _)) => {
                chain.accounts.insert(*address, (0, 0));
            }
            Ok((status, body)) => chain.problems.push(format!("GET /accounts/{address}: {status} {body}")),
            Err(error) => chain.problems.push(format!("{error:#}")),
        }
    }
    chain
}

#[cfg(test)]
mod tests;
