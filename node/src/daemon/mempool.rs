//! The mempool: admitted transactions waiting for a batch.
//!
//! Admission costs the sender something or is refused (issue 12): a transfer only from an
//! account that exists and can pay its amount on top of what it already has queued below that
//! nonce; a key rotation only from the key that is that validator's consensus key now; a nonce
//! at most `nonce_ahead_max` past the account's next one; at most `sender_txs_max` waiting per
//! sender, `txs_max` and `bytes_max` in all; and every entry leaves after `lifetime` whether or
//! not it was proposed. Every transaction in here passed every static check (signature
//! included), so a pre-prepare that carries it does not verify it again.
//!
//! Per sender the pool keeps the account's next nonce and balance as of the last executed
//! block, and the **run**: its transactions of consecutive nonces from that next nonce, payable
//! in order from that balance. Only a run is proposable. The senders whose run holds work that
//! no live proposal of this node holds form the **ready set**; the pool keeps it (and the count
//! of proposable transactions) up to date on admission and after each block, so cutting a
//! batch costs O(what it takes), never a walk over every sender with a store lookup each. What
//! lies behind a nonce gap is counted apart ("gapped"), is never proposed or gossiped again,
//! and is the first to go when proposable work needs room.
//!
//! The ready set is also what a backup's view-change timer waits for (docs/decisions.md,
//! "What a backup waits for"): its membership depends only on the committed state and on
//! rules under which an honest primary admits every transaction that is ready at a backup
//! (a lower nonce is never refused for what higher nonces would spend; a full pool or sender
//! queue makes room for it), so a client cannot make a backup wait for work that an honest
//! primary refuses.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tetrad_consensus::{Digest, PublicKey, ValidatorIndex};
use tetrad_ledger::Account;
use tetrad_ledger::tx::{Address, Tx, TxKind};
use tetrad_rpc::api::SubmitError;

/// What admission reads of the executed state. Read under the mempool's lock, so a block that
/// executes meanwhile is seen either here or by [`Mempool::on_committed`] afterwards.
pub trait Ledger {
    /// The account after the last executed block (`None`: there is none).
    fn account(&self, address: &Address) -> Option<Account>;
    /// Validator `validator`'s consensus key for the next block (what must sign its rotation).
    fn validator_key(&self, validator: ValidatorIndex) -> Option<PublicKey>;
}

#[derive(Clone, Debug)]
pub struct MempoolConfig {
    pub txs_max: usize,
    pub bytes_max: usize,
    /// Most transactions one sender may have waiting.
    pub sender_txs_max: usize,
    /// How far past the account's next nonce a transaction may be.
    pub nonce_ahead_max: u64,
    /// How long a transaction may wait (proposed or not) before it is dropped.
    pub lifetime: Duration,
    /// A proposed transaction that has not committed after this long may be proposed again
    /// (its batch was lost to a view change).
    pub repropose_after: Duration,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            txs_max: 200_000,
            bytes_max: 64 << 20,
            sender_txs_max: 128,
            nonce_ahead_max: 128,
            // Far beyond a commit (tens of ms) and beyond several doubled view changes: what
            // waits this long is behind a gap that nobody fills, or the chain is stalled and
            // the client will submit again.
            lifetime: Duration::from_secs(120),
            // Far beyond a view change: a batch still in flight this long was abandoned.
            // Proposing its transactions again sooner risks putting one in two blocks (the
            // second copy fails its nonce check, but it is a wasted slot).
            repropose_after: Duration::from_secs(30),
        }
    }
}

/// Why the pool let go of a transaction it had admitted, as counted in `/metrics`.
pub const DROP_REASONS: [&str; 5] = [
    // Waited its lifetime.
    "expired",
    // Behind a nonce gap, evicted to make room for proposable work.
    "evicted_for_proposable",
    // The sender's highest nonce, evicted for a lower one of the same sender.
    "evicted_for_lower_nonce",
    // Its run could no longer pay for it (a lower nonce or an executed block spent the funds).
    "unpayable",
    // Another transaction with its nonce was executed.
    "nonce_used",
];

/// Why admission refused a transaction, as counted in `/metrics` (one per [`SubmitError`]).
pub fn refusal_reason(error: &SubmitError) -> &'static str {
    match error {
        SubmitError::Malformed(_) => "malformed",
        SubmitError::TooLarge { .. } => "too_large",
        SubmitError::ZeroAmount => "zero_amount",
        SubmitError::WrongChain { .. } => "wrong_chain",
        SubmitError::BadSignature { .. } => "bad_signature",
        SubmitError::StaleNonce { .. } => "stale_nonce",
        SubmitError::NonceTooFarAhead { .. } => "nonce_too_far_ahead",
        SubmitError::InsufficientBalance { .. } => "insufficient_balance",
        SubmitError::NoAccount { .. } => "no_account",
        SubmitError::NotValidator { .. } => "not_validator",
        SubmitError::SenderQueueFull { .. } => "sender_queue_full",
        SubmitError::Duplicate => "duplicate",
        SubmitError::MempoolFull { .. } => "mempool_full",
        SubmitError::Unavailable => "unavailable",
        SubmitError::Busy { .. } => "busy",
    }
}

/// Refusals the pool itself decides (the others are static checks made before it).
pub const REFUSAL_REASONS: [&str; 10] = [
    "stale_nonce",
    "nonce_too_far_ahead",
    "insufficient_balance",
    "no_account",
    "not_validator",
    "sender_queue_full",
    "duplicate",
    "mempool_full",
    "malformed",
    // The RPC's backpressure (`backpressure.rs`).
    "busy",
];

