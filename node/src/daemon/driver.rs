//! The driver: one task that owns the replica and carries out every action it returns.
//!
//! Loop: wait for an input (a verified message, an executed block, a timer, a batch to
//! propose), drain whatever else is ready, hand each input to the replica, then carry out the
//! merged actions in the order the replica requires: make the safety records durable (one
//! synced RocksDB write for all of them), then send the messages that depended on them and the
//! rest, hand committed batches to the executor, set timers, request blocks.
//!
//! Signatures are verified off this task (`spawn_blocking`), and a pre-prepare's transactions
//! are checked there too; transactions already in the mempool were verified at admission and
//! are not verified again. Messages wait for verification in one queue per sender and are
//! verified in turn, each sender within its share, stale ones dropped before any signature is
//! checked (`intake.rs`); the expensive answers to one peer (a batch, the new-view) are rationed
//! (`answers.rs`). A node whose consensus key is not a validator's runs the same loop without a
//! replica and follows the chain by block sync.
//!
//! Each run of the loop reports the node's liveness for `/health` (`health.rs`). The loop ends
//! with an error if the network task or the executor is gone: the node then exits.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tetrad_consensus::wire::{Message, VerifiedBlock, VerifyError, verify};
use tetrad_consensus::{
    Actions, BlockSource, Digest, Height, Input, Recipient, Replica, SecretKey, Timer, TimerAction,
    ValidatorIndex, ValidatorSchedule, View,
};
use tetrad_genesis::ConsensusParams;
use tetrad_ledger::tx::Tx;
use tetrad_ledger::{SafetyStore, StateReader, Store};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::config::Home;
use crate::daemon::answers::Answers;
use crate::daemon::deferred::Deferred;
use crate::daemon::executor::{Executed, Job};
use crate::daemon::health::Liveness;
use crate::daemon::in_flight::InFlight;
use crate::daemon::intake::{
    Freshness, Intake, PEER_QUEUE_MESSAGES_MAX, PEER_VERIFICATIONS_MAX, Queued, Ticket,
};
use crate::daemon::keys::{self, OwnKeys, SharedSchedule};
use crate::daemon::mempool::Mempool;
use crate::daemon::metrics;
use crate::daemon::network::{Command, Event, FrameLimits, SYNC_BLOCKS_MAX, SyncBlock};
use crate::daemon::timing::{self, HeightStamps, Stamper};

/// What `/status` and `/health` show of consensus, updated by the driver.
#[derive(Clone, Debug)]
pub struct ConsensusStatus {
    pub validator: Option<ValidatorIndex>,
    pub view: View,
    pub view_active: bool,
    pub primary: ValidatorIndex,
    pub stable_checkpoint: Height,
    pub syncing: bool,
    pub liveness: Liveness,
}

impl ConsensusStatus {
    pub fn new(validator: Option<ValidatorIndex>, stall_after: Duration) -> ConsensusStatus {
        ConsensusStatus {
            validator,
            view: View::default(),
            view_active: true,
            primary: ValidatorIndex::default(),
            stable_checkpoint: Height::GENESIS,
            syncing: false,
            liveness: Liveness::new(Instant::now(), stall_after),
        }
    }
}

/// Why the driver's loop ended other than by a shutdown.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    #[error("the network task is gone (its event channel closed)")]
    NetworkGone,
    #[error("the executor is gone (its job channel closed)")]
    ExecutorGone,
}

pub struct Driver {
    pub replica: Option<Replica>,
    /// Where the replica's safety records go (validators only).
    pub safety: Option<Arc<SafetyStore>>,
    /// The replica's keys: `(first height, key)` (its keyring at the start).
    pub keys: Vec<(Height, SecretKey)>,
    /// A validator whose key the registry of its data/ does not hold yet (a resync after a
    /// rotation): it follows the chain until the registry holds it, then starts its replica.
    pub pending: Option<Pending>,
    /// With `--accept-double-sign-risk`: the highest height this node knows it might have
    /// signed; the replica stays silent until the network is past every height it might have
    /// signed (see [`Margin`]).
    pub margin_from: Option<Height>,
    pub store: Arc<Store>,
    pub mempool: Arc<Mutex<Mempool>>,
    pub schedule: SharedSchedule,
    pub params: ConsensusParams,
    pub home: Home,
    pub genesis_hash: Digest,
    pub network: mpsc::Sender<Command>,
    pub events: mpsc::Receiver<Event>,
    pub executor: mpsc::Sender<Job>,
    pub executed: mpsc::Receiver<Executed>,
    pub status: Arc<RwLock<ConsensusStatus>>,
    pub shutdown: watch::Receiver<bool>,
    /// Notified when the mempool admits transactions.
    pub new_txs: Arc<tokio::sync::Notify>,
    /// Bounds the consensus messages being verified at once.
    pub verifications: Arc<tokio::sync::Semaphore>,
    /// Transactions to gossip (again).
    pub gossip: mpsc::Sender<tetrad_ledger::Tx>,
    /// Frame limits from genesis (bound the answers rationed per peer).
    pub limits: FrameLimits,
    /// How long the chain must be quiet before an idle primary proposes empty batches up to the
    /// next checkpoint boundary (`empty_blocks_after_idle_ms` of `config.toml`).
    pub empty_blocks_after_idle: Duration,
}

/// A validator that waits for its consensus key to appear in the registry.
pub struct Pending {
    pub index: ValidatorIndex,
    pub keys: OwnKeys,
}

/// The safety margin of a validator started with `--accept-double-sign-risk`: its records of
/// what it signed may be incomplete, so it sends nothing it signs until its low watermark (the
/// last stable checkpoint, made by the others) is past every height it might have signed.
///
/// Those heights are at most (the network's stable checkpoint when the records were lost) +
/// W: a replica never signs above its own low watermark + W, and its low watermark never passes
/// the network's. The network's committed height bounds that checkpoint from above; it is read
/// from the status messages of a quorum of validators (at least one of which is honest and
/// has committed every stable checkpoint), so the margin is
/// `max(local evidence, highest committed height reported) + W + K`.
struct Margin {
    /// The highest height local evidence (data/, safety/) says this validator might have signed.
    local: Height,
    /// Committed heights from the status messages of other validators.
    heard: BTreeMap<ValidatorIndex, Height>,
    /// Silent until the low watermark reaches this height; `None` until a quorum was heard.
    until: Option<Height>,
}

/// How often a validator that waits for its key looks for it in the registry.
const PROMOTION_CHECK_EVERY: Duration = Duration::from_millis(250);

/// Retries of the on-disk key swap after a failure: doubling from the first to the last.
const KEY_SWAP_RETRY_FIRST: Duration = Duration::from_secs(1);
const KEY_SWAP_RETRY_LAST: Duration = Duration::from_secs(300);

/// The on-disk side of a key rotation: whether it still has to run, and its retry schedule.
struct KeySwap {
    needed: bool,
    next_try: Instant,
    retry_after: Duration,
    /// The last reason it could not run yet (logged once per reason).
    waiting: Option<String>,
}

impl KeySwap {
    fn new(needed: bool) -> KeySwap {
        metrics::gauge("tetrad_key_swap_pending", if needed { 1.0 } else { 0.0 });
        KeySwap { needed, next_try: Instant::now(), retry_after: KEY_SWAP_RETRY_FIRST, waiting: None }
    }

    fn retry_later(&mut self) {
        self.next_try = Instant::now() + self.retry_after;
        self.retry_after = (self.retry_after * 2).min(KEY_SWAP_RETRY_LAST);
    }
}

/// How long a waiting transaction goes without being gossiped before it is gossiped again, and
/// how many go out per round.
const REGOSSIP_AFTER: Duration = Duration::from_secs(2);
const REGOSSIP_MAX: usize = 4096;
/// The quickest regossip pace while the chain stands still (a tiny view-change timeout must not
/// make every driver round walk the ready set).
const REGOSSIP_STALLED_MIN: Duration = Duration::from_millis(250);

/// Consensus messages verified at once, at most (each holds a blocking thread).
pub const VERIFICATIONS_MAX: usize = 256;

/// Most inputs handled before the actions are carried out (and synced) together.
const INPUTS_PER_ROUND: usize = 512;

/// A full node counts as up to date this long after a peer said it has nothing newer.
const FOLLOWER_UP_TO_DATE_FOR: Duration = Duration::from_secs(5);
/// A follower's block request with no answer or failure after this long is given up (longer
/// than the sync request timeout, 30 s, so normally the failure comes first).
const FOLLOWER_FETCH_DEADLINE: Duration = Duration::from_secs(40);

struct State {
    started: Instant,
    timers: BTreeMap<Timer, u64>,
    /// Highest height handed to the executor.
    delivered: Height,
    /// When the mempool first had something to propose while nothing was proposed.
    batch_waiting_since: Option<Instant>,
    /// Follower mode: a block-sync request is out, and since when (an answer or failure lost
    /// on a full queue must not stop the follower for good: after a while it asks again).
    fetching: bool,
    fetch_sent: Instant,
    /// Follower mode: the last height of the last answer; once it is executed (the schedule's
    /// horizon, which bounds what may be asked, moves with execution) the next range is asked
    /// at once instead of at the next follow tick.
    follow_after: Option<Height>,
    /// Follower mode: when a peer last said it has no block after ours.
    up_to_date_at: Option<Instant>,
    /// The replica's keys, `(first height, key)`: what it was given (the replica forgets the
    /// old ones itself; `key_heights` says which it still holds).
    keys: Vec<(Height, SecretKey)>,
    /// Finishing a rotation on disk.
    swap: KeySwap,
    /// When a waiting validator last looked for its key in the registry.
    promotion_checked: Option<Instant>,
    /// `--accept-double-sign-risk`: silent until the margin is passed.
    margin: Option<Margin>,
    /// For the stall report: the committed height, since when, last report.
    stall_height: Height,
    stall_since: Instant,
    stall_reported: Option<Instant>,
    /// When waiting transactions were last gossiped again.
    regossiped: Instant,
    /// The transactions of the batches in flight here, what fresh pre-prepares are checked
    /// against (in_flight.rs).
    in_flight: InFlight,
    /// Whether the mempool holds proposable work (what the replica was last told).
    requests_pending: bool,
    /// Since when this primary has been idle short of a checkpoint boundary (nothing ready,
    /// nothing in flight, the last height not a boundary); `None` when it is not.
    quiet_since: Option<Instant>,
    fetch_peer: u16,
    /// Consensus messages above the schedule horizon, until it passes them.
    deferred: Deferred,
    /// Consensus messages waiting for verification, per sender.
    intake: Intake,
    /// The expensive answers, rationed per peer.
    answers: Answers,
    /// The height that last counted as progress (committed, or executed for a full node).
    progress_height: Height,
    /// Set when the executor's job channel closed.
    executor_gone: bool,
    /// When each height reached each phase here (`timing.rs`).
    stamps: Stamper,
    /// The view in which this replica, as its primary, last marked the batches in flight as
    /// taken in the mempool (before its first cut of that view).
    marked_view: Option<View>,
    /// This primary has not yet marked every batch of its view's log as in flight (one is
    /// still missing here): it cuts nothing until it has.
    marking: bool,
}

