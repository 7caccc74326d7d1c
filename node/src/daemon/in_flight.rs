//! The transactions of the batches in flight here, by sender and nonce: what a backup checks a
//! fresh pre-prepare against before its replica sees it.
//!
//! A transaction may be in the chain once. An honest primary never cuts one that is in flight
//! (it marks what its view's log holds before it cuts), but a Byzantine primary can propose, at
//! height h, a copy of a transaction (or another transaction for the same sender and nonce) that
//! a batch at another height h' holds. The copy can only fail its nonce check at execution, yet
//! it would be in the chain twice, and a client reading the block would see it there. The
//! executed state catches copies of what executed; this catches copies of what is accepted,
//! committed or delivered and not executed yet.
//!
//! Any commit quorum for h' and any for h share an honest validator that accepted both; if it
//! held the batch of the first when the second came, it refused the second, so at most one of
//! the two heights can commit: the other stalls, and the view changes away from the primary that
//! proposed it. A fresh pre-prepare always carries its batch; a new view's re-proposal may be
//! accepted without it (fetched after), so while any accepted pre-prepare's batch is missing
//! here, fresh pre-prepares wait ([`InFlight::defer`]) rather than being judged blind.
//!
//! What is held must never be more than what is really in flight, or an honest primary's batch
//! would be refused: before each check the index is brought to exactly what the replica holds
//! unexecuted ([`InFlight::sync`] with `Replica::unexecuted_batches`: the current view's
//! accepted pre-prepares and re-proposals, committed batches, blocks delivered by state
//! transfer). An old view's proposal that the new view did not re-propose leaves the replica's
//! log when the new view is installed, and so leaves the index.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tetrad_consensus::{Batch, Height, Input, View};
use tetrad_ledger::tx::{Address, Tx};

/// A transaction's place in its sender's sequence: one per sender and nonce may execute.
pub type TxKey = (Address, u64);

#[derive(Default)]
pub struct InFlight {
    /// Per height: the batch held (compared by pointer: the replica keeps one `Arc` per slot)
    /// and its transactions' keys.
    held: BTreeMap<Height, (Arc<Batch>, Vec<TxKey>)>,
    at: HashMap<TxKey, Height>,
    /// Fresh pre-prepares waiting for the batches of accepted pre-prepares, one per height (the
    /// last one), with the view they belong to.
    waiting: BTreeMap<Height, Input>,
    waiting_view: Option<View>,
}

impl InFlight {
    /// Transactions held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// The height, other than `height`, of a batch in flight that holds one of `txs`' senders
    /// and nonces.
    pub fn conflict(&self, height: Height, txs: &[Tx]) -> Option<Height> {
        txs.iter()
            .filter_map(|tx| self.at.get(&(tx.body.from, tx.body.nonce)).copied())
            .find(|held| *held != height)
    }

    /// Holds exactly `batches` (height, batch: what the replica has in flight, in height
    /// order); decodes only the batches not held already.
    pub fn sync(&mut self, batches: &[(Height, Arc<Batch>)]) {
        let wanted: BTreeMap<Height, &Arc<Batch>> =
            batches.iter().map(|(height, batch)| (*height, batch)).collect();
        let stale: Vec<Height> = self
            .held
            .iter()
            .filter(|(height, (batch, _))| {
                wanted.get(height).is_none_or(|wanted| !Arc::ptr_eq(wanted, batch))
            })
            .map(|(height, _)| *height)
            .collect();
        for height in stale {
            self.remove(height);
        }
        for (height, batch) in wanted {
            if self.held.contains_key(&height) {
                continue;
            }
            // A batch that does not decode holds nothing here (a fresh one was dropped at its
            // check; a re-proposal is taken as it was prepared and fails at execution).
            let txs = tetrad_ledger::tx::decode_payload(&batch.payload).unwrap_or_default();
            let keys: Vec<TxKey> = txs.iter().map(|tx| (tx.body.from, tx.body.nonce)).collect();
            for key in &keys {
                // The first height keeps a key held twice (a copy let in before this rule).
                self.at.entry(*key).or_insert(height);
            }
            self.held.insert(height, (batch.clone(), keys));
        }
    }