struct Entry {
    tx: Arc<Tx>,
    bytes: usize,
    /// Admission order (and so age order).
    seq: u64,
    admitted_at: Instant,
    /// When it was last gossiped (by this node or a peer).
    gossiped_at: Instant,
    /// In its sender's run (proposable in order); otherwise in `gapped`.
    in_run: bool,
}

/// One sender's waiting transactions and what the last executed block says of its account.
struct Sender {
    /// The account's next nonce and balance after the last block this pool heard of.
    nonce: u64,
    balance: u64,
    /// Waiting transactions by nonce.
    txs: BTreeMap<u64, Digest>,
    /// The first nonce from `nonce` on that is not in the run.
    run_end: u64,
    /// The first nonce that no live proposal of this node holds.
    propose_from: u64,
    /// Proposable now: `run_end - max(nonce, propose_from)` (counted into the pool's total).
    proposable: u64,
}

impl Sender {
    fn next_to_propose(&self) -> u64 {
        self.nonce.max(self.propose_from)
    }
}

/// What a batch cut returns.
pub struct Cut {
    pub txs: Vec<Arc<Tx>>,
}

#[derive(Default)]
pub struct Mempool {
    config: MempoolConfig,
    entries: HashMap<Digest, Entry>,
    senders: HashMap<Address, Sender>,
    /// Senders with proposable work, in address order (senders take turns from `cursor`).
    ready: BTreeSet<Address>,
    cursor: Option<Address>,
    /// Transactions out of their sender's run, by admission order.
    gapped: BTreeMap<u64, Digest>,
    /// Every transaction by admission order (for expiry).
    by_age: BTreeMap<u64, Digest>,
    /// This node's proposals, oldest first: `(when, sender, first nonce)`, to release stale ones.
    proposed: VecDeque<(Instant, Address, u64)>,
    /// Batches in flight marked for senders with nothing here yet: `(first, end, when)` per
    /// sender. A transaction that arrives later (a client's retry, gossip) is taken from the
    /// start, or a restarted primary would cut it into a second batch.
    marks: HashMap<Address, (u64, u64, Instant)>,
    proposable: usize,
    bytes: usize,
    next_seq: u64,
    refused: BTreeMap<&'static str, u64>,
    dropped: BTreeMap<&'static str, u64>,
}

impl Mempool {
    pub fn new(config: MempoolConfig) -> Mempool {
        let refused = REFUSAL_REASONS.iter().map(|reason| (*reason, 0)).collect();
        let dropped = DROP_REASONS.iter().map(|reason| (*reason, 0)).collect();
        Mempool { config, refused, dropped, ..Mempool::default() }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Transactions a batch could take now (runs, less what a live proposal holds).
    pub fn proposable(&self) -> usize {
        self.proposable
    }

    /// Transactions behind a nonce gap.
    pub fn gapped(&self) -> usize {
        self.gapped.len()
    }

    pub fn contains(&self, hash: &Digest) -> bool {
        self.entries.contains_key(hash)
    }

    pub fn get(&self, hash: &Digest) -> Option<Arc<Tx>> {
        self.entries.get(hash).map(|entry| entry.tx.clone())
    }

    /// When a waiting transaction was admitted here (by RPC or gossip).
    pub fn admitted_at(&self, hash: &Digest) -> Option<Instant> {
        self.entries.get(hash).map(|entry| entry.admitted_at)
    }

    /// Whether some sender has work that a primary could propose now under the executed state
    /// and that no live proposal of this node holds. O(1).
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Refusals and drops so far, by reason (for `/metrics`).
    pub fn refused(&self) -> &BTreeMap<&'static str, u64> {
        &self.refused
    }