/// Milliseconds since the Unix epoch on this machine's clock (batch timestamps).
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl State {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

impl Driver {
    /// The loop's state at the start (takes the keys the driver was given).
    fn new_state(&mut self) -> State {
        let validators = self.schedule.get().latest().n();
        let status_interval = Duration::from_millis((self.params.view_change_timeout_ms / 4).max(1));
        State {
            started: Instant::now(),
            timers: BTreeMap::new(),
            delivered: self.store.head().height,
            batch_waiting_since: None,
            fetching: false,
            fetch_sent: Instant::now(),
            follow_after: None,
            up_to_date_at: None,
            fetch_peer: 0,
            requests_pending: false,
            quiet_since: None,
            keys: std::mem::take(&mut self.keys),
            swap: KeySwap::new(false),
            promotion_checked: None,
            margin: self.margin_from.map(|local| Margin { local, heard: BTreeMap::new(), until: None }),
            stall_height: Height::GENESIS,
            stall_since: Instant::now(),
            stall_reported: None,
            regossiped: Instant::now(),
            in_flight: InFlight::default(),
            deferred: Deferred::default(),
            intake: Intake::new(validators, PEER_VERIFICATIONS_MAX),
            answers: Answers::new(
                validators,
                self.limits.consensus_bytes_max,
                status_interval,
                Instant::now(),
            ),
            progress_height: self.store.head().height,
            executor_gone: false,
            stamps: Stamper::default(),
            marked_view: None,
            marking: false,
        }
    }

    /// Runs until shutdown (`Ok`) or until the network task or the executor is gone.
    pub async fn run(mut self) -> Result<(), Stopped> {
        let validators = self.schedule.get().latest().n();
        let mut state = self.new_state();
        if state.margin.is_some() {
            warn!(
                "{}: this validator stays silent (it signs nothing) until the network is past every \
                 height it might have signed",
                crate::daemon::safety_check::ACCEPT_RISK_FLAG
            );
        }
        // Each verified message keeps its sender's ticket until the replica takes it, so no
        // sender can fill this channel beyond its budget.
        let verified_capacity = validators.saturating_mul(PEER_QUEUE_MESSAGES_MAX).saturating_add(1024);
        let (verified_tx, mut verified_rx) = mpsc::channel::<(Input, Option<Ticket>)>(verified_capacity);
        let (early_tx, mut early_rx) = mpsc::channel::<Early>(verified_capacity);
        let outlets = Outlets { verified: verified_tx, early: early_tx };
        // Every drop reason appears in /metrics from the start, at zero.
        for reason in tetrad_consensus::DropReason::ALL {
            metrics::dropped_absolute(reason.name(), 0);
        }
        metrics::counter_absolute("tetrad_view_changes_total", 0);
        metrics::count("tetrad_empty_batches_proposed_total", 0);
        if self.replica.is_some() {
            self.start_replica(&mut state).await;
        }
        let tick = Duration::from_millis(self.params.batch_timeout_ms.clamp(1, 1000) / 2 + 1);
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut follow = tokio::time::interval(Duration::from_millis(250));
        follow.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let verification_done = state.intake.done.clone();
        loop {
            if state.executor_gone {
                return Err(Stopped::ExecutorGone);
            }
            let mut inputs: Vec<Input> = Vec::new();
            let next_timer = state.timers.values().min().copied();
            let sleep = match next_timer {
                Some(at) => Duration::from_millis(at.saturating_sub(state.now_ms())),
                None => Duration::from_secs(3600),
            };
            // An idle primary wakes when it is time to fill up to the checkpoint boundary.
            let sleep = match state.quiet_since {
                Some(since) => sleep
                    .min((since + self.empty_blocks_after_idle).saturating_duration_since(Instant::now())),
                None => sleep,
            };
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => self.on_network_event(&mut state, event, &outlets),
                    None => return Err(Stopped::NetworkGone),
                },
                _ = verification_done.notified() => {}
                Some((input, _ticket)) = verified_rx.recv() => {
                    trace_handled(&input);
                    inputs.push(input)
                }
                Some(done) = self.executed.recv() => self.on_executed(&mut state, done, &mut inputs),
                _ = tokio::time::sleep(sleep) => {}
                _ = ticker.tick() => {}
                _ = self.new_txs.notified() => {}
                _ = follow.tick(), if self.replica.is_none() => self.follow(&mut state),
                _ = self.shutdown.changed() => break,
            }
            // Hand every waiting network message to verification now: taking one per round
            // (each round may end in a synced write) let consensus messages wait behind each
            // other for up to a second under load, and the primary time itself out.
            for _ in 0..INPUTS_PER_ROUND {
                let Ok(event) = self.events.try_recv() else { break };
                self.on_network_event(&mut state, event, &outlets);
            }
            // Messages that came too early wait for the horizon; those it has passed go through
            // verification again.
            let horizon = self.schedule.get().horizon();
            while let Ok(Early { from, height, bytes, .. }) = early_rx.try_recv() {
                if height > Height(horizon.0.saturating_add(self.params.watermark_window)) {
                    metrics::dropped("beyond_schedule_horizon", 1);
                } else if let Err(reason) = state.deferred.insert(from, height, bytes) {
                    metrics::dropped(reason, 1);
                } else {
                    metrics::count("tetrad_early_messages_total", 1);
                }
            }
            for (from, bytes) in state.deferred.release(horizon) {
                self.on_network_event(&mut state, Event::Consensus { from, bytes, ticket: None }, &outlets);
            }
            metrics::gauge("tetrad_early_messages", state.deferred.len() as f64);
            self.dispatch(&mut state, &outlets);
            // Drain what else is ready, so one synced write covers many inputs.
            while inputs.len() < INPUTS_PER_ROUND {
                if let Ok((input, _ticket)) = verified_rx.try_recv() {
                    trace_handled(&input);
                    inputs.push(input);
                } else if let Ok(done) = self.executed.try_recv() {
                    self.on_executed(&mut state, done, &mut inputs);
                } else {
                    break;
                }
            }
            let now = state.now_ms();
            let expired: Vec<Timer> =
                state.timers.iter().filter(|(_, at)| **at <= now).map(|(timer, _)| *timer).collect();
            for timer in expired {
                state.timers.remove(&timer);
                inputs.push(Input::Timer(timer));
            }
            if self.replica.is_none() {
                // Follower: executed notices only update the delivered mark. A validator waiting
                // for its key starts its replica once the registry holds it.
                self.beat_follower(&mut state);
                self.mempool.lock().unwrap_or_else(|p| p.into_inner()).expire(Instant::now());
                self.promote(&mut state).await;
                continue;
            }
            self.watch_margin(&mut state, &inputs);
            let Some(replica) = self.replica.as_mut() else { continue };
            let mut actions = Actions::default();
            let view_before = (replica.view(), replica.view_active());
            // Backups check batch timestamps against this machine's clock (the replica reads none).
            merge(&mut actions, replica.handle(now, Input::WallClock { unix_ms: wall_clock_ms() }));
            for input in inputs {
                merge(&mut actions, hand_in(replica, &mut state.in_flight, &self.store, now, input));
            }
            log_view_change(view_before, replica);
            self.propose(&mut state, &mut actions);
            self.carry_out(&mut state, actions).await;
            self.settle_keys(&mut state);
            self.report_stall(&mut state);
            self.regossip(&mut state);
            self.beat_validator(&mut state);
        }
        info!("driver stopped");
        Ok(())
    }

    /// Hands waiting consensus messages to verification: senders in turn, each within its
    /// share, with the replica's position for the freshness check.
    fn dispatch(&mut self, state: &mut State, outlets: &Outlets) {
        let Some(replica) = self.replica.as_ref() else { return };
        if state.intake.waiting() == 0 {
            return;
        }
        let freshness =
            Freshness { view: replica.view(), low: replica.low_watermark(), committed: replica.committed() };
        let schedule = self.schedule.get();
        let window = self.params.watermark_window;
        let verifications = self.verifications.clone();
        let checks = Checks {
            schedule,
            window,
            mempool: self.mempool.clone(),
            store: self.store.clone(),
            genesis_hash: self.genesis_hash,
            params: self.params.clone(),
            freshness,
        };
        state.intake.dispatch(&verifications, |from, queued, verifying| {
            let Queued { bytes, ticket, arrived } = queued;
            let checks = checks.clone();
            let verified = outlets.verified.clone();
            let early = outlets.early.clone();
            tracing::trace!(%from, id = %&blake3::hash(&bytes).to_hex()[..12], "consensus event");
            tokio::task::spawn_blocking(move || {
                // The verification place comes back when this ends, however it ends; the ticket
                // when the replica has taken the message (or it was dropped).
                let _verifying = verifying;
                metrics::observe("tetrad_consensus_verify_wait_seconds", arrived.elapsed().as_secs_f64());
                match checks.check(&bytes) {
                    Ok(message) => {
                        tracing::trace!(%from, id = %&blake3::hash(&bytes).to_hex()[..12], kind = message.message().kind(), "consensus verified");
                        if verified.try_send((Input::Message { from, message }, ticket)).is_err() {
                            metrics::dropped("verified_queue_full", 1);
                        }
                    }
                    Err(Rejected::Early(height)) => {
                        if early.try_send(Early { from, height, bytes, _ticket: ticket }).is_err() {
                            metrics::dropped("early_queue_full", 1);
                        }
                    }
                    Err(Rejected::Drop(reason)) => {
                        debug!(%from, reason, "dropped consensus message");
                        metrics::dropped(reason, 1);
                    }
                }
            });
        });
        metrics::gauge("tetrad_consensus_messages_waiting", state.intake.waiting() as f64);
    }

    /// A validator's liveness for `/health`: progress is a new committed height; work is
    /// transactions ready, heights in flight or uncommitted, or a view change.
    fn beat_validator(&mut self, state: &mut State) {
        let Some(replica) = self.replica.as_ref() else { return };
        let committed = replica.committed();
        let progressed = committed > state.progress_height;
        state.progress_height = state.progress_height.max(committed);
        let catching_up = replica.committed() > replica.executed().next();
        let view_changing = !replica.view_active();
        let pending = state.requests_pending || replica.in_flight() > 0 || view_changing || catching_up;
        let mut status = self.status_mut();
        status.liveness.view_changing = view_changing;
        status.liveness.catching_up = catching_up;
        status.liveness.beat(Instant::now(), progressed, pending);
    }

    /// A full node's liveness: progress is a new executed height; it has work until a peer says
    /// it has nothing newer.
    fn beat_follower(&mut self, state: &mut State) {
        let head = self.store.head().height;
        let progressed = head > state.progress_height;
        state.progress_height = state.progress_height.max(head);
        let up_to_date = state.up_to_date_at.is_some_and(|at| at.elapsed() < FOLLOWER_UP_TO_DATE_FOR);
        let mut status = self.status_mut();
        status.syncing = !up_to_date;
        status.liveness.catching_up = !up_to_date;
        status.liveness.beat(Instant::now(), progressed, !up_to_date);
    }

    /// An executed block: the new schedule (and, after this validator's rotation was committed,
    /// its next key) reach the replica before the executed notice.
    fn on_executed(&mut self, state: &mut State, done: Executed, inputs: &mut Vec<Input>) {
        state.delivered = state.delivered.max(done.height);
        if self.replica.is_none() && state.follow_after.is_some_and(|last| done.height >= last) {
            state.follow_after = None;
            self.follow(state);
        }
        inputs.push(Input::Schedule(done.schedule.clone()));
        if let Some((first, key)) = done.new_key {
            info!(activation = %first, "this validator's key rotation was committed; the new key signs from the activation height");
            if state.keys.iter().all(|(known, _)| *known < first) {
                state.keys.push((first, key.clone()));
                state.swap = KeySwap::new(true);
            }
            inputs.push(Input::AddKey { from: first, key });
        }
        if let Some(replica) = self.replica.as_ref() {
            // Blocks the follower handed to the executor before the replica started: the
            // replica knows those up to where it started; later ones reach it from the store.
            if done.height <= replica.executed() {
                return;
            }
            if done.height > replica.committed() {
                match self.stored_block(done.height, &done.schedule) {
                    Some(block) => {
                        inputs.push(Input::Blocks { source: BlockSource::OwnStore, blocks: vec![block] })
                    }
                    None => return,
                }
            }
        }
        inputs.push(Input::Executed {
            height: done.height,
            header_hash: done.header_hash,
            state_root: done.state_root,
        });
    }

    /// A block of the store, its certificate verified again (for the replica).
    fn stored_block(&self, height: Height, schedule: &ValidatorSchedule) -> Option<VerifiedBlock> {
        let block = match self.store.block(height) {
            Ok(Some(block)) => block,
            Ok(None) => return None,
            Err(error) => {
                warn!(%height, %error, "reading an executed block for the replica");
                return None;
            }
        };
        VerifiedBlock::verify(Arc::new(block.batch), block.certificate, schedule)
            .inspect_err(|error| warn!(%height, %error, "an executed block does not verify"))
            .ok()
    }

    /// Starts the replica's timers and decides whether the key files need a swap.
    async fn start_replica(&mut self, state: &mut State) {
        let now = state.now_ms();
        let Some(replica) = self.replica.as_mut() else { return };
        let actions = replica.start(now);
        let me = replica.me();
        let several = replica.key_heights().len() > 1;
        let needed = several || state.keys.last().is_some_and(|(_, key)| keys::needs_settle(&self.home, key));
        state.swap = KeySwap::new(needed);
        self.status_mut().validator = Some(me);
        self.carry_out(state, actions).await;
    }

    /// A validator that waits for its key: once the registry (which grows as the chain is
    /// followed) holds one of its keys, its replica starts at the head, restored from its
    /// safety records.
    async fn promote(&mut self, state: &mut State) {
        let Some(pending) = self.pending.as_ref() else { return };
        let Some(safety) = self.safety.as_ref() else { return };
        if state.promotion_checked.is_some_and(|at| at.elapsed() < PROMOTION_CHECK_EVERY) {
            return;
        }
        state.promotion_checked = Some(Instant::now());
        if pending.keys.keyring(&self.store.registry(), Height::GENESIS).is_none() {
            return;
        }
        let restored = match crate::daemon::node::restore_from(safety) {
            Ok(restored) => restored,
            Err(error) => {
                tracing::error!(%error, "cannot start the replica; stopping");
                std::process::exit(71);
            }
        };
        let low = restored.stable.as_ref().map(|stable| stable.statement.height).unwrap_or_default();
        let registry = self.store.registry();
        let Some((index, keys)) = pending.keys.keyring(&registry, low) else { return };
        if index != pending.index {
            warn!(
                found = %index,
                expected = %pending.index,
                "this home's consensus key is another validator's; staying a follower"
            );
            self.pending = None;
            return;
        }
        let schedule = self.schedule.get();
        let replica = crate::daemon::node::make_replica(
            &self.store,
            restored,
            &self.params,
            index,
            keys.clone(),
            schedule,
        );
        info!(
            validator = %index,
            height = %self.store.head().height,
            first = %keys[0].0,
            "the registry holds this validator's consensus key: validating"
        );
        self.pending = None;
        self.replica = Some(replica);
        state.keys = keys;
        state.delivered = self.store.head().height;
        self.start_replica(state).await;
    }

    /// `--accept-double-sign-risk`: fixes the margin once a quorum of validators said how far
    /// they committed, and ends the silence when the low watermark passes it.
    fn watch_margin(&mut self, state: &mut State, inputs: &[Input]) {
        let (Some(margin), Some(replica)) = (state.margin.as_mut(), self.replica.as_ref()) else { return };
        if margin.until.is_none() {
            for input in inputs {
                if let Input::Message { from, message } = input
                    && let Message::Status(status) = message.message()
                {
                    let heard = margin.heard.entry(*from).or_default();
                    *heard = (*heard).max(status.committed);
                }
            }
            let quorum = replica.schedule().latest().quorum();
            if margin.heard.len() >= quorum {
                let network = margin.heard.values().copied().max().unwrap_or_default();
                let until = Height(
                    margin.local.max(network).0
                        + self.params.watermark_window
                        + self.params.checkpoint_interval,
                );
                info!(%until, local = %margin.local, %network, "safety margin: silent until the low watermark reaches it");
                margin.until = Some(until);
            }
        }
        if let Some(until) = margin.until
            && replica.low_watermark() >= until
        {
            info!(%until, "safety margin passed: this validator signs again");
            state.margin = None;
        }
        metrics::gauge("tetrad_silent", if state.margin.is_some() { 1.0 } else { 0.0 });
    }

    /// Gossips again what has waited a while: a peer (the primary, say) that lost a gossip
    /// message would otherwise never see those transactions, and every later nonce of their
    /// senders would wait behind the gap.
    ///
    /// While the chain stands still with ready work waiting here, sooner: after a quarter of
    /// the view-change timeout. This backup's view-change timer runs while it holds ready work
    /// and restarts with every committed height, so once commits stop, work the primary never
    /// got must reach it well within one timeout; at the regular pace (2 s, the default
    /// timeout) the last transactions of a saturated run reached the primary together with the
    /// view change they caused (issue 17: 1 of 5 open-loop runs). While heights commit, the
    /// timer keeps restarting and the regular pace stands (regossip is extra load at
    /// saturation).
    fn regossip(&mut self, state: &mut State) {
        let quick = Duration::from_millis(self.params.view_change_timeout_ms / 4)
            .clamp(REGOSSIP_STALLED_MIN, REGOSSIP_AFTER);
        let stalled = state.requests_pending && state.stall_since.elapsed() >= quick;
        let age = if stalled { quick } else { REGOSSIP_AFTER };
        if state.regossiped.elapsed() < age {
            return;
        }
        state.regossiped = Instant::now();
        let txs = self.mempool.lock().unwrap_or_else(|p| p.into_inner()).regossip(
            Instant::now(),
            age,
            REGOSSIP_MAX,
        );
        for tx in txs {
            if self.gossip.try_send((*tx).clone()).is_err() {
                metrics::dropped("gossip_queue_full", 1);
                break;
            }
        }
    }

    /// Logs the replica's state when transactions wait but nothing was delivered for a while
    /// (every 10 s at most).
    fn report_stall(&mut self, state: &mut State) {
        let Some(replica) = self.replica.as_ref() else { return };
        let committed = replica.committed();
        if committed != state.stall_height {
            state.stall_height = committed;
            state.stall_since = Instant::now();
            return;
        }
        if state.requests_pending
            && state.stall_since.elapsed() >= Duration::from_secs(10)
            && state.stall_reported.is_none_or(|at| at.elapsed() >= Duration::from_secs(10))
        {
            state.stall_reported = Some(Instant::now());
            warn!(state = %replica.describe(), "no height committed for {} s", state.stall_since.elapsed().as_secs());
        }
    }

    /// After a rotation: once the replica no longer holds the old key (the low watermark passed
    /// the activation, so everything the old key signed is final), the key files are swapped
    /// and the old key erased (`keys::settle`). A failure is retried with a doubling delay,
    /// counted in `tetrad_key_swap_failures_total`; `tetrad_key_swap_pending` is 1 until done.
    fn settle_keys(&mut self, state: &mut State) {
        let Some(replica) = self.replica.as_ref() else { return };
        if !state.swap.needed || Instant::now() < state.swap.next_try {
            return;
        }
        let heights = replica.key_heights();
        let [first] = heights[..] else { return };
        let Some((_, keep)) = state.keys.iter().find(|(height, _)| *height == first) else { return };
        let registry = self.store.registry();
        let index = replica.me();
        let earlier = keys::earlier_keys(&registry, index, &keep.public_key());
        match tokio::task::block_in_place(|| keys::settle(&self.home, keep, &earlier)) {
            Ok(keys::Settled::Done) => {
                info!(first = %first, "key rotation complete on disk: consensus_key.json holds the key in use; the old key was erased");
                state.swap = KeySwap::new(false);
            }
            Ok(keys::Settled::NotYet(reason)) => {
                if state.swap.waiting.as_ref() != Some(&reason) {
                    info!(%reason, "the key files wait for the validator registry");
                    state.swap.waiting = Some(reason);
                }
                state.swap.retry_later();
            }
            Err(error) => {
                metrics::count("tetrad_key_swap_failures_total", 1);
                state.swap.retry_later();
                warn!(
                    error = %format!("{error:#}"),
                    retry_in_s = state.swap.next_try.saturating_duration_since(Instant::now()).as_secs(),
                    "finishing the key rotation on disk failed; the old key is still on disk"
                );
            }
        }
    }

    fn on_network_event(&mut self, state: &mut State, event: Event, outlets: &Outlets) {
        let verified = &outlets.verified;
        match event {
            Event::Consensus { from, bytes, ticket } => {
                if self.replica.is_none() {
                    return;
                }
                // Waits in its sender's queue (bounded by the sender's budget) for its turn.
                state.intake.push(from, Queued { bytes, ticket, arrived: Instant::now() });
            }
            Event::Blocks { from, blocks } => {
                let schedule = self.schedule.get();
                let verified = verified.clone();
                let follower = self.replica.is_none();
                let jobs = self.executor.clone();
                let expected = state.delivered.next();
                if follower {
                    state.fetching = false;
                    // The run of heights after ours that the answer holds (unverified yet: a
                    // lying answer only makes the next request wait for the follow tick).
                    let mut last = None;
                    for block in &blocks {
                        let height = block.certificate.statement.height;
                        if height != last.unwrap_or(state.delivered).next() {
                            break;
                        }
                        last = Some(height);
                    }
                    state.follow_after = last;
                }
                let handle = tokio::task::spawn_blocking(move || verify_blocks(blocks, &schedule, from));
                let delivered = if follower { Some(expected) } else { None };
                tokio::spawn(async move {
                    let Ok(blocks) = handle.await else { return };
                    if !blocks.is_empty() && delivered.is_some() {
                        metrics::count("tetrad_sync_blocks_total", blocks.len() as u64);
                    }
                    match delivered {
                        None => {
                            let input = Input::Blocks { source: BlockSource::Peer(from), blocks };
                            let _ = verified.send((input, None)).await;
                        }
                        Some(mut next) => {
                            for block in blocks {
                                if block.height() != next {
                                    continue;
                                }
                                let committed = tetrad_consensus::Committed {
                                    height: block.height(),
                                    batch: block.batch().clone(),
                                    certificate: block.certificate().clone(),
                                };
                                if jobs.send(Job::Block(committed, HeightStamps::default())).await.is_err() {
                                    return;
                                }
                                next = next.next();
                            }
                        }
                    }
                });
            }
            Event::FetchFailed { from } | Event::UpToDate { from } if self.replica.is_some() => {
                // The replica asks the next peer at once while honest peers are known ahead.
                if verified.try_send((Input::NoBlocks { peer: from }, None)).is_err() {
                    metrics::dropped("inbound_queue_full", 1);
                }
            }
            Event::FetchFailed { .. } => state.fetching = false,
            Event::UpToDate { .. } => {
                state.fetching = false;
                state.up_to_date_at = Some(Instant::now());
            }
        }
    }

    /// Follower mode: ask the next validator for the blocks after what was executed.
    fn follow(&mut self, state: &mut State) {
        let head = self.store.head().height;
        state.delivered = head;
        if state.fetching && state.fetch_sent.elapsed() < FOLLOWER_FETCH_DEADLINE {
            return;
        }
        let schedule = self.schedule.get();
        let n = schedule.latest().n() as u16;
        let peer = ValidatorIndex(state.fetch_peer % n);
        state.fetch_peer = state.fetch_peer.wrapping_add(1);
        state.fetching = true;
        state.fetch_sent = Instant::now();
        // Blocks above the schedule's horizon cannot be verified yet.
        let to = Height((head.0 + SYNC_BLOCKS_MAX).min(schedule.horizon().0));
        let command = Command::Fetch { peer, from: head.next(), to };
        if self.network.try_send(command).is_err() {
            state.fetching = false;
        }
    }

    fn status_mut(&self) -> std::sync::RwLockWriteGuard<'_, ConsensusStatus> {
        self.status.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The primary cuts a batch when the mempool has proposable work: at once if nothing is in
    /// flight (low latency under light load), otherwise when a full batch is proposable or the
    /// batch has waited the batch timeout (large batches under heavy load). Proposing while a
    /// batch is in flight (up to three at once) was measured (issue 17): the wait for the batch
    /// in flight fell from 7.5 to 2.3–4.4 ms at 1,000 tx/s, but each extra batch is a consensus
    /// round of CPU and synced writes on every node, and the prepare and commit phases grew by
    /// more than that on this 2-core machine; so one batch at a time it stays.
    ///
    /// Every replica (backups too) tells its replica whether proposable work waits: that is what
    /// a backup's view-change timer runs for. The mempool's ready set depends only on the
    /// executed state and on admission rules under which an honest primary accepts whatever is
    /// ready at a backup (docs/decisions.md, "What a backup waits for").
    fn propose(&mut self, state: &mut State, actions: &mut Actions) {
        let Some(replica) = self.replica.as_mut() else { return };
        if state.margin.is_some() {
            return;
        }
        let now = state.now_ms();
        let mut mempool = self.mempool.lock().unwrap_or_else(|p| p.into_inner());
        mempool.expire(Instant::now());
        let pending = mempool.has_ready();
        if pending != state.requests_pending {
            state.requests_pending = pending;
            merge(actions, replica.handle(now, Input::RequestsPending(pending)));
        }
        if !pending {
            state.batch_waiting_since = None;
            drop(mempool);
            return self.fill_to_checkpoint(state, actions);
        }
        state.quiet_since = None;
        if !replica.can_propose() {
            state.batch_waiting_since = None;
            return;
        }
        if state.marked_view != Some(replica.view()) {
            // A new primary's mempool never saw the batches of the old primary: those the new
            // view re-proposes (and those committed but not executed) would go into its first
            // batch again, and their copies fail their nonce check (issue 17). What this node
            // marked as proposed in an earlier view is released: the new view's log is what is
            // in flight now.
            state.marked_view = Some(replica.view());
            state.marking = true;
            mempool.release_proposals();
        }
        if state.marking {
            // Until every batch in flight is known here (a re-proposal being fetched, blocks
            // below the low watermark coming by state transfer), this node cannot know which
            // transactions are taken: it cuts nothing (issue 15, seed 1: a transaction at two
            // heights when the new primary cut before it had fetched the re-proposed batch).
            let unexecuted = replica.unexecuted_batches();
            if unexecuted.missing > 0 {
                state.batch_waiting_since = None;
                return;
            }
            mark_in_flight(&mut mempool, &unexecuted.batches, Instant::now());
            state.marking = false;
        }
        let waiting_since = *state.batch_waiting_since.get_or_insert_with(Instant::now);
        // Only what a batch could take counts: entries behind a nonce gap never fill one.
        let full = mempool.proposable() >= self.params.batch_txs_max as usize;
        let timed_out = waiting_since.elapsed() >= Duration::from_millis(self.params.batch_timeout_ms);
        if replica.in_flight() > 0 && !full && !timed_out {
            return;
        }
        let cut = mempool.cut(
            self.params.batch_txs_max as usize,
            self.params.batch_bytes_max as usize,
            Instant::now(),
        );
        drop(mempool);
        state.batch_waiting_since = None;
        if cut.txs.is_empty() {
            return;
        }
        let payload = borsh::to_vec(&cut.txs).unwrap_or_default();
        let timestamp_ms = wall_clock_ms();
        merge(actions, replica.handle(now, Input::WallClock { unix_ms: timestamp_ms }));
        merge(actions, replica.handle(now, Input::Propose { payload, timestamp_ms }));
    }

    /// An idle primary proposes empty batches up to the next checkpoint boundary once the chain
    /// has been quiet for `empty_blocks_after_idle`, so that every committed block is covered
    /// by a stable checkpoint (a finalized header) within a bound even if no other transaction
    /// ever comes. It stops at the boundary: an idle chain then stands still. It never fills
    /// while transactions are ready, heights are in flight, execution lags, a view change runs
    /// or a peer is ahead ([`Replica::checkpoint_fill_target`]); see docs/decisions.md ("Empty
    /// batches up to the checkpoint boundary").
    ///
    /// The empty batches are proposed all at once (pipelined, like a burst of transactions):
    /// the boundary is at most K − 1 heights away and the pipeline holds at least 2K.
    fn fill_to_checkpoint(&mut self, state: &mut State, actions: &mut Actions) {
        let Some(replica) = self.replica.as_mut() else { return };
        let Some(boundary) = replica.checkpoint_fill_target() else {
            state.quiet_since = None;
            return;
        };
        let quiet_since = *state.quiet_since.get_or_insert_with(Instant::now);
        if quiet_since.elapsed() < self.empty_blocks_after_idle {
            return;
        }
        state.quiet_since = None;
        let now = state.now_ms();
        let timestamp_ms = wall_clock_ms();
        merge(actions, replica.handle(now, Input::WallClock { unix_ms: timestamp_ms }));
        let mut proposed = 0u64;
        while replica.can_propose() && replica.next_height() <= boundary {
            let before = replica.next_height();
            merge(actions, replica.handle(now, Input::Propose { payload: Vec::new(), timestamp_ms }));
            if replica.next_height() == before {
                break;
            }
            proposed += 1;
        }
        metrics::count("tetrad_empty_batches_proposed_total", proposed);
        debug!(%boundary, proposed, "idle: proposed empty batches up to the checkpoint boundary");
    }

    async fn carry_out(&mut self, state: &mut State, actions: Actions) {
        let Actions {
            persist,
            send_after_persist,
            send,
            committed,
            stable_checkpoints,
            timers,
            fetch_blocks,
            diverged,
        } = actions;
        if let Some(divergence) = diverged {
            // Fail-stop: this node's state disagrees with what a quorum certified. It must not
            // sign, vote or serve blocks from that state; an operator has to look.
            tracing::error!(
                height = %divergence.height,
                certified_header = %divergence.certified.header_hash,
                certified_state_root = %divergence.certified.state_root,
                executed_header = %divergence.executed.header_hash,
                executed_state_root = %divergence.executed.state_root,
                "{divergence}; stopping"
            );
            eprintln!("tetrad: {divergence}; stopping");
            std::process::exit(72);
        }
        if let Some(replica) = self.replica.as_ref() {
            state.stamps.observe(replica.me(), &send_after_persist, &send, &committed, timing::unix_us());
        }
        if !persist.is_empty() {
            let (puts, deletes) = tetrad_consensus::safety::split_ops(&persist);
            let Some(safety) = self.safety.clone() else { return };
            let started = Instant::now();
            let result = tokio::task::block_in_place(|| safety.write(&puts, &deletes));
            metrics::observe("tetrad_safety_write_seconds", started.elapsed().as_secs_f64());
            if let Err(error) = result {
                // Sending without the record on disk could make this node sign twice after a
                // crash. Better to stop.
                tracing::error!(%error, "cannot persist consensus safety records; stopping");
                std::process::exit(71);
            }
        }
        let now = Instant::now();
        let outgoing = send_after_persist.into_iter().chain(send);
        // tetrad-byzantine only (feature `byzantine`): the misbehaviour rewrites what is sent.
        #[cfg(feature = "byzantine")]
        let outgoing = crate::daemon::byzantine::outgoing(
            self.replica.as_ref(),
            &state.keys,
            &self.schedule.get(),
            &self.network,
            outgoing.collect(),
        );
        for outgoing in outgoing {
            if state.margin.is_some() && is_signed(&outgoing.message) {
                metrics::dropped("silent_safety_margin", 1);
                continue;
            }
            let bytes = bytes::Bytes::from(outgoing.message.encode());
            let to = match outgoing.to {
                Recipient::All => None,
                Recipient::One(index) => {
                    if let Err(reason) = state.answers.allow(now, index, &outgoing.message, bytes.len()) {
                        metrics::dropped(reason, 1);
                        continue;
                    }
                    Some(index)
                }
            };
            if self.network.try_send(Command::Send { to, bytes }).is_err() {
                metrics::dropped("outbound_queue_full", 1);
            }
        }
        for block in committed {
            state.delivered = block.height;
            let stamps = state.stamps.take(block.height);
            if self.executor.send(Job::Block(block, stamps)).await.is_err() {
                state.executor_gone = true;
                return;
            }
        }
        for certificate in stable_checkpoints {
            if self.executor.send(Job::Checkpoint(certificate)).await.is_err() {
                state.executor_gone = true;
                return;
            }
        }
        for timer in timers {
            match timer {
                TimerAction::Set { timer, at_ms } => {
                    state.timers.insert(timer, at_ms);
                }
                TimerAction::Cancel(timer) => {
                    state.timers.remove(&timer);
                }
            }
        }
        for fetch in fetch_blocks {
            metrics::count("tetrad_state_transfers_total", 1);
            // Blocks above the schedule's horizon could not be verified yet: ask for them later.
            let to = fetch.to.min(self.schedule.get().horizon());
            if to >= fetch.from {
                let _ = self.network.try_send(Command::Fetch { peer: fetch.peer, from: fetch.from, to });
            }
        }
        if let Some(replica) = self.replica.as_ref() {
            let counters = replica.counters();
            metrics::gauge("tetrad_view", replica.view().0 as f64);
            metrics::counter_absolute("tetrad_view_changes_total", counters.view_changes);
            for (reason, count) in &counters.dropped {
                metrics::dropped_absolute(reason.name(), *count);
            }
            let mut status = self.status_mut();
            status.view = replica.view();
            status.view_active = replica.view_active();
            status.primary = replica.primary();
            status.stable_checkpoint = replica.low_watermark();
            status.syncing = replica.committed() > replica.executed().next();
        }
    }
}

