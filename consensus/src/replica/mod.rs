//! The PBFT replica as a pure state machine: `Replica::handle(now, input) -> Actions`.
//!
//! One file per protocol concern: `pre_prepare.rs` (proposals and PBFT §4.2's first phase),
//! `prepare.rs`, `commit.rs`, `checkpoint.rs` (§4.3), `view_change.rs` (§4.4), `transfer.rs`
//! (status, retransmission, batch fetch and state transfer). This file holds the state, the
//! inputs and outputs, and the helpers every phase uses.

mod checkpoint;
mod commit;
mod pre_prepare;
mod prepare;
mod transfer;
mod view_change;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::certificate::{CheckpointCertificate, CommitCertificate, Signed};
use crate::crypto::SecretKey;
use crate::messages::{Batch, Checkpoint, Commit, PrePrepare, Prepare};
use crate::safety::{Restored, Safety, SafetyRecord, SafetyWrite};
use crate::types::{Digest, Height, ValidatorIndex, View};
use crate::validators::{ValidatorSchedule, ValidatorSet};
use crate::view_messages::{NewView, PreparedCertificate, ViewChange};
use crate::wire::{Message, VerifiedBlock, VerifiedMessage};

/// Parameters of the replica, from genesis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// K: heights between checkpoints.
    pub checkpoint_interval: u64,
    /// Heights that may be in flight above the last stable checkpoint.
    pub watermark_window: u64,
    /// T: how long pending work may wait before a view change; doubles per consecutive one.
    pub view_change_timeout_ms: u64,
    pub view_change_timeout_max_ms: u64,
    /// Period of status messages, retransmissions and state-transfer retries.
    pub status_interval_ms: u64,
    /// View-changes for views further ahead than this are dropped (a verified new-view is
    /// accepted at any distance).
    pub views_ahead_max: u64,
    /// Most heights the primary keeps in flight (proposed but not committed).
    pub pipeline_max: u64,
    /// How far a batch's timestamp may be from this replica's own wall clock, either way
    /// ([`Input::WallClock`]); see docs/decisions.md ("Batch timestamps").
    pub timestamp_skew_max_ms: u64,
}

/// Default bound on |batch timestamp − own wall clock|.
pub const TIMESTAMP_SKEW_MAX_MS: u64 = 15_000;

impl ReplicaConfig {
    /// Derived from the genesis parameters; the status interval is a quarter of T.
    pub fn new(
        checkpoint_interval: u64,
        watermark_window: u64,
        view_change_timeout_ms: u64,
        view_change_timeout_max_ms: u64,
    ) -> Self {
        ReplicaConfig {
            checkpoint_interval,
            watermark_window,
            view_change_timeout_ms,
            view_change_timeout_max_ms,
            status_interval_ms: (view_change_timeout_ms / 4).max(1),
            views_ahead_max: 64,
            pipeline_max: watermark_window,
            timestamp_skew_max_ms: TIMESTAMP_SKEW_MAX_MS,
        }
    }
}

/// The replica's timers. The driver sets and cancels them as told and feeds expiries back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// PBFT §4.4: pending work has waited too long, or a view change has not completed.
    ViewChange,
    /// Status, retransmission and state-transfer retries.
    Status,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerAction {
    /// Fire `timer` at `at_ms` (replacing an earlier setting).
    Set {
        timer: Timer,
        at_ms: u64,
    },
    Cancel(Timer),
}

/// Who a message goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// Every other validator.
    All,
    One(ValidatorIndex),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: Recipient,
    pub message: Message,
}

/// A batch the replicas agreed on, with the certificate that proves it. Delivered in height
/// order, each height exactly once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub height: Height,
    pub batch: Arc<Batch>,
    pub certificate: CommitCertificate,
}

/// A request for committed blocks `[from, to]` from `peer` (state transfer). The answers come
/// back as [`Input::Blocks`], each verified with [`VerifiedBlock::verify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchBlocks {
    pub from: Height,
    pub to: Height,
    pub peer: ValidatorIndex,
}

