//! Validator sets and their quorums, and the schedule of sets over heights (epochs).

use std::sync::Arc;

use ed25519_dalek::VerifyingKey;

use crate::crypto::{CryptoError, PublicKey};
use crate::types::{Digest, Height, ValidatorIndex, View};

/// Why a validator set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidatorSetError {
    #[error("the validator set is empty")]
    Empty,
    #[error("{count} validators; at most {max} are supported")]
    TooMany { count: usize, max: usize },
    #[error("validator {index} has the same consensus key as validator {other}")]
    DuplicateKey { index: usize, other: usize },
    #[error("validator {index}: {source}")]
    BadKey { index: usize, source: CryptoError },
}

/// The validators of one chain at one height: their consensus keys in genesis order.
///
/// `n` validators tolerate `f = (n - 1) / 3` Byzantine ones. A quorum is the smallest number
/// of validators such that any two quorums intersect in at least `f + 1` validators (so in at
/// least one honest one): `floor((n + f) / 2) + 1`. For `n = 3f + 1` this is PBFT's `2f + 1`;
/// for other `n` it is larger than `2f + 1`, which would not be safe there.
#[derive(Clone, Debug)]
pub struct ValidatorSet {
    genesis_hash: Digest,
    keys: Vec<PublicKey>,
    verifying_keys: Vec<VerifyingKey>,
}

/// Validator indices are `u16` on the wire.
pub const VALIDATORS_MAX: usize = 1024;

impl ValidatorSet {
    pub fn new(genesis_hash: Digest, keys: Vec<PublicKey>) -> Result<ValidatorSet, ValidatorSetError> {
        if keys.is_empty() {
            return Err(ValidatorSetError::Empty);
        }
        if keys.len() > VALIDATORS_MAX {
            return Err(ValidatorSetError::TooMany { count: keys.len(), max: VALIDATORS_MAX });
        }
        let mut verifying_keys = Vec::with_capacity(keys.len());
        for (index, key) in keys.iter().enumerate() {
            if let Some(other) = keys[..index].iter().position(|earlier| earlier == key) {
                return Err(ValidatorSetError::DuplicateKey { index, other });
            }
            let verifying =
                key.verifying_key().map_err(|source| ValidatorSetError::BadKey { index, source })?;
            verifying_keys.push(verifying);
        }
        Ok(ValidatorSet { genesis_hash, keys, verifying_keys })
    }

    /// The chain these validators sign for; part of every signature's domain.
    pub fn genesis_hash(&self) -> &Digest {
        &self.genesis_hash
    }

    pub fn n(&self) -> usize {
        self.keys.len()
    }

    /// The number of Byzantine validators tolerated.
    pub fn f(&self) -> usize {
        (self.n() - 1) / 3
    }

    /// Signatures needed for a certificate (2f + 1 when n = 3f + 1).
    pub fn quorum(&self) -> usize {
        (self.n() + self.f()) / 2 + 1
    }

    /// f + 1: enough that at least one of them is honest.
    pub fn weak_quorum(&self) -> usize {
        self.f() + 1
    }

    /// PBFT §4.1: the primary of view v is replica v mod n.
    pub fn primary(&self, view: View) -> ValidatorIndex {
        // n <= VALIDATORS_MAX, so the remainder fits in u16.
        let index = view.0 % self.n() as u64;
        ValidatorIndex(index as u16)
    }

    pub fn contains(&self, index: ValidatorIndex) -> bool {
        index.as_usize() < self.n()
    }

    pub fn key(&self, index: ValidatorIndex) -> Option<&PublicKey> {
        self.keys.get(index.as_usize())
    }

