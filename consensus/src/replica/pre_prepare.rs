//! PBFT §4.2, first phase: the primary proposes; backups accept one digest per (view, height).

use std::sync::Arc;

use super::{DropReason, Replica, remember_batch};
use crate::certificate::Signed;
use crate::messages::{Batch, PrePrepare, Prepare};
use crate::safety::SafetyRecord;
use crate::types::Height;
use crate::wire::Message;

impl Replica {
    /// The primary assigns the next height to a new batch (PBFT §4.2: "the primary assigns a
    /// sequence number n to the request, multicasts a pre-prepare").
    pub(super) fn propose(&mut self, payload: Vec<u8>, timestamp_ms: u64) {
        if !self.can_propose() {
            self.drop_message(DropReason::Unexpected);
            return;
        }
        let height = self.next_height;
        // Time never runs backwards: a primary whose clock is behind an earlier batch's
        // timestamp proposes that timestamp (backups refuse anything lower).
        let timestamp_ms = timestamp_ms.max(self.time_floor(height));
        let batch = Arc::new(Batch { view: self.view, proposer: self.me, timestamp_ms, payload });
        let digest = batch.digest();
        if self.safety.check_accept(self.view, height, digest).is_err() {
            // Only after a restart can this replica have signed something at this height in
            // this view; skip the height rather than sign twice (the view will change).
            self.drop_message(DropReason::SafetyRule);
            self.next_height = height.next();
            return;
        }
        let Some(pre_prepare) = self.sign(PrePrepare { view: self.view, height, digest }) else { return };
        self.safety.record_accept(self.view, height, digest);
        self.next_height = height.next();
        let now = self.now_ms;
        let slot = self.log.entry(height).or_default();
        slot.pre_prepare = Some(pre_prepare.clone());
        slot.accepted_at_ms = now;
        remember_batch(slot, digest, batch.clone());
        self.persist_then_broadcast(
            SafetyRecord::Accepted { pre_prepare: pre_prepare.clone(), batch: Some(batch.clone()) },
            Message::PrePrepare { pre_prepare, batch },
        );
        // With n = 1 (or whenever the quorum needs no backup) the pre-prepare alone prepares.
        self.check_prepared(height);
        self.update_view_change_timer();
    }

    /// The checkpoint boundary an idle primary may fill up to with empty batches: `Some(b)`
    /// when this replica could propose now (see [`Replica::can_propose`]), nothing is in flight,
    /// everything committed was executed, no peer said it committed more (this replica is not
    /// catching up), and the last height assigned is not a multiple of K; `b` is the next
    /// multiple of K. `None` otherwise: in particular at a boundary, so an idle chain stops there.
    ///
    /// PBFT §4.3 checkpoints only every K heights, so without this the last heights of a chain
    /// that went idle are never covered by a stable checkpoint. Whether the chain *is* idle (no
    /// request ready, for how long) is the driver's to say; see docs/decisions.md ("Empty
    /// batches up to the checkpoint boundary").
    pub fn checkpoint_fill_target(&self) -> Option<Height> {
        let last = Height(self.next_height.0.saturating_sub(1));
        let interval = self.config.checkpoint_interval;
        let behind = self.peers.values().any(|(_, committed)| *committed > self.committed);
        if !self.can_propose()
            || self.in_flight() > 0
            || self.executed < self.committed
            || behind
            || last.0.is_multiple_of(interval)
        {
            return None;
        }
        Some(Height(last.0.div_ceil(interval).saturating_mul(interval)))
    }

