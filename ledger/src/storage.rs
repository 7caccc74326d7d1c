//! RocksDB storage: one database per node, one column family per kind of record.
//!
//! Committing a block writes the block, its certificate, the tx index, the receipts, the changed
//! accounts, the new head and the new state-tree size in **one** `WriteBatch` with a synced WAL:
//! after a crash either all of a block is on disk or none of it is. Opening the store restores
//! exactly the last committed block and rebuilds the in-memory state tree from the accounts,
//! checking it against the head's state root.
//!
//! Reads take `&self` and may run on any thread; only the node's driver commits.
//!
//! The database (`Store`, in `storage/rocks.rs`) needs the `rocksdb` feature, on by default; the
//! records and proofs here do not.

use std::collections::BTreeMap;
use std::path::PathBuf;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use tetrad_consensus::{Digest, Height};

use crate::block::{Account, Header};
use crate::merkle::{self, MerkleProof};
use crate::tx::Address;
use crate::validators::ValidatorRegistry;

// The database itself: only with the `rocksdb` feature (the default). Without it the crate
// still has every type, the execution and the proofs (fuzzing, a light client).
#[cfg(feature = "rocksdb")]
mod rocks;
#[cfg(feature = "rocksdb")]
pub use rocks::{
    CF_ACCOUNTS, CF_BLOCK_HASHES, CF_BLOCKS, CF_CERTIFICATES, CF_CHECKPOINTS, CF_META, CF_RECEIPTS,
    CF_TX_INDEX, CF_VALIDATOR_SETS, Store, StoreState,
};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[cfg(feature = "rocksdb")]
    #[error("rocksdb at {path}: {source}")]
    Rocks { path: PathBuf, source: rocksdb::Error },
    #[error("{path} holds no chain: run `tetrad init` first")]
    NotInitialized { path: PathBuf },
    #[error("{path} already holds the chain with genesis hash {found}, not {expected}")]
    WrongChain { path: PathBuf, expected: Digest, found: Digest },
    #[error("corrupt record in column family {cf}: {detail}")]
    Corrupt { cf: &'static str, detail: String },
    #[error("block {found} does not follow the head {head}: {detail}")]
    NotNext { head: Height, found: Height, detail: String },
}

/// The location of a committed transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct TxLocation {
    pub height: Height,
    pub index: u32,
}

/// A proof that `account` is the state of `address` under a state root.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct AccountProof {
    pub address: Address,
    pub account: Account,
    pub proof: MerkleProof,
}

/// Checks an account proof against a state root (for example a checkpoint's).
pub fn verify_account_proof(state_root: &Digest, proof: &AccountProof) -> bool {
    proof.proof.index == proof.account.slot
        && merkle::verify(state_root, &proof.account.leaf(&proof.address), &proof.proof)
}

/// What genesis puts in an empty store.
pub struct GenesisState {
    pub genesis_hash: Digest,
    pub header: Header,
    pub accounts: BTreeMap<Address, Account>,
    pub registry: ValidatorRegistry,
}
