//! PBFT §4.4: view change and new view.
//!
//! A backup whose pending work waited too long moves to view v+1 and sends VIEW-CHANGE with its
//! stable checkpoint and its prepared certificates above it. The new primary collects a quorum
//! of them and sends NEW-VIEW with the pre-prepares they prescribe (each prepared digest keeps
//! its height; gaps get the new view's empty batch). Every backup recomputes them (done in
//! `wire::verify`) before it enters the view. A replica that sees f+1 view-changes for higher
//! views joins the smallest of them (PBFT §4.5.2).

use std::sync::Arc;

use super::{DropReason, Replica, Timer, remember_batch};
use crate::certificate::{Signed, Statement};
use crate::messages::{Batch, PrePrepare};
use crate::safety::{SafetyRecord, SafetyWrite, view_change_digest};
use crate::types::{Height, View};
use crate::view_messages::{NewView, ViewChange, highest_checkpoint, reproposal_range, reproposals};
use crate::wire::Message;

impl Replica {
    pub(super) fn on_view_change_timeout(&mut self) {
        if self.view_active {
            return self.start_view_change(self.view.next());
        }
        // PBFT §4.5.2 moves on to the next view whenever the new view does not arrive in time.
        // With a capped timeout that lets a replica that was cut off run ahead alone and stay
        // ahead forever: everyone advances at the same capped rate, fewer than f+1 are ahead,
        // and no view ever gathers a quorum. So a replica moves past a view only once a quorum
        // has asked for it (the view change happened and its primary failed); until then it
        // keeps asking for the same view. Honest replicas therefore never drift apart by more
        // than one view without f+1 of them pulling the rest along.
        let view = self.view;
        let support = self.view_changes.values().filter(|vc| vc.body.new_view >= view).count();
        if support >= self.set_at(self.low.next()).quorum() {
            return self.start_view_change(view.next());
        }
        match self.my_view_change.clone() {
            Some(view_change) => self.broadcast(Message::ViewChange(view_change)),
            None => self.send_view_change(),
        }
        self.set_timer(Timer::ViewChange, self.now_ms + self.view_change_timeout());
    }

    /// Moves to `new_view` and sends a view-change for it.
    pub(super) fn start_view_change(&mut self, new_view: View) {
        if new_view <= self.view && !self.view_active {
            return;
        }
        if new_view < self.view {
            return;
        }
        self.counters.view_changes += 1;
        self.consecutive_view_changes = self.consecutive_view_changes.saturating_add(1);
        self.view = new_view;
        self.view_active = false;
        self.new_view = None;
        self.my_view_change = None;
        self.cancel_timer(Timer::ViewChange);
        self.set_timer(Timer::ViewChange, self.now_ms + self.view_change_timeout());
        self.send_view_change();
    }

    /// Signs and sends this replica's view-change for the view it is changing to, unless it has
    /// one already. It is signed with the key of the height above the stable checkpoint; if the
    /// schedule does not yet know that height, or lists another key for this validator there
    /// (it adopted a checkpoint at its own rotation boundary before executing the rotation),
    /// it waits: the status tick, the view-change timer and every schedule or key update try
    /// again. A view-change signed with a key the others do not expect would be refused by
    /// all of them, and the safety rule would forbid a second one for the view.
    pub(super) fn send_view_change(&mut self) {
        if self.view_active || self.my_view_change.is_some() {
            return;
        }
        let new_view = self.view;
        let key_height = self.low.next();
        let listed = self.schedule.at(key_height).key(self.me).copied();
        let usable = self.schedule.covers(key_height)
            && self.key_for(key_height).is_some_and(|key| Some(key.public_key()) == listed);
        if !usable {
            return self.drop_message(DropReason::NoKey);
        }
        let prepared =
            self.log.range(self.low.next()..).filter_map(|(_, slot)| slot.prepared.clone()).collect();
        let body = ViewChange { new_view, checkpoint: self.stable.clone(), prepared };
        let signed = match self.safety.check_view_change(new_view, view_change_digest(&body)) {
            Ok(()) => {
                let Some(signed) = self.sign(body) else { return };
                self.safety.record_view_change(new_view, view_change_digest(&signed.body));
                self.persist_then_broadcast(
                    SafetyRecord::ViewChange(signed.clone()),
                    Message::ViewChange(signed.clone()),
                );
                signed
            }
            // Already signed a different view-change for this view (before a restart): resend
            // that one, never a second.
            Err(_) => match self.my_view_change.clone().filter(|vc| vc.body.new_view == new_view) {
                Some(previous) => {
                    self.broadcast(Message::ViewChange(previous.clone()));
                    previous
                }
                None => {
                    self.drop_message(DropReason::SafetyRule);
                    return;
                }
            },
        };
        self.view_changes.insert(self.me, signed.clone());
        self.my_view_change = Some(signed);
        self.try_new_view();
        self.restart_timer_at_quorum();
    }

