//! The light client: what a client that trusts nothing but the genesis file (or one header it
//! learned out of band) can prove from the answers of a single untrusted node.
//!
//! Pure: no RocksDB, tokio or libp2p — a wallet embeds this module and fetches the proofs
//! however it likes (`tetrad verify` fetches them over HTTP from the node's `/proofs/…` URLs).
//!
//! ## What is proven, and how
//!
//! - A **finalized header**: a checkpoint certificate (2f+1 signatures over the header hash
//!   and state root) by the keys that sign that height, and the validator registry that the
//!   header's `validators_hash` commits to, which must agree with every epoch the client knows
//!   up to that height (a node that withholds a key rotation is caught here).
//! - The **validator set** of any height, followed from genesis: an epoch that starts at
//!   height F was scheduled by a rotation committed before the checkpoint boundary F − 1; that
//!   boundary's checkpoint is signed by the previous epoch and its header commits to the
//!   registry that lists the new keys. Each [`EpochLink`] is one such step.
//! - A **block header** below a checkpoint: the chain of parent hashes down from the
//!   finalized header.
//! - A **transaction** and its outcome: Merkle proofs against the header's `tx_root` and
//!   `receipts_root` (O(log n) hashes; the block itself is never downloaded).
//! - An **account** (balance, nonce): its slot in the address tree (a sparse Merkle tree of
//!   every address, [`crate::address_tree`]) and a Merkle proof of the account at that slot
//!   against the state root, both roots in a finalized header. The **absence** of an account:
//!   the address tree's path of the address ends in an empty subtree or at another key.
//!
//! ## What it cannot be sure of
//!
//! A quorum of *retired* keys (keys rotated away and later leaked) can sign a whole false
//! history from the height where they were current. A client that starts from the genesis file
//! alone cannot tell that history from the real one; [`LightClient::trust`] starts from a
//! recent header learned out of band instead, and refuses anything below it.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use tetrad_consensus::{CheckpointCertificate, Digest, Height, PublicKey, ValidatorSet};

use crate::address_tree::{self, AddressProof, Membership};
use crate::block::Account;
use crate::block::{
    AccountProof, Header, Receipt, verify_account_proof, verify_receipt_proof, verify_tx_proof,
};
use crate::merkle::MerkleProof;
use crate::tx::{Address, Tx};
use crate::validators::ValidatorRegistry;

/// A header with the checkpoint certificate over it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct FinalizedHeader {
    pub header: Header,
    pub certificate: CheckpointCertificate,
}

/// One step of the validator chain: the checkpoint at the boundary before an epoch starts, and
/// the registry (every epoch's keys) its header commits to.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct EpochLink {
    pub checkpoint: FinalizedHeader,
    pub registry: ValidatorRegistry,
}

/// The steps from genesis to the validator set of a height (`/proofs/validators`), at most
/// [`LINKS_PER_ANSWER_MAX`] at a time: `more` says that later links follow (ask again with
/// `after` = the last link's height).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorsProof {
    pub links: Vec<EpochLink>,
    #[serde(default)]
    pub more: bool,
}

/// Most epoch links in one answer (each holds the whole registry, which grows with every
/// rotation: an answer must stay small whatever the chain's age).
pub const LINKS_PER_ANSWER_MAX: usize = 16;

/// A header at `height`, proven by a checkpoint at or above it (`/proofs/blocks/{height}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderProof {
    pub height: Height,
    pub checkpoint: FinalizedHeader,
    /// The registry the checkpoint's header commits to.
    pub registry: ValidatorRegistry,
    /// The headers from `height` up to the one below the checkpoint, in height order (empty
    /// when `height` is the checkpoint's).
    pub headers: Vec<Header>,
}

/// A committed transaction and its receipt (`/proofs/txs/{hash}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxProof {
    pub tx: Tx,
    pub receipt: Receipt,
    pub tx_proof: MerkleProof,
    pub receipt_proof: MerkleProof,
    pub block: HeaderProof,
}

/// An account at a finalized height, or its absence (`/proofs/accounts/{address}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStateProof {
    pub address: Address,
    /// The account and its proof against the state root; `None` for an absent address.
    pub account: Option<AccountProof>,
    /// The address's path in the address tree: to its slot, or to where it would be.
    pub address_proof: AddressProof,
    pub block: HeaderProof,
}

