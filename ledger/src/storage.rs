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

use crate::address_tree::AddressProof;
use crate::block::{Account, Header, Receipt};
use crate::merkle::MerkleProof;
use crate::tx::{Address, Tx};
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
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
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

pub use crate::block::{AccountProof, verify_account_proof};

/// What a store can say of an account at a height.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountAt {
    /// The account, with proofs against the state root and the address root of `header`.
    Found(Box<(AccountProof, AddressProof, Header)>),
    /// No account with that address at that height, with the proof against the address root.
    Absent(Box<(AddressProof, Header)>),
    /// This store does not hold the state of that height (not the head, nor a recent
    /// checkpoint boundary it executed since it started).
    Unavailable,
}

/// Everything a light client needs to prove a committed transaction and its outcome against
/// its block's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxInBlock {
    pub tx: Tx,
    pub receipt: Receipt,
    pub header: Header,
    pub tx_proof: MerkleProof,
    pub receipt_proof: MerkleProof,
}

/// What genesis puts in an empty store.
pub struct GenesisState {
    pub genesis_hash: Digest,
    pub header: Header,
    pub accounts: BTreeMap<Address, Account>,
    pub registry: ValidatorRegistry,
}