/// This replica's execution disagrees with a quorum's certified checkpoint: a determinism bug,
/// corrupted state, or a history that does not chain to the certificate. The replica has
/// stopped for good (fail-stop): it signs, sends and delivers nothing more. The node must stop
/// too, naming the height and both roots, and never serve its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    pub height: Height,
    /// What a quorum certified at `height`.
    pub certified: Checkpoint,
    /// What this replica executed at `height`.
    pub executed: Checkpoint,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this replica diverged at height {}: a quorum certified header {} with state root {}, but this node executed header {} with state root {}",
            self.height,
            self.certified.header_hash,
            self.certified.state_root,
            self.executed.header_hash,
            self.executed.state_root,
        )
    }
}

/// Where committed blocks handed to the replica come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockSource {
    /// A state-transfer answer from this peer: only blocks of a range asked of it are kept.
    Peer(ValidatorIndex),
    /// This node's own store (blocks it executed before the replica knew them).
    OwnStore,
}

/// What one call to [`Replica::handle`] asks the driver to do, in this order: make `persist`
/// durable, then send `send_after_persist`; `send` may go at once. Execute `committed` in
/// order and report each with [`Input::Executed`].
#[must_use]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    pub persist: Vec<SafetyWrite>,
    pub send_after_persist: Vec<Outgoing>,
    pub send: Vec<Outgoing>,
    pub committed: Vec<Committed>,
    pub stable_checkpoints: Vec<CheckpointCertificate>,
    pub timers: Vec<TimerAction>,
    pub fetch_blocks: Vec<FetchBlocks>,
    /// Set once, when the replica finds that it diverged; it has stopped. The node exits.
    pub diverged: Option<Divergence>,
}

impl Actions {
    pub fn is_empty(&self) -> bool {
        *self == Actions::default()
    }
}

/// What the replica is told.
#[derive(Clone, Debug)]
pub enum Input {
    /// A message from validator `from` (the transport's authenticated sender).
    Message {
        from: ValidatorIndex,
        message: VerifiedMessage,
    },
    Timer(Timer),
    /// A new batch for the primary to propose (see [`Replica::can_propose`]). The layer above
    /// has already checked every transaction in it.
    Propose {
        payload: Vec<u8>,
        timestamp_ms: u64,
    },
    /// Whether client requests are waiting that no batch holds yet (keeps the view-change
    /// timer running against a primary that proposes nothing).
    RequestsPending(bool),
    /// The batch at `height` was executed (in order) with this header hash and state root.
    Executed {
        height: Height,
        header_hash: Digest,
        state_root: Digest,
    },
    /// Committed blocks, certificates verified, from a peer's state-transfer answer or the
    /// node's own store.
    Blocks {
        source: BlockSource,
        blocks: Vec<VerifiedBlock>,
    },
    /// A peer answered this replica's block request with no block, or the request failed (no
    /// connection, refused, timed out).
    NoBlocks {
        peer: ValidatorIndex,
    },
    /// The validator schedule changed (a rotation was executed) or its horizon moved.
    Schedule(Arc<ValidatorSchedule>),
    /// This validator's next consensus key, which signs heights from `from` on.
    AddKey {
        from: Height,
        key: SecretKey,
    },
    /// The wall clock (milliseconds since the Unix epoch) of this replica's machine. The driver
    /// passes it before handing in messages; a backup checks batch timestamps against it and
    /// refuses every proposal until it has been told (the replica itself reads no clock).
    WallClock {
        unix_ms: u64,
    },
}

/// Why a message was dropped by the replica: counted, never fatal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    OldView,
    FutureView,
    ViewChanging,
    OutsideWindow,
    NotFromPrimary,
    ConflictingPrePrepare,
    SafetyRule,
    Duplicate,
    StaleCheckpoint,
    CheckpointMismatch,
    UnwantedBatch,
    /// A state-transfer block outside the heights asked of its sender, or beyond the buffer.
    UnwantedBlock,
    NoKey,
    /// Signed under a key epoch that ended at or below this replica's stable checkpoint (its
    /// keys are retired and may have leaked).
    RetiredEpoch,
    /// A new-view for a view this replica is the primary of, that it did not create.
    ForeignNewView,
    /// A pre-prepare whose batch names another proposer or view than the pre-prepare.
    BatchMetadata,
    /// A batch timestamp that runs backwards or is too far from this replica's wall clock.
    BatchTimestamp,
    Unexpected,
}

