//! What the RPC server needs from the node: the [`NodeApi`] trait, and the JSON views it
//! returns. The node implements the trait; the server knows nothing else about the node.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tetrad_consensus::{
    CheckpointCertificate, CommitCertificate, Digest, Height, PublicKey, ValidatorIndex, View,
};
use tetrad_ledger::light::{AccountStateProof, HeaderProof, TxProof, ValidatorsProof};
use tetrad_ledger::prover::Prove;
use tetrad_ledger::{AccountProof, Address, Header, Receipt, Tx};

/// Which block a query means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockRef {
    Latest,
    Height(Height),
    Hash(Digest),
}

/// `/status` and `get_status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub chain_id: String,
    pub genesis_hash: Digest,
    pub node: String,
    /// The validator index of this node, if it validates.
    pub validator: Option<ValidatorIndex>,
    pub validating: bool,
    pub height: Height,
    pub latest_block_hash: Digest,
    pub latest_block_time_ms: u64,
    pub view: View,
    pub view_active: bool,
    pub primary: ValidatorIndex,
    /// Height of the last stable checkpoint (0 before the first).
    pub stable_checkpoint: Height,
    pub peers: usize,
    pub mempool_txs: usize,
    pub mempool_bytes: usize,
    /// True while the node is fetching blocks it is missing.
    pub syncing: bool,
}

/// What `GET /health` says of consensus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Work is waiting and heights are being committed (executed, for a full node).
    Progressing,
    /// Nothing to do: no transaction waits and nothing is in flight.
    Idle,
    /// Behind the others and fetching the blocks it misses, making progress.
    Syncing,
    /// Work is waiting but nothing was committed for longer than the stall limit (no quorum,
    /// view changes that do not complete, no peer to sync from).
    Stalled,
    /// The consensus loop has not run for longer than the stall limit.
    Stopped,
}

impl Health {
    /// Answered 200 (`progressing`, `idle`, `syncing`) rather than 503.
    pub fn is_healthy(self) -> bool {
        matches!(self, Health::Progressing | Health::Idle | Health::Syncing)
    }
}

/// `GET /health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    pub status: Health,
    /// Why, in words.
    pub reason: String,
    /// The last executed height.
    pub height: Height,
    /// Milliseconds since the last height was committed (executed, for a full node) or, before
    /// the first, since the node started.
    pub last_progress_ms: u64,
    /// Whether work waits: transactions ready to propose, heights in flight, a view change.
    pub pending_work: bool,
    /// A node with pending work and no progress for this long is `stalled`.
    pub stall_after_ms: u64,
}

/// A committed block: header, its hash, the transaction hashes and the commit certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockView {
    pub hash: Digest,
    pub header: Header,
    pub txs: Vec<Digest>,
    /// Absent only for the genesis header (height 0).
    pub certificate: Option<CommitCertificate>,
    /// The time the proposer put on the batch that the certificate signs (absent for the
    /// genesis header). The header's time is the batch's but never below its parent's, so a
    /// batch proposed before its parent's batch (a new view re-proposing an older view's
    /// batch above one of a newer view) has a header time that is not its own; with this a
    /// client rebuilds the batch digest from the listed transactions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_timestamp_ms: Option<u64>,
    /// The hashes of the batch's transactions in batch order, only when the block lists fewer
    /// (`txs`): a transaction whose nonce was wrong never executed and is not in the block (a
    /// copy of one that executed earlier, which PBFT may order twice when a view change brings
    /// an older view's batch back). With them a client rebuilds the batch digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_txs: Option<Vec<Digest>>,
}

/// The status of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxStatus {
    /// In this node's mempool, not yet in a block.
    Pending,
    /// In a block and executed successfully.
    Committed,
    /// In a block, but execution refused it (the receipt says why); it changed nothing but
    /// its sender's nonce, which it used up. (A transaction whose nonce was wrong never
    /// executes and is in no block.)
    Failed,
}