/// Why a proof was refused. Each names what did not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the checkpoint certificate is for height {found}, the header is height {expected}")]
    CheckpointHeight { expected: Height, found: Height },
    #[error("the checkpoint certificate of height {height} is over another header or state root")]
    CheckpointStatement { height: Height },
    #[error("the checkpoint of height {height} does not verify against the keys of epoch {epoch}: {detail}")]
    CheckpointSignatures { height: Height, epoch: Height, detail: String },
    #[error("the validator registry given for height {height} does not match its header's validators hash")]
    RegistryHash { height: Height },
    #[error("the validator registry given for height {height} is for another chain")]
    RegistryChain { height: Height },
    #[error(
        "the registry certified at height {height} disagrees with the validator history this client \
         followed (epoch starting at {epoch}); the node withheld or altered a key rotation"
    )]
    RegistryHistory { height: Height, epoch: Height },
    #[error("epoch link at height {height} is not a checkpoint boundary (interval {interval})")]
    NotABoundary { height: Height, interval: u64 },
    #[error("epoch links must come in increasing height order ({height} after {previous})")]
    LinkOrder { height: Height, previous: Height },
    #[error("height {height} is below the trusted header {trusted}; this client checks nothing below it")]
    BelowTrust { height: Height, trusted: Height },
    #[error("the trusted header does not match: {0}")]
    Trust(String),
    #[error("height {height} is above the checkpoint {checkpoint} that should prove it")]
    AboveCheckpoint { height: Height, checkpoint: Height },
    #[error("the header chain from checkpoint {checkpoint} breaks at height {height}")]
    BrokenChain { checkpoint: Height, height: Height },
    #[error("the header chain from checkpoint {checkpoint} ends at {found}, not at {expected}")]
    ChainEnd { checkpoint: Height, expected: Height, found: Height },
    #[error("the proof is for transaction {found}, not {expected}")]
    WrongTx { expected: Digest, found: Digest },
    #[error("transaction {tx} is not in block {height}: {detail}")]
    TxNotInBlock { tx: Digest, height: Height, detail: &'static str },
    #[error("the receipt of {tx} is not the one block {height} commits to")]
    ReceiptNotInBlock { tx: Digest, height: Height },
    #[error("the proof is for account {found}, not {expected}")]
    WrongAccount { expected: Address, found: Address },
    #[error("account {address} does not prove against the state root of block {height}")]
    AccountNotInState { address: Address, height: Height },
    #[error("the address tree proof of {address} does not prove against the address root of block {height}")]
    AddressNotInTree { address: Address, height: Height },
    #[error("the address tree says {address} {said} at block {height}, the proof says otherwise")]
    AccountPresence { address: Address, height: Height, said: &'static str },
}

/// A header this client proved final.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proven {
    pub header: Header,
    /// The checkpoint that proved it: its height, its number of signers, the validator count
    /// and the first height of the epoch whose keys signed it.
    pub checkpoint: Height,
    pub signers: usize,
    pub n: usize,
    pub epoch: Height,
}

/// A transaction proven in a final block, with its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvenTx {
    pub receipt: Receipt,
    pub block: Proven,
}

/// The client's verified knowledge: the chain's genesis hash and the validator registry it has
/// followed so far (from the genesis file, or from a trusted header).
#[derive(Clone, Debug)]
pub struct LightClient {
    registry: ValidatorRegistry,
    /// Nothing below this height is accepted (0 from genesis; the trusted header's height).
    trusted: Height,
    /// The newest epoch link followed (its boundary height).
    followed: Height,
}

impl LightClient {
    /// A client that trusts the genesis validators (from the genesis file).
    pub fn from_genesis(registry: ValidatorRegistry) -> LightClient {
        LightClient { registry, trusted: Height::GENESIS, followed: Height::GENESIS }
    }

    /// A client that trusts `header` (whose hash the caller learned out of band, e.g. from an
    /// operator it trusts) and the registry its `validators_hash` commits to.
    pub fn trust(
        genesis_hash: &Digest,
        expected_hash: &Digest,
        header: &Header,
        registry: ValidatorRegistry,
    ) -> Result<LightClient, ProofError> {
        if header.hash() != *expected_hash {
            return Err(ProofError::Trust(format!(
                "the node's header {} hashes to {}, the trusted hash is {expected_hash}",
                header.height,
                header.hash()
            )));
        }
        if registry.hash() != header.validators_hash {
            return Err(ProofError::RegistryHash { height: header.height });
        }
        if registry.genesis_hash != *genesis_hash {
            return Err(ProofError::RegistryChain { height: header.height });
        }
        Ok(LightClient { registry, trusted: header.height, followed: header.height })
    }