impl DropReason {
    pub const ALL: [DropReason; 18] = [
        DropReason::OldView,
        DropReason::FutureView,
        DropReason::ViewChanging,
        DropReason::OutsideWindow,
        DropReason::NotFromPrimary,
        DropReason::ConflictingPrePrepare,
        DropReason::SafetyRule,
        DropReason::Duplicate,
        DropReason::StaleCheckpoint,
        DropReason::CheckpointMismatch,
        DropReason::UnwantedBatch,
        DropReason::UnwantedBlock,
        DropReason::NoKey,
        DropReason::RetiredEpoch,
        DropReason::ForeignNewView,
        DropReason::BatchMetadata,
        DropReason::BatchTimestamp,
        DropReason::Unexpected,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::OldView => "old_view",
            DropReason::FutureView => "future_view",
            DropReason::ViewChanging => "view_changing",
            DropReason::OutsideWindow => "outside_window",
            DropReason::NotFromPrimary => "not_from_primary",
            DropReason::ConflictingPrePrepare => "conflicting_pre_prepare",
            DropReason::SafetyRule => "safety_rule",
            DropReason::Duplicate => "duplicate",
            DropReason::StaleCheckpoint => "stale_checkpoint",
            DropReason::CheckpointMismatch => "checkpoint_mismatch",
            DropReason::UnwantedBatch => "unwanted_batch",
            DropReason::UnwantedBlock => "unwanted_block",
            DropReason::NoKey => "no_key_for_height",
            DropReason::RetiredEpoch => "retired_key_epoch",
            DropReason::ForeignNewView => "foreign_new_view",
            DropReason::BatchMetadata => "batch_metadata",
            DropReason::BatchTimestamp => "batch_timestamp",
            DropReason::Unexpected => "unexpected",
        }
    }
}

/// Counters the node exports as metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub dropped: BTreeMap<DropReason, u64>,
    pub view_changes: u64,
    pub state_transfers: u64,
}

/// The log entry of one height (PBFT §4.2).
#[derive(Clone, Debug, Default)]
struct Slot {
    /// The pre-prepare accepted in the current view.
    pre_prepare: Option<Signed<PrePrepare>>,
    /// Batches known for this height, by digest (the current one, and re-proposal candidates).
    batches: BTreeMap<Digest, Arc<Batch>>,
    /// Prepares and commits of the current view, one per signer.
    prepares: BTreeMap<ValidatorIndex, Signed<Prepare>>,
    commits: BTreeMap<ValidatorIndex, Signed<Commit>>,
    /// The prepared certificate of the highest view (kept across views for view changes).
    prepared: Option<PreparedCertificate>,
    /// This replica sent its commit in the current view.
    sent_commit: bool,
    /// A quorum committed this height; the certificate, waiting for the batch if missing.
    certificate: Option<CommitCertificate>,
    /// When the current view's pre-prepare was accepted (for retransmission).
    accepted_at_ms: u64,
}

/// What [`Replica::unexecuted_batches`] found: the batches in flight known here, and how many
/// unexecuted heights have a batch this replica does not hold.
#[derive(Debug, Default)]
pub struct Unexecuted {
    /// In height order.
    pub batches: Vec<(Height, Arc<Batch>)>,
    pub missing: u64,
}

/// Most batches remembered per height (current proposal plus re-proposal candidates).
const BATCHES_PER_SLOT_MAX: usize = 4;
/// Most committed blocks buffered from state transfer ahead of the next height.
const TRANSFER_BUFFER_MAX: usize = 1024;
/// Most heights one state-transfer request asks for (a serving node answers at most as many:
/// `SYNC_BLOCKS_MAX` in the node, checked there at compile time). An answer that holds every
/// height asked for says that the peer may have more.
pub const FETCH_HEIGHTS_MAX: u64 = 64;

pub struct Replica {
    config: ReplicaConfig,
    me: ValidatorIndex,
    /// This validator's consensus keys: `(first height it signs, key)`, in height order. A key
    /// rotation adds one; keys for heights below the low watermark are forgotten.
    keys: Vec<(Height, SecretKey)>,
    schedule: Arc<ValidatorSchedule>,
    now_ms: u64,
    /// The machine's wall clock as last told ([`Input::WallClock`]); none until then.
    wall_clock_ms: Option<u64>,
    /// The highest batch timestamp delivered as committed (time never runs backwards).
    committed_time_ms: u64,

    view: View,
    /// False between sending a view-change and installing the new view (PBFT §4.4).
    view_active: bool,
    /// Consecutive view changes without progress (the timeout doubles with each).
    consecutive_view_changes: u32,

