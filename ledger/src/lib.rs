//! # tetrad-ledger
//!
//! Transactions, blocks and headers, the deterministic state machine that executes them, the
//! authenticated state (a Merkle tree over accounts with inclusion proofs) and RocksDB storage.
//!
//! ## Call loop
//!
//! ```text
//! let store = Store::open_or_init(path, &genesis_state)?;
//! // for each committed batch, in height order:
//! let execution = store.with_state(|head, state| execute(state, head, &batch, &txs))?;
//! store.commit(&Block { header: execution.header.clone(), batch, certificate }, &execution)?;
//! ```
//!
//! ## IO contract
//!
//! `execute` is pure: it reads accounts through [`execute::StateReader`] and returns the changes;
//! only [`storage::Store::commit`] writes, in one atomic RocksDB write batch per block.

// The workspace denies unsafe code (node/src/daemon/tcp.rs alone allows it); here it is forbidden.
#![forbid(unsafe_code)]

pub mod address_tree;
pub mod block;
pub mod dirs;
pub mod execute;
pub mod light;
pub mod merkle;
pub mod prover;
#[cfg(feature = "rocksdb")]
pub mod safety_store;
pub mod scratch;
pub mod state_tree;
pub mod storage;
pub mod testkit;
pub mod tx;
pub mod validators;

pub use block::{
    Account, AccountProof, Block, ExecutionError, Header, Outcome, Receipt, verify_account_proof,
};
pub use execute::{Execution, StateReader, execute, genesis_state};
#[cfg(feature = "rocksdb")]
pub use safety_store::SafetyStore;
#[cfg(feature = "rocksdb")]
pub use storage::Store;
pub use storage::{AccountAt, GenesisState, StorageError, TxInBlock, TxLocation};
pub use tx::{Address, Tx, TxBody, TxError, TxKind, chain_tag};
pub use validators::ValidatorRegistry;
