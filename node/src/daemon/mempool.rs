//! The mempool: admitted transactions waiting for a batch.
//!
//! Bounded by count and bytes; deduplicated by hash; one transaction per (sender, nonce); stale
//! nonces and nonces too far ahead refused; a sender's transactions are proposed in nonce order
//! and only from the next nonce its account will accept. Every transaction in here has passed
//! every static check (signature included), so a pre-prepare that carries it does not verify it
//! again. Committed transactions, and any whose nonce the chain has passed, are evicted.

use std::collections::{BTreeMap, HashMap, VecDeque};

use std::sync::Arc;
use std::time::{Duration, Instant};

use tetrad_consensus::Digest;
use tetrad_ledger::Account;
use tetrad_ledger::tx::{Address, Tx};
use tetrad_rpc::api::SubmitError;

#[derive(Clone, Debug)]
pub struct MempoolConfig {
    pub txs_max: usize,
    pub bytes_max: usize,
    /// How far past the account's next nonce a transaction may be.
    pub nonce_ahead_max: u64,
    /// A proposed transaction that has not committed after this long may be proposed again
    /// (its batch was lost to a view change).
    pub repropose_after: Duration,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            txs_max: 200_000,
            bytes_max: 64 << 20,
            nonce_ahead_max: 1024,
            // Far beyond a view change: a batch still in flight this long was abandoned.
            // Proposing its transactions again sooner risks putting one in two blocks (the
            // second copy fails its nonce check, but it is a wasted slot).
            repropose_after: Duration::from_secs(30),
        }
    }
}

struct Entry {
    tx: Arc<Tx>,
    bytes: usize,
    seq: u64,
    /// When it was put in a proposed batch (not yet committed).
    proposed_at: Option<Instant>,
    /// When it was last gossiped (by this node or a peer).
    gossiped_at: Instant,
}

/// What a batch cut returns.
pub struct Cut {
    pub txs: Vec<Arc<Tx>>,
}

#[derive(Default)]
pub struct Mempool {
    config: MempoolConfig,
    entries: HashMap<Digest, Entry>,
    /// Per sender: nonce → hash.
    by_sender: BTreeMap<Address, BTreeMap<u64, Digest>>,
    /// Where the next cut starts among the senders (round robin, so no sender starves).
    cursor: Address,
    /// Not currently proposed, in arrival order.
    unproposed: BTreeMap<u64, Digest>,
    /// Proposed transactions in the order they were proposed, to release stale proposals.
    proposed: VecDeque<(Instant, Digest)>,
    bytes: usize,
    next_seq: u64,
}