    /// Last stable checkpoint (the low watermark), and its certificate (none at genesis).
    low: Height,
    stable: Option<CheckpointCertificate>,
    /// Highest height delivered as committed, and highest executed.
    committed: Height,
    executed: Height,
    /// The next height this replica assigns as primary.
    next_height: Height,

    log: BTreeMap<Height, Slot>,
    /// Checkpoint votes above the low watermark: height → signer → vote.
    checkpoint_votes: BTreeMap<Height, BTreeMap<ValidatorIndex, Signed<Checkpoint>>>,
    /// The latest view-change of each validator, for views above the current one (or the
    /// current one while it is being installed).
    view_changes: BTreeMap<ValidatorIndex, Signed<ViewChange>>,
    my_view_change: Option<Signed<ViewChange>>,
    /// The view whose quorum of view-changes restarted the view-change timer (PBFT §4.5.2:
    /// the wait for a new-view starts when the quorum is there, not when this replica asked).
    quorum_timer_view: Option<View>,
    /// The new-view that installed the current view (resent to replicas that missed it).
    new_view: Option<Signed<NewView>>,

    safety: Safety,
    requests_pending: bool,
    timers: BTreeMap<Timer, u64>,

    /// What each peer last said in a status message: (view, committed height).
    peers: BTreeMap<ValidatorIndex, (View, Height)>,
    /// Committed height at the previous status tick (to notice a stall).
    committed_at_last_tick: Height,
    /// Blocks from state transfer above the next height, waiting for the gap to fill.
    transfer_buffer: BTreeMap<Height, VerifiedBlock>,
    /// Batches delivered from state transfer (or the node's own store), by height, until they
    /// are executed: they are in no log slot, and a new primary must know their transactions
    /// are taken (see [`Replica::unexecuted_batches`]).
    transferred_unexecuted: BTreeMap<Height, Arc<Batch>>,
    /// The heights last asked of each peer (state transfer): its answers are kept only within.
    fetching: BTreeMap<ValidatorIndex, (Height, Height)>,
    /// Set when this replica found that it diverged: it handles nothing any more.
    halted: Option<Divergence>,
    /// Rotates the peer asked for blocks.
    fetch_rotation: u16,
    /// State transfer under way: blocks from a peer were delivered and more are known to be
    /// there (the answer held every height asked, or a peer is ahead), or a request waited for
    /// the schedule's horizon. Once everything delivered is executed (the horizon moves with
    /// execution), the next range is asked at once rather than at a stalled status tick: a
    /// replica that asked one range per tick never caught up with a network that commits more
    /// than a range per tick.
    transfer_next: bool,
    /// Peers that answered a block request with nothing (or whose request failed) since this
    /// replica last made progress or had a status tick: not asked again until then, so a peer
    /// that claims a height it does not serve cannot end a transfer by being next in rotation.
    transfer_misses: BTreeSet<ValidatorIndex>,

    counters: Counters,
    actions: Actions,
}

impl Replica {
    /// A replica at genesis or restarted: `committed` is the last height the ledger holds
    /// (executed), `restored` what the safety records say it signed before.
    pub fn new(
        config: ReplicaConfig,
        me: ValidatorIndex,
        keys: Vec<(Height, SecretKey)>,
        schedule: Arc<ValidatorSchedule>,
        committed: Height,
        restored: Restored,
    ) -> Replica {
        assert!(!keys.is_empty(), "replica {me} has no key");
        assert!(config.checkpoint_interval > 0 && config.watermark_window >= 2 * config.checkpoint_interval);
        assert!(schedule.latest().contains(me), "replica {me} is not a validator");
        let low = restored.stable.as_ref().map(|cp| cp.statement.height).unwrap_or(Height::GENESIS);
        let mut replica = Replica {
            config,
            me,
            keys,
            schedule,
            now_ms: 0,
            wall_clock_ms: None,
            committed_time_ms: 0,
            view: restored.view,
            view_active: true,
            consecutive_view_changes: 0,
            low,
            stable: restored.stable,
            committed,
            executed: committed,
            next_height: committed.max(low).next(),
            log: BTreeMap::new(),
            checkpoint_votes: BTreeMap::new(),
            view_changes: BTreeMap::new(),
            my_view_change: None,
            quorum_timer_view: None,
            new_view: None,
            safety: restored.safety,
            requests_pending: false,
            timers: BTreeMap::new(),
            peers: BTreeMap::new(),
            committed_at_last_tick: committed,
            transfer_buffer: BTreeMap::new(),
            transferred_unexecuted: BTreeMap::new(),
            fetching: BTreeMap::new(),
            halted: None,
            fetch_rotation: me.0,
            transfer_next: false,
            transfer_misses: BTreeSet::new(),
            counters: Counters::default(),
            actions: Actions::default(),
        };
        replica.restore_log(restored.accepted, restored.prepared);
        // A replica that had sent a view-change for a view above the one it had entered comes
        // back in that view change, resending exactly what it signed.
        if let Some(view_change) = restored.view_change
            && view_change.body.new_view > replica.view
        {
            replica.view = view_change.body.new_view;
            replica.view_active = false;
            replica.view_changes.insert(me, view_change.clone());
            replica.my_view_change = Some(view_change);
        }
        replica
    }

