//! The clients: closed-loop threads that sign transfers between the funded accounts and submit
//! them to random nodes (also ones that are cut off, paused or about to die), then record what
//! they were told: committed at a height (with the block's commit certificate checked),
//! refused, or unknown.
//!
//! A client never gives up on a transaction by signing a different one in its place while it
//! still could commit: it resubmits the same signed bytes (same hash) to other nodes until a
//! node names the block, a node refuses it before anyone admitted it, or [`TX_DEADLINE`]
//! passes (unknown). After an unknown it asks the chain for the account's nonce before the next
//! transfer from that account.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tetrad_consensus::{Digest, ValidatorSet};
use tetrad_genesis::KeyFile;
use tetrad_ledger::tx::{Tx, TxBody, TxKind, chain_tag};
use tetrad_rpc::api::BlockView;

use crate::http;
use crate::record::{Answer, RecordWriter, TxRecord};
use crate::rng::Rng;

/// How long a client tries to learn the fate of one transaction.
pub const TX_DEADLINE: Duration = Duration::from_secs(20);
/// How long one `POST /txs?wait=true` waits for the commit.
const WAIT_MS: u64 = 3_000;
/// How long a client keeps asking for the block of an acknowledged transaction to check its
/// certificate (every node may be restarting at once).
const CERTIFICATE_DEADLINE: Duration = Duration::from_secs(20);
/// Time limit of a lookup (`/txs/{hash}`, `/blocks/{h}`, `/accounts/{a}`).
const QUICK: Duration = Duration::from_millis(1_500);

/// What an error answer to `POST /txs` says about the transaction (rpc/src/errors.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It may have been admitted (and may commit): it can never be called failed after this.
    MaybeAdmitted,
    /// Refused before admission for a passing reason (busy): try again elsewhere.
    NotAdmitted,
    /// Refused for good, and not admitted: failed, if nothing before may have admitted it.
    Definitive,
}

pub fn refusal(status: u16, code: Option<i64>) -> Refusal {
    match code {
        // Admitted but not committed in time; already pending; nonce already used (maybe by
        // this very transaction).
        Some(-32014 | -32007 | -32003) => Refusal::MaybeAdmitted,
        // "Shutting down" also answers a transaction that was admitted before its commit was
        // seen; "request timeout" is the server's limit on the whole request, which may end
        // after admission.
        Some(-32015 | -32022) => Refusal::MaybeAdmitted,
        // Mempool full, the sender's queue full, too many requests in flight: not admitted.
        Some(-32006 | -32019 | -32021) => Refusal::NotAdmitted,
        _ if status >= 500 => Refusal::MaybeAdmitted,
        _ => Refusal::Definitive,
    }
}

/// A node's RPC address.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub name: String,
    pub rpc: String,
}

#[derive(Default)]
pub struct Counts {
    pub committed: AtomicU64,
    pub failed: AtomicU64,
    pub unknown: AtomicU64,
    /// Records appended to the record file (the campaign compares it with what it reads back).
    pub recorded: AtomicU64,
    /// Records that could not be written (each one fails the campaign: an answer was lost).
    pub record_errors: AtomicU64,
}

pub struct Workload {
    pub endpoints: Vec<Endpoint>,
    pub genesis_hash: Digest,
    pub set: ValidatorSet,
    pub accounts: Vec<KeyFile>,
    pub clients: usize,
    pub seed: u64,
    pub started: Instant,
    pub stop: AtomicBool,
    pub writer: Mutex<RecordWriter>,
    pub counts: Counts,
}