    pub fn verifying_key(&self, index: ValidatorIndex) -> Option<&VerifyingKey> {
        self.verifying_keys.get(index.as_usize())
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    pub fn index_of(&self, key: &PublicKey) -> Option<ValidatorIndex> {
        self.keys.iter().position(|candidate| candidate == key).map(|index| ValidatorIndex(index as u16))
    }

    /// The set with validator `index`'s key replaced (a key rotation taking effect).
    pub fn with_key(&self, index: ValidatorIndex, key: PublicKey) -> Result<ValidatorSet, ValidatorSetError> {
        let mut keys = self.keys.clone();
        match keys.get_mut(index.as_usize()) {
            Some(slot) => *slot = key,
            None => return Err(ValidatorSetError::TooMany { count: index.as_usize() + 1, max: self.n() }),
        }
        ValidatorSet::new(self.genesis_hash, keys)
    }
}

/// The checkpoint boundary after which a key rotation committed at `committed` takes effect:
/// the first checkpoint height after that block. The new key signs heights above it.
///
/// This is safe with pipelining only because nothing is signed or verified above a node's
/// schedule *horizon*, `activation_boundary(executed + 1)`: a replica never votes more than one
/// checkpoint interval ahead of what it executed, so no honest replica can have signed a height
/// above the boundary before it executed the rotation.
pub fn activation_boundary(committed: Height, checkpoint_interval: u64) -> Height {
    let k = checkpoint_interval.max(1);
    Height((committed.0 / k + 1).saturating_mul(k))
}

/// The validator set of every height: epochs that start at given heights.
///
/// An epoch is a validator set with its keys, starting at a height; key rotations start a new
/// epoch at the first height after an activation boundary. Epochs may differ in size (the
/// schedule is ready for additions and removals; today only rotations create epochs).
///
/// An epoch is *retired* for a replica once a later epoch starts at or below the height just
/// above the replica's stable checkpoint: every height it signs is final there, and its keys
/// may have been erased and leaked. Such a replica verifies nothing under it
/// ([`ValidatorSchedule::retired_for`]). A schedule is only known up to its *horizon*:
/// the highest height whose set no rotation committed after what its owner executed can
/// change (see [`activation_boundary`]). Nothing above the horizon may be verified or signed.
#[derive(Clone, Debug)]
pub struct ValidatorSchedule {
    /// `(first height, set)` in increasing height order; the first starts at height 0.
    epochs: Vec<(Height, Arc<ValidatorSet>)>,
    horizon: Height,
}

impl ValidatorSchedule {
    /// A schedule of one epoch, known for every height (until a horizon is set).
    pub fn new(genesis_set: ValidatorSet) -> ValidatorSchedule {
        ValidatorSchedule {
            epochs: vec![(Height::GENESIS, Arc::new(genesis_set))],
            horizon: Height(u64::MAX),
        }
    }

    /// The highest height this schedule is known to be right for.
    pub fn horizon(&self) -> Height {
        self.horizon
    }

    pub fn covers(&self, height: Height) -> bool {
        height <= self.horizon
    }

    /// Sets the horizon (it only moves up).
    pub fn set_horizon(&mut self, horizon: Height) {
        if horizon > self.horizon || self.horizon == Height(u64::MAX) {
            self.horizon = horizon;
        }
    }

    /// The first height of the epoch that signs messages about `height`.
    pub fn epoch_start(&self, height: Height) -> Height {
        let position = self.epochs.partition_point(|(first, _)| *first <= height);
        self.epochs[position.saturating_sub(1)].0
    }

    /// Whether the epoch that signs messages about `key_height` is retired for a replica whose
    /// stable checkpoint is `stable`: a later epoch already starts at or below `stable + 1`.
    pub fn retired_for(&self, key_height: Height, stable: Height) -> bool {
        self.epoch_start(key_height) < self.epoch_start(stable.next())
    }

    /// The set that signs messages about `height`.
    pub fn at(&self, height: Height) -> &Arc<ValidatorSet> {
        let position = self.epochs.partition_point(|(first, _)| *first <= height);
        // The first epoch starts at height 0, so position >= 1.
        &self.epochs[position.saturating_sub(1)].1
    }