    pub fn dropped(&self) -> &BTreeMap<&'static str, u64> {
        &self.dropped
    }

    /// Counts a refusal made before the pool was asked (a failed static check).
    pub fn count_refusal(&mut self, error: &SubmitError) {
        *self.refused.entry(refusal_reason(error)).or_default() += 1;
    }

    /// Admits a transaction that passed its static checks, reading its sender from `ledger`.
    pub fn admit(
        &mut self,
        tx: Tx,
        hash: Digest,
        ledger: &impl Ledger,
        now: Instant,
    ) -> Result<(), SubmitError> {
        let result = self.try_admit(tx, hash, ledger, now);
        if let Err(error) = &result {
            self.count_refusal(error);
        }
        result
    }

    fn try_admit(
        &mut self,
        tx: Tx,
        hash: Digest,
        ledger: &impl Ledger,
        now: Instant,
    ) -> Result<(), SubmitError> {
        if self.entries.contains_key(&hash) {
            return Err(SubmitError::Duplicate);
        }
        let from = tx.body.from;
        let account = ledger.account(&from);
        match &tx.body.kind {
            TxKind::Transfer { .. } if account.is_none() => return Err(SubmitError::NoAccount { from }),
            TxKind::Transfer { .. } => {}
            TxKind::RotateValidatorKey { validator, .. } => {
                if ledger.validator_key(*validator) != Some(from) {
                    return Err(SubmitError::NotValidator { from, validator: validator.0 });
                }
            }
        }
        let (expected, balance) = account.map(|account| (account.nonce, account.balance)).unwrap_or((0, 0));
        self.heard_of(&from, expected, balance);
        let nonce = tx.body.nonce;
        if nonce < expected {
            return Err(SubmitError::StaleNonce { expected, found: nonce });
        }
        if nonce - expected > self.config.nonce_ahead_max {
            return Err(SubmitError::NonceTooFarAhead {
                expected,
                found: nonce,
                max_ahead: self.config.nonce_ahead_max,
            });
        }
        let amount = tx.body.kind.amount();
        let (held, run_end, highest) = match self.senders.get(&from) {
            Some(sender) => {
                if sender.txs.contains_key(&nonce) {
                    return Err(SubmitError::Duplicate);
                }
                // What the lower nonces spend first; higher ones never stand in its way (they
                // make room below if needed), so a sender's next transaction is refused by no
                // honest node for what its later ones would spend.
                let below: u128 =
                    sender.txs.range(..nonce).map(|(_, hash)| u128::from(self.amount(hash))).sum();
                let available = u128::from(balance).saturating_sub(below);
                if available < u128::from(amount) {
                    return Err(SubmitError::InsufficientBalance {
                        balance: u64::try_from(available).unwrap_or(u64::MAX),
                        amount,
                    });
                }
                (sender.txs.len(), sender.run_end, sender.txs.last_key_value().map(|(n, _)| *n))
            }
            None => {
                if balance < amount {
                    return Err(SubmitError::InsufficientBalance { balance, amount });
                }
                (0, expected, None)
            }
        };
        if held >= self.config.sender_txs_max {
            match highest {
                Some(highest) if highest > nonce => {
                    self.evict_nonce(&from, highest, "evicted_for_lower_nonce");
                }
                _ => {
                    return Err(SubmitError::SenderQueueFull {
                        from,
                        pending: held,
                        max: self.config.sender_txs_max,
                    });
                }
            }
        }
        let bytes = tx.encode().len();
        // Proposable work may push out what waits behind a gap (newest first); nothing else
        // makes room.
        let extends_run = nonce == run_end;
        while self.entries.len() >= self.config.txs_max || self.bytes + bytes > self.config.bytes_max {
            let victim = if extends_run { self.gapped.last_key_value().map(|(_, hash)| *hash) } else { None };
            let Some(victim) = victim else {
                return Err(SubmitError::MempoolFull { txs: self.entries.len(), bytes: self.bytes });
            };
            self.drop_tx(&victim, "evicted_for_proposable");
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut propose_from = expected;
        if !self.senders.contains_key(&from)
            && let Some((first, end, at)) = self.marks.remove(&from)
            && end > expected
            && now.saturating_duration_since(at) < self.config.repropose_after
        {
            propose_from = end;
            self.proposed.push_back((at, from, first.max(expected)));
        }
        let sender = self.senders.entry(from).or_insert_with(|| Sender {
            nonce: expected,
            balance,
            txs: BTreeMap::new(),
            run_end: expected,
            propose_from,
            proposable: 0,
        });
        sender.txs.insert(nonce, hash);
        self.bytes += bytes;
        self.by_age.insert(seq, hash);
        self.gapped.insert(seq, hash);
        self.entries.insert(
            hash,
            Entry { tx: Arc::new(tx), bytes, seq, admitted_at: now, gossiped_at: now, in_run: false },
        );
        self.refresh(&from);
        Ok(())
    }

    fn amount(&self, hash: &Digest) -> u64 {
        self.entries.get(hash).map(|entry| entry.tx.body.kind.amount()).unwrap_or(0)
    }

    /// The ledger says `address` is at `nonce` with `balance`: newer than what the pool knew
    /// if a block executed since (then the sender's stale nonces go and its run is redone).
    fn heard_of(&mut self, address: &Address, nonce: u64, balance: u64) {
        let Some(sender) = self.senders.get_mut(address) else { return };
        if nonce < sender.nonce || (nonce, balance) == (sender.nonce, sender.balance) {
            return;
        }
        sender.nonce = nonce;
        sender.balance = balance;
        sender.propose_from = sender.propose_from.max(nonce);
        self.refresh(address);
    }

    /// Cuts the next batch: senders in the ready set take turns (round robin from where the last
    /// cut stopped), each contributing its run from the first nonce no live proposal holds.
    /// Costs O(senders visited + transactions taken).
    pub fn cut(&mut self, txs_max: usize, bytes_max: usize, now: Instant) -> Cut {
        self.release_stale_proposals(now);
        let mut txs: Vec<Arc<Tx>> = Vec::new();
        let mut bytes = 0usize;
        let mut turns = self.ready.len();
        let mut at = self.cursor;
        'senders: while turns > 0 && txs.len() < txs_max {
            turns -= 1;
            let next = match at {
                Some(at) => self.ready.range((Bound::Included(at), Bound::Unbounded)).next(),
                None => None,
            };
            let Some(address) = next.or_else(|| self.ready.iter().next()).copied() else { break };
            let Some(sender) = self.senders.get(&address) else {
                self.ready.remove(&address);
                continue;
            };
            let first = sender.next_to_propose();
            let mut nonce = first;
            while nonce < sender.run_end {
                let Some(entry) = sender.txs.get(&nonce).and_then(|hash| self.entries.get(hash)) else {
                    break;
                };
                if txs.len() >= txs_max || bytes + entry.bytes > bytes_max {
                    at = Some(address);
                    self.take_from(address, first, nonce, now);
                    break 'senders;
                }
                bytes += entry.bytes;
                txs.push(entry.tx.clone());
                nonce += 1;
            }
            self.take_from(address, first, nonce, now);
            at = self
                .ready
                .range((Bound::Excluded(address), Bound::Unbounded))
                .next()
                .copied()
                .or_else(|| self.ready.iter().next().copied());
        }
        self.cursor = at;
        Cut { txs }
    }

    /// Marks the transactions of a batch that is in flight elsewhere (proposed by another
    /// primary, re-proposed by a new view, or committed and not yet executed) as proposed at
    /// `now`, so this node does not cut them into a batch of its own: the copy would fail its
    /// nonce check at execution (the block leaves it out) after taking a place in the batch, and
    /// backups refuse a batch holding what another height holds in flight. Released like this node's own proposals after
    /// `repropose_after` if they have not executed by then. Costs O(transactions).
    pub fn mark_proposed(&mut self, txs: &[Tx], now: Instant) {
        let mut runs: BTreeMap<Address, (u64, u64)> = BTreeMap::new();
        for tx in txs {
            let nonce = tx.body.nonce;
            let run = runs.entry(tx.body.from).or_insert((nonce, nonce));
            run.0 = run.0.min(nonce);
            run.1 = run.1.max(nonce);
        }
        for (address, (first, last)) in runs {
            let Some(sender) = self.senders.get(&address) else {
                let mark = self.marks.entry(address).or_insert((first, last.saturating_add(1), now));
                *mark = (mark.0.min(first), mark.1.max(last.saturating_add(1)), now);
                continue;
            };
            if last < sender.next_to_propose() {
                continue;
            }
            self.take_from(address, first.max(sender.nonce), last.saturating_add(1), now);
        }
    }

    /// Forgets which transactions this node proposed or marked: every run is proposable again
    /// from its sender's next nonce. Called when this node becomes the primary of a new view,
    /// before it marks what that view has in flight (its log, not this node's memory of
    /// earlier views, says what is taken). O(senders).
    pub fn release_proposals(&mut self) {
        self.proposed.clear();
        self.marks.clear();
        let addresses: Vec<Address> = self
            .senders
            .iter_mut()
            .filter(|(_, sender)| sender.propose_from > sender.nonce)
            .map(|(address, sender)| {
                sender.propose_from = sender.nonce;
                *address
            })
            .collect();
        for address in addresses {
            self.refresh(&address);
        }
    }

    /// Marks `address`'s nonces `first..end` as proposed at `now`.
    fn take_from(&mut self, address: Address, first: u64, end: u64, now: Instant) {
        if end <= first {
            return;
        }
        if let Some(sender) = self.senders.get_mut(&address) {
            sender.propose_from = end;
        }
        self.proposed.push_back((now, address, first));
        self.refresh(&address);
    }

    /// Transactions of the runs that no live proposal holds and that were last gossiped at
    /// least `age` ago, at most `max`: gossiped again, so a peer (the primary, say) that lost
    /// them gets another chance. What waits behind a gap is not gossiped again (whoever holds
    /// the missing nonce gossips that one); nor what expired (it is gone).
    pub fn regossip(&mut self, now: Instant, age: Duration, max: usize) -> Vec<Arc<Tx>> {
        self.expire(now);
        let mut out = Vec::new();
        'senders: for address in &self.ready {
            let Some(sender) = self.senders.get(address) else { continue };
            for (_, hash) in sender.txs.range(sender.next_to_propose()..sender.run_end) {
                if out.len() >= max {
                    break 'senders;
                }
                if let Some(entry) = self.entries.get_mut(hash)
                    && now.duration_since(entry.gossiped_at) >= age
                {
                    entry.gossiped_at = now;
                    out.push(entry.tx.clone());
                }
            }
        }
        out
    }

    /// Drops what has waited its lifetime, and lets proposals and marks older than
    /// `repropose_after` lapse (so what they held is ready again, also when nothing else is and
    /// no cut comes: a transaction a block left out, ahead of its nonce, waits for this).
    /// O(what expires or lapses).
    pub fn expire(&mut self, now: Instant) {
        self.release_stale_proposals(now);
        let lifetime = self.config.lifetime;
        while let Some((_, hash)) = self.by_age.first_key_value() {
            let hash = *hash;
            let Some(entry) = self.entries.get(&hash) else {
                self.by_age.pop_first();
                continue;
            };
            if now.duration_since(entry.admitted_at) < lifetime {
                break;
            }
            self.drop_tx(&hash, "expired");
        }
    }

    fn release_stale_proposals(&mut self, now: Instant) {
        let after = self.config.repropose_after;
        self.marks.retain(|_, (_, _, at)| now.saturating_duration_since(*at) < after);
        while let Some(&(at, address, first)) = self.proposed.front() {
            if now.duration_since(at) < after {
                break;
            }
            self.proposed.pop_front();
            // What of it has not executed yet is eligible again (with whatever this node
            // proposed after it). Part of it may have executed: a block leaves out a
            // transaction ahead of its nonce, and the lower nonces of the same proposal can
            // execute in another block.
            if let Some(sender) = self.senders.get_mut(&address) {
                let from = first.max(sender.nonce);
                if sender.propose_from > from {
                    sender.propose_from = from;
                    self.refresh(&address);
                }
            }
        }
    }

    /// After a block: drops its transactions, and updates every sender it changed (its next
    /// nonce and balance): transactions whose nonce the account has passed go, and the run is
    /// redone from the new state (what it can no longer pay for goes too).
    pub fn on_committed<'a>(
        &mut self,
        tx_hashes: &[Digest],
        accounts: impl IntoIterator<Item = (&'a Address, &'a Account)>,
    ) {
        let mut touched = BTreeSet::new();
        for hash in tx_hashes {
            if let Some(entry) = self.entries.get(hash) {
                touched.insert(entry.tx.body.from);
                self.remove(hash, None);
            }
        }
        for (address, account) in accounts {
            touched.remove(address);
            let Some(sender) = self.senders.get_mut(address) else { continue };
            if account.nonce >= sender.nonce {
                sender.nonce = account.nonce;
                sender.balance = account.balance;
                sender.propose_from = sender.propose_from.max(account.nonce);
            }
            self.refresh(address);
        }
        // Senders of transactions in the block that it did not change (a wrong nonce).
        for address in touched {
            self.refresh(&address);
        }
    }

    /// Recomputes `address`'s run, its proposable count and its place in the ready set.
    /// O(the sender's waiting transactions), which `sender_txs_max` bounds.
    fn refresh(&mut self, address: &Address) {
        let Some(sender) = self.senders.get(address) else { return };
        let stale: Vec<Digest> = sender.txs.range(..sender.nonce).map(|(_, hash)| *hash).collect();
        for hash in stale {
            self.remove(&hash, Some("nonce_used"));
        }
        // The run: consecutive nonces from the next one, each payable after the ones before.
        let Some(sender) = self.senders.get(address) else { return };
        let mut run_end = sender.nonce;
        let mut spent: u128 = 0;
        let mut unpayable = None;
        while let Some(hash) = sender.txs.get(&run_end) {
            spent += u128::from(self.amount(hash));
            if spent > u128::from(sender.balance) {
                unpayable = Some(*hash);
                break;
            }
            run_end += 1;
        }
        let flags: Vec<(Digest, bool)> =
            sender.txs.iter().map(|(nonce, hash)| (*hash, *nonce < run_end)).collect();
        if let Some(hash) = unpayable {
            self.remove(&hash, Some("unpayable"));
        }
        for (hash, in_run) in flags {
            let Some(entry) = self.entries.get_mut(&hash) else { continue };
            if entry.in_run != in_run {
                entry.in_run = in_run;
                if in_run {
                    self.gapped.remove(&entry.seq);
                } else {
                    self.gapped.insert(entry.seq, hash);
                }
            }
        }
        let Some(sender) = self.senders.get_mut(address) else { return };
        sender.run_end = run_end;
        let proposable = run_end.saturating_sub(sender.next_to_propose());
        self.proposable = self.proposable + proposable as usize - sender.proposable as usize;
        sender.proposable = proposable;
        if proposable > 0 {
            self.ready.insert(*address);
        } else {
            self.ready.remove(address);
        }
        if sender.txs.is_empty() {
            self.senders.remove(address);
        }
    }

    /// Drops a transaction (counted under `reason`) and redoes its sender's run.
    fn drop_tx(&mut self, hash: &Digest, reason: &'static str) {
        let Some(from) = self.entries.get(hash).map(|entry| entry.tx.body.from) else { return };
        self.remove(hash, Some(reason));
        self.refresh(&from);
    }

    /// Removes `address`'s transaction with `nonce`, counted under `reason`.
    fn evict_nonce(&mut self, address: &Address, nonce: u64, reason: &'static str) {
        let hash = self.senders.get(address).and_then(|sender| sender.txs.get(&nonce)).copied();
        if let Some(hash) = hash {
            self.remove(&hash, Some(reason));
            self.refresh(address);
        }
    }

    /// Takes a transaction out of every index; counts it under `reason` if it was dropped
    /// rather than executed. The sender's run is not redone here (the caller does that).
    fn remove(&mut self, hash: &Digest, reason: Option<&'static str>) {
        let Some(entry) = self.entries.remove(hash) else { return };
        if let Some(reason) = reason {
            *self.dropped.entry(reason).or_default() += 1;
        }
        self.bytes -= entry.bytes;
        self.by_age.remove(&entry.seq);
        self.gapped.remove(&entry.seq);
        if let Some(sender) = self.senders.get_mut(&entry.tx.body.from) {
            sender.txs.remove(&entry.tx.body.nonce);
        }
    }
}

