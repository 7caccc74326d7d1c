//! Block headers, blocks, accounts and receipts.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use tetrad_consensus::{Batch, CommitCertificate, Digest, Height, ValidatorIndex, View};

use crate::merkle;
use crate::tx::{Address, Tx, TxError, decode_payload};

/// The header of a block, derived at execution and identical on every honest replica.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Header {
    pub chain_id: String,
    pub height: Height,
    pub parent_hash: Digest,
    /// The consensus digest of the batch this block executes (what the certificate signs).
    pub batch_digest: Digest,
    /// Merkle root of the transaction hashes, in block order.
    pub tx_root: Digest,
    pub tx_count: u32,
    /// Root of the account tree after this block.
    pub state_root: Digest,
    /// Merkle root of the receipts (what execution did with each transaction), in block order.
    pub receipts_root: Digest,
    /// Root of the address tree after this block: every account's address to its slot, so
    /// that the absence of an account can be proven (`crate::address_tree`).
    pub address_root: Digest,
    /// Hash of the validator registry after this block (every epoch's keys).
    pub validators_hash: Digest,
    /// The view in which the batch was proposed, and its proposer.
    pub view: View,
    pub proposer: ValidatorIndex,
    /// Milliseconds since the Unix epoch: the proposer's clock, never earlier than the parent's.
    pub timestamp_ms: u64,
}

impl Header {
    pub fn hash(&self) -> Digest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"tetrad/header/v1");
        hasher.update(&borsh::to_vec(self).unwrap_or_default());
        Digest(*hasher.finalize().as_bytes())
    }
}

/// A committed block: its header, the batch it executed and the commit certificate over the
/// batch digest. The block's transactions are those of the batch that executed (the receipts
/// name them, in block order): one whose nonce was wrong changed nothing and is left out
/// (`crate::execute::Execution::positions`).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Block {
    pub header: Header,
    pub batch: Batch,
    pub certificate: CommitCertificate,
}

impl Block {
    /// Every transaction of the batch, in batch order, including any the block left out.
    pub fn batch_txs(&self) -> Result<Vec<Tx>, TxError> {
        decode_payload(&self.batch.payload)
    }

    /// The batch's transaction with this hash.
    pub fn tx(&self, hash: &Digest) -> Result<Option<Tx>, TxError> {
        Ok(self.batch_txs()?.into_iter().find(|tx| tx.hash() == *hash))
    }
}

/// Merkle root of transaction hashes.
pub fn tx_root(tx_hashes: &[Digest]) -> Digest {
    let leaves: Vec<Digest> = tx_hashes.iter().map(|hash| merkle::leaf_hash(hash.as_bytes())).collect();
    merkle::root(&leaves)
}

/// A proof that a transaction hash is in a block's tx root.
pub fn prove_tx(tx_hashes: &[Digest], index: u64) -> Option<merkle::MerkleProof> {
    let leaves: Vec<Digest> = tx_hashes.iter().map(|hash| merkle::leaf_hash(hash.as_bytes())).collect();
    merkle::prove(&leaves, index)
}

pub fn verify_tx_proof(tx_root: &Digest, tx_hash: &Digest, proof: &merkle::MerkleProof) -> bool {
    merkle::verify(tx_root, &merkle::leaf_hash(tx_hash.as_bytes()), proof)
}

/// The leaf of a receipt in a block's receipts root: the hash of its borsh encoding.
pub fn receipt_leaf(receipt: &Receipt) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"tetrad/receipt/v1");
    let _ = borsh::to_writer(&mut hasher, receipt);
    merkle::leaf_hash(hasher.finalize().as_bytes())
}

/// Merkle root of a block's receipts.
pub fn receipts_root(receipts: &[Receipt]) -> Digest {
    let leaves: Vec<Digest> = receipts.iter().map(receipt_leaf).collect();
    merkle::root(&leaves)
}

/// A proof that `receipts[index]` is in the block's receipts root.
pub fn prove_receipt(receipts: &[Receipt], index: u64) -> Option<merkle::MerkleProof> {
    let leaves: Vec<Digest> = receipts.iter().map(receipt_leaf).collect();
    merkle::prove(&leaves, index)
}

pub fn verify_receipt_proof(receipts_root: &Digest, receipt: &Receipt, proof: &merkle::MerkleProof) -> bool {
    merkle::verify(receipts_root, &receipt_leaf(receipt), proof)
}

/// A proof that `account` is the state of `address` under a state root.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct AccountProof {
    pub address: Address,
    pub account: Account,
    pub proof: merkle::MerkleProof,
}

/// Checks an account proof against a state root (for example a checkpoint's).
pub fn verify_account_proof(state_root: &Digest, proof: &AccountProof) -> bool {
    proof.proof.index == proof.account.slot
        && merkle::verify(state_root, &proof.account.leaf(&proof.address), &proof.proof)
}

/// An account's state.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct Account {
    pub balance: u64,
    /// The nonce the account's next transaction must carry.
    pub nonce: u64,
    /// Position of the account's leaf in the state tree, fixed when the account is created.
    pub slot: u64,
}

impl Account {
    /// The state tree leaf of this account at `address`.
    pub fn leaf(&self, address: &Address) -> Digest {
        let mut content = [0u8; 48];
        content[..32].copy_from_slice(&address.0);
        content[32..40].copy_from_slice(&self.balance.to_le_bytes());
        content[40..].copy_from_slice(&self.nonce.to_le_bytes());
        merkle::leaf_hash(&content)
    }
}

/// Why a transaction failed at execution. A wrong nonce changed nothing (the block leaves such
/// a transaction out, so no receipt of an honest block says `bad_nonce`); any other failure
/// changed nothing but its sender's nonce, which it used up.
#[derive(
    Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, thiserror::Error,
)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum ExecutionError {
    #[error("nonce {found} is not the account's next nonce {expected}")]
    BadNonce { expected: u64, found: u64 },
    #[error("balance {balance} is less than the amount {amount}")]
    InsufficientBalance { balance: u64, amount: u64 },
    #[error("recipient balance {balance} plus {amount} overflows")]
    BalanceOverflow { balance: u64, amount: u64 },
    #[error("there is no validator {validator}")]
    UnknownValidator { validator: u16 },
    #[error("the sender is not validator {validator}'s current consensus key")]
    NotCurrentKey { validator: u16 },
    #[error("validator {validator} already has a rotation that takes effect at height {activation}")]
    RotationPending { validator: u16, activation: u64 },
    #[error("key {key} was already used by a validator")]
    KeyAlreadyUsed { key: tetrad_consensus::PublicKey },
    #[error("the proof of possession is not the new key's signature over this rotation")]
    InvalidProofOfPossession,
}

/// What happened to a transaction.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failed { error: ExecutionError },
}

/// The record of one executed transaction.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Receipt {
    pub tx_hash: Digest,
    pub height: Height,
    pub index: u32,
    pub outcome: Outcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tx_of_a_block_proves_against_its_tx_root() {
        let hashes: Vec<Digest> = (0..7u8).map(|i| Digest::of(&[i])).collect();
        let root = tx_root(&hashes);
        for (index, hash) in hashes.iter().enumerate() {
            let proof = prove_tx(&hashes, index as u64).expect("in range");
            assert!(verify_tx_proof(&root, hash, &proof));
            assert!(!verify_tx_proof(&root, &Digest::of(b"not in the block"), &proof));
        }
        assert!(prove_tx(&hashes, 7).is_none());
    }
}