    pub(super) fn on_view_change(&mut self, view_change: Signed<ViewChange>) {
        let view = view_change.body.new_view;
        let signer = view_change.signer;
        if view <= self.view {
            // The sender missed the new-view of a view this replica already leads: resend it.
            if view == self.view
                && self.view_active
                && let Some(new_view) = self.new_view.clone()
            {
                self.send_to(signer, Message::NewView(new_view));
                return;
            }
            if view < self.view || self.view_active {
                return self.drop_message(DropReason::OldView);
            }
        }
        if view.0 > self.view.0.saturating_add(self.config.views_ahead_max) {
            return self.drop_message(DropReason::FutureView);
        }
        // Signed under the key of the height above the sender's stable checkpoint: refused if
        // that epoch is retired here (its keys may be in an attacker's hands). Its prepared
        // certificates lie above that checkpoint, so they are in current epochs too.
        if self.retired(view_change.body.key_height()) {
            return self.drop_message(DropReason::RetiredEpoch);
        }
        let newer = self.view_changes.get(&signer).is_none_or(|kept| kept.body.new_view < view);
        if !newer {
            return self.drop_message(DropReason::Duplicate);
        }
        // A verified view-change proves its sender's stable checkpoint: a replica that missed
        // those checkpoint votes adopts it (otherwise it could not even verify view-changes
        // signed above it once a key epoch ends there).
        if let Some(checkpoint) = view_change.body.checkpoint.clone()
            && checkpoint.statement.height > self.low
        {
            self.adopt_stable_checkpoint(checkpoint);
            if view.0 <= self.view.0 && (view < self.view || self.view_active) {
                return;
            }
        }
        self.view_changes.insert(signer, view_change);
        self.join_if_f_plus_one_ahead();
        self.try_new_view();
        self.restart_timer_at_quorum();
    }

    /// PBFT §4.5.2: a replica starts its timer when it holds 2f+1 view-changes for its view,
    /// and moves on only if the new-view does not come within it. The timer this replica set
    /// when it asked may be about to fire when the quorum arrives; firing then would move it
    /// past a view whose primary had no time to send its new-view (and drop that new-view as
    /// old). Restarted once per view, so later view-changes cannot hold it off.
    fn restart_timer_at_quorum(&mut self) {
        let view = self.view;
        if self.view_active || self.quorum_timer_view == Some(view) {
            return;
        }
        let support = self.view_changes.values().filter(|vc| vc.body.new_view >= view).count();
        if support >= self.set_at(self.low.next()).quorum() {
            self.quorum_timer_view = Some(view);
            // Never earlier than the timer already running.
            let at = self.now_ms + self.view_change_timeout();
            if self.timers.get(&Timer::ViewChange).is_none_or(|running| *running < at) {
                self.set_timer(Timer::ViewChange, at);
            }
        }
    }

    /// PBFT §4.5.2: f+1 view-changes for views above ours: join the smallest of them.
    fn join_if_f_plus_one_ahead(&mut self) {
        let current = self.view;
        let ahead: Vec<View> = self
            .view_changes
            .iter()
            .filter(|(signer, _)| **signer != self.me)
            .map(|(_, vc)| vc.body.new_view)
            .filter(|view| *view > current)
            .collect();
        if ahead.len() >= self.set_at(self.low.next()).weak_quorum()
            && let Some(smallest) = ahead.iter().min().copied()
        {
            self.start_view_change(smallest);
        }
    }

    /// The new primary: with a quorum of view-changes for its view, send the new-view.
    fn try_new_view(&mut self) {
        let view = self.view;
        let set = self.set_at(self.low.next());
        if self.view_active || set.primary(view) != self.me {
            return;
        }
        // The view-changes with the highest stable checkpoints first: they are the likeliest to
        // be in an epoch no backup has retired.
        let mut view_changes: Vec<Signed<ViewChange>> =
            self.view_changes.values().filter(|vc| vc.body.new_view == view).cloned().collect();
        view_changes.sort_by_key(|vc| std::cmp::Reverse(vc.body.stable_height()));
        view_changes.truncate(set.quorum());
        view_changes.sort_by_key(|vc| vc.signer);
        if view_changes.len() < set.quorum() {
            return;
        }
        let mut pre_prepares: Vec<Signed<PrePrepare>> = Vec::new();
        for (height, digest) in reproposals(view, self.me, &view_changes) {
            let Some(pre_prepare) = self.sign(PrePrepare { view, height, digest }) else { return };
            pre_prepares.push(pre_prepare);
        }
        let Some(new_view) = self.sign(NewView { view, view_changes, pre_prepares }) else { return };
        self.actions.persist.push(SafetyWrite::Put(SafetyRecord::View(view)));
        self.actions
            .send_after_persist
            .push(super::Outgoing { to: super::Recipient::All, message: Message::NewView(new_view.clone()) });
        self.enter_view(new_view);
    }