/// The node's ledger: its store's head (accounts and registry are held in memory there).
impl Ledger for tetrad_ledger::Store {
    fn account(&self, address: &Address) -> Option<Account> {
        // A store read error leaves the sender unknown: a transfer is then refused as coming
        // from no account, which the client may retry.
        tetrad_ledger::Store::account(self, address).ok().flatten()
    }

    fn validator_key(&self, validator: ValidatorIndex) -> Option<PublicKey> {
        tetrad_ledger::Store::validator_key(self, validator)
    }
}

#[cfg(test)]
mod tests {
    use tetrad_ledger::testkit::TestChain;

    use super::*;

    /// Accounts and validator keys as a test wants them.
    struct TestLedger {
        accounts: HashMap<Address, Account>,
        validators: Vec<PublicKey>,
    }

    impl Ledger for TestLedger {
        fn account(&self, address: &Address) -> Option<Account> {
            self.accounts.get(address).copied()
        }

        fn validator_key(&self, validator: ValidatorIndex) -> Option<PublicKey> {
            self.validators.get(validator.as_usize()).copied()
        }
    }

    /// Every test account at `balance` and `nonce`.
    fn ledger(chain: &TestChain, balance: u64, nonce: u64) -> TestLedger {
        let accounts = chain
            .addresses
            .iter()
            .enumerate()
            .map(|(slot, address)| (*address, Account { balance, nonce, slot: slot as u64 }))
            .collect();
        TestLedger { accounts, validators: chain.validator_set.keys().to_vec() }
    }