    /// The newest height whose registry this client follows (a link's, or the trusted one).
    pub fn followed(&self) -> Height {
        self.followed
    }

    /// Checks a finalized header and, if it is above what was followed, follows its registry
    /// too (its scheduled epochs are certified by the same quorum): how a client learns the
    /// validator set of the heights just above the latest checkpoint.
    pub fn learn(
        &mut self,
        finalized: &FinalizedHeader,
        registry: &ValidatorRegistry,
    ) -> Result<Proven, ProofError> {
        let proven = self.finalized(finalized, registry)?;
        if proven.checkpoint > self.followed {
            self.registry = registry.clone();
            self.followed = proven.checkpoint;
        }
        Ok(proven)
    }

    /// The registry followed so far.
    pub fn registry(&self) -> &ValidatorRegistry {
        &self.registry
    }

    pub fn trusted(&self) -> Height {
        self.trusted
    }

    /// The validator set that signs `height`, as far as the links followed so far tell.
    pub fn validator_set(&self, height: Height) -> Result<ValidatorSet, ProofError> {
        ValidatorSet::new(self.registry.genesis_hash, self.registry.keys_at(height).to_vec()).map_err(
            |error| ProofError::CheckpointSignatures {
                height,
                epoch: self.registry.epoch_start(height),
                detail: error.to_string(),
            },
        )
    }

    /// Follows epoch links in height order, each signed by the epoch before it. Returns the
    /// first heights of the epochs learned.
    pub fn follow(&mut self, links: &[EpochLink]) -> Result<Vec<Height>, ProofError> {
        let mut learned = Vec::new();
        for link in links {
            let height = link.checkpoint.header.height;
            if height <= self.trusted && self.trusted > Height::GENESIS {
                // At or below the trusted header: its registry already holds what the link says.
                continue;
            }
            if height <= self.followed {
                return Err(ProofError::LinkOrder { height, previous: self.followed });
            }
            let interval = self.registry.checkpoint_interval.max(1);
            if !height.0.is_multiple_of(interval) {
                return Err(ProofError::NotABoundary { height, interval });
            }
            self.finalized(&link.checkpoint, &link.registry)?;
            // A link may teach nothing new (a rotation committed at a boundary is already in that
            // boundary's registry); it is verified all the same. `finalized` checked that it
            // agrees with every epoch followed so far that starts at or below it (the only ones
            // that can no longer change: a later epoch may still take more rotations).
            let known: Vec<Height> = self.registry.epochs.iter().map(|(first, _)| *first).collect();
            learned.extend(
                link.registry.epochs.iter().map(|(first, _)| *first).filter(|first| !known.contains(first)),
            );
            self.registry = link.registry.clone();
            self.followed = height;
        }
        Ok(learned)
    }

    /// Checks a finalized header and the registry its header commits to.
    pub fn finalized(
        &self,
        finalized: &FinalizedHeader,
        registry: &ValidatorRegistry,
    ) -> Result<Proven, ProofError> {
        let header = &finalized.header;
        let height = header.height;
        if height < self.trusted {
            return Err(ProofError::BelowTrust { height, trusted: self.trusted });
        }
        let statement = &finalized.certificate.statement;
        if statement.height != height {
            return Err(ProofError::CheckpointHeight { expected: height, found: statement.height });
        }
        if statement.header_hash != header.hash() || statement.state_root != header.state_root {
            return Err(ProofError::CheckpointStatement { height });
        }
        if registry.hash() != header.validators_hash {
            return Err(ProofError::RegistryHash { height });
        }
        if registry.genesis_hash != self.registry.genesis_hash
            || registry.checkpoint_interval != self.registry.checkpoint_interval
        {
            return Err(ProofError::RegistryChain { height });
        }
        self.agrees(registry, height)?;
        let set = self.validator_set(height)?;
        let epoch = self.registry.epoch_start(height);
        finalized.certificate.verify(&set).map_err(|error| ProofError::CheckpointSignatures {
            height,
            epoch,
            detail: error.to_string(),
        })?;
        Ok(Proven {
            header: header.clone(),
            checkpoint: height,
            signers: finalized.certificate.signatures.len(),
            n: set.n(),
            epoch,
        })
    }

