//! The executor: one thread that executes committed batches in height order and writes each
//! block (header, batch, certificate, receipts, accounts, head) to RocksDB in one synced write.
//!
//! Blocks arrive from the driver already committed (by consensus or by verified state
//! transfer); their transactions are not verified again: a commit certificate means a quorum
//! checked them. After each block the mempool drops what it committed, waiters for its
//! transactions are woken, the event stream hears of it, and the driver is told the header
//! hash and state root (which checkpoints sign).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tetrad_consensus::validators::activation_boundary;
use tetrad_consensus::{
    CheckpointCertificate, Committed, Digest, Height, SecretKey, ValidatorIndex, ValidatorSchedule,
};
use tetrad_genesis::KeyFile;
use tetrad_ledger::tx::decode_payload;
use tetrad_ledger::{Block, Store, ValidatorRegistry, execute};
use tetrad_rpc::api::BlockEvent;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{error, warn};

use crate::config::Home;
use crate::daemon::backpressure::Backpressure;
use crate::daemon::keys::{SharedSchedule, activation_of};
use crate::daemon::mempool::Mempool;
use crate::daemon::metrics;
use crate::daemon::timing::{self, HeightStamps, Timings};

pub enum Job {
    /// A committed block, with what the driver saw of its phases (default for state transfer).
    Block(Committed, HeightStamps),
    Checkpoint(CheckpointCertificate),
}

/// A block this node executed.
#[derive(Clone, Debug)]
pub struct Executed {
    pub height: Height,
    pub header_hash: Digest,
    pub state_root: Digest,
    /// The validator schedule after this block (its horizon moves with every block).
    pub schedule: Arc<ValidatorSchedule>,
    /// This validator's next key, when this block scheduled its rotation: `(first height, key)`.
    pub new_key: Option<(Height, SecretKey)>,
}

/// Clients waiting for a transaction to be committed.
pub type Waiters = Arc<Mutex<HashMap<Digest, Vec<oneshot::Sender<()>>>>>;

pub struct Executor {
    pub store: Arc<Store>,
    pub mempool: Arc<Mutex<Mempool>>,
    pub waiters: Waiters,
    pub blocks: broadcast::Sender<BlockEvent>,
    pub schedule: SharedSchedule,
    /// This node's validator index and home, if it validates (to pick up its next key).
    pub own: Option<(ValidatorIndex, Home)>,
    /// The timing of the last blocks (for `GET /timing/blocks/{height}`).
    pub timings: Timings,
    /// Told how many transactions each block executed (the RPC's backlog bound).
    pub backpressure: Arc<Backpressure>,
}

/// Jobs waiting for the executor.
pub const EXECUTOR_QUEUE: usize = 1024;

impl Executor {
    /// Starts the executor thread; it ends when the job channel closes (or panics: the node
    /// watches the handle and exits).
    pub fn spawn(
        self,
        executed: mpsc::Sender<Executed>,
    ) -> std::io::Result<(mpsc::Sender<Job>, std::thread::JoinHandle<()>)> {
        let (jobs_tx, mut jobs) = mpsc::channel::<Job>(EXECUTOR_QUEUE);
        let thread = std::thread::Builder::new().name("executor".into()).spawn(move || {
            while let Some(job) = jobs.blocking_recv() {
                match job {
                    Job::Block(committed, stamps) => match self.execute(committed, stamps) {
                        Ok(Some(done)) => {
                            if executed.blocking_send(done).is_err() {
                                break;
                            }
                        }
                        Ok(None) => {}
                        Err(message) => {
                            // The store refused a block consensus committed: continuing would
                            // fork this node from the others. Stop loudly.
                            error!("{message}; stopping");
                            std::process::exit(70);
                        }
                    },
                    Job::Checkpoint(certificate) => {
                        if let Err(error) = self.store.put_checkpoint(&certificate) {
                            warn!(%error, "writing a stable checkpoint");
                        }
                    }
                }
            }
        })?;
        Ok((jobs_tx, thread))
    }