    fn config(txs_max: usize) -> MempoolConfig {
        MempoolConfig {
            txs_max,
            bytes_max: 1 << 20,
            sender_txs_max: 6,
            nonce_ahead_max: 4,
            lifetime: Duration::from_secs(60),
            repropose_after: Duration::from_secs(5),
        }
    }

    fn pool(txs_max: usize) -> Mempool {
        Mempool::new(config(txs_max))
    }

    fn admit(pool: &mut Mempool, tx: &Tx, ledger: &TestLedger, now: Instant) -> Result<(), SubmitError> {
        pool.admit(tx.clone(), tx.hash(), ledger, now)
    }

    fn senders_and_nonces(cut: &Cut) -> Vec<(Address, u64)> {
        cut.txs.iter().map(|tx| (tx.body.from, tx.body.nonce)).collect()
    }

    #[test]
    fn admission_rules() {
        let chain = TestChain::new(4, 3, 1000);
        let at_three = ledger(&chain, 1000, 3);
        let now = Instant::now();
        let mut pool = pool(3);
        let tx = chain.transfer(0, 2, 1, 10);
        assert_eq!(
            admit(&mut pool, &tx, &at_three, now),
            Err(SubmitError::StaleNonce { expected: 3, found: 2 })
        );
        let far = chain.transfer(0, 8, 1, 10);
        assert_eq!(
            admit(&mut pool, &far, &at_three, now),
            Err(SubmitError::NonceTooFarAhead { expected: 3, found: 8, max_ahead: 4 })
        );
        let ok = chain.transfer(0, 3, 1, 600);
        assert_eq!(admit(&mut pool, &ok, &at_three, now), Ok(()));
        assert_eq!(admit(&mut pool, &ok, &at_three, now), Err(SubmitError::Duplicate));
        // Pending spends of lower nonces count against the balance.
        let more = chain.transfer(0, 4, 1, 600);
        assert_eq!(
            admit(&mut pool, &more, &at_three, now),
            Err(SubmitError::InsufficientBalance { balance: 400, amount: 600 })
        );
        // Same nonce, other content: refused while the first is pending.
        let twin = chain.transfer(0, 3, 2, 1);
        assert_eq!(admit(&mut pool, &twin, &at_three, now), Err(SubmitError::Duplicate));
        let fresh = ledger(&chain, 10, 0);
        for from in [1, 2] {
            assert_eq!(admit(&mut pool, &chain.transfer(from, 0, 0, 1), &fresh, now), Ok(()));
        }
        // Full of proposable work: nothing to make room with.
        assert!(matches!(
            admit(&mut pool, &chain.transfer(1, 1, 0, 1), &fresh, now),
            Err(SubmitError::MempoolFull { txs: 3, .. })
        ));
        assert_eq!(pool.refused()["duplicate"], 2);
        assert_eq!(pool.refused()["mempool_full"], 1);
    }