    /// Keeps a fresh pre-prepare of `view` at `height` until [`InFlight::take_waiting`] (the
    /// last one per height; those of an earlier view are dropped).
    pub fn defer(&mut self, view: View, height: Height, input: Input) {
        if self.waiting_view != Some(view) {
            self.waiting.clear();
            self.waiting_view = Some(view);
        }
        self.waiting.insert(height, input);
    }

    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// The deferred pre-prepares of `view`, in height order (those of other views are dropped).
    pub fn take_waiting(&mut self, view: View) -> Vec<Input> {
        let waiting = std::mem::take(&mut self.waiting);
        if self.waiting_view != Some(view) {
            return Vec::new();
        }
        waiting.into_values().collect()
    }

    fn remove(&mut self, height: Height) {
        let Some((_, keys)) = self.held.remove(&height) else { return };
        for key in keys {
            if self.at.get(&key) == Some(&height) {
                self.at.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tetrad_consensus::ValidatorIndex;
    use tetrad_ledger::testkit::TestChain;

    use super::*;

    fn batch(txs: &[Tx]) -> Arc<Batch> {
        Arc::new(Batch {
            view: View(0),
            proposer: ValidatorIndex(0),
            timestamp_ms: 1,
            payload: borsh::to_vec(txs).expect("encodes"),
        })
    }

    #[test]
    fn a_copy_at_another_height_conflicts_while_the_replica_holds_the_first() {
        let chain = TestChain::new(4, 3, 1000);
        let a = chain.transfer(0, 0, 1, 1);
        let b = chain.transfer(1, 0, 0, 1);
        // Another transaction for a's sender and nonce.
        let a_again = chain.transfer(0, 0, 2, 5);
        let c = chain.transfer(2, 0, 0, 1);
        let (one, two) = (batch(std::slice::from_ref(&a)), batch(std::slice::from_ref(&b)));
        let mut in_flight = InFlight::default();
        in_flight.sync(&[(Height(1), one.clone()), (Height(2), two.clone())]);
        assert_eq!(in_flight.conflict(Height(3), &[c.clone(), a.clone()]), Some(Height(1)));
        assert_eq!(in_flight.conflict(Height(3), std::slice::from_ref(&a_again)), Some(Height(1)));
        assert_eq!(in_flight.conflict(Height(3), std::slice::from_ref(&b)), Some(Height(2)));
        // The same height may hold it (a retransmitted pre-prepare, the replica's business).
        assert_eq!(in_flight.conflict(Height(1), std::slice::from_ref(&a)), None);
        assert_eq!(in_flight.conflict(Height(3), std::slice::from_ref(&c)), None);
        // Height 1 now holds another batch (a new view), height 2 executed: only c is held.
        in_flight.sync(&[(Height(1), batch(std::slice::from_ref(&c)))]);
        assert_eq!(in_flight.conflict(Height(3), std::slice::from_ref(&a)), None);
        assert_eq!(in_flight.conflict(Height(3), std::slice::from_ref(&b)), None);
        assert_eq!(in_flight.conflict(Height(3), std::slice::from_ref(&c)), Some(Height(1)));
        assert_eq!(in_flight.len(), 1);
        in_flight.sync(&[]);
        assert_eq!(in_flight.len(), 0);
    }

    #[test]
    fn deferred_pre_prepares_are_kept_per_height_for_their_view_only() {
        let mut in_flight = InFlight::default();
        in_flight.defer(View(1), Height(3), Input::RequestsPending(true));
        in_flight.defer(View(1), Height(3), Input::RequestsPending(false));
        in_flight.defer(View(1), Height(2), Input::RequestsPending(true));
        assert!(in_flight.has_waiting());
        let waiting = in_flight.take_waiting(View(1));
        assert!(matches!(waiting[..], [Input::RequestsPending(true), Input::RequestsPending(false)]));
        assert!(!in_flight.has_waiting());
        in_flight.defer(View(1), Height(2), Input::RequestsPending(true));
        in_flight.defer(View(2), Height(4), Input::RequestsPending(true));
        assert_eq!(in_flight.take_waiting(View(2)).len(), 1);
        in_flight.defer(View(2), Height(4), Input::RequestsPending(true));
        assert!(in_flight.take_waiting(View(3)).is_empty());
    }
}