impl Workload {
    pub fn spawn(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        let mut rng = Rng::new(self.seed ^ 0x5eed_c11e_0000_0000);
        (0..self.clients)
            .map(|index| {
                let workload = Arc::clone(self);
                let rng = rng.fork(index as u64);
                std::thread::spawn(move || workload.client(index, rng))
            })
            .collect()
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn client(&self, index: usize, mut rng: Rng) {
        let agent = http::agent(Duration::from_millis(WAIT_MS + 2_000));
        let quick = http::agent(QUICK);
        let mine: Vec<usize> = (index..self.accounts.len()).step_by(self.clients.max(1)).collect();
        if mine.is_empty() || self.accounts.len() < 2 {
            return;
        }
        // Genesis accounts start at nonce 0; `None`: ask the chain first (after an unknown).
        let mut nonces: Vec<Option<u64>> = vec![Some(0); self.accounts.len()];
        let mut last: Vec<Option<Digest>> = vec![None; self.accounts.len()];
        while !self.stop.load(Ordering::Relaxed) {
            let from = mine[rng.below(mine.len() as u64) as usize];
            if nonces[from].is_none() {
                nonces[from] = self.resync(&quick, from, last[from]);
                if nonces[from].is_none() {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            }
            let nonce = nonces[from].unwrap_or(0);
            let mut to = rng.below(self.accounts.len() as u64) as usize;
            if to == from {
                to = (to + 1) % self.accounts.len();
            }
            let amount = rng.range(1, 1_000);
            let key = &self.accounts[from];
            let body = TxBody {
                chain: chain_tag(&self.genesis_hash),
                from: key.public_key(),
                nonce,
                kind: TxKind::Transfer { to: self.accounts[to].public_key(), amount },
            };
            let tx = Tx::sign(body, &key.secret, &self.genesis_hash);
            let record = self.resolve(&agent, &quick, &mut rng, &tx, to, amount);
            last[from] = Some(record.hash);
            nonces[from] = match record.answer {
                Answer::Committed if record.executed => Some(nonce + 1),
                Answer::Failed => Some(nonce),
                _ => None,
            };
            let counter = match record.answer {
                Answer::Committed => &self.counts.committed,
                Answer::Failed => &self.counts.failed,
                Answer::Unknown => &self.counts.unknown,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let written = match self.writer.lock() {
                Ok(mut writer) => writer.append(&record),
                Err(_) => Err(anyhow::anyhow!("the record writer's lock is poisoned")),
            };
            match written {
                Ok(()) => self.counts.recorded.fetch_add(1, Ordering::Relaxed),
                Err(error) => {
                    eprintln!("chaos: cannot write the record of {}: {error:#}", record.hash);
                    self.counts.record_errors.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
    }

    /// The account's next nonce as the chain sees it: the highest any node answers (a node
    /// that lags shows a lower one; the nonce rule keeps a too-low guess harmless, it only
    /// fails). `None` if no node answered.
    fn resync(&self, quick: &ureq::Agent, account: usize, last: Option<Digest>) -> Option<u64> {
        if let Some(hash) = last {
            // Still pending somewhere? Then wait: a new transfer with the same nonce would race it.
            let _ = self.lookup(quick, &hash);
        }
        let address = self.accounts[account].public_key();
        let mut best = None;
        for endpoint in &self.endpoints {
            if let Ok((200, answer)) = http::get(quick, &format!("{}/accounts/{address}", endpoint.rpc))
                && let Some(nonce) = answer["nonce"].as_u64()
            {
                best = Some(best.map_or(nonce, |best: u64| best.max(nonce)));
            }
        }
        best
    }

    fn resolve(
        &self,
        agent: &ureq::Agent,
        quick: &ureq::Agent,
        rng: &mut Rng,
        tx: &Tx,
        to: usize,
        amount: u64,
    ) -> TxRecord {
        let hash = tx.hash();
        let body = serde_json::to_value(tx).unwrap_or(Value::Null);
        let mut record = TxRecord {
            hash,
            tx: tx.clone(),
            from: tx.body.from,
            to: self.accounts[to].public_key(),
            amount,
            nonce: tx.body.nonce,
            answer: Answer::Unknown,
            height: None,
            executed: false,
            certificate_verified: false,
            nodes: Vec::new(),
            detail: String::new(),
            submitted_ms: self.now_ms(),
            resolved_ms: 0,
        };
        let deadline = Instant::now() + TX_DEADLINE;
        let mut maybe_admitted = false;
        let n = self.endpoints.len() as u64;
        let mut node = rng.below(n) as usize;
        while Instant::now() < deadline {
            let endpoint = &self.endpoints[node];
            record.nodes.push(endpoint.name.clone());
            let url = format!("{}/txs?wait=true&timeout_ms={WAIT_MS}", endpoint.rpc);
            match http::post(agent, &url, &body) {
                Ok((200, answer)) => return self.committed(quick, record, node, &answer),
                Ok((status, answer)) => {
                    let message = answer["error"]["message"].as_str().unwrap_or("(no message)");
                    record.detail = format!("{}: {status} {message}", endpoint.name);
                    match refusal(status, http::error_code(&answer)) {
                        Refusal::MaybeAdmitted => maybe_admitted = true,
                        Refusal::NotAdmitted => {}
                        Refusal::Definitive if !maybe_admitted => {
                            record.answer = Answer::Failed;
                            record.resolved_ms = self.now_ms();
                            return record;
                        }
                        Refusal::Definitive => {}
                    }
                }
                Err(error) => {
                    // A lost answer: the node may have admitted it before the connection broke.
                    maybe_admitted = true;
                    record.detail = format!("{}: {error:#}", endpoint.name);
                }
            }
            if let Some((found, answer)) = self.lookup(quick, &hash) {
                return self.committed(quick, record, found, &answer);
            }
            std::thread::sleep(Duration::from_millis(rng.range(50, 300)));
            if n > 1 {
                node = (node + 1 + rng.below(n - 1) as usize) % n as usize;
            }
        }
        if let Some((found, answer)) = self.lookup(quick, &hash) {
            return self.committed(quick, record, found, &answer);
        }
        record.resolved_ms = self.now_ms();
        record
    }

    /// Asks every node for the transaction: the first that shows it in a block.
    fn lookup(&self, quick: &ureq::Agent, hash: &Digest) -> Option<(usize, Value)> {
        self.endpoints.iter().enumerate().find_map(|(index, endpoint)| {
            match http::get(quick, &format!("{}/txs/{hash}", endpoint.rpc)) {
                Ok((200, answer)) if answer["height"].as_u64().is_some() => Some((index, answer)),
                _ => None,
            }
        })
    }

    /// A node named the block: record it, and check that block's certificate (from the node
    /// that answered, or any other).
    fn committed(&self, quick: &ureq::Agent, mut record: TxRecord, node: usize, answer: &Value) -> TxRecord {
        record.answer = Answer::Committed;
        record.height = answer["height"].as_u64();
        record.executed = answer["status"].as_str() == Some("committed");
        record.resolved_ms = self.now_ms();
        let Some(height) = record.height else {
            record.detail =
                format!("{}: a commit answer without a height: {answer}", self.endpoints[node].name);
            return record;
        };
        // Nodes may all be down for a moment (a whole-network restart): ask again, within
        // CERTIFICATE_DEADLINE, before calling the acknowledgment unverified.
        let deadline = Instant::now() + CERTIFICATE_DEADLINE;
        loop {
            match self.check_certificate(quick, node, height, &record.hash) {
                Ok(()) => {
                    record.certificate_verified = true;
                    return record;
                }
                Err(problems) if Instant::now() >= deadline => {
                    record.detail = problems.join("; ");
                    return record;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// Fetches block `height` from `node`, then from the others, until one verifies.
    fn check_certificate(
        &self,
        quick: &ureq::Agent,
        node: usize,
        height: u64,
        tx: &Digest,
    ) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        for offset in 0..self.endpoints.len() {
            let endpoint = &self.endpoints[(node + offset) % self.endpoints.len()];
            let checked = http::get(quick, &format!("{}/blocks/{height}", endpoint.rpc))
                .map_err(|error| format!("{error:#}"))
                .and_then(|(status, body)| {
                    if status != 200 {
                        return Err(format!("GET /blocks/{height}: {status}"));
                    }
                    let view: BlockView = serde_json::from_value(body).map_err(|error| error.to_string())?;
                    crate::verify::tx_in_block(&self.set, &view, height, tx)
                });
            match checked {
                Ok(()) => return Ok(()),
                Err(problem) => problems.push(format!("{}: {problem}", endpoint.name)),
            }
        }
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_may_follow_admission_never_makes_a_transaction_failed() {
        // The shutting-down answer to a waiting submission that was admitted (rpc/src/calls.rs),
        // and the server's request time limit, which covers the wait after admission.
        assert_eq!(refusal(503, Some(-32015)), Refusal::MaybeAdmitted);
        assert_eq!(refusal(408, Some(-32022)), Refusal::MaybeAdmitted);
        assert_eq!(refusal(504, Some(-32014)), Refusal::MaybeAdmitted);
        assert_eq!(refusal(500, None), Refusal::MaybeAdmitted);
        assert_eq!(refusal(503, Some(-32006)), Refusal::NotAdmitted);
        assert_eq!(refusal(429, Some(-32019)), Refusal::NotAdmitted);
        assert_eq!(refusal(400, Some(-32005)), Refusal::Definitive);
        assert_eq!(refusal(400, Some(-32004)), Refusal::Definitive);
    }
}
