//! The statements replicas sign, and the batches they order.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::certificate::Statement;
use crate::crypto::Domain;
use crate::types::{Digest, Height, ValidatorIndex, View};

/// What the primary proposes: opaque transaction bytes plus the metadata every honest replica
/// copies into the block header (view and proposer of the proposal, the proposer's clock).
///
/// The consensus crate never looks inside `payload`; the layer above decides whether a payload
/// is acceptable before a pre-prepare for it is handed in.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Batch {
    /// The view in which this batch was first proposed (kept when a new view re-proposes it).
    pub view: View,
    pub proposer: ValidatorIndex,
    /// Milliseconds since the Unix epoch on the proposer's clock; 0 in empty batches that a new
    /// view prescribes, which inherit their parent's time.
    pub timestamp_ms: u64,
    pub payload: Vec<u8>,
}

impl Batch {
    /// The batch a new primary proposes for a height that no view-change reported prepared
    /// (PBFT §4.4's null request). Every replica computes the same one for a view.
    pub fn empty(view: View, proposer: ValidatorIndex) -> Batch {
        Batch { view, proposer, timestamp_ms: 0, payload: Vec::new() }
    }

    /// blake3 over a domain tag and the borsh encoding, streamed (no copy of the payload).
    pub fn digest(&self) -> Digest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"tetrad/batch/v1\0");
        hasher.update(&self.view.0.to_le_bytes());
        hasher.update(&self.proposer.0.to_le_bytes());
        hasher.update(&self.timestamp_ms.to_le_bytes());
        // borsh encodes a Vec<u8> as a u32 length and the bytes.
        hasher.update(&(self.payload.len() as u32).to_le_bytes());
        hasher.update(&self.payload);
        Digest(*hasher.finalize().as_bytes())
    }

    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }
}

/// PBFT §4.2: the primary of `view` assigns `digest` to `height`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct PrePrepare {
    pub view: View,
    pub height: Height,
    pub digest: Digest,
}

/// PBFT §4.2: a backup accepts the primary's assignment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Prepare {
    pub view: View,
    pub height: Height,
    pub digest: Digest,
}

/// PBFT §4.2: a replica has prepared the assignment. 2f+1 of these are a commit certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Commit {
    pub view: View,
    pub height: Height,
    pub digest: Digest,
}

/// PBFT §4.3: the state after executing `height`. Here the state is named by the block header
/// hash and the ledger's state root, so a stable checkpoint is a finalized header.
#[derive(Clone, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Checkpoint {
    pub height: Height,
    pub header_hash: Digest,
    pub state_root: Digest,
}

impl Statement for PrePrepare {
    const DOMAIN: Domain = Domain::PrePrepare;
    fn key_height(&self) -> Height {
        self.height
    }
}

impl Statement for Prepare {
    const DOMAIN: Domain = Domain::Prepare;
    fn key_height(&self) -> Height {
        self.height
    }
}

impl Statement for Commit {
    const DOMAIN: Domain = Domain::Commit;
    fn key_height(&self) -> Height {
        self.height
    }
}

impl Statement for Checkpoint {
    const DOMAIN: Domain = Domain::Checkpoint;
    fn key_height(&self) -> Height {
        self.height
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_digest_matches_borsh_encoding() {
        let batch =
            Batch { view: View(2), proposer: ValidatorIndex(1), timestamp_ms: 99, payload: vec![1, 2, 3] };
        let mut bytes = b"tetrad/batch/v1\0".to_vec();
        bytes.extend(borsh::to_vec(&batch).expect("encode"));
        assert_eq!(batch.digest(), Digest::of(&bytes));
        assert_ne!(
            Batch::empty(View(1), ValidatorIndex(1)).digest(),
            Batch::empty(View(2), ValidatorIndex(2)).digest()
        );
    }
}