    pub fn latest(&self) -> &Arc<ValidatorSet> {
        &self.epochs[self.epochs.len() - 1].1
    }

    /// Schedules validator `index`'s key to become `key` from height `first` on. Rotations must
    /// come in height order; rotations that start at the same height share one epoch.
    pub fn rotate(
        &mut self,
        first: Height,
        index: ValidatorIndex,
        key: PublicKey,
    ) -> Result<(), ValidatorSetError> {
        let last = self.epochs.len() - 1;
        let rotated = self.epochs[last].1.with_key(index, key)?;
        if self.epochs[last].0 == first {
            self.epochs[last].1 = Arc::new(rotated);
        } else {
            self.push(first, rotated);
        }
        Ok(())
    }

    /// Adds an epoch starting at `first`; epochs must be added in height order.
    pub fn push(&mut self, first: Height, set: ValidatorSet) {
        let last = self.epochs[self.epochs.len() - 1].0;
        assert!(first > last, "epochs out of order: {first} after {last}");
        assert_eq!(set.genesis_hash(), self.latest().genesis_hash(), "an epoch of another chain");
        self.epochs.push((first, Arc::new(set)));
    }

    pub fn epochs(&self) -> &[(Height, Arc<ValidatorSet>)] {
        &self.epochs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    fn keys(n: u8) -> Vec<PublicKey> {
        (1..=n).map(|byte| SecretKey::from_seed([byte; 32]).public_key()).collect()
    }

    #[test]
    fn quorum_sizes() {
        let genesis = Digest::ZERO;
        let cases = [(1, 0, 1), (3, 0, 2), (4, 1, 3), (5, 1, 4), (6, 1, 4), (7, 2, 5), (10, 3, 7)];
        for (n, f, quorum) in cases {
            let set = ValidatorSet::new(genesis, keys(n)).expect("valid set");
            assert_eq!((set.f(), set.quorum()), (f, quorum), "n = {n}");
            // Two quorums intersect in at least f + 1 validators.
            assert!(2 * set.quorum() > set.n() + set.f(), "n = {n}");
        }
    }

    #[test]
    fn refuses_empty_and_duplicates() {
        assert_eq!(ValidatorSet::new(Digest::ZERO, vec![]).err(), Some(ValidatorSetError::Empty));
        let mut duplicated = keys(3);
        duplicated.push(duplicated[1]);
        assert_eq!(
            ValidatorSet::new(Digest::ZERO, duplicated).err(),
            Some(ValidatorSetError::DuplicateKey { index: 3, other: 1 })
        );
    }

    #[test]
    fn schedule_picks_the_epoch_of_a_height() {
        let set = ValidatorSet::new(Digest::ZERO, keys(4)).expect("valid set");
        let rotated =
            set.with_key(ValidatorIndex(2), SecretKey::from_seed([9; 32]).public_key()).expect("rotated");
        let mut schedule = ValidatorSchedule::new(set.clone());
        schedule.push(Height(11), rotated.clone());
        assert_eq!(schedule.at(Height(0)).keys(), set.keys());
        assert_eq!(schedule.at(Height(10)).keys(), set.keys());
        assert_eq!(schedule.at(Height(11)).keys(), rotated.keys());
        assert_eq!(schedule.at(Height(500)).keys(), rotated.keys());
    }

    #[test]
    fn activation_is_the_first_checkpoint_after_the_block() {
        assert_eq!(activation_boundary(Height(10), 16), Height(16));
        // Committed exactly at a checkpoint: the boundary is the next one.
        assert_eq!(activation_boundary(Height(16), 16), Height(32));
        for committed in 0..200 {
            let boundary = activation_boundary(Height(committed), 4);
            assert!(boundary.0.is_multiple_of(4) && boundary.0 > committed && boundary.0 <= committed + 4);
            // The horizon after executing `committed - 1` never reaches past this boundary.
            let horizon = activation_boundary(Height(committed), 4);
            assert!(horizon <= boundary, "{committed}");
        }
    }
}
