//! The node's side of the light client: assembling, from the store, the proofs that
//! [`crate::light::LightClient`] checks.

//!
//! The answers' types ([`Prove`], [`Refusal`]) build without the `rocksdb` feature (the RPC
//! layer names them); assembling them from a [`crate::storage::Store`] needs it.

use tetrad_consensus::Height;
#[cfg(feature = "rocksdb")]
use tetrad_consensus::{CheckpointCertificate, Digest};

#[cfg(feature = "rocksdb")]
use crate::light::{
    AccountStateProof, EpochLink, FinalizedHeader, HeaderProof, LINKS_PER_ANSWER_MAX, TxProof,
    ValidatorsProof,
};
#[cfg(feature = "rocksdb")]
use crate::storage::{AccountAt, StorageError, Store};
#[cfg(feature = "rocksdb")]
use crate::tx::Address;

/// Why a store gives no proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such block, transaction or account (at the height a proof would be for).
    Unknown { height: Option<Height> },
    /// It exists but no stable checkpoint covers it yet: ask again shortly.
    NotFinal { height: Height, stable: Option<Height> },
    /// This store cannot build the proof (the reason says why; another node may).
    Unavailable(String),
}

/// A proof, or why there is none.
pub type Prove<T> = Result<T, Refusal>;

/// Unwraps a proof, or returns the refusal from the enclosing function.
#[cfg(feature = "rocksdb")]
macro_rules! proven {
    ($answer:expr) => {
        match $answer {
            Ok(value) => value,
            Err(refusal) => return Ok(Err(refusal)),
        }
    };
}

/// About how many bytes of registries one page of epoch links holds at most.
#[cfg(feature = "rocksdb")]
const LINK_PAGE_BYTES_MAX: usize = 4 << 20;

#[cfg(feature = "rocksdb")]
impl Store {
    fn interval(&self) -> u64 {
        self.checkpoint_interval()
    }

    /// The stable checkpoint that proves `height`: the first boundary at or above it when this
    /// store has its certificate, else the latest one if it is above.
    fn covering_checkpoint(&self, height: Height) -> Result<Prove<CheckpointCertificate>, StorageError> {
        let interval = self.interval();
        let boundary = Height(height.0.div_ceil(interval).max(1).saturating_mul(interval));
        if let Some(certificate) = self.checkpoint(boundary)? {
            return Ok(Ok(certificate));
        }
        let latest = self.latest_checkpoint()?;
        match latest {
            Some(certificate) if certificate.statement.height >= height => Ok(Ok(certificate)),
            latest => Ok(Err(Refusal::NotFinal {
                height,
                stable: latest.map(|certificate| certificate.statement.height),
            })),
        }
    }

    fn finalized(&self, certificate: CheckpointCertificate) -> Result<Prove<FinalizedHeader>, StorageError> {
        let height = certificate.statement.height;
        let Some(header) = self.header(height)? else {
            return Ok(Err(Refusal::Unavailable(format!(
                "this node has the checkpoint of {height} but not its block"
            ))));
        };
        Ok(Ok(FinalizedHeader { header, certificate }))
    }

    /// The header at `height`, proven by the checkpoint that covers it.
    pub fn header_proof(&self, height: Height) -> Result<Prove<HeaderProof>, StorageError> {
        if height > self.head().height {
            return Ok(Err(Refusal::Unknown { height: Some(height) }));
        }
        let certificate = proven!(self.covering_checkpoint(height)?);
        let checkpoint = certificate.statement.height;
        // At most one interval of headers: a node that lacks the boundary's certificate says so
        // rather than read a long chain of blocks for one request.
        if checkpoint.0 - height.0 > self.interval() {
            return Ok(Err(Refusal::Unavailable(format!(
                "this node lacks the checkpoint certificate near {height}; the nearest it has is {checkpoint}"
            ))));
        }
        let checkpoint = proven!(self.finalized(certificate)?);
        let checkpoint_height = checkpoint.header.height;
        let Some(registry) = self.registry_at(checkpoint_height)? else {
            return Ok(Err(Refusal::Unavailable(format!(
                "this node keeps no validator registry of height {checkpoint_height} (written by an older version)"
            ))));
        };
        let mut headers = Vec::with_capacity((checkpoint_height.0 - height.0) as usize);
        for at in height.0..checkpoint_height.0 {
            let Some(header) = self.header(Height(at))? else {
                return Ok(Err(Refusal::Unavailable(format!("this node lacks the block at {at}"))));
            };
            headers.push(header);
        }
        Ok(Ok(HeaderProof { height, checkpoint, registry, headers }))
    }