    #[test]
    fn a_transfer_must_come_from_an_account_that_exists() {
        let chain = TestChain::new(4, 2, 1000);
        let ledger = ledger(&chain, 1000, 0);
        let now = Instant::now();
        let mut pool = pool(100);
        let nobody = chain.transfer(50, 0, 0, 1);
        assert_eq!(
            admit(&mut pool, &nobody, &ledger, now),
            Err(SubmitError::NoAccount { from: nobody.body.from })
        );
        assert_eq!(pool.refused()["no_account"], 1);
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn cuts_follow_nonce_order_and_skip_gaps() {
        let chain = TestChain::new(4, 3, 1000);
        let ledger = ledger(&chain, 1000, 0);
        let now = Instant::now();
        let mut pool = pool(100);
        // Sender 0 submits nonces 1 and 0 (out of order), sender 1 submits nonce 2 (a gap).
        for (from, nonce) in [(0, 1), (0, 0), (1, 2), (2, 0)] {
            admit(&mut pool, &chain.transfer(from, nonce, 0, 1), &ledger, now).expect("admit");
        }
        assert_eq!((pool.proposable(), pool.gapped()), (3, 1));
        let cut = pool.cut(10, 1 << 20, now);
        let mut picked = senders_and_nonces(&cut);
        // Each sender's transactions in nonce order; sender 1 waits behind its gap.
        let zero = picked.iter().position(|p| *p == (chain.addresses[0], 0)).expect("sender 0 nonce 0");
        let one = picked.iter().position(|p| *p == (chain.addresses[0], 1)).expect("sender 0 nonce 1");
        assert!(zero < one);
        picked.sort();
        let mut expected = vec![(chain.addresses[0], 0), (chain.addresses[0], 1), (chain.addresses[2], 0)];
        expected.sort();
        assert_eq!(picked, expected);
        // Nothing else is proposable until sender 1's gap fills.
        assert!(!pool.has_ready());
        assert!(pool.cut(10, 1 << 20, now).txs.is_empty());
        // After the view change window, unfinished proposals come back.
        let later = now + Duration::from_secs(6);
        assert_eq!(pool.cut(10, 1 << 20, later).txs.len(), 3);
        // A new view: what this node proposed before is proposable again at once (the new
        // view's log says what is in flight, and the driver marks that).
        pool.release_proposals();
        assert!(pool.has_ready());
        assert_eq!(senders_and_nonces(&pool.cut(10, 1 << 20, later)).len(), 3);
        pool.release_proposals();
        pool.mark_proposed(&[chain.transfer(0, 0, 0, 1)], later);
        assert_eq!(senders_and_nonces(&pool.cut(10, 1 << 20, later)).len(), 2);
    }

    #[test]
    fn a_batch_in_flight_marked_before_its_transactions_arrive_still_holds_them() {
        // Seed 11 of the campaign (heights 28253 and 28255): a primary restarted with a batch in
        // its log and an empty mempool marked nothing; the clients' retries then brought the same
        // transactions in, and it cut them into a second batch. The mark must outlive the
        // sender's absence from the pool (and the sender's removal once it has nothing left).
        let chain = TestChain::new(4, 2, 1000);
        let ledger = ledger(&chain, 1000, 0);
        let now = Instant::now();
        let mut pool = pool(100);
        pool.mark_proposed(&[chain.transfer(0, 0, 1, 1), chain.transfer(0, 1, 1, 1)], now);
        for nonce in 0..3 {
            admit(&mut pool, &chain.transfer(0, nonce, 1, 1), &ledger, now).expect("admit");
        }
        assert_eq!(senders_and_nonces(&pool.cut(10, 1 << 20, now)), vec![(chain.addresses[0], 2)]);
        // Past the re-proposal window the marks are released like this node's own proposals.
        let later = now + Duration::from_secs(6);
        assert_eq!(pool.cut(10, 1 << 20, later).txs.len(), 3);
        // A new view forgets them too (its log is marked again).
        pool.mark_proposed(&[chain.transfer(1, 0, 0, 1)], later);
        pool.release_proposals();
        admit(&mut pool, &chain.transfer(1, 0, 0, 1), &ledger, later).expect("admit");
        // (Sender 0's run is released with it.)
        let cut = senders_and_nonces(&pool.cut(10, 1 << 20, later));
        assert!(cut.contains(&(chain.addresses[1], 0)), "{cut:?}");
        assert_eq!(cut.len(), 4);
    }

    #[test]
    fn a_full_batch_leaves_the_rest_for_the_next_cut_and_senders_take_turns() {
        let chain = TestChain::new(4, 3, 1000);
        let ledger = ledger(&chain, 1000, 0);
        let now = Instant::now();
        let mut pool = pool(100);
        for nonce in 0..4 {
            for from in 0..3 {
                admit(&mut pool, &chain.transfer(from, nonce, 0, 1), &ledger, now).expect("admit");
            }
        }
        let first = pool.cut(5, 1 << 20, now);
        let second = pool.cut(5, 1 << 20, now);
        let third = pool.cut(5, 1 << 20, now);
        assert_eq!((first.txs.len(), second.txs.len(), third.txs.len()), (5, 5, 2));
        // Every sender got all four nonces in order across the cuts.
        for from in 0..3usize {
            let nonces: Vec<u64> = [&first, &second, &third]
                .iter()
                .flat_map(|cut| cut.txs.iter())
                .filter(|tx| tx.body.from == chain.addresses[from])
                .map(|tx| tx.body.nonce)
                .collect();
            assert_eq!(nonces, vec![0, 1, 2, 3], "sender {from}");
        }
        assert_eq!(pool.proposable(), 0);
    }

    /// "Batch is full" counts only proposable work: a pool full of gapped transactions has none,
    /// and a backup holding them has nothing to time the primary for.
    #[test]
    fn only_proposable_work_counts_and_the_ready_set_follows_blocks() {
        let chain = TestChain::new(4, 3, 1000);
        let start = ledger(&chain, 1000, 0);
        let now = Instant::now();
        let mut pool = pool(100);
        for nonce in 2..5 {
            admit(&mut pool, &chain.transfer(0, nonce, 1, 1), &start, now).expect("admit");
        }
        assert_eq!((pool.len(), pool.proposable(), pool.gapped()), (3, 0, 3));
        assert!(!pool.has_ready());
        assert!(pool.cut(100, 1 << 20, now).txs.is_empty());
        // Nonce 0 and 1 were executed elsewhere (another node's copies): the run now starts at
        // nonce 2, and everything waiting is proposable.
        let after = Account { balance: 998, nonce: 2, slot: 0 };
        pool.on_committed(&[], [(&chain.addresses[0], &after)]);
        assert_eq!((pool.proposable(), pool.gapped()), (3, 0));
        assert!(pool.has_ready());
        let cut = pool.cut(2, 1 << 20, now);
        assert_eq!(senders_and_nonces(&cut), vec![(chain.addresses[0], 2), (chain.addresses[0], 3)]);
        // In flight is not ready; the rest is.
        assert_eq!(pool.proposable(), 1);
        let cut = pool.cut(2, 1 << 20, now);
        assert_eq!(senders_and_nonces(&cut), vec![(chain.addresses[0], 4)]);
        assert!(!pool.has_ready());
        // The first batch commits: its transactions leave; the second is still in flight.
        let hashes: Vec<Digest> = [2, 3].iter().map(|nonce| chain.transfer(0, *nonce, 1, 1).hash()).collect();
        let after = Account { balance: 996, nonce: 4, slot: 0 };
        pool.on_committed(&hashes, [(&chain.addresses[0], &after)]);
        assert_eq!((pool.len(), pool.proposable()), (1, 0));
    }

    /// A transaction ahead of its sender's nonce when its batch executed (a view change brought
    /// an older view's batch, holding the lower nonce, back above it) is left out of the block
    /// and stays here, marked as proposed. The primary's propose path only cuts when work is
    /// ready, so the mark must lapse without a cut: before, only `cut` released stale marks, and
    /// on a quiet chain the transaction waited for a view change or its lifetime.
    #[test]
    fn a_transaction_left_out_ahead_of_its_nonce_becomes_ready_again_without_a_cut() {
        let chain = TestChain::new(4, 3, 1000);
        let start = ledger(&chain, 1000, 0);
        let now = Instant::now();
        let mut pool = pool(100);
        let (first, second) = (chain.transfer(0, 0, 1, 1), chain.transfer(0, 1, 1, 1));
        for tx in [&first, &second] {
            admit(&mut pool, tx, &start, now).expect("admit");
        }
        assert_eq!(pool.cut(100, 1 << 20, now).txs.len(), 2);
        assert!(!pool.has_ready());
        // The block that held the second first left it out; then nonce 0 executed.
        let after = Account { balance: 999, nonce: 1, slot: 0 };
        pool.on_committed(&[first.hash()], [(&chain.addresses[0], &after)]);
        assert!(pool.contains(&second.hash()), "a transaction left out stays");
        assert!(!pool.has_ready(), "still marked: its batch may be in flight at a lagging backup");
        pool.expire(now + config(100).repropose_after);
        assert!(pool.has_ready(), "the mark lapsed");
        let cut = pool.cut(100, 1 << 20, now + config(100).repropose_after);
        assert_eq!(senders_and_nonces(&cut), vec![(chain.addresses[0], 1)]);
    }

    #[test]
    fn what_a_block_leaves_unpayable_goes() {
        let chain = TestChain::new(4, 3, 1000);
        let start = ledger(&chain, 1000, 0);
        let now = Instant::now();
        let mut pool = pool(100);
        let mine = chain.transfer(0, 0, 1, 100);
        let next = chain.transfer(0, 1, 1, 400);
        for tx in [&mine, &next] {
            admit(&mut pool, tx, &start, now).expect("admit");
        }
        // Another version of nonce 0 spent 900.
        let after = Account { balance: 100, nonce: 1, slot: 0 };
        pool.on_committed(&[], [(&chain.addresses[0], &after)]);
        assert!(!pool.contains(&mine.hash()) && !pool.contains(&next.hash()));
        assert_eq!((pool.dropped()["nonce_used"], pool.dropped()["unpayable"]), (1, 1));
        assert!(!pool.has_ready());
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn a_lower_nonce_takes_the_place_of_the_highest_in_a_full_sender_queue() {
        let chain = TestChain::new(4, 3, 1000);
        let start = ledger(&chain, 1000, 0);
        let now = Instant::now();
        let mut pool = Mempool::new(MempoolConfig { sender_txs_max: 3, nonce_ahead_max: 10, ..config(100) });
        for nonce in [2, 3, 4] {
            admit(&mut pool, &chain.transfer(0, nonce, 1, 1), &start, now).expect("admit");
        }
        let highest = chain.transfer(0, 4, 1, 1);
        assert!(matches!(
            admit(&mut pool, &chain.transfer(0, 5, 1, 1), &start, now),
            Err(SubmitError::SenderQueueFull { pending: 3, max: 3, .. })
        ));
        admit(&mut pool, &chain.transfer(0, 0, 1, 1), &start, now).expect("a lower nonce is admitted");
        assert!(!pool.contains(&highest.hash()));
        assert_eq!(pool.dropped()["evicted_for_lower_nonce"], 1);
        assert_eq!((pool.len(), pool.proposable()), (3, 1));
    }

    #[test]
    fn only_the_runs_are_gossiped_again_and_everything_expires() {
        let chain = TestChain::new(4, 3, 1000);
        let ledger = ledger(&chain, 1000, 0);
        let now = Instant::now();
        let mut pool = pool(100);
        for from in 0..3 {
            admit(&mut pool, &chain.transfer(from, 0, 0, 1), &ledger, now).expect("admit");
        }
        // Behind a gap: never gossiped again.
        admit(&mut pool, &chain.transfer(0, 2, 0, 1), &ledger, now).expect("admit");
        assert!(pool.regossip(now, Duration::from_secs(2), 10).is_empty());
        let later = now + Duration::from_secs(3);
        assert_eq!(pool.regossip(later, Duration::from_secs(2), 2).len(), 2);
        assert_eq!(pool.regossip(later, Duration::from_secs(2), 10).len(), 1);
        assert!(pool.regossip(later, Duration::from_secs(2), 10).is_empty());
        // One more, later: at the end of the first ones' lifetime only it remains.
        let young = chain.transfer(1, 1, 0, 1);
        admit(&mut pool, &young, &ledger, now + Duration::from_secs(30)).expect("admit");
        let end = now + Duration::from_secs(60);
        assert_eq!(pool.regossip(end, Duration::from_secs(2), 10).len(), 0);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.dropped()["expired"], 4);
        // Its nonce 0 expired: it waits behind a gap now, and is neither ready nor gossiped.
        assert!(pool.contains(&young.hash()));
        assert!(!pool.has_ready());
        assert_eq!(pool.gapped(), 1);
        pool.expire(end + Duration::from_secs(30));
        assert_eq!((pool.len(), pool.bytes(), pool.gapped()), (0, 0, 0));
    }

    #[test]
    fn commits_evict_and_stale_nonces_go() {
        let chain = TestChain::new(4, 3, 1000);
        let ledger = ledger(&chain, 1000, 0);
        let now = Instant::now();
        let mut pool = pool(100);
        let txs: Vec<Tx> = (0..3).map(|nonce| chain.transfer(0, nonce, 1, 1)).collect();
        for tx in &txs {
            admit(&mut pool, tx, &ledger, now).expect("admit");
        }
        let after = Account { balance: 998, nonce: 2, slot: 0 };
        pool.on_committed(&[txs[0].hash()], [(&chain.addresses[0], &after)]);
        assert_eq!(pool.len(), 1);
        assert!(pool.contains(&txs[2].hash()));
        assert_eq!(pool.bytes(), txs[2].encode().len());
        assert_eq!(pool.proposable(), 1);
    }

    /// Many senders behind gaps cost a cut nothing: it visits only the ready set.
    #[test]
    fn a_cut_takes_the_ready_work_among_many_gapped_senders() {
        let chain = TestChain::new(4, 2001, 1000);
        let ledger = ledger(&chain, 1000, 0);
        let now = Instant::now();
        let mut pool = Mempool::new(MempoolConfig { txs_max: 10_000, ..config(0) });
        for from in 1..=2000 {
            admit(&mut pool, &chain.transfer(from, 1, 0, 1), &ledger, now).expect("admit");
        }
        admit(&mut pool, &chain.transfer(0, 0, 1, 1), &ledger, now).expect("admit");
        assert_eq!((pool.proposable(), pool.gapped(), pool.ready.len()), (1, 2000, 1));
        let cut = pool.cut(100, 1 << 20, now);
        assert_eq!(senders_and_nonces(&cut), vec![(chain.addresses[0], 0)]);
    }
}