    /// Every epoch that starts at or below `height` must be the same in `registry` (certified
    /// at `height`) as in the history followed.
    fn agrees(&self, registry: &ValidatorRegistry, height: Height) -> Result<(), ProofError> {
        let known: Vec<&(Height, Vec<PublicKey>)> =
            self.registry.epochs.iter().filter(|(first, _)| *first <= height).collect();
        let certified: Vec<&(Height, Vec<PublicKey>)> =
            registry.epochs.iter().filter(|(first, _)| *first <= height).collect();
        for index in 0..known.len().max(certified.len()) {
            if known.get(index) != certified.get(index) {
                let epoch = known.get(index).or(certified.get(index)).map_or(height, |(first, _)| *first);
                return Err(ProofError::RegistryHistory { height, epoch });
            }
        }
        Ok(())
    }

    /// Proves the header at `proof.height`: the checkpoint, then parent hashes down to it.
    pub fn header(&self, proof: &HeaderProof) -> Result<Proven, ProofError> {
        let finalized = self.finalized(&proof.checkpoint, &proof.registry)?;
        let checkpoint = finalized.checkpoint;
        if proof.height > checkpoint {
            return Err(ProofError::AboveCheckpoint { height: proof.height, checkpoint });
        }
        if proof.height < self.trusted {
            return Err(ProofError::BelowTrust { height: proof.height, trusted: self.trusted });
        }
        let mut child = &proof.checkpoint.header;
        for header in proof.headers.iter().rev() {
            if header.height.next() != child.height || header.hash() != child.parent_hash {
                return Err(ProofError::BrokenChain { checkpoint, height: child.height });
            }
            child = header;
        }
        if child.height != proof.height {
            return Err(ProofError::ChainEnd { checkpoint, expected: proof.height, found: child.height });
        }
        Ok(Proven { header: child.clone(), ..finalized })
    }

    /// Proves that transaction `hash` is in a final block, and what execution did with it.
    pub fn tx(&self, hash: &Digest, proof: &TxProof) -> Result<ProvenTx, ProofError> {
        let found = proof.tx.hash();
        if found != *hash {
            return Err(ProofError::WrongTx { expected: *hash, found });
        }
        if proof.receipt.tx_hash != *hash {
            return Err(ProofError::WrongTx { expected: *hash, found: proof.receipt.tx_hash });
        }
        let block = self.header(&proof.block)?;
        let header = &block.header;
        let height = header.height;
        if proof.receipt.height != height {
            return Err(ProofError::TxNotInBlock {
                tx: *hash,
                height,
                detail: "the receipt names another height",
            });
        }
        let index = u64::from(proof.receipt.index);
        let count = u64::from(header.tx_count);
        if proof.tx_proof.index != index || proof.tx_proof.count != count {
            return Err(ProofError::TxNotInBlock {
                tx: *hash,
                height,
                detail: "the proof is for another position",
            });
        }
        if !verify_tx_proof(&header.tx_root, hash, &proof.tx_proof) {
            return Err(ProofError::TxNotInBlock {
                tx: *hash,
                height,
                detail: "the proof does not reach the tx root",
            });
        }
        if proof.receipt_proof.index != index
            || proof.receipt_proof.count != count
            || !verify_receipt_proof(&header.receipts_root, &proof.receipt, &proof.receipt_proof)
        {
            return Err(ProofError::ReceiptNotInBlock { tx: *hash, height });
        }
        Ok(ProvenTx { receipt: proof.receipt.clone(), block })
    }

    /// Proves an account's balance and nonce at a final height, or that it has no account
    /// there (`None`).
    pub fn account(
        &self,
        address: &Address,
        proof: &AccountStateProof,
    ) -> Result<(Option<Account>, Proven), ProofError> {
        if proof.address != *address {
            return Err(ProofError::WrongAccount { expected: *address, found: proof.address });
        }
        let block = self.header(&proof.block)?;
        let height = block.header.height;
        let membership = address_tree::verify(&block.header.address_root, address, &proof.address_proof)
            .ok_or(ProofError::AddressNotInTree { address: *address, height })?;
        match (membership, &proof.account) {
            (Membership::Absent, None) => Ok((None, block)),
            (Membership::Absent, Some(_)) => {
                Err(ProofError::AccountPresence { address: *address, height, said: "has no account" })
            }
            (Membership::Slot(_), None) => {
                Err(ProofError::AccountPresence { address: *address, height, said: "has an account" })
            }
            (Membership::Slot(slot), Some(account)) => {
                if account.address != *address {
                    return Err(ProofError::WrongAccount { expected: *address, found: account.address });
                }
                if account.account.slot != slot || !verify_account_proof(&block.header.state_root, account) {
                    return Err(ProofError::AccountNotInState { address: *address, height });
                }
                Ok((Some(account.account), block))
            }
        }
    }
}