/// `/txs/{hash}` and `get_transaction`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxView {
    pub hash: Digest,
    pub status: TxStatus,
    pub tx: Tx,
    /// Present once committed.
    pub height: Option<Height>,
    pub index: Option<u32>,
    pub receipt: Option<Receipt>,
}

/// `/accounts/{address}` and `get_account`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub address: Address,
    pub balance: u64,
    /// The nonce the account's next transaction must carry.
    pub nonce: u64,
    /// The height whose state this is, and a proof against that header's state root.
    pub height: Height,
    pub state_root: Digest,
    pub proof: AccountProof,
}

/// `/checkpoints/…` and `get_checkpoint`: a finalized header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointView {
    pub height: Height,
    pub header_hash: Digest,
    pub state_root: Digest,
    pub certificate: CheckpointCertificate,
}

/// One validator as `/validators` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorView {
    pub index: ValidatorIndex,
    pub name: String,
    pub consensus_key: PublicKey,
    pub peer_id: String,
    pub p2p_address: String,
}

/// `/validators` and `get_validators`: the validator set that signs `height`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorsView {
    pub height: Height,
    pub n: usize,
    pub f: usize,
    pub quorum: usize,
    pub validators: Vec<ValidatorView>,
}

/// Why a submitted transaction was refused. Each maps to a documented JSON-RPC error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("transaction is malformed: {0}")]
    Malformed(String),
    #[error("transaction is {size} bytes, the limit is {max}")]
    TooLarge { size: usize, max: usize },
    #[error("amount must be greater than zero")]
    ZeroAmount,
    #[error("transaction is for chain {found:08x}, this chain is {expected:08x}")]
    WrongChain { expected: u32, found: u32 },
    #[error("signature does not verify for sender {from}")]
    BadSignature { from: Address },
    #[error("nonce {found} was already used; the account's next nonce is {expected}")]
    StaleNonce { expected: u64, found: u64 },
    #[error("nonce {found} is more than {max_ahead} ahead of the account's next nonce {expected}")]
    NonceTooFarAhead { expected: u64, found: u64, max_ahead: u64 },
    #[error("balance {balance} (after pending transfers) is less than the amount {amount}")]
    InsufficientBalance { balance: u64, amount: u64 },
    #[error("sender {from} has no account; a transfer must come from an account that exists")]
    NoAccount { from: Address },
    #[error("a rotation of validator {validator} must be signed by its current consensus key; {from} is not")]
    NotValidator { from: Address, validator: u16 },
    #[error(
        "sender {from} already has {pending} transactions waiting, the limit is {max}; wait for some to commit"
    )]
    SenderQueueFull { from: Address, pending: usize, max: usize },
    #[error("the same transaction is already pending")]
    Duplicate,
    #[error("mempool is full ({txs} transactions, {bytes} bytes); try again later")]
    MempoolFull { txs: usize, bytes: usize },
    #[error("node is shutting down")]
    Unavailable,
    #[error(
        "busy: {waiting} transactions wait at this node, more than it commits in half a view-change timeout ({max}); retry in a moment"
    )]
    Busy { waiting: usize, max: usize },
}

/// Errors of queries that are not the caller's fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InternalError(pub String);

/// A new block, as the event stream reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockEvent {
    pub height: Height,
    pub hash: Digest,
    pub tx_count: u32,
    pub timestamp_ms: u64,
    pub view: View,
    pub proposer: ValidatorIndex,
}