/// Hands one input to the replica. A fresh pre-prepare of the current view whose batch holds a
/// transaction (a sender and nonce) that a batch at another height holds in flight here, or one
/// whose nonce the executed state has passed, is the primary's fault and is dropped first
/// (in_flight.rs; the check threads' [`check_batch`] saw only what had executed when they ran).
/// While the replica holds an accepted pre-prepare without its batch, fresh pre-prepares wait
/// for it. Not checked: a height whose pre-prepare the replica holds (a retransmission, or a
/// conflicting one: the replica's business) or has committed (its batch is decided, and the
/// executed state may be past it).
fn hand_in(
    replica: &mut Replica,
    in_flight: &mut InFlight,
    store: &Store,
    now: u64,
    input: Input,
) -> Actions {
    let mut actions = hand_one(replica, in_flight, store, now, input);
    if in_flight.has_waiting() && replica.accepted_without_batch() == 0 {
        for input in in_flight.take_waiting(replica.view()) {
            merge(&mut actions, hand_one(replica, in_flight, store, now, input));
        }
    }
    actions
}

fn hand_one(
    replica: &mut Replica,
    in_flight: &mut InFlight,
    store: &Store,
    now: u64,
    input: Input,
) -> Actions {
    if let Input::Message { from, message } = &input
        && let Message::PrePrepare { pre_prepare, batch } = message.message()
        && pre_prepare.body.view == replica.view()
        && replica.view_active()
        && pre_prepare.body.height > replica.committed()
        && !batch.payload.is_empty()
        && replica.pre_prepare_digest(pre_prepare.body.height).is_none()
    {
        let (from, height) = (*from, pre_prepare.body.height);
        if replica.accepted_without_batch() > 0 {
            // Bounded: one per height, and only heights the replica could accept.
            if height.0 <= replica.low_watermark().0.saturating_add(replica.config().watermark_window) {
                in_flight.defer(replica.view(), height, input);
            }
            return Actions::default();
        }
        let Ok(txs) = tetrad_ledger::tx::decode_payload(&batch.payload) else {
            metrics::dropped("malformed_batch", 1);
            return Actions::default();
        };
        in_flight.sync(&replica.unexecuted_batches().batches);
        if let Some(held) = in_flight.conflict(height, &txs) {
            debug!(%from, %height, %held, "pre-prepare refused: its batch holds a transaction in flight at another height");
            metrics::dropped("tx_in_flight_at_another_height", 1);
            return Actions::default();
        }
        // What executed since the check thread looked: one lock for the batch, and never a
        // wait for a block's synced write (while one is under way the check is skipped; the
        // index covers what the replica has not executed).
        let stale = store.try_with_state(|_, state| {
            txs.iter().any(|tx| nonce_passed(state.account(&tx.body.from).ok().flatten(), tx))
        });
        if stale == Some(true) {
            debug!(%from, %height, "pre-prepare refused: its batch holds a transaction already executed");
            metrics::dropped("stale_tx_in_batch", 1);
            return Actions::default();
        }
    }
    replica.handle(now, input)
}

