//! The validator registry: the consensus keys of every epoch, part of the ledger state.
//!
//! A `RotateValidatorKey` transaction committed at height h schedules the new key from the
//! height after `activation_boundary(h)`, the first checkpoint after h (see
//! `tetrad_consensus::validators`). The registry
//! keeps every epoch (so the validator set of any height stays queryable and verifiable) and
//! every key ever used (a key is never used twice). Its hash is in every block header, so
//! checkpoints certify it.

use std::collections::BTreeSet;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use tetrad_consensus::crypto::{self, Domain};
use tetrad_consensus::validators::activation_boundary;
use tetrad_consensus::{
    Digest, Height, PublicKey, Signature, ValidatorIndex, ValidatorSchedule, ValidatorSet,
};

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ValidatorRegistry {
    pub genesis_hash: Digest,
    pub checkpoint_interval: u64,
    /// `(first height, keys by validator index)`, in height order; the first starts at 0.
    pub epochs: Vec<(Height, Vec<PublicKey>)>,
    /// Every consensus key any validator has had.
    pub used: BTreeSet<PublicKey>,
}

/// The statement a new key signs to prove that its owner holds it.
#[derive(BorshSerialize)]
struct Possession<'a> {
    validator: ValidatorIndex,
    old_key: &'a PublicKey,
    new_key: &'a PublicKey,
}

/// The digest a proof of possession signs: (genesis hash, validator index, old key, new key).
pub fn possession_digest(
    genesis_hash: &Digest,
    validator: ValidatorIndex,
    old_key: &PublicKey,
    new_key: &PublicKey,
) -> [u8; 32] {
    crypto::signing_digest_of(
        Domain::ProofOfPossession,
        genesis_hash,
        &Possession { validator, old_key, new_key },
    )
}

impl ValidatorRegistry {
    pub fn new(genesis_hash: Digest, checkpoint_interval: u64, keys: Vec<PublicKey>) -> Self {
        let used = keys.iter().copied().collect();
        ValidatorRegistry { genesis_hash, checkpoint_interval, epochs: vec![(Height::GENESIS, keys)], used }
    }

    pub fn n(&self) -> usize {
        self.epochs[0].1.len()
    }

    /// The keys that sign `height`.
    pub fn keys_at(&self, height: Height) -> &[PublicKey] {
        let position = self.epochs.partition_point(|(first, _)| *first <= height);
        &self.epochs[position.saturating_sub(1)].1
    }

    /// The first height of the epoch that signs `height`.
    pub fn epoch_start(&self, height: Height) -> Height {
        let position = self.epochs.partition_point(|(first, _)| *first <= height);
        self.epochs[position.saturating_sub(1)].0
    }

    /// The first height of a rotation of `validator` that has not taken effect by `height`.
    pub fn pending(&self, validator: ValidatorIndex, height: Height) -> Option<Height> {
        let index = validator.as_usize();
        self.epochs.windows(2).find_map(|pair| {
            let ((_, before), (first, after)) = (&pair[0], &pair[1]);
            (*first > height && before.get(index) != after.get(index)).then_some(*first)
        })
    }

    /// The first height the new key of a rotation committed at `committed` signs.
    pub fn activation(&self, committed: Height) -> Height {
        activation_boundary(committed, self.checkpoint_interval).next()
    }

    /// Schedules `new_key` for `validator` from `first` on.
    pub fn rotate(&mut self, first: Height, validator: ValidatorIndex, new_key: PublicKey) {
        let index = validator.as_usize();
        let last = self.epochs.len() - 1;
        assert!(self.epochs[last].0 <= first, "rotations must come in height order");
        let mut keys = self.epochs[last].1.clone();
        keys[index] = new_key;
        if self.epochs[last].0 == first {
            self.epochs[last].1 = keys;
        } else {
            self.epochs.push((first, keys));
        }
        self.used.insert(new_key);
    }

    /// Whether the proof of possession is `new_key`'s signature over the rotation.
    pub fn check_possession(
        &self,
        validator: ValidatorIndex,
        old_key: &PublicKey,
        new_key: &PublicKey,
        proof: &Signature,
    ) -> bool {
        let digest = possession_digest(&self.genesis_hash, validator, old_key, new_key);
        new_key.verifying_key().is_ok_and(|key| crypto::verify_with(&key, &digest, proof).is_ok())
    }

    pub fn hash(&self) -> Digest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"tetrad/vreg/v1\0\0");
        let _ = borsh::to_writer(&mut hasher, self);
        Digest(*hasher.finalize().as_bytes())
    }

    /// The consensus schedule, known up to the horizon of a node that executed `executed`.
    pub fn schedule(
        &self,
        executed: Height,
    ) -> Result<ValidatorSchedule, tetrad_consensus::ValidatorSetError> {
        let mut epochs = self.epochs.iter();
        let (_, genesis_keys) = epochs.next().ok_or(tetrad_consensus::ValidatorSetError::Empty)?;
        let mut schedule =
            ValidatorSchedule::new(ValidatorSet::new(self.genesis_hash, genesis_keys.clone())?);
        for (first, keys) in epochs {
            schedule.push(*first, ValidatorSet::new(self.genesis_hash, keys.clone())?);
        }
        schedule.set_horizon(activation_boundary(executed.next(), self.checkpoint_interval));
        Ok(schedule)
    }
}