/// When each phase of a block happened at the node that answers, in microseconds since the Unix
/// epoch on that node's wall clock (`GET /timing/blocks/{height}`). These are the node's own
/// observations, not part of the chain, and kept for recent blocks only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockTiming {
    pub height: Height,
    /// The proposal: the node's own stamp if it proposed the batch (`proposed_here`), otherwise
    /// the batch's timestamp (the primary's wall clock, in whole milliseconds).
    pub proposed_us: u64,
    pub proposed_here: bool,
    /// The node accepted the pre-prepare (none if it committed on a quorum's commits alone).
    pub pre_prepared_us: Option<u64>,
    /// The node prepared the batch and sent its commit.
    pub prepared_us: Option<u64>,
    /// The node held a quorum of commits (none for a block it got by state transfer).
    pub committed_us: Option<u64>,
    /// The node executed the block and wrote it.
    pub executed_us: u64,
    /// The block's transactions in order, with when each entered this node's mempool (none if
    /// it never did: it reached this node only in the batch).
    pub txs: Vec<TxTiming>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxTiming {
    pub hash: Digest,
    pub pooled_us: Option<u64>,
}

/// The node, as the RPC server sees it. Reads are synchronous (they are served from memory
/// or RocksDB, in microseconds); submission and waiting are asynchronous.
pub trait NodeApi: Clone + Send + Sync + 'static {
    fn status(&self) -> StatusView;

    /// Whether consensus is making progress, idle, or stuck (see [`Health`]).
    fn health(&self) -> HealthView;

    /// Admits a transaction to the mempool (and gossips it). Returns its hash.
    fn submit(&self, tx: Tx) -> impl Future<Output = Result<Digest, SubmitError>> + Send;

    /// Admits many transactions at once (signatures verified in one batch). One result per
    /// transaction, in order. The default submits them one by one.
    fn submit_batch(&self, txs: Vec<Tx>) -> impl Future<Output = Vec<Result<Digest, SubmitError>>> + Send {
        async move {
            let mut results = Vec::with_capacity(txs.len());
            for tx in txs {
                results.push(self.submit(tx).await);
            }
            results
        }
    }

    /// Waits until `hash` is in a block (or `timeout` passes); `None` on timeout.
    fn wait_committed(&self, hash: Digest, timeout: Duration) -> impl Future<Output = Option<TxView>> + Send;

    fn block(&self, at: BlockRef) -> Result<Option<BlockView>, InternalError>;
    fn tx(&self, hash: &Digest) -> Result<Option<TxView>, InternalError>;
    fn account(&self, address: &Address) -> Result<Option<AccountView>, InternalError>;
    /// The stable checkpoint at `height`, or the latest one.
    fn checkpoint(&self, height: Option<Height>) -> Result<Option<CheckpointView>, InternalError>;
    /// The validator set of `height` (default: the next height to be committed). `None` for a
    /// height above the chain's head.
    fn validators(&self, height: Option<Height>) -> Result<Option<ValidatorsView>, InternalError>;

    /// A committed transaction and its receipt, proven against a final header
    /// (`tetrad_ledger::light`).
    fn prove_tx(&self, hash: &Digest) -> Result<Prove<TxProof>, InternalError>;
    /// The header at `height`, proven by the stable checkpoint that covers it.
    fn prove_block(&self, height: Height) -> Result<Prove<HeaderProof>, InternalError>;
    /// An account at the latest stable checkpoint.
    fn prove_account(&self, address: &Address) -> Result<Prove<AccountStateProof>, InternalError>;
    /// The validator chain from genesis: one link per key rotation after `after` (default:
    /// from genesis), up to `height` (default: the latest stable checkpoint), a page at a time.
    fn prove_validators(
        &self,
        height: Option<Height>,
        after: Option<Height>,
    ) -> Result<Prove<ValidatorsProof>, InternalError>;

    /// The timing of a recent block at this node (`None`: not kept, or no such block).
    fn block_timing(&self, height: Height) -> Option<BlockTiming> {
        let _ = height;
        None
    }

    /// New blocks as they are committed.
    fn subscribe_blocks(&self) -> tokio::sync::broadcast::Receiver<BlockEvent>;

    /// Prometheus text exposition of the node's metrics.
    fn metrics(&self) -> String;

    /// Counts an RPC request (method or route, and outcome) in the node's metrics.
    fn record_request(&self, method: &str, outcome: &str);
}