/// Marks the transactions of `batches` (in flight, not executed) as proposed in the mempool.
fn mark_in_flight(mempool: &mut Mempool, batches: &[(Height, Arc<tetrad_consensus::Batch>)], now: Instant) {
    for (_, batch) in batches {
        if batch.payload.is_empty() {
            continue;
        }
        match tetrad_ledger::tx::decode_payload(&batch.payload) {
            Ok(txs) => mempool.mark_proposed(&txs, now),
            Err(error) => debug!(%error, "a batch in flight does not decode; not marked"),
        }
    }
}

/// Whether a message carries this replica's signature (what a silent replica must not send).
/// Status messages, batch requests and batches carry none.
fn is_signed(message: &Message) -> bool {
    match message {
        Message::PrePrepare { .. }
        | Message::Prepare(_)
        | Message::Commit(_)
        | Message::Checkpoint(_)
        | Message::ViewChange(_)
        | Message::NewView(_) => true,
        Message::Status(_) | Message::FetchBatch { .. } | Message::Batch { .. } => false,
    }
}

fn merge(into: &mut Actions, from: Actions) {
    into.persist.extend(from.persist);
    into.send_after_persist.extend(from.send_after_persist);
    into.send.extend(from.send);
    into.committed.extend(from.committed);
    into.stable_checkpoints.extend(from.stable_checkpoints);
    into.timers.extend(from.timers);
    into.fetch_blocks.extend(from.fetch_blocks);
    into.diverged = into.diverged.take().or(from.diverged);
}

