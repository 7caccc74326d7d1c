//! # tetrad-consensus
//!
//! The PBFT replica of Tetrad (Castro & Liskov, OSDI 1999 / TOCS 2002) and the types it is made
//! of: views, heights, validator indices and digests; validator sets and their quorums; signed
//! statements with domain separation; commit and checkpoint certificates.
//!
//! ## IO contract
//!
//! This crate does no IO: no sockets, no disk, no clock, no threads. It depends only on crypto
//! and encoding crates (`cargo tree -p tetrad-consensus` shows no tokio, libp2p, rocksdb or
//! axum), so the same code runs in the node and in the deterministic simulator.
//!
//! ## Signatures
//!
//! Every signature is ed25519 over `blake3(tag || genesis_hash || borsh(body))`, with one tag
//! per kind of statement ([`crypto::Domain`]), verified with `verify_strict`.

// The workspace denies unsafe code (node/src/daemon/tcp.rs alone allows it); here it is forbidden.
#![forbid(unsafe_code)]

pub mod certificate;
pub mod crypto;
pub mod messages;
pub mod types;
pub mod validators;

pub use certificate::{
    Certificate, CheckpointCertificate, CommitCertificate, SignatureError, Signed, Statement,
};
pub use crypto::{CryptoError, Domain, PublicKey, SecretKey, Signature};
pub use messages::{Batch, Checkpoint, Commit, PrePrepare, Prepare};
pub use types::{Digest, Height, HexError, ValidatorIndex, View};
pub use validators::{ValidatorSchedule, ValidatorSet, ValidatorSetError};
pub mod replica;
pub mod safety;
pub mod view_messages;
pub mod wire;

pub use replica::{
    Actions, BlockSource, Committed, Counters, Divergence, DropReason, FETCH_HEIGHTS_MAX, FetchBlocks, Input,
    Outgoing, Recipient, Replica, ReplicaConfig, Timer, TimerAction, Unexecuted,
};
pub use wire::{Message, VerifiedBlock, VerifiedMessage, VerifyError};