    pub(super) fn on_new_view(&mut self, new_view: Signed<NewView>) {
        let view = new_view.body.view;
        if view < self.view || (view == self.view && self.view_active) {
            return self.drop_message(DropReason::OldView);
        }
        // No `views_ahead_max` here: a verified new-view is its own proof (a quorum's
        // view-changes for its view), so it is accepted at any distance. A replica cut off while
        // the others changed views more than `views_ahead_max` times rejoins through it.
        // The primary of a view makes its new-view itself; one it did not make is forged (with a
        // retired key) or stale.
        if self.set_at(self.low.next()).primary(view) == self.me {
            return self.drop_message(DropReason::ForeignNewView);
        }
        // The new-view and every view-change in it must be signed under epochs current here.
        if self.retired(new_view.body.key_height())
            || new_view.body.view_changes.iter().any(|vc| self.retired(vc.body.key_height()))
        {
            return self.drop_message(DropReason::RetiredEpoch);
        }
        // Verified: a quorum of view-changes for `view`, and exactly the prescribed
        // pre-prepares signed by its primary.
        self.actions.persist.push(SafetyWrite::Put(SafetyRecord::View(view)));
        self.enter_view(new_view);
    }

    /// Installs the view of a (verified or self-made) new-view: adopts its stable checkpoint,
    /// resets the per-view votes, and accepts the re-proposals.
    fn enter_view(&mut self, new_view: Signed<NewView>) {
        let view = new_view.body.view;
        let primary = self.set_at(self.low.next()).primary(view);
        self.view = view;
        self.view_active = true;
        self.view_changes.retain(|_, vc| vc.body.new_view > view);
        self.my_view_change = None;
        self.actions.persist.push(SafetyWrite::ForgetViewChangesBelow(view));
        if let Some(checkpoint) = highest_checkpoint(&new_view.body.view_changes).cloned() {
            self.adopt_stable_checkpoint(checkpoint);
        }
        for slot in self.log.values_mut() {
            slot.pre_prepare = None;
            slot.prepares.clear();
            slot.commits.clear();
            slot.sent_commit = false;
        }
        let (_, max_s) = reproposal_range(&new_view.body.view_changes);
        self.next_height = max_s.max(self.low).max(self.committed).next();
        let empty = Arc::new(Batch::empty(view, primary));
        let empty_digest = empty.digest();
        for pre_prepare in new_view.body.pre_prepares.clone() {
            let height = pre_prepare.body.height;
            if !self.in_window(height) {
                continue;
            }
            let digest = pre_prepare.body.digest;
            if digest == empty_digest {
                remember_batch(self.log.entry(height).or_default(), digest, empty.clone());
            }
            if primary == self.me {
                self.accept_as_primary(pre_prepare);
            } else if self.safety.check_accept(view, height, digest).is_ok() {
                self.accept_pre_prepare(pre_prepare, None);
            } else {
                self.drop_message(DropReason::SafetyRule);
            }
        }
        self.new_view = Some(new_view);
        // PBFT §4.5.2: the timer now waits for progress in the new view.
        self.cancel_timer(Timer::ViewChange);
        self.update_view_change_timer();
    }

    /// The new primary's own re-proposals: recorded (persisted with the new-view) without a
    /// prepare of its own.
    fn accept_as_primary(&mut self, pre_prepare: Signed<PrePrepare>) {
        let (view, height, digest) =
            (pre_prepare.body.view, pre_prepare.body.height, pre_prepare.body.digest);
        self.safety.record_accept(view, height, digest);
        let now = self.now_ms;
        let slot = self.log.entry(height).or_default();
        slot.pre_prepare = Some(pre_prepare.clone());
        slot.accepted_at_ms = now;
        let batch = slot.batches.get(&digest).cloned();
        self.actions
            .persist
            .push(SafetyWrite::Put(SafetyRecord::Accepted { pre_prepare, batch: batch.clone() }));
        if batch.is_none() {
            self.fetch_batch(height, digest);
        }
        // With n = 1 the new primary's own re-proposal is prepared at once.
        self.check_prepared(height);
    }

    /// The height this replica assigns next as primary (for tests, the driver's logs and its
    /// fill up to the checkpoint boundary).
    pub fn next_height(&self) -> Height {
        self.next_height
    }
}