/// Per-message timing, with the network's `consensus in` and the driver's `consensus event`.
fn trace_handled(input: &Input) {
    if let Input::Message { from, message } = input {
        tracing::trace!(%from, kind = message.message().kind(), "consensus handled");
    }
}

/// Why a consensus message did not reach the replica.
#[derive(Debug)]
enum Rejected {
    /// Above the schedule horizon: kept until the horizon passes this height.
    Early(Height),
    /// Dropped, counted under this reason.
    Drop(&'static str),
}

/// A message to check again once the schedule horizon reaches `height` (with its sender's
/// ticket until the driver has taken it).
struct Early {
    from: ValidatorIndex,
    height: Height,
    bytes: bytes::Bytes,
    _ticket: Option<Ticket>,
}

/// Where verification results go: verified inputs to the replica, early messages back to the
/// driver to wait.
struct Outlets {
    verified: mpsc::Sender<(Input, Option<Ticket>)>,
    early: mpsc::Sender<Early>,
}

/// What checking a consensus message needs, captured when it is handed to verification.
#[derive(Clone)]
struct Checks {
    schedule: Arc<ValidatorSchedule>,
    window: u64,
    mempool: Arc<Mutex<Mempool>>,
    store: Arc<Store>,
    genesis_hash: Digest,
    params: ConsensusParams,
    freshness: Freshness,
}

impl Checks {
    /// Decodes a message, drops it if stale (before any signature is checked), then verifies
    /// it; for a pre-prepare also checks its batch ([`check_batch`]).
    fn check(&self, bytes: &[u8]) -> Result<tetrad_consensus::VerifiedMessage, Rejected> {
        let message = Message::decode(bytes).map_err(|_| Rejected::Drop("malformed_message"))?;
        if let Some(reason) = self.freshness.stale(&message) {
            return Err(Rejected::Drop(reason));
        }
        let verified = verify(message, &self.schedule, self.window).map_err(|error| match error {
            VerifyError::BeyondHorizon { height, .. } => Rejected::Early(height),
            error => Rejected::Drop(error.reason()),
        })?;
        if let Message::PrePrepare { batch, .. } = verified.message()
            && !batch.payload.is_empty()
        {
            check_batch(batch, &self.mempool, &*self.store, &self.genesis_hash, &self.params)?;
        }
        Ok(verified)
    }
}

/// The batch of a fresh pre-prepare (a new view's re-proposals come by fetch, never through
/// here: they must be accepted as they were prepared): within the size limits; every
/// transaction valid (those in the mempool were verified at admission); no transaction twice,
/// nor two for one sender's nonce; and none whose nonce the sender's account has already
/// passed in the blocks executed here (issue 15). Such a copy could only fail its nonce check
/// at execution (the block leaves it out) and takes a place in the batch: an honest primary never cuts one
/// (it marks what is in flight before it cuts), so the batch is the primary's fault and is
/// dropped. The executed state here is never ahead of the height before the batch's, so the
/// nonce rule refuses nothing an honest primary could propose; it catches what executed, not
/// what is in flight (execution catches those copies).
fn check_batch(
    batch: &tetrad_consensus::Batch,
    mempool: &Mutex<Mempool>,
    ledger: &dyn crate::daemon::mempool::Ledger,
    genesis_hash: &Digest,
    params: &ConsensusParams,
) -> Result<(), Rejected> {
    if batch.payload.len() > params.batch_bytes_max as usize {
        return Err(Rejected::Drop("oversized_batch"));
    }
    let txs: Vec<Tx> = borsh::from_slice(&batch.payload).map_err(|_| Rejected::Drop("malformed_batch"))?;
    if txs.is_empty() || txs.len() > params.batch_txs_max as usize {
        return Err(Rejected::Drop("oversized_batch"));
    }
    let mut seen = HashSet::with_capacity(txs.len());
    if !txs.iter().all(|tx| seen.insert((tx.body.from, tx.body.nonce))) {
        return Err(Rejected::Drop("duplicate_tx_in_batch"));
    }
    let unknown: Vec<Tx> = {
        let pool = mempool.lock().unwrap_or_else(|p| p.into_inner());
        txs.into_iter().filter(|tx| !pool.contains(&tx.hash())).collect()
    };
    // What the mempool holds is never behind the executed state (a block evicts what it
    // passed); only the others are looked up, before their signatures are checked.
    let stale = unknown.iter().any(|tx| nonce_passed(ledger.account(&tx.body.from), tx));
    if stale {
        return Err(Rejected::Drop("stale_tx_in_batch"));
    }
    if metrics::check_txs(&unknown, genesis_hash).iter().any(Result::is_err) {
        return Err(Rejected::Drop("invalid_tx_in_batch"));
    }
    Ok(())
}

/// Whether the sender's executed `account` has passed `tx`'s nonce (a copy of what executed).
fn nonce_passed(account: Option<tetrad_ledger::Account>, tx: &Tx) -> bool {
    account.is_some_and(|account| account.nonce > tx.body.nonce)
}

/// Verifies the certificates of fetched blocks; drops (and counts) the ones that fail.
fn verify_blocks(
    blocks: Vec<SyncBlock>,
    schedule: &ValidatorSchedule,
    from: ValidatorIndex,
) -> Vec<VerifiedBlock> {
    let mut verified = Vec::with_capacity(blocks.len());
    for block in blocks {
        match VerifiedBlock::verify(Arc::new(block.batch), block.certificate, schedule) {
            Ok(block) => verified.push(block),
            Err(error) => {
                warn!(peer = %from, %error, "block from state transfer refused");
                metrics::dropped("bad_sync_block", 1);
            }
        }
    }
    verified
}

/// A view change is an operator-visible event: say when this replica starts one (with what it
/// was waiting for) and when a new view is installed.
fn log_view_change((view, active): (View, bool), replica: &Replica) {
    if (replica.view(), replica.view_active()) == (view, active) {
        return;
    }
    if replica.view_active() {
        info!(view = %replica.view(), "new view installed");
    } else {
        warn!(from = %view, state = %replica.describe(), "view change started");
    }
}

#[cfg(test)]
mod tests {
    use tetrad_ledger::scratch::ScratchDir;
    use tetrad_ledger::testkit::TestChain;

