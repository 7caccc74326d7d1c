//! The node as the RPC server sees it: [`tetrad_rpc::api::NodeApi`] over the store, the
//! mempool and the driver's status.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tetrad_consensus::{Digest, Height};
use tetrad_genesis::Genesis;
use tetrad_ledger::light::{AccountStateProof, HeaderProof, TxProof, ValidatorsProof};
use tetrad_ledger::prover::Prove;
use tetrad_ledger::tx::{Tx, TxError};
use tetrad_ledger::{Address, Outcome, Store};
use tetrad_rpc::api::{
    AccountView, BlockEvent, BlockRef, BlockView, CheckpointView, HealthView, InternalError, NodeApi,
    StatusView, SubmitError, TxStatus, TxView, ValidatorView, ValidatorsView,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::daemon::driver::ConsensusStatus;
use crate::daemon::executor::Waiters;
use crate::daemon::mempool::Mempool;
use crate::daemon::metrics;
use crate::daemon::timing::{PHASES, TxPhase};

#[derive(Clone)]
pub struct Api {
    pub name: String,
    pub genesis: Arc<Genesis>,
    pub genesis_hash: Digest,
    pub schedule: crate::daemon::keys::SharedSchedule,
    pub store: Arc<Store>,
    pub mempool: Arc<Mutex<Mempool>>,
    pub status: Arc<RwLock<ConsensusStatus>>,
    pub peers: Arc<Mutex<usize>>,
    pub waiters: Waiters,
    pub blocks: broadcast::Sender<BlockEvent>,
    pub gossip: mpsc::Sender<Tx>,
    /// Wakes the driver when transactions arrive (a primary proposes at once when idle).
    pub new_txs: Arc<tokio::sync::Notify>,
    /// The timing of the last executed blocks.
    pub timings: crate::daemon::timing::Timings,
    /// The backlog bound of the RPC's admission.
    pub backpressure: Arc<crate::daemon::backpressure::Backpressure>,
}

fn internal(error: impl std::fmt::Display) -> InternalError {
    InternalError(error.to_string())
}

/// The RPC error for a transaction that failed its static checks.
fn submit_error(error: TxError) -> SubmitError {
    match error {
        TxError::TooLarge { size, max } => SubmitError::TooLarge { size, max },
        TxError::Malformed(message) => SubmitError::Malformed(message),
        TxError::ZeroAmount => SubmitError::ZeroAmount,
        TxError::WrongChain { expected, found } => SubmitError::WrongChain { expected, found },
        TxError::BadSender(error) => SubmitError::Malformed(format!("sender: {error}")),
        TxError::BadSignature { from } => SubmitError::BadSignature { from },
    }
}

impl Api {
    /// Static checks, then the mempool's rules; on success the transaction is gossiped.
    pub fn admit(&self, tx: Tx) -> Result<Digest, SubmitError> {
        let received = Instant::now();
        if let Err(error) = self.check_busy() {
            self.mempool.lock().unwrap_or_else(|p| p.into_inner()).count_refusal(&error);
            return Err(error);
        }
        if let Err(error) = metrics::counted_checks(1, || tx.check(&self.genesis_hash)) {
            let error = submit_error(error);
            self.mempool.lock().unwrap_or_else(|p| p.into_inner()).count_refusal(&error);
            return Err(error);
        }
        let hash = tx.hash();
        self.mempool.lock().unwrap_or_else(|p| p.into_inner()).admit(
            tx.clone(),
            hash,
            &*self.store,
            Instant::now(),
        )?;
        self.new_txs.notify_one();
        PHASES.observe(TxPhase::Admission, received.elapsed().as_micros() as u64, 1);
        if self.gossip.try_send(tx).is_err() {
            metrics::dropped("gossip_queue_full", 1);
        }
        Ok(hash)
    }

    /// Many transactions: signatures verified in one batch, the mempool locked once.
    pub fn admit_batch(&self, txs: Vec<Tx>) -> Vec<Result<Digest, SubmitError>> {
        let received = Instant::now();
        // Refused before a signature is checked: a busy node spends nothing on it.
        if let Err(error) = self.check_busy() {
            let mut pool = self.mempool.lock().unwrap_or_else(|p| p.into_inner());
            for _ in &txs {
                pool.count_refusal(&error);
            }
            return txs.iter().map(|_| Err(error.clone())).collect();
        }
        let checks = metrics::check_txs(&txs, &self.genesis_hash);
        let mut results = Vec::with_capacity(txs.len());
        let mut admitted = Vec::new();
        {
            let mut pool = self.mempool.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            for (tx, check) in txs.into_iter().zip(checks) {
                let result = match check.map_err(submit_error) {
                    Ok(()) => {
                        let hash = tx.hash();
                        pool.admit(tx.clone(), hash, &*self.store, now).map(|()| {
                            admitted.push(tx);
                            hash
                        })
                    }
                    Err(error) => {
                        pool.count_refusal(&error);
                        Err(error)
                    }
                };
                results.push(result);
            }
        }
        if !admitted.is_empty() {
            self.new_txs.notify_one();
            PHASES.observe(TxPhase::Admission, received.elapsed().as_micros() as u64, admitted.len() as u64);
        }
        for tx in admitted {
            if self.gossip.try_send(tx).is_err() {
                metrics::dropped("gossip_queue_full", 1);
            }
        }
        results
    }

    /// Backpressure: refuses more transactions while the mempool holds at least what this node
    /// commits in half a view-change timeout (`backpressure.rs`). A call that starts below the
    /// bound goes through whole (it overshoots by at most one call).
    fn check_busy(&self) -> Result<(), SubmitError> {
        let waiting = self.mempool.lock().unwrap_or_else(|p| p.into_inner()).len();
        let max = self.backpressure.backlog_max(Instant::now());
        if waiting >= max {
            return Err(SubmitError::Busy { waiting, max });
        }
        Ok(())
    }

    fn block_view(&self, height: Height) -> Result<Option<BlockView>, InternalError> {
        if height == Height::GENESIS {
            let header = self.store.genesis_header().map_err(internal)?;
            return Ok(Some(BlockView {
                hash: header.hash(),
                header,
                txs: Vec::new(),
                certificate: None,
                batch_timestamp_ms: None,
                batch_txs: None,
            }));
        }
        let Some(block) = self.store.block(height).map_err(internal)? else { return Ok(None) };
        let receipts = self.store.receipts(height).map_err(internal)?.unwrap_or_default();
        let txs: Vec<Digest> = receipts.iter().map(|receipt| receipt.tx_hash).collect();
        let batch: Vec<Digest> =
            block.batch_txs().map(|txs| txs.iter().map(Tx::hash).collect()).unwrap_or_default();
        Ok(Some(BlockView {
            hash: block.header.hash(),
            header: block.header,
            batch_txs: (batch != txs).then_some(batch),
            txs,
            certificate: Some(block.certificate),
            batch_timestamp_ms: Some(block.batch.timestamp_ms),
        }))
    }
}

impl NodeApi for Api {
    fn health(&self) -> HealthView {
        let liveness = self.status.read().unwrap_or_else(|p| p.into_inner()).liveness.clone();
        liveness.health(std::time::Instant::now(), self.store.head().height)
    }

    fn status(&self) -> StatusView {
        let head = self.store.head();
        let consensus = self.status.read().unwrap_or_else(|p| p.into_inner()).clone();
        let (mempool_txs, mempool_bytes) = {
            let pool = self.mempool.lock().unwrap_or_else(|p| p.into_inner());
            (pool.len(), pool.bytes())
        };
        StatusView {
            chain_id: self.genesis.chain_id.clone(),
            genesis_hash: self.genesis_hash,
            node: self.name.clone(),
            validator: consensus.validator,
            validating: consensus.validator.is_some(),
            height: head.height,
            latest_block_hash: head.hash(),
            latest_block_time_ms: head.timestamp_ms,
            view: consensus.view,
            view_active: consensus.view_active,
            primary: consensus.primary,
            stable_checkpoint: consensus.stable_checkpoint,
            peers: *self.peers.lock().unwrap_or_else(|p| p.into_inner()),
            mempool_txs,
            mempool_bytes,
            syncing: consensus.syncing,
        }
    }

    async fn submit(&self, tx: Tx) -> Result<Digest, SubmitError> {
        let api = self.clone();
        // Signature verification is CPU work: off the async workers.
        tokio::task::spawn_blocking(move || api.admit(tx)).await.map_err(|_| SubmitError::Unavailable)?
    }

    async fn submit_batch(&self, txs: Vec<Tx>) -> Vec<Result<Digest, SubmitError>> {
        let count = txs.len();
        let api = self.clone();
        tokio::task::spawn_blocking(move || api.admit_batch(txs))
            .await
            .unwrap_or_else(|_| (0..count).map(|_| Err(SubmitError::Unavailable)).collect())
    }

    async fn wait_committed(&self, hash: Digest, timeout: Duration) -> Option<TxView> {
        let (sender, receiver) = oneshot::channel();
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).entry(hash).or_default().push(sender);
        // It may have committed before the waiter was registered.
        if let Ok(Some(view)) = self.tx(&hash)
            && view.status != TxStatus::Pending
        {
            return Some(view);
        }
        let _ = tokio::time::timeout(timeout, receiver).await;
        let view = self.tx(&hash).ok().flatten().filter(|view| view.status != TxStatus::Pending);
        if view.is_none() {
            // Drop our (now closed) waiter so the map does not grow.
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(list) = waiters.get_mut(&hash) {
                list.retain(|waiter| !waiter.is_closed());
                if list.is_empty() {
                    waiters.remove(&hash);
                }
            }
        }
        view
    }

    fn block(&self, at: BlockRef) -> Result<Option<BlockView>, InternalError> {
        match at {
            BlockRef::Latest => self.block_view(self.store.head().height),
            BlockRef::Height(height) => self.block_view(height),
            BlockRef::Hash(hash) => match self.store.height_of(&hash).map_err(internal)? {
                Some(height) => self.block_view(height),
                None => {
                    let genesis = self.store.genesis_header().map_err(internal)?;
                    if genesis.hash() == hash { self.block_view(Height::GENESIS) } else { Ok(None) }
                }
            },
        }
    }

    fn tx(&self, hash: &Digest) -> Result<Option<TxView>, InternalError> {
        if let Some((tx, receipt)) = self.store.tx(hash).map_err(internal)? {
            let status = match receipt.outcome {
                Outcome::Success => TxStatus::Committed,
                Outcome::Failed { .. } => TxStatus::Failed,
            };
            return Ok(Some(TxView {
                hash: *hash,
                status,
                tx,
                height: Some(receipt.height),
                index: Some(receipt.index),
                receipt: Some(receipt),
            }));
        }
        let pending = self.mempool.lock().unwrap_or_else(|p| p.into_inner()).get(hash);
        Ok(pending.map(|tx| TxView {
            hash: *hash,
            status: TxStatus::Pending,
            tx: (*tx).clone(),
            height: None,
            index: None,
            receipt: None,
        }))
    }

    fn account(&self, address: &Address) -> Result<Option<AccountView>, InternalError> {
        let Some((proof, header)) = self.store.prove_account(address).map_err(internal)? else {
            return Ok(None);
        };
        Ok(Some(AccountView {
            address: *address,
            balance: proof.account.balance,
            nonce: proof.account.nonce,
            height: header.height,
            state_root: header.state_root,
            proof,
        }))
    }

    fn checkpoint(&self, height: Option<Height>) -> Result<Option<CheckpointView>, InternalError> {
        let certificate = match height {
            Some(height) => self.store.checkpoint(height),
            None => self.store.latest_checkpoint(),
        }
        .map_err(internal)?;
        Ok(certificate.map(|certificate| CheckpointView {
            height: certificate.statement.height,
            header_hash: certificate.statement.header_hash,
            state_root: certificate.statement.state_root,
            certificate,
        }))
    }

    fn validators(&self, height: Option<Height>) -> Result<Option<ValidatorsView>, InternalError> {
        let head = self.store.head().height;
        let height = height.unwrap_or(head.next());
        if height > head.next() {
            return Ok(None);
        }
        let schedule = self.schedule.get();
        let set = schedule.at(height);
        let validators = self
            .genesis
            .validators
            .iter()
            .enumerate()
            .map(|(index, validator)| ValidatorView {
                index: tetrad_consensus::ValidatorIndex(index as u16),
                name: validator.name.clone(),
                consensus_key: set.keys().get(index).copied().unwrap_or(validator.consensus_key),
                peer_id: validator.peer_id.clone(),
                p2p_address: validator.p2p_address.clone(),
            })
            .collect();
        Ok(Some(ValidatorsView { height, n: set.n(), f: set.f(), quorum: set.quorum(), validators }))
    }

    fn prove_tx(&self, hash: &Digest) -> Result<Prove<TxProof>, InternalError> {
        self.store.tx_state_proof(hash).map_err(internal)
    }

    fn prove_block(&self, height: Height) -> Result<Prove<HeaderProof>, InternalError> {
        self.store.header_proof(height).map_err(internal)
    }

    fn prove_account(&self, address: &Address) -> Result<Prove<AccountStateProof>, InternalError> {
        self.store.account_state_proof(address).map_err(internal)
    }

    fn prove_validators(
        &self,
        height: Option<Height>,
        after: Option<Height>,
    ) -> Result<Prove<ValidatorsProof>, InternalError> {
        self.store.validators_proof(height, after).map_err(internal)
    }

    fn block_timing(&self, height: Height) -> Option<tetrad_rpc::api::BlockTiming> {
        self.timings.get(height)
    }

    fn subscribe_blocks(&self) -> broadcast::Receiver<BlockEvent> {
        self.blocks.subscribe()
    }

    fn metrics(&self) -> String {
        {
            let pool = self.mempool.lock().unwrap_or_else(|p| p.into_inner());
            metrics::gauge("tetrad_mempool_txs", pool.len() as f64);
            metrics::gauge("tetrad_mempool_proposable_txs", pool.proposable() as f64);
            metrics::gauge("tetrad_mempool_gapped_txs", pool.gapped() as f64);
            for (reason, count) in pool.refused() {
                metrics::mempool_refused_absolute(reason, *count);
            }
            for (reason, count) in pool.dropped() {
                metrics::mempool_dropped_absolute(reason, *count);
            }
        }
        metrics::render() + &crate::daemon::timing::PHASES.render()
    }

    fn record_request(&self, method: &str, outcome: &str) {
        metrics::rpc_request(method, outcome);
    }
}