    /// A committed transaction and its receipt, proven against a final header.
    pub fn tx_state_proof(&self, hash: &Digest) -> Result<Prove<TxProof>, StorageError> {
        let Some(found) = self.prove_tx(hash)? else {
            return Ok(Err(Refusal::Unknown { height: None }));
        };
        Ok(self.header_proof(found.receipt.height)?.map(|block| TxProof {
            tx: found.tx,
            receipt: found.receipt,
            tx_proof: found.tx_proof,
            receipt_proof: found.receipt_proof,
            block,
        }))
    }

    /// An account at the latest stable checkpoint.
    pub fn account_state_proof(&self, address: &Address) -> Result<Prove<AccountStateProof>, StorageError> {
        let Some(certificate) = self.latest_checkpoint()? else {
            return Ok(Err(Refusal::NotFinal { height: self.head().height, stable: None }));
        };
        let height = certificate.statement.height;
        let (account, address_proof) = match self.prove_account_at(address, height)? {
            AccountAt::Found(found) => {
                let (account, address_proof, _) = *found;
                (Some(account), address_proof)
            }
            AccountAt::Absent(absent) => (None, absent.0),
            AccountAt::Unavailable => {
                return Ok(Err(Refusal::Unavailable(format!(
                    "this node holds no state of the stable checkpoint {height} (it started after it); \
                     ask again after the next checkpoint, or ask another node"
                ))));
            }
        };
        Ok(self.header_proof(height)?.map(|block| AccountStateProof {
            address: *address,
            account,
            address_proof,
            block,
        }))
    }

    /// The epoch links after `after` (exclusive; default: from genesis) up to `up_to`
    /// (default: the latest stable checkpoint), at most [`LINKS_PER_ANSWER_MAX`].
    pub fn validators_proof(
        &self,
        up_to: Option<Height>,
        after: Option<Height>,
    ) -> Result<Prove<ValidatorsProof>, StorageError> {
        let stable = self.latest_checkpoint()?.map(|certificate| certificate.statement.height);
        let limit = match (up_to, stable) {
            (Some(up_to), _) => up_to,
            (None, Some(stable)) => stable,
            (None, None) => Height::GENESIS,
        };
        let registry = self.registry();
        let mut links = Vec::new();
        let mut more = false;
        // Each link holds the whole registry, which grows with every rotation: a page stops at
        // LINK_PAGE_BYTES_MAX (and always holds at least one link).
        let registry_bytes = (registry.epochs.len() * registry.n() + registry.used.len()) * 32 + 64;
        let mut page_bytes = 0usize;
        for (first, _) in registry.epochs.iter().skip(1) {
            let boundary = Height(first.0.saturating_sub(1));
            if after.is_some_and(|after| boundary <= after) {
                continue;
            }
            if boundary > limit {
                break;
            }
            if links.len() == LINKS_PER_ANSWER_MAX || (!links.is_empty() && page_bytes > LINK_PAGE_BYTES_MAX)
            {
                more = true;
                break;
            }
            page_bytes += registry_bytes;
            let Some(certificate) = self.checkpoint(boundary)? else {
                if stable.is_none_or(|stable| stable < boundary) {
                    return Ok(Err(Refusal::NotFinal { height: boundary, stable }));
                }
                return Ok(Err(Refusal::Unavailable(format!(
                    "this node lacks the checkpoint certificate of {boundary}, where the epoch of {first} was certified"
                ))));
            };
            let checkpoint = proven!(self.finalized(certificate)?);
            let Some(registry) = self.registry_at(boundary)? else {
                return Ok(Err(Refusal::Unavailable(format!(
                    "this node keeps no validator registry of height {boundary}"
                ))));
            };
            links.push(EpochLink { checkpoint, registry });
        }
        Ok(Ok(ValidatorsProof { links, more }))
    }
}