    use super::*;
    use crate::daemon::mempool::MempoolConfig;

    /// A full node's driver over a fresh store, with the ends of its channels.
    fn driver(dir: &ScratchDir) -> (Driver, mpsc::Sender<Event>, watch::Sender<bool>, mpsc::Receiver<Job>) {
        let chain = TestChain::new(4, 2, 1000);
        let store = Arc::new(Store::open_or_init(&dir.join("data"), &chain.genesis).expect("store"));
        let schedule = SharedSchedule::new(store.registry().schedule(Height::GENESIS).expect("schedule"));
        let (network, _commands) = mpsc::channel(16);
        let (events_tx, events) = mpsc::channel(16);
        let (executor, jobs) = mpsc::channel(16);
        let (_executed_tx, executed) = mpsc::channel(16);
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (gossip, _gossip_rx) = mpsc::channel(16);
        let params = ConsensusParams::default();
        let driver = Driver {
            replica: None,
            safety: None,
            keys: Vec::new(),
            pending: None,
            margin_from: None,
            store,
            mempool: Arc::new(Mutex::new(Mempool::new(MempoolConfig::default()))),
            schedule,
            home: Home::new(dir.path()),
            genesis_hash: chain.genesis_hash,
            network,
            events,
            executor,
            executed,
            status: Arc::new(RwLock::new(ConsensusStatus::new(None, Duration::from_secs(6)))),
            shutdown,
            new_txs: Arc::new(tokio::sync::Notify::new()),
            verifications: Arc::new(tokio::sync::Semaphore::new(VERIFICATIONS_MAX)),
            gossip,
            limits: FrameLimits::from_genesis(4, params.watermark_window, params.batch_bytes_max as usize),
            params,
            empty_blocks_after_idle: Duration::from_millis(crate::config::EMPTY_BLOCKS_AFTER_IDLE_MS),
        };
        (driver, events_tx, shutdown_tx, jobs)
    }

    /// Issue 17: a backup that becomes the primary of a new view holds the old primary's
    /// transactions in its mempool (they were gossiped to it), unmarked. The new view re-proposes
    /// the batch that was prepared; the new primary's first cut must not put the same
    /// transactions into a second batch (the copies fail their nonce check at execution, and the
    /// open-loop benchmark counted more commits than submissions).
    #[tokio::test]
    async fn a_new_primary_does_not_cut_what_its_new_view_re_proposes() {
        new_primary_scenario(true).await;
    }

    /// Issue 15 (seed 1 of the fault campaign: one transaction at heights 364 and 365): the new
    /// primary never received the old primary's pre-prepare, only the prepared certificate in
    /// the view-changes, so its new view re-proposes a digest whose batch it must fetch. Until
    /// the batch arrives it cannot know which transactions are taken, so it must not cut; once it
    /// has the batch, its cut leaves them out.
    #[tokio::test]
    async fn a_new_primary_waits_for_a_re_proposed_batch_it_lacks_before_it_cuts() {
        new_primary_scenario(false).await;
    }