    fn restore_log(
        &mut self,
        accepted: Vec<(Signed<PrePrepare>, Option<Arc<Batch>>)>,
        prepared: Vec<PreparedCertificate>,
    ) {
        for (pre_prepare, batch) in accepted {
            let height = pre_prepare.body.height;
            if !self.in_window(height) {
                continue;
            }
            let slot = self.log.entry(height).or_default();
            if let Some(batch) = batch {
                remember_batch(slot, pre_prepare.body.digest, batch);
            }
            if pre_prepare.body.view == self.view {
                slot.pre_prepare = Some(pre_prepare);
            }
        }
        for certificate in prepared {
            let height = certificate.height();
            if !self.in_window(height) {
                continue;
            }
            let slot = self.log.entry(height).or_default();
            if slot.prepared.as_ref().is_none_or(|kept| kept.view() < certificate.view()) {
                slot.prepared = Some(certificate);
            }
        }
    }

    /// Starts the periodic timers; call once before the first input.
    pub fn start(&mut self, now_ms: u64) -> Actions {
        self.now_ms = now_ms;
        self.set_timer(Timer::Status, now_ms + self.config.status_interval_ms);
        if !self.view_active {
            if let Some(view_change) = self.my_view_change.clone() {
                self.broadcast(Message::ViewChange(view_change));
            }
            self.set_timer(Timer::ViewChange, now_ms + self.view_change_timeout());
        }
        std::mem::take(&mut self.actions)
    }

    /// Handles one input at time `now_ms` (milliseconds on any monotonic clock).
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Actions {
        if self.halted.is_some() {
            // Fail-stop: a diverged replica signs, sends and delivers nothing.
            return Actions::default();
        }
        self.now_ms = self.now_ms.max(now_ms);
        match input {
            Input::Message { from, message } => self.on_message(from, message.into_message()),
            Input::Timer(timer) => self.on_timer(timer),
            Input::Propose { payload, timestamp_ms } => self.propose(payload, timestamp_ms),
            Input::RequestsPending(pending) => {
                self.requests_pending = pending;
                self.update_view_change_timer();
            }
            Input::Executed { height, header_hash, state_root } => {
                self.on_executed(height, header_hash, state_root)
            }
            Input::Blocks { source, blocks } => self.on_blocks(source, blocks),
            Input::NoBlocks { peer } => self.on_no_blocks(peer),
            Input::Schedule(schedule) => {
                self.schedule = schedule;
                self.send_view_change();
            }
            Input::AddKey { from, key } => {
                if self.keys.iter().all(|(first, _)| *first < from) {
                    self.keys.push((from, key));
                }
                self.send_view_change();
            }
            Input::WallClock { unix_ms } => self.wall_clock_ms = Some(unix_ms),
        }
        if self.halted.is_some() {
            // Nothing this call produced may leave: it was computed from a diverged state.
            let diverged = self.actions.diverged.take();
            self.actions = Actions { diverged, ..Actions::default() };
        }
        std::mem::take(&mut self.actions)
    }

    /// Stops this replica for good: its execution disagrees with a certified checkpoint.
    fn diverge(&mut self, height: Height, certified: Checkpoint, executed: Checkpoint) {
        if self.halted.is_none() {
            let divergence = Divergence { height, certified, executed };
            self.halted = Some(divergence.clone());
            self.actions.diverged = Some(divergence);
        }
    }

    /// The divergence that stopped this replica, if any.
    pub fn diverged(&self) -> Option<&Divergence> {
        self.halted.as_ref()
    }