    /// Executes the next block. A block at or below the head (a follower fetched it twice)
    /// or above the next height (a follower's fetch had a gap) is skipped.
    fn execute(&self, committed: Committed, stamps: HeightStamps) -> Result<Option<Executed>, String> {
        let Committed { height, batch, certificate } = committed;
        let head = self.store.head();
        if height != head.height.next() {
            if height > head.height.next() {
                warn!(%height, head = %head.height, "skipping a block above the next height");
            }
            return Ok(None);
        }
        let txs = decode_payload(&batch.payload).unwrap_or_else(|error| {
            // Every honest replica decodes the same bytes the same way: an undecodable payload
            // is an empty block everywhere.
            warn!(%height, %error, "committed payload does not decode; executing it as empty");
            Vec::new()
        });
        let started = Instant::now();
        let cpu_before = metrics::thread_cpu_micros();
        let execution = self
            .store
            .with_state(|head, state| execute(state, head, &batch, &txs))
            .map_err(|error| format!("executing block {height}: {error}"))?;
        let block = Block { header: execution.header.clone(), batch: (*batch).clone(), certificate };
        self.store
            .commit(&block, &execution)
            .map_err(|error| format!("committing block {height}: {error}"))?;
        metrics::observe("tetrad_storage_write_seconds", started.elapsed().as_secs_f64());
        metrics::count(
            "tetrad_execute_cpu_microseconds_total",
            metrics::thread_cpu_micros().saturating_sub(cpu_before),
        );
        metrics::gauge("tetrad_height", height.0 as f64);
        // What the block holds: a copy whose nonce was wrong is not in it (it never executed).
        let listed = execution.tx_hashes.len() as u64;
        metrics::count("tetrad_committed_txs_total", listed);
        metrics::count("tetrad_left_out_txs_total", (txs.len() as u64).saturating_sub(listed));
        metrics::observe("tetrad_batch_txs", txs.len() as f64);
        let executed_us = timing::unix_us();
        self.backpressure.on_executed(listed, Instant::now());

        let tx_timings = {
            let mut pool = self.mempool.lock().unwrap_or_else(|p| p.into_inner());
            let tx_timings: Vec<_> = execution
                .tx_hashes
                .iter()
                .map(|hash| tetrad_rpc::api::TxTiming {
                    hash: *hash,
                    pooled_us: pool.admitted_at(hash).map(timing::unix_us_of),
                })
                .collect();
            pool.on_committed(&execution.tx_hashes, &execution.changes);
            tx_timings
        };
        self.timings.push(timing::block_timing(height, stamps, batch.timestamp_ms, tx_timings, executed_us));
        {
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            if !waiters.is_empty() {
                for hash in &execution.tx_hashes {
                    for waiter in waiters.remove(hash).unwrap_or_default() {
                        let _ = waiter.send(());
                    }
                }
            }
        }
        let schedule = self.next_schedule(height, execution.registry.as_ref())?;
        let new_key = match (&execution.registry, &self.own) {
            (Some(registry), Some((index, home))) => next_key(registry, *index, home),
            _ => None,
        };
        let header = &execution.header;
        let header_hash = header.hash();
        let _ = self.blocks.send(BlockEvent {
            height,
            hash: header_hash,
            tx_count: header.tx_count,
            timestamp_ms: header.timestamp_ms,
            view: header.view,
            proposer: header.proposer,
        });
        Ok(Some(Executed { height, header_hash, state_root: header.state_root, schedule, new_key }))
    }

    /// The schedule after executing `height`: rebuilt when a rotation changed the registry,
    /// otherwise the same epochs with the horizon moved up.
    fn next_schedule(
        &self,
        height: Height,
        changed: Option<&ValidatorRegistry>,
    ) -> Result<Arc<ValidatorSchedule>, String> {
        let schedule = match changed {
            Some(registry) => registry
                .schedule(height)
                .map_err(|error| format!("validator registry at {height}: {error}"))?,
            None => {
                let registry = self.store.registry();
                let mut schedule = (*self.schedule.get()).clone();
                schedule.set_horizon(activation_boundary(height.next(), registry.checkpoint_interval));
                schedule
            }
        };
        let schedule = Arc::new(schedule);
        self.schedule.set(schedule.clone());
        Ok(schedule)
    }
}

/// This validator's next key, if the registry now schedules the key in `consensus_key.next.json`.
fn next_key(registry: &ValidatorRegistry, index: ValidatorIndex, home: &Home) -> Option<(Height, SecretKey)> {
    let path = home.next_consensus_key();
    if !path.exists() {
        return None;
    }
    match KeyFile::read(&path) {
        Ok(next) => activation_of(registry, index, &next).map(|first| (first, next.secret)),
        Err(error) => {
            warn!(%error, "a rotation of this validator was committed, but its next key file is unreadable");
            None
        }
    }
}