    /// Validator 0 proposes three transactions at height 1 in view 0; validators 2 and 3 prepare
    /// it and move to view 1, whose primary is validator 1 (this driver). Validator 1 saw the
    /// pre-prepare (`saw_pre_prepare`) or only the prepared certificate in the view-changes.
    /// Every transaction, and one more that no batch holds, is in its mempool.
    async fn new_primary_scenario(saw_pre_prepare: bool) {
        use tetrad_consensus::certificate::Signed;
        use tetrad_consensus::messages::{Batch, PrePrepare, Prepare};
        use tetrad_consensus::view_messages::{PreparedCertificate, ViewChange};
        use tetrad_consensus::{ReplicaConfig, VerifiedMessage};

        let dir = ScratchDir::new("driver-new-primary").expect("scratch dir");
        let (mut driver, _events, _shutdown, _jobs) = driver(&dir);
        let chain = TestChain::new(4, 2, 1000);
        let txs = vec![chain.transfer(0, 0, 1, 1), chain.transfer(0, 1, 1, 1), chain.transfer(1, 0, 0, 1)];
        // Reached the new primary after the old primary's batch was cut: its own to propose.
        let later = chain.transfer(1, 1, 0, 1);
        {
            let mut pool = driver.mempool.lock().expect("mempool");
            for tx in txs.iter().chain([&later]) {
                pool.admit(tx.clone(), tx.hash(), &*driver.store, Instant::now()).expect("admitted");
            }
        }
        let schedule = driver.schedule.get();
        let window = driver.params.watermark_window;
        let set = schedule.at(Height(1)).clone();
        let checked =
            |message: Message| -> VerifiedMessage { verify(message, &schedule, window).expect("verifies") };
        let params = &driver.params;
        let config = ReplicaConfig::new(
            params.checkpoint_interval,
            params.watermark_window,
            params.view_change_timeout_ms,
            params.view_change_timeout_max_ms,
        );
        let me = ValidatorIndex(1);
        let mut replica = Replica::new(
            config,
            me,
            vec![(Height::GENESIS, chain.validator_keys[1].clone())],
            schedule.clone(),
            Height::GENESIS,
            Default::default(),
        );
        let _ = replica.start(0);
        let _ = replica.handle(0, Input::WallClock { unix_ms: wall_clock_ms() });
        let handle = |replica: &mut Replica, from: u16, message: Message| {
            let message = checked(message);
            let _ = replica.handle(1, Input::Message { from: ValidatorIndex(from), message });
        };
        let batch = Arc::new(Batch {
            view: View(0),
            proposer: ValidatorIndex(0),
            timestamp_ms: wall_clock_ms(),
            payload: borsh::to_vec(&txs).expect("encodes"),
        });
        let digest = batch.digest();
        let pre_prepare = PrePrepare { view: View(0), height: Height(1), digest };
        let pre_prepare = Signed::sign(pre_prepare, ValidatorIndex(0), &chain.validator_keys[0], &set);
        let prepares: Vec<Signed<Prepare>> = [2u16, 3]
            .into_iter()
            .map(|signer| {
                let prepare = Prepare { view: View(0), height: Height(1), digest };
                Signed::sign(prepare, ValidatorIndex(signer), &chain.validator_keys[signer as usize], &set)
            })
            .collect();
        let prepared = if saw_pre_prepare {
            handle(&mut replica, 0, Message::PrePrepare { pre_prepare, batch: batch.clone() });
            for prepare in prepares {
                handle(&mut replica, prepare.signer.0, Message::Prepare(prepare));
            }
            Vec::new()
        } else {
            let prepares = prepares.into_iter().map(|prepare| (prepare.signer, prepare.signature)).collect();
            vec![PreparedCertificate { pre_prepare, prepares }]
        };
        // Validators 2 and 3 ask for view 1, whose primary is validator 1: it joins, gathers a
        // quorum and re-proposes the prepared batch at height 1.
        for signer in [2u16, 3] {
            let body = ViewChange { new_view: View(1), checkpoint: None, prepared: prepared.clone() };
            let view_change =
                Signed::sign(body, ValidatorIndex(signer), &chain.validator_keys[signer as usize], &set);
            handle(&mut replica, signer, Message::ViewChange(view_change));
        }
        assert!(replica.view_active() && replica.is_primary(), "{}", replica.describe());
        assert_eq!(replica.view(), View(1));
        driver.replica = Some(replica);

        let mut state = driver.new_state();
        let mut actions = Actions::default();
        let proposed = |actions: &Actions| -> Vec<Tx> {
            actions
                .send_after_persist
                .iter()
                .filter_map(|outgoing| match &outgoing.message {
                    Message::PrePrepare { pre_prepare, batch } if pre_prepare.signer == me => {
                        Some(tetrad_ledger::tx::decode_payload(&batch.payload).expect("decodes"))
                    }
                    _ => None,
                })
                .flatten()
                .collect()
        };
        // With the re-proposal in flight, the primary cuts once the batch timeout has passed.
        driver.propose(&mut state, &mut actions);
        tokio::time::sleep(Duration::from_millis(driver.params.batch_timeout_ms + 10)).await;
        driver.propose(&mut state, &mut actions);
        if !saw_pre_prepare {
            let cut = proposed(&actions);
            assert!(cut.is_empty(), "the new primary cut before it knew the re-proposed batch: {cut:?}");
            let replica = driver.replica.as_mut().expect("replica");
            handle(replica, 2, Message::Batch { height: Height(1), batch: batch.clone() });
            driver.propose(&mut state, &mut actions);
            tokio::time::sleep(Duration::from_millis(driver.params.batch_timeout_ms + 10)).await;
            driver.propose(&mut state, &mut actions);
        }
        let proposed = proposed(&actions);
        let again: Vec<_> = proposed.iter().filter(|tx| txs.contains(tx)).collect();
        assert!(again.is_empty(), "the new primary proposed again: {again:?}");
        assert_eq!(proposed, vec![later], "the new primary proposes what no batch holds");
    }

    /// Replicas of a 4-validator test chain and the messages their tests exchange, for
    /// [`hand_in`].
    struct Scene {
        chain: TestChain,
        schedule: Arc<ValidatorSchedule>,
        config: tetrad_consensus::ReplicaConfig,
        window: u64,
    }

    impl Scene {
        fn new(driver: &Driver) -> Scene {
            let params = &driver.params;
            Scene {
                chain: TestChain::new(4, 2, 1000),
                schedule: driver.schedule.get(),
                config: tetrad_consensus::ReplicaConfig::new(
                    params.checkpoint_interval,
                    params.watermark_window,
                    params.view_change_timeout_ms,
                    params.view_change_timeout_max_ms,
                ),
                window: params.watermark_window,
            }
        }

        fn replica(&self, me: u16) -> Replica {
            let mut replica = Replica::new(
                self.config.clone(),
                ValidatorIndex(me),
                vec![(Height::GENESIS, self.chain.validator_keys[me as usize].clone())],
                self.schedule.clone(),
                Height::GENESIS,
                Default::default(),
            );
            let _ = replica.start(0);
            let _ = replica.handle(0, Input::WallClock { unix_ms: wall_clock_ms() });
            replica
        }

        fn sign<T: tetrad_consensus::Statement>(&self, body: T, signer: u16) -> tetrad_consensus::Signed<T> {
            let set = self.schedule.at(Height(1));
            tetrad_consensus::Signed::sign(
                body,
                ValidatorIndex(signer),
                &self.chain.validator_keys[signer as usize],
                set,
            )
        }

        fn batch(&self, view: u64, txs: &[Tx]) -> Arc<tetrad_consensus::Batch> {
            Arc::new(tetrad_consensus::Batch {
                view: View(view),
                proposer: ValidatorIndex(view as u16 % 4),
                timestamp_ms: wall_clock_ms(),
                payload: borsh::to_vec(txs).expect("encodes"),
            })
        }

        /// The primary of `view`'s pre-prepare of `batch` at `height`.
        fn pre_prepare(&self, view: u64, height: u64, batch: &Arc<tetrad_consensus::Batch>) -> Message {
            let body = tetrad_consensus::PrePrepare {
                view: View(view),
                height: Height(height),
                digest: batch.digest(),
            };
            Message::PrePrepare { pre_prepare: self.sign(body, view as u16 % 4), batch: batch.clone() }
        }

        fn view_change(
            &self,
            signer: u16,
            view: u64,
            prepared: Vec<tetrad_consensus::view_messages::PreparedCertificate>,
        ) -> Message {
            let body = tetrad_consensus::view_messages::ViewChange {
                new_view: View(view),
                checkpoint: None,
                prepared,
            };
            Message::ViewChange(self.sign(body, signer))
        }

        fn checked(&self, message: Message) -> tetrad_consensus::VerifiedMessage {
            verify(message, &self.schedule, self.window).expect("verifies")
        }

        /// `message` from `from`, verified, through [`hand_in`].
        fn hand(
            &self,
            backup: &mut Replica,
            in_flight: &mut InFlight,
            store: &Store,
            from: u16,
            message: Message,
        ) -> Actions {
            let input = Input::Message { from: ValidatorIndex(from), message: self.checked(message) };
            hand_in(backup, in_flight, store, 1, input)
        }

        /// Validator `view % 4` installs `view` from these view-changes: its new-view.
        fn new_view(&self, view: u64, view_changes: Vec<(u16, Message)>) -> Message {
            let mut primary = self.replica(view as u16 % 4);
            for (from, message) in view_changes {
                let actions = primary
                    .handle(1, Input::Message { from: ValidatorIndex(from), message: self.checked(message) });
                for outgoing in actions.send_after_persist.iter().chain(&actions.send) {
                    if matches!(outgoing.message, Message::NewView(_)) {
                        return outgoing.message.clone();
                    }
                }
            }
            panic!("validator {} did not install view {view}: {}", view % 4, primary.describe());
        }
    }

    /// The view-change a replica sent (joining a view change), from its actions.
    fn view_change_sent(actions: &Actions) -> Message {
        actions
            .send_after_persist
            .iter()
            .map(|outgoing| outgoing.message.clone())
            .find(|message| matches!(message, Message::ViewChange(_)))
            .expect("the backup joins the view change")
    }

    /// What a replica prepared, from its actions.
    fn prepared(actions: &Actions) -> Vec<(View, Height)> {
        actions
            .send_after_persist
            .iter()
            .filter_map(|outgoing| match &outgoing.message {
                Message::Prepare(prepare) => Some((prepare.body.view, prepare.body.height)),
                _ => None,
            })
            .collect()
    }