    fn on_message(&mut self, from: ValidatorIndex, message: Message) {
        match message {
            Message::PrePrepare { pre_prepare, batch } => self.on_pre_prepare(pre_prepare, batch),
            Message::Prepare(prepare) => self.on_prepare(prepare),
            Message::Commit(commit) => self.on_commit(commit),
            Message::Checkpoint(checkpoint) => self.on_checkpoint(checkpoint),
            Message::ViewChange(view_change) => self.on_view_change(view_change),
            Message::NewView(new_view) => self.on_new_view(new_view),
            Message::Status(status) => self.on_status(from, status),
            Message::FetchBatch { height, digest } => self.on_fetch_batch(from, height, digest),
            Message::Batch { height, batch } => self.on_batch(height, batch),
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        match self.timers.get(&timer) {
            Some(&at) if at <= self.now_ms => {
                self.timers.remove(&timer);
            }
            // Cancelled or re-set since: a stale expiry.
            _ => return,
        }
        match timer {
            Timer::ViewChange => self.on_view_change_timeout(),
            Timer::Status => self.on_status_tick(),
        }
    }

    // ----- queries -----

    pub fn me(&self) -> ValidatorIndex {
        self.me
    }

    pub fn view(&self) -> View {
        self.view
    }

    pub fn view_active(&self) -> bool {
        self.view_active
    }

    pub fn primary(&self) -> ValidatorIndex {
        self.set_at(self.next_height).primary(self.view)
    }

    pub fn is_primary(&self) -> bool {
        self.primary() == self.me
    }

    /// Highest height delivered as committed.
    pub fn committed(&self) -> Height {
        self.committed
    }

    pub fn executed(&self) -> Height {
        self.executed
    }

    pub fn low_watermark(&self) -> Height {
        self.low
    }

    pub fn stable_checkpoint(&self) -> Option<&CheckpointCertificate> {
        self.stable.as_ref()
    }

    /// A one-line summary for logs and failing tests.
    pub fn describe(&self) -> String {
        let in_log: Vec<String> = self
            .log
            .iter()
            .map(|(height, slot)| {
                format!(
                    "{height}:{}{}{}p{}c{}",
                    if slot.pre_prepare.is_some() { "A" } else { "-" },
                    if slot.prepared.is_some() { "P" } else { "-" },
                    if slot.certificate.is_some() { "C" } else { "-" },
                    slot.prepares.len(),
                    slot.commits.len()
                )
            })
            .collect();
        let view_changes: Vec<String> =
            self.view_changes.iter().map(|(signer, vc)| format!("{signer}->{}", vc.body.new_view)).collect();
        format!(
            "replica {} view {}{} committed {} executed {} low {} next {} timers {:?} vcs [{}] log [{}] peers {:?}",
            self.me,
            self.view,
            if self.view_active { "" } else { " (changing)" },
            self.committed,
            self.executed,
            self.low,
            self.next_height,
            self.timers,
            view_changes.join(" "),
            in_log.join(" "),
            self.peers,
        )
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn schedule(&self) -> &Arc<ValidatorSchedule> {
        &self.schedule
    }

    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// The batches of the heights this replica has not executed yet, in height order: the
    /// committed ones waiting for execution and the accepted pre-prepares of the current view
    /// (a new view's re-proposals among them), as far as the batch is known here; and how many
    /// such heights have a batch this replica does not hold yet (being fetched, or below the
    /// low watermark and coming by state transfer). A new primary's node marks their
    /// transactions as taken before it cuts a batch of its own, and cuts nothing while any is
    /// missing: its mempool never saw another primary's proposals, and a second copy of a
    /// transaction would fail its nonce check at execution (and be in the chain twice).
    ///
    /// Blocks delivered by state transfer and not executed yet are in no log slot: their batches
    /// count too (a validator restarted behind that became primary while it executed what it
    /// had fetched cut a batch with transactions of those blocks: in the chain twice, found by
    /// the Byzantine campaign).
    pub fn unexecuted_batches(&self) -> Unexecuted {
        let mut known: BTreeMap<Height, Arc<Batch>> = self
            .transferred_unexecuted
            .range(self.executed.next()..)
            .map(|(height, batch)| (*height, batch.clone()))
            .collect();
        // Heights up to the low watermark that are not executed have left the log: their
        // blocks come by state transfer (some may be delivered already).
        let below_low = self.low.0.saturating_sub(self.executed.0) as usize;
        let mut missing = below_low.saturating_sub(known.range(..=self.low).count()) as u64;
        for (height, slot) in self.log.range(self.executed.next().max(self.low.next())..) {
            if known.contains_key(height) {
                continue;
            }
            let digest = slot
                .certificate
                .as_ref()
                .map(|certificate| certificate.statement.digest)
                .or_else(|| slot.pre_prepare.as_ref().map(|pre_prepare| pre_prepare.body.digest));
            let Some(digest) = digest else { continue };
            match slot.batches.get(&digest) {
                Some(batch) => {
                    known.insert(*height, batch.clone());
                }
                None => missing += 1,
            }
        }
        Unexecuted { batches: known.into_iter().collect(), missing }
    }

    /// The digest of the pre-prepare this replica holds for `height` in its current view.
    pub fn pre_prepare_digest(&self, height: Height) -> Option<Digest> {
        self.log.get(&height)?.pre_prepare.as_ref().map(|pre_prepare| pre_prepare.body.digest)
    }

    /// How many pre-prepares of the current view this replica accepted without holding their
    /// batch (a new view's re-proposals whose batch is being fetched, or such a record restored
    /// after a restart).
    pub fn accepted_without_batch(&self) -> usize {
        self.log
            .range(self.executed.next()..)
            .filter(|(_, slot)| {
                slot.pre_prepare
                    .as_ref()
                    .is_some_and(|pre_prepare| !slot.batches.contains_key(&pre_prepare.body.digest))
            })
            .count()
    }

    /// Heights proposed and not yet committed.
    pub fn in_flight(&self) -> u64 {
        self.next_height.0.saturating_sub(self.committed.0 + 1)
    }

    /// Whether a [`Input::Propose`] would be proposed now: this replica is the primary of an
    /// installed view and the next height fits the window and the pipeline.
    pub fn can_propose(&self) -> bool {
        self.view_active
            && self.is_primary()
            && self.next_height.0 <= self.low.0 + self.config.watermark_window
            && self.schedule.covers(self.next_height)
            && self.key_for(self.next_height).is_some()
            && self.in_flight() < self.config.pipeline_max
    }

    // ----- helpers shared by the phases -----

    fn set_at(&self, height: Height) -> &ValidatorSet {
        self.schedule.at(height)
    }

    /// The key this validator signs messages about `height` with.
    fn key_for(&self, height: Height) -> Option<&SecretKey> {
        self.keys.iter().rev().find(|(first, _)| *first <= height).map(|(_, key)| key)
    }

    /// Signs `body` with the key of its height, for the validator set of its height. `None` if
    /// this replica holds no key for that height (counted).
    fn sign<T: crate::certificate::Statement>(&mut self, body: T) -> Option<Signed<T>> {
        let height = body.key_height();
        match self.key_for(height) {
            Some(key) => Some(Signed::sign(body, self.me, key, self.schedule.at(height))),
            None => {
                self.drop_message(DropReason::NoKey);
                None
            }
        }
    }

    /// Keys this validator no longer needs (every height they sign is at or below the low
    /// watermark, and a later key exists).
    fn forget_old_keys(&mut self) {
        while self.keys.len() > 1 && self.keys[1].0 <= self.low.next() {
            self.keys.remove(0);
        }
    }

    /// The first height each key signs, in order (for the driver to know when an old secret may
    /// be erased).
    pub fn key_heights(&self) -> Vec<Height> {
        self.keys.iter().map(|(first, _)| *first).collect()
    }

    /// Whether a signature about `key_height` is under a key epoch this replica has retired
    /// (one that ended at or below its stable checkpoint).
    fn retired(&self, key_height: Height) -> bool {
        self.schedule.retired_for(key_height, self.low)
    }

    fn in_window(&self, height: Height) -> bool {
        height > self.low && height.0 <= self.low.0 + self.config.watermark_window
    }

    fn drop_message(&mut self, reason: DropReason) {
        *self.counters.dropped.entry(reason).or_insert(0) += 1;
    }

    fn broadcast(&mut self, message: Message) {
        self.actions.send.push(Outgoing { to: Recipient::All, message });
    }

    fn send_to(&mut self, to: ValidatorIndex, message: Message) {
        if to != self.me {
            self.actions.send.push(Outgoing { to: Recipient::One(to), message });
        }
    }

    /// Persists `record`, then broadcasts `message` (never before the record is durable).
    fn persist_then_broadcast(&mut self, record: SafetyRecord, message: Message) {
        self.actions.persist.push(SafetyWrite::Put(record));
        self.actions.send_after_persist.push(Outgoing { to: Recipient::All, message });
    }

    fn set_timer(&mut self, timer: Timer, at_ms: u64) {
        self.timers.insert(timer, at_ms);
        self.actions.timers.push(TimerAction::Set { timer, at_ms });
    }

    fn cancel_timer(&mut self, timer: Timer) {
        if self.timers.remove(&timer).is_some() {
            self.actions.timers.push(TimerAction::Cancel(timer));
        }
    }

    /// The view-change timeout after `consecutive_view_changes` view changes without progress:
    /// T, T, 2T, 4T, … capped (PBFT §4.5.2).
    fn view_change_timeout(&self) -> u64 {
        let doublings = self.consecutive_view_changes.saturating_sub(1).min(32);
        self.config
            .view_change_timeout_ms
            .saturating_mul(1u64 << doublings)
            .min(self.config.view_change_timeout_max_ms)
    }

    /// Pending work: an accepted pre-prepare not yet committed, or client requests waiting.
    fn has_pending_work(&self) -> bool {
        self.requests_pending
            || self
                .log
                .range(self.committed.next()..)
                .any(|(_, slot)| slot.pre_prepare.is_some() || slot.certificate.is_some())
    }

    /// In an installed view, the view-change timer runs while there is pending work.
    fn update_view_change_timer(&mut self) {
        if !self.view_active {
            return;
        }
        let pending = self.has_pending_work();
        match (pending, self.timers.contains_key(&Timer::ViewChange)) {
            (true, false) => self.set_timer(Timer::ViewChange, self.now_ms + self.view_change_timeout()),
            (false, true) => self.cancel_timer(Timer::ViewChange),
            _ => {}
        }
    }

    /// Progress was made (a height was delivered): restart the view-change timer if work is
    /// still pending (PBFT §4.4), and the doubling starts over.
    fn on_progress(&mut self) {
        self.consecutive_view_changes = 0;
        if self.view_active {
            self.cancel_timer(Timer::ViewChange);
            self.update_view_change_timer();
        }
    }

    /// Drops log entries and votes at or below `height` (a new stable checkpoint).
    fn collect_garbage(&mut self, height: Height) {
        self.forget_old_keys();
        self.log = self.log.split_off(&height.next());
        self.checkpoint_votes = self.checkpoint_votes.split_off(&height.next());
        self.transfer_buffer = self.transfer_buffer.split_off(&self.committed.next());
        self.safety.forget_up_to(height);
        self.actions.persist.push(SafetyWrite::ForgetHeightsUpTo(height));
    }
}

/// Remembers a batch for a slot, keeping at most a few per height.
///
/// The batches this slot may still need are never evicted: the current proposal's, the
/// prepared certificate's (a view-change may make it the re-proposal, and this may be its only
/// copy) and the commit certificate's. Any other candidate makes way (at most three are
/// protected, so one always can).
fn remember_batch(slot: &mut Slot, digest: Digest, batch: Arc<Batch>) {
    if slot.batches.len() >= BATCHES_PER_SLOT_MAX && !slot.batches.contains_key(&digest) {
        let needed = [
            slot.pre_prepare.as_ref().map(|pp| pp.body.digest),
            slot.prepared.as_ref().map(PreparedCertificate::digest),
            slot.certificate.as_ref().map(|certificate| certificate.statement.digest),
        ];
        if let Some(victim) =
            slot.batches.keys().copied().find(|candidate| !needed.contains(&Some(*candidate)))
        {
            slot.batches.remove(&victim);
        }
    }
    slot.batches.insert(digest, batch);
}

/// The distinct signers among `votes` that voted for `digest`.
fn signers_for<T>(
    votes: &BTreeMap<ValidatorIndex, Signed<T>>,
    digest: Digest,
    digest_of: impl Fn(&T) -> Digest,
) -> BTreeSet<ValidatorIndex> {
    votes.iter().filter(|(_, vote)| digest_of(&vote.body) == digest).map(|(signer, _)| *signer).collect()
}

#[cfg(test)]
mod tests;