impl Mempool {
    pub fn new(config: MempoolConfig) -> Mempool {
        Mempool { config, ..Mempool::default() }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn contains(&self, hash: &Digest) -> bool {
        self.entries.contains_key(hash)
    }

    pub fn get(&self, hash: &Digest) -> Option<Arc<Tx>> {
        self.entries.get(hash).map(|entry| entry.tx.clone())
    }

    /// Whether any transaction waits that no live proposal holds.
    pub fn has_unproposed(&self) -> bool {
        !self.unproposed.is_empty()
    }

    /// Whether some sender has a transaction with exactly its account's next nonce: work that
    /// a primary could propose now. (A transaction behind a nonce gap is not.)
    pub fn has_ready(&self, nonce_of: impl Fn(&Address) -> u64) -> bool {
        self.by_sender.iter().any(|(address, nonces)| nonces.keys().next() == Some(&nonce_of(address)))
    }

    /// Admits a transaction that passed its static checks, given its sender's account at the
    /// head. Dynamic checks here are a courtesy to the client: execution decides.
    pub fn admit(&mut self, tx: Tx, hash: Digest, sender: Option<Account>) -> Result<(), SubmitError> {
        if self.entries.contains_key(&hash) {
            return Err(SubmitError::Duplicate);
        }
        let from = tx.body.from;
        let expected = sender.map(|account| account.nonce).unwrap_or(0);
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
        let pending = self.by_sender.get(&from);
        if pending.is_some_and(|nonces| nonces.contains_key(&nonce)) {
            return Err(SubmitError::Duplicate);
        }
        let amount = &tx.body.kind.amount();
        let balance = sender.map(|account| account.balance).unwrap_or(0);
        let pending_spend: u64 = pending
            .map(|nonces| {
                nonces
                    .values()
                    .filter_map(|hash| self.entries.get(hash))
                    .map(|entry| entry.tx.body.kind.amount())
                    .fold(0u64, u64::saturating_add)
            })
            .unwrap_or(0);
        let available = balance.saturating_sub(pending_spend);
        if available < *amount {
            return Err(SubmitError::InsufficientBalance { balance: available, amount: *amount });
        }
        let bytes = tx.encode().len();
        if self.entries.len() >= self.config.txs_max || self.bytes + bytes > self.config.bytes_max {
            return Err(SubmitError::MempoolFull { txs: self.entries.len(), bytes: self.bytes });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_sender.entry(from).or_default().insert(nonce, hash);
        self.unproposed.insert(seq, hash);
        self.bytes += bytes;
        self.entries.insert(
            hash,
            Entry { tx: Arc::new(tx), bytes, seq, proposed_at: None, gossiped_at: Instant::now() },
        );
        Ok(())
    }

    /// Cuts the next batch. Senders take turns (round robin from where the last cut stopped);
    /// each contributes its run of consecutive nonces starting at the next one its account will
    /// accept after what is committed (`nonce_of`), skipping past its transactions already in
    /// flight. A sender behind a nonce gap contributes nothing, and holds nobody else up.
    pub fn cut(
        &mut self,
        txs_max: usize,
        bytes_max: usize,
        now: Instant,
        nonce_of: impl Fn(&Address) -> u64,
    ) -> Cut {
        self.release_stale_proposals(now);
        let mut picked: Vec<(u64, Digest)> = Vec::new();
        let mut bytes = 0usize;
        let cursor = self.cursor;
        let senders: Vec<Address> = self
            .by_sender
            .range(cursor..)
            .chain(self.by_sender.range(..cursor))
            .map(|(address, _)| *address)
            .collect();
        'senders: for from in senders {
            let Some(nonces) = self.by_sender.get(&from) else { continue };
            let first = nonce_of(&from);
            // Only the run of consecutive nonces from the account's next one.
            for (expected, (nonce, hash)) in (first..).zip(nonces.range(first..)) {
                if *nonce != expected {
                    break;
                }
                let Some(entry) = self.entries.get(hash) else { break };
                if entry.proposed_at.is_some() {
                    continue;
                }
                if picked.len() >= txs_max || bytes + entry.bytes > bytes_max {
                    self.cursor = from;
                    break 'senders;
                }
                bytes += entry.bytes;
                picked.push((entry.seq, *hash));
            }
        }
        let mut txs = Vec::with_capacity(picked.len());
        for (seq, hash) in picked {
            self.unproposed.remove(&seq);
            if let Some(entry) = self.entries.get_mut(&hash) {
                entry.proposed_at = Some(now);
                txs.push(entry.tx.clone());
                self.proposed.push_back((now, hash));
            }
        }
        Cut { txs }
    }

    /// Transactions waiting (not in a live proposal) that were last gossiped at least `age` ago,
    /// at most `max`: gossiped again, so a peer that lost them (a dropped gossip message) gets
    /// another chance and no sender stays stuck behind a gap at the primary.
    pub fn regossip(&mut self, now: Instant, age: Duration, max: usize) -> Vec<Arc<Tx>> {
        let mut out = Vec::new();
        for entry in self.entries.values_mut() {
            if out.len() >= max {
                break;
            }
            if entry.proposed_at.is_none() && now.duration_since(entry.gossiped_at) >= age {
                entry.gossiped_at = now;
                out.push(entry.tx.clone());
            }
        }
        out
    }

    fn release_stale_proposals(&mut self, now: Instant) {
        let after = self.config.repropose_after;
        while let Some(&(at, hash)) = self.proposed.front() {
            if now.duration_since(at) < after {
                break;
            }
            self.proposed.pop_front();
            // Still pending and still from that proposal: eligible again.
            if let Some(entry) = self.entries.get_mut(&hash)
                && entry.proposed_at == Some(at)
            {
                entry.proposed_at = None;
                self.unproposed.insert(entry.seq, hash);
            }
        }
    }

    /// After a block: drops its transactions, and every pending one whose nonce the sender's
    /// account has passed.
    pub fn on_committed(&mut self, tx_hashes: &[Digest], accounts: &[(Address, u64)]) {
        for hash in tx_hashes {
            self.remove(hash);
        }
        for (address, nonce) in accounts {
            let stale: Vec<Digest> = self
                .by_sender
                .get(address)
                .map(|nonces| nonces.range(..nonce).map(|(_, hash)| *hash).collect())
                .unwrap_or_default();
            for hash in stale {
                self.remove(&hash);
            }
        }
    }

    fn remove(&mut self, hash: &Digest) {
        let Some(entry) = self.entries.remove(hash) else { return };
        self.bytes -= entry.bytes;
        self.unproposed.remove(&entry.seq);
        let from = entry.tx.body.from;
        if let Some(nonces) = self.by_sender.get_mut(&from) {
            nonces.remove(&entry.tx.body.nonce);
            if nonces.is_empty() {
                self.by_sender.remove(&from);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tetrad_ledger::testkit::TestChain;

    use super::*;

    fn account(balance: u64, nonce: u64) -> Option<Account> {
        Some(Account { balance, nonce, slot: 0 })
    }

    fn pool(txs_max: usize) -> Mempool {
        Mempool::new(MempoolConfig {
            txs_max,
            bytes_max: 1 << 20,
            nonce_ahead_max: 4,
            repropose_after: Duration::from_secs(5),
        })
    }

    #[test]
    fn admission_rules() {
        let chain = TestChain::new(4, 3, 1000);
        let mut pool = pool(3);
        let tx = chain.transfer(0, 2, 1, 10);
        assert_eq!(
            pool.admit(tx.clone(), tx.hash(), account(1000, 3)),
            Err(SubmitError::StaleNonce { expected: 3, found: 2 })
        );
        let far = chain.transfer(0, 8, 1, 10);
        assert_eq!(
            pool.admit(far.clone(), far.hash(), account(1000, 3)),
            Err(SubmitError::NonceTooFarAhead { expected: 3, found: 8, max_ahead: 4 })
        );
        let ok = chain.transfer(0, 3, 1, 600);
        assert_eq!(pool.admit(ok.clone(), ok.hash(), account(1000, 3)), Ok(()));
        assert_eq!(pool.admit(ok.clone(), ok.hash(), account(1000, 3)), Err(SubmitError::Duplicate));
        // Pending spends count against the balance.
        let more = chain.transfer(0, 4, 1, 600);
        assert_eq!(
            pool.admit(more.clone(), more.hash(), account(1000, 3)),
            Err(SubmitError::InsufficientBalance { balance: 400, amount: 600 })
        );
        // Same nonce, other content: refused while the first is pending.
        let twin = chain.transfer(0, 3, 2, 1);
        assert_eq!(pool.admit(twin.clone(), twin.hash(), account(1000, 3)), Err(SubmitError::Duplicate));
        for (from, nonce) in [(1, 0), (2, 0)] {
            let tx = chain.transfer(from, nonce, 0, 1);
            assert_eq!(pool.admit(tx.clone(), tx.hash(), account(10, 0)), Ok(()));
        }
        let full = chain.transfer(1, 1, 0, 1);
        assert!(matches!(
            pool.admit(full.clone(), full.hash(), account(10, 0)),
            Err(SubmitError::MempoolFull { txs: 3, .. })
        ));
    }

    #[test]
    fn cuts_follow_nonce_order_and_skip_gaps() {
        let chain = TestChain::new(4, 3, 1000);
        let mut pool = pool(100);
        // Sender 0 submits nonces 1 and 0 (out of order), sender 1 submits nonce 2 (a gap).
        for (from, nonce) in [(0, 1), (0, 0), (1, 2), (2, 0)] {
            let tx = chain.transfer(from, nonce, 0, 1);
            pool.admit(tx.clone(), tx.hash(), account(1000, 0)).expect("admit");
        }
        let now = Instant::now();
        let cut = pool.cut(10, 1 << 20, now, |_| 0);
        let mut picked: Vec<(Address, u64)> =
            cut.txs.iter().map(|tx| (tx.body.from, tx.body.nonce)).collect();
        // Each sender's transactions in nonce order; sender 1 waits behind its gap.
        let zero = picked.iter().position(|p| *p == (chain.addresses[0], 0)).expect("sender 0 nonce 0");
        let one = picked.iter().position(|p| *p == (chain.addresses[0], 1)).expect("sender 0 nonce 1");
        assert!(zero < one);
        picked.sort();
        let mut expected = vec![(chain.addresses[0], 0), (chain.addresses[0], 1), (chain.addresses[2], 0)];
        expected.sort();
        assert_eq!(picked, expected);
        // Nothing else is proposable until sender 1's gap fills.
        assert!(pool.cut(10, 1 << 20, now, |_| 0).txs.is_empty());
        // After the view change window, unfinished proposals come back.
        let later = now + Duration::from_secs(6);
        assert_eq!(pool.cut(10, 1 << 20, later, |_| 0).txs.len(), 3);
    }

    #[test]
    fn a_full_batch_leaves_the_rest_for_the_next_cut_and_senders_take_turns() {
        let chain = TestChain::new(4, 3, 1000);
        let mut pool = pool(100);
        for nonce in 0..4 {
            for from in 0..3 {
                let tx = chain.transfer(from, nonce, 0, 1);
                pool.admit(tx.clone(), tx.hash(), account(1000, 0)).expect("admit");
            }
        }
        let now = Instant::now();
        let first = pool.cut(5, 1 << 20, now, |_| 0);
        let second = pool.cut(5, 1 << 20, now, |_| 0);
        let third = pool.cut(5, 1 << 20, now, |_| 0);
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
    }

    #[test]
    fn waiting_transactions_are_gossiped_again() {
        let chain = TestChain::new(4, 3, 1000);
        let mut pool = pool(100);
        for from in 0..3 {
            let tx = chain.transfer(from, 0, 0, 1);
            pool.admit(tx.clone(), tx.hash(), account(1000, 0)).expect("admit");
        }
        let now = Instant::now();
        assert!(pool.regossip(now, Duration::from_secs(2), 10).is_empty());
        let later = now + Duration::from_secs(3);
        assert_eq!(pool.regossip(later, Duration::from_secs(2), 2).len(), 2);
        assert_eq!(pool.regossip(later, Duration::from_secs(2), 10).len(), 1);
        assert!(pool.regossip(later, Duration::from_secs(2), 10).is_empty());
    }

    #[test]
    fn commits_evict_and_stale_nonces_go() {
        let chain = TestChain::new(4, 3, 1000);
        let mut pool = pool(100);
        let txs: Vec<Tx> = (0..3).map(|nonce| chain.transfer(0, nonce, 1, 1)).collect();
        for tx in &txs {
            pool.admit(tx.clone(), tx.hash(), account(1000, 0)).expect("admit");
        }
        pool.on_committed(&[txs[0].hash()], &[(chain.addresses[0], 2)]);
        assert_eq!(pool.len(), 1);
        assert!(pool.contains(&txs[2].hash()));
        assert_eq!(pool.bytes(), txs[2].encode().len());
    }
}