    /// A Byzantine primary proposes, at height 2, a copy of a transaction its batch at height 1
    /// holds (accepted here, not executed), or another transaction for that sender and nonce: the
    /// copy could only fail its nonce check at execution, yet it would be in the chain twice. The
    /// backup refuses both; a batch of other transactions at height 2 is accepted. Then the view
    /// changes with nothing prepared, and the new primary proposes the first transaction again,
    /// at height 2 of the new view: in flight nowhere any more, so accepted (what the old view
    /// held must not outlive it).
    #[tokio::test]
    async fn a_backup_refuses_a_batch_holding_a_transaction_in_flight_at_another_height() {
        let dir = ScratchDir::new("driver-in-flight").expect("scratch dir");
        let (driver, _events, _shutdown, _jobs) = driver(&dir);
        let scene = Scene::new(&driver);
        let chain = &scene.chain;
        let mut backup = scene.replica(2);
        let mut in_flight = InFlight::default();
        let mut hand = |backup: &mut Replica, from: u16, message: Message| {
            scene.hand(backup, &mut in_flight, &driver.store, from, message)
        };
        let first = chain.transfer(0, 0, 1, 1);
        let same_nonce = chain.transfer(0, 0, 1, 2);
        let other = chain.transfer(1, 0, 0, 1);
        let actions =
            hand(&mut backup, 0, scene.pre_prepare(0, 1, &scene.batch(0, std::slice::from_ref(&first))));
        assert_eq!(prepared(&actions), vec![(View(0), Height(1))]);
        for copy in [&first, &same_nonce] {
            let batch = scene.batch(0, &[other.clone(), copy.clone()]);
            let actions = hand(&mut backup, 0, scene.pre_prepare(0, 2, &batch));
            assert!(
                prepared(&actions).is_empty(),
                "the backup prepared a copy of a transaction in flight at height 1"
            );
        }
        let actions =
            hand(&mut backup, 0, scene.pre_prepare(0, 2, &scene.batch(0, std::slice::from_ref(&other))));
        assert_eq!(prepared(&actions), vec![(View(0), Height(2))]);

        // View 1 (primary: validator 1), with nothing prepared: heights 1 and 2 are free again.
        let (from_3, from_0) = (scene.view_change(3, 1, Vec::new()), scene.view_change(0, 1, Vec::new()));
        let _ = hand(&mut backup, 3, from_3.clone());
        let joined = hand(&mut backup, 0, from_0.clone());
        let from_2 = view_change_sent(&joined);
        let new_view = scene.new_view(1, vec![(3, from_3), (0, from_0), (2, from_2)]);
        let _ = hand(&mut backup, 1, new_view);
        assert!(backup.view_active() && backup.view() == View(1), "{}", backup.describe());
        let actions =
            hand(&mut backup, 1, scene.pre_prepare(1, 1, &scene.batch(1, std::slice::from_ref(&other))));
        assert_eq!(prepared(&actions), vec![(View(1), Height(1))]);
        let actions =
            hand(&mut backup, 1, scene.pre_prepare(1, 2, &scene.batch(1, std::slice::from_ref(&first))));
        assert_eq!(prepared(&actions), vec![(View(1), Height(2))], "the old view's proposal outlived it");
    }

    /// A new view re-proposes, at height 1, a batch this backup never saw (prepared by the
    /// others): it accepts the re-proposal without the batch and fetches it. Fresh pre-prepares
    /// must not be judged blind meanwhile: a batch of others at height 2 and a copy of the
    /// re-proposed transaction at height 3 both wait, and when the batch comes the first is
    /// prepared and the copy refused.
    #[tokio::test]
    async fn a_fresh_batch_waits_for_the_re_proposed_batch_it_is_checked_against() {
        use tetrad_consensus::view_messages::PreparedCertificate;

        let dir = ScratchDir::new("driver-in-flight-wait").expect("scratch dir");
        let (driver, _events, _shutdown, _jobs) = driver(&dir);
        let scene = Scene::new(&driver);
        let chain = &scene.chain;
        let mut backup = scene.replica(3);
        let mut in_flight = InFlight::default();
        let mut hand = |backup: &mut Replica, from: u16, message: Message| {
            scene.hand(backup, &mut in_flight, &driver.store, from, message)
        };
        let first = chain.transfer(0, 0, 1, 1);
        let other = chain.transfer(1, 0, 0, 1);
        // Validator 0's batch at height 1, prepared by validators 1 and 2; validator 3 never saw it.
        let old = scene.batch(0, std::slice::from_ref(&first));
        let Message::PrePrepare { pre_prepare, .. } = scene.pre_prepare(0, 1, &old) else { unreachable!() };
        let prepares = [1u16, 2]
            .into_iter()
            .map(|signer| {
                let body =
                    tetrad_consensus::Prepare { view: View(0), height: Height(1), digest: old.digest() };
                (ValidatorIndex(signer), scene.sign(body, signer).signature)
            })
            .collect();
        let certificate = PreparedCertificate { pre_prepare, prepares };
        let from_1 = scene.view_change(1, 1, vec![certificate.clone()]);
        let from_2 = scene.view_change(2, 1, vec![certificate]);
        let _ = hand(&mut backup, 1, from_1.clone());
        let joined = hand(&mut backup, 2, from_2.clone());
        let from_3 = view_change_sent(&joined);
        let new_view = scene.new_view(1, vec![(2, from_2), (3, from_3), (1, from_1)]);
        let _ = hand(&mut backup, 1, new_view);
        assert!(backup.view_active() && backup.view() == View(1), "{}", backup.describe());
        assert_eq!(backup.accepted_without_batch(), 1, "{}", backup.describe());

        // A fresh batch of others at height 2 and a copy at height 3 both wait.
        let fresh =
            hand(&mut backup, 1, scene.pre_prepare(1, 2, &scene.batch(1, std::slice::from_ref(&other))));
        let copy =
            hand(&mut backup, 1, scene.pre_prepare(1, 3, &scene.batch(1, std::slice::from_ref(&first))));
        assert!(
            prepared(&fresh).is_empty() && prepared(&copy).is_empty(),
            "judged before the re-proposed batch was known"
        );
        // The batch comes: the waiting ones are judged, the fresh one prepared, the copy refused.
        let actions = hand(&mut backup, 2, Message::Batch { height: Height(1), batch: old.clone() });
        assert_eq!(backup.accepted_without_batch(), 0);
        assert_eq!(
            prepared(&actions),
            vec![(View(1), Height(2))],
            "the waiting fresh batch must be prepared and the copy of a re-proposed transaction refused"
        );
    }

    /// Issue 15: a fresh batch that carries a transaction twice (or two for one sender's
    /// nonce), or a transaction whose nonce the sender's executed account has passed (a replay
    /// of one already in the chain), is the primary's fault: dropped before the replica sees it,
    /// so the copy never gets into a second block. A batch of fresh transactions passes.
    #[test]
    fn a_batch_that_replays_a_transaction_is_dropped() {
        use tetrad_consensus::messages::Batch;
        use tetrad_ledger::Account;

        /// Every account has sent `nonce` transactions.
        struct Sent {
            nonce: u64,
        }
        impl crate::daemon::mempool::Ledger for Sent {
            fn account(&self, _address: &tetrad_ledger::tx::Address) -> Option<Account> {
                Some(Account { balance: 1_000, nonce: self.nonce, slot: 0 })
            }
            fn validator_key(&self, _validator: ValidatorIndex) -> Option<tetrad_consensus::PublicKey> {
                None
            }
        }
        let chain = TestChain::new(4, 2, 1000);
        let params = ConsensusParams::default();
        let mempool = Mutex::new(Mempool::new(MempoolConfig::default()));
        let batch = |txs: &[Tx]| Batch {
            view: View(0),
            proposer: ValidatorIndex(0),
            timestamp_ms: 1,
            payload: borsh::to_vec(txs).expect("encodes"),
        };
        let check = |txs: &[Tx], nonce: u64| {
            check_batch(&batch(txs), &mempool, &Sent { nonce }, &chain.genesis_hash, &params)
        };
        let first = chain.transfer(0, 1, 1, 1);
        let other = chain.transfer(1, 1, 0, 1);
        assert!(check(&[first.clone(), other.clone()], 1).is_ok());
        let twice = check(&[first.clone(), other.clone(), first.clone()], 1);
        assert!(matches!(twice, Err(Rejected::Drop("duplicate_tx_in_batch"))), "{twice:?}");
        let same_nonce = check(&[first.clone(), chain.transfer(0, 1, 1, 2)], 1);
        assert!(matches!(same_nonce, Err(Rejected::Drop("duplicate_tx_in_batch"))), "{same_nonce:?}");
        // Nonce 1 executed: the accounts' next nonce is 2.
        let replayed = check(&[first, other], 2);
        assert!(matches!(replayed, Err(Rejected::Drop("stale_tx_in_batch"))), "{replayed:?}");
    }

    #[tokio::test]
    async fn the_driver_stops_with_an_error_when_the_network_task_is_gone() {
        let dir = ScratchDir::new("driver-network-gone").expect("scratch dir");
        let (driver, events, _shutdown, _jobs) = driver(&dir);
        let running = tokio::spawn(driver.run());
        drop(events);
        let stopped =
            tokio::time::timeout(Duration::from_secs(5), running).await.expect("stops").expect("no panic");
        assert!(matches!(stopped, Err(Stopped::NetworkGone)), "{stopped:?}");
    }

    #[tokio::test]
    async fn a_shutdown_is_not_an_error() {
        let dir = ScratchDir::new("driver-shutdown").expect("scratch dir");
        let (driver, _events, shutdown, _jobs) = driver(&dir);
        let running = tokio::spawn(driver.run());
        shutdown.send(true).expect("driver listening");
        let stopped =
            tokio::time::timeout(Duration::from_secs(5), running).await.expect("stops").expect("no panic");
        assert!(stopped.is_ok(), "{stopped:?}");
    }
}
