//! Consensus messages that arrived too early to be checked.
//!
//! A message for a height above the validator schedule's horizon cannot be verified yet: this
//! node has not executed far enough to know which keys sign there (a rotation may take effect at
//! the next checkpoint). Under load, execution trails agreement by a few blocks, and the other
//! replicas' pre-prepares, prepares and commits for the next checkpoint interval arrive before
//! the horizon moves. Dropping them left heights without a quorum until a view change (seen in
//! `tetrad bench`: one to three view changes per saturated run). They wait here instead, raw and
//! unverified, and go through verification again once the horizon passes their height.
//!
//! Bounded per sender (count and bytes) so that a Byzantine peer can only fill its own share;
//! a copy of a message already waiting (a retransmission) is not stored twice.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use tetrad_consensus::{Height, ValidatorIndex};

/// Messages waiting per sender.
pub const PER_SENDER_MAX: usize = 128;
/// Bytes waiting per sender (a checkpoint interval of full pre-prepares fits).
pub const PER_SENDER_BYTES_MAX: usize = 16 << 20;

#[derive(Default)]
pub struct Deferred {
    by_height: BTreeMap<Height, Vec<(ValidatorIndex, Bytes, blake3::Hash)>>,
    waiting: HashSet<blake3::Hash>,
    per_sender: HashMap<ValidatorIndex, (usize, usize)>,
}

impl Deferred {
    /// Keeps `bytes` from `from` until the horizon reaches `height`. Refuses (with the drop
    /// reason) what does not fit in the sender's share.
    pub fn insert(&mut self, from: ValidatorIndex, height: Height, bytes: Bytes) -> Result<(), &'static str> {
        let hash = blake3::hash(&bytes);
        if self.waiting.contains(&hash) {
            return Err("duplicate_early_message");
        }
        let (count, size) = self.per_sender.entry(from).or_default();
        if *count >= PER_SENDER_MAX || *size + bytes.len() > PER_SENDER_BYTES_MAX {
            return Err("early_messages_full");
        }
        *count += 1;
        *size += bytes.len();
        self.waiting.insert(hash);
        self.by_height.entry(height).or_default().push((from, bytes, hash));
        Ok(())
    }

    /// Takes every message at or below `horizon`, in height order.
    pub fn release(&mut self, horizon: Height) -> Vec<(ValidatorIndex, Bytes)> {
        if self.by_height.first_key_value().is_none_or(|(height, _)| *height > horizon) {
            return Vec::new();
        }
        let later = self.by_height.split_off(&horizon.next());
        let ready = std::mem::replace(&mut self.by_height, later);
        let mut released = Vec::new();
        for (from, bytes, hash) in ready.into_values().flatten() {
            self.waiting.remove(&hash);
            if let Some((count, size)) = self.per_sender.get_mut(&from) {
                *count -= 1;
                *size -= bytes.len();
            }
            released.push((from, bytes));
        }
        released
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seed: u8, len: usize) -> Bytes {
        Bytes::from(vec![seed; len])
    }

    #[test]
    fn releases_in_height_order_once_the_horizon_passes() {
        let mut deferred = Deferred::default();
        deferred.insert(ValidatorIndex(1), Height(20), message(1, 10)).expect("room");
        deferred.insert(ValidatorIndex(2), Height(18), message(2, 10)).expect("room");
        deferred.insert(ValidatorIndex(1), Height(33), message(3, 10)).expect("room");
        assert!(deferred.release(Height(17)).is_empty());
        let released = deferred.release(Height(32));
        assert_eq!(released, vec![(ValidatorIndex(2), message(2, 10)), (ValidatorIndex(1), message(1, 10))]);
        assert_eq!(deferred.len(), 1);
        assert_eq!(deferred.release(Height(48)), vec![(ValidatorIndex(1), message(3, 10))]);
        assert_eq!(deferred.len(), 0);
    }

    #[test]
    fn a_retransmission_is_kept_once() {
        let mut deferred = Deferred::default();
        deferred.insert(ValidatorIndex(1), Height(20), message(1, 10)).expect("room");
        assert_eq!(
            deferred.insert(ValidatorIndex(1), Height(20), message(1, 10)),
            Err("duplicate_early_message")
        );
        assert_eq!(deferred.release(Height(20)).len(), 1);
        // Once released, the same bytes may wait again (the horizon logic decides).
        deferred.insert(ValidatorIndex(1), Height(40), message(1, 10)).expect("room again");
    }

    #[test]
    fn one_sender_cannot_take_more_than_its_share() {
        let mut deferred = Deferred::default();
        for seed in 0..PER_SENDER_MAX {
            let bytes = Bytes::from((seed as u64).to_le_bytes().to_vec());
            deferred.insert(ValidatorIndex(3), Height(100), bytes).expect("room");
        }
        let one_more = Bytes::from(u64::MAX.to_le_bytes().to_vec());
        assert_eq!(
            deferred.insert(ValidatorIndex(3), Height(100), one_more.clone()),
            Err("early_messages_full")
        );
        // Another sender still has room; bytes are bounded too.
        deferred.insert(ValidatorIndex(0), Height(100), one_more).expect("other sender");
        let big = message(9, PER_SENDER_BYTES_MAX);
        deferred.insert(ValidatorIndex(2), Height(100), big).expect("exactly the limit");
        assert_eq!(
            deferred.insert(ValidatorIndex(2), Height(100), message(8, 1)),
            Err("early_messages_full")
        );
        // Releasing gives the share back.
        assert_eq!(deferred.release(Height(100)).len(), PER_SENDER_MAX + 2);
        deferred.insert(ValidatorIndex(2), Height(101), message(8, 1)).expect("room after release");
    }
}