    /// A backup accepts a pre-prepare if it is the current view's primary's (checked by
    /// verification), within the watermarks, and no other digest was accepted for its (view,
    /// height). The layer above has checked the batch's transactions before handing it in.
    pub(super) fn on_pre_prepare(&mut self, pre_prepare: Signed<PrePrepare>, batch: Arc<Batch>) {
        let PrePrepare { view, height, digest } = pre_prepare.body;
        if view < self.view {
            return self.drop_message(DropReason::OldView);
        }
        if view > self.view {
            return self.drop_message(DropReason::FutureView);
        }
        if !self.view_active {
            return self.drop_message(DropReason::ViewChanging);
        }
        if !self.in_window(height) {
            return self.drop_message(DropReason::OutsideWindow);
        }
        if pre_prepare.signer != self.set_at(height).primary(view) || pre_prepare.signer == self.me {
            return self.drop_message(DropReason::NotFromPrimary);
        }
        // The header copies the batch's view, proposer and time: they must be the pre-prepare's.
        if batch.view != view || batch.proposer != pre_prepare.signer {
            return self.drop_message(DropReason::BatchMetadata);
        }
        if !self.timestamp_acceptable(height, batch.timestamp_ms) {
            return self.drop_message(DropReason::BatchTimestamp);
        }
        if let Some(existing) = self.log.get(&height).and_then(|slot| slot.pre_prepare.as_ref()) {
            let reason = if existing.body.digest == digest {
                DropReason::Duplicate
            } else {
                DropReason::ConflictingPrePrepare
            };
            return self.drop_message(reason);
        }
        if self.safety.check_accept(view, height, digest).is_err() {
            return self.drop_message(DropReason::SafetyRule);
        }
        self.accept_pre_prepare(pre_prepare, Some(batch));
    }

    /// The lowest timestamp a new batch at `height` may carry: the highest timestamp committed,
    /// and of the batches of this view's pre-prepares below `height` (empty batches carry 0).
    pub(super) fn time_floor(&self, height: Height) -> u64 {
        if height <= self.committed.next() {
            return self.committed_time_ms;
        }
        let pending = self
            .log
            .range(self.committed.next()..height)
            .filter_map(|(_, slot)| {
                let digest = slot.pre_prepare.as_ref()?.body.digest;
                slot.batches.get(&digest).map(|batch| batch.timestamp_ms)
            })
            .max()
            .unwrap_or(0);
        self.committed_time_ms.max(pending)
    }

    /// A proposal's timestamp must not run backwards (at least [`Self::time_floor`]) and must
    /// be within `timestamp_skew_max_ms` of this replica's own wall clock, either way. Without
    /// a wall clock nothing is acceptable.
    fn timestamp_acceptable(&self, height: Height, timestamp_ms: u64) -> bool {
        let Some(wall) = self.wall_clock_ms else { return false };
        let skew = self.config.timestamp_skew_max_ms;
        timestamp_ms >= self.time_floor(height)
            && timestamp_ms <= wall.saturating_add(skew)
            && timestamp_ms >= wall.saturating_sub(skew)
    }

    /// Records an accepted pre-prepare and sends this replica's prepare after persisting it.
    /// `batch` may be missing for a new view's re-proposal; it is fetched then.
    pub(super) fn accept_pre_prepare(&mut self, pre_prepare: Signed<PrePrepare>, batch: Option<Arc<Batch>>) {
        let PrePrepare { view, height, digest } = pre_prepare.body;
        self.safety.record_accept(view, height, digest);
        let Some(prepare) = self.sign(Prepare { view, height, digest }) else { return };
        let now = self.now_ms;
        let slot = self.log.entry(height).or_default();
        slot.pre_prepare = Some(pre_prepare.clone());
        slot.accepted_at_ms = now;
        if let Some(batch) = &batch {
            remember_batch(slot, digest, batch.clone());
        }
        let known = slot.batches.get(&digest).cloned();
        slot.prepares.insert(self.me, prepare.clone());
        self.persist_then_broadcast(
            SafetyRecord::Accepted { pre_prepare, batch: known.clone() },
            Message::Prepare(prepare),
        );
        if known.is_none() {
            self.fetch_batch(height, digest);
        }
        self.check_prepared(height);
        self.check_committed(height);
        self.update_view_change_timer();
    }
}
