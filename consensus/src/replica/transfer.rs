//! Status messages, retransmission, batch fetch and state transfer.
//!
//! The network may lose any message. Every status interval a replica tells its peers where it
//! is, resends its own messages for work that has been stuck for a whole interval, and resends
//! the current new-view to peers still in an older view. A replica that learns it is behind
//! (a stable checkpoint above what it committed, f+1 checkpoints above its window, or a peer
//! that has committed more while it stalled) asks one peer at a time for committed blocks and
//! accepts only those whose certificates verify against the validator set of their height.

use std::sync::Arc;

use super::{
    DropReason, FETCH_HEIGHTS_MAX, FetchBlocks, Replica, TRANSFER_BUFFER_MAX, Timer, remember_batch,
};
use crate::messages::Batch;
use crate::types::{Digest, Height, ValidatorIndex};
use crate::wire::{Message, Status, VerifiedBlock};

impl Replica {
    pub(super) fn on_status_tick(&mut self) {
        self.set_timer(Timer::Status, self.now_ms + self.config.status_interval_ms);
        self.broadcast(Message::Status(Status {
            view: self.view,
            view_active: self.view_active,
            committed: self.committed,
            stable: self.low,
        }));
        if self.view_active {
            self.retransmit_stuck_votes();
        } else {
            match self.my_view_change.clone() {
                Some(view_change) => self.broadcast(Message::ViewChange(view_change)),
                None => self.send_view_change(),
            }
        }
        // Checkpoint votes may be lost like any message: this replica's own votes above its
        // stable checkpoint go out again until they become stable.
        let own_votes: Vec<_> =
            self.checkpoint_votes.values().filter_map(|votes| votes.get(&self.me).cloned()).collect();
        for vote in own_votes {
            self.broadcast(Message::Checkpoint(vote));
        }
        // A peer committed more while this replica made no progress for a whole interval.
        let stalled = self.committed == self.committed_at_last_tick;
        self.committed_at_last_tick = self.committed;
        let ahead = self.peers.values().map(|(_, committed)| *committed).max().unwrap_or(Height::GENESIS);
        if stalled && ahead > self.committed {
            // Every peer gets another chance (one that answered nothing may have been busy).
            self.transfer_misses.clear();
            self.request_blocks(ahead);
        }
    }

    /// Resends this replica's own pre-prepare, prepare and commit for heights of the current
    /// view that were accepted at least one interval ago and are not yet delivered.
    fn retransmit_stuck_votes(&mut self) {
        let cutoff = self.now_ms.saturating_sub(self.config.status_interval_ms);
        let mut resend = Vec::new();
        for (height, slot) in self.log.range(self.committed.next()..) {
            // Committed by a quorum but the batch never arrived (its pre-prepare was lost):
            // ask again, with or without a pre-prepare.
            if let Some(certificate) = &slot.certificate
                && !slot.batches.contains_key(&certificate.statement.digest)
            {
                resend.push(Message::FetchBatch { height: *height, digest: certificate.statement.digest });
            }
            let Some(pre_prepare) = &slot.pre_prepare else { continue };
            if slot.accepted_at_ms > cutoff {
                continue;
            }
            // Accepted without its batch (a new view's re-proposal, a record restored after a
            // restart) and the answer lost: ask again now, not only once a quorum has committed
            // (the node holds fresh pre-prepares back until it has the batch).
            let digest = pre_prepare.body.digest;
            if !slot.batches.contains_key(&digest)
                && slot.certificate.as_ref().is_none_or(|certificate| certificate.statement.digest != digest)
            {
                resend.push(Message::FetchBatch { height: *height, digest });
            }
            if pre_prepare.signer == self.me {
                if let Some(batch) = slot.batches.get(&pre_prepare.body.digest) {
                    resend
                        .push(Message::PrePrepare { pre_prepare: pre_prepare.clone(), batch: batch.clone() });
                }
            } else if let Some(prepare) = slot.prepares.get(&self.me) {
                resend.push(Message::Prepare(prepare.clone()));
            }
            if let Some(commit) = slot.commits.get(&self.me) {
                resend.push(Message::Commit(commit.clone()));
            }
        }
        for message in resend {
            self.broadcast(message);
        }
    }

    pub(super) fn on_status(&mut self, from: ValidatorIndex, status: Status) {
        if !self.set_at(self.low.next()).contains(from) || from == self.me {
            return self.drop_message(DropReason::Unexpected);
        }
        self.peers.insert(from, (status.view, status.committed));
        // A peer whose stable checkpoint is below ours gets our certificate, as the quorum of
        // signed checkpoint votes it is made of.
        if status.stable < self.low
            && let Some(certificate) = self.stable.clone()
        {
            for (signer, signature) in certificate.signatures {
                let vote =
                    crate::certificate::Signed { body: certificate.statement.clone(), signer, signature };
                self.send_to(from, Message::Checkpoint(vote));
            }
        }
        let behind_view = status.view < self.view || (status.view == self.view && !status.view_active);
        if self.view_active
            && behind_view
            && let Some(new_view) = self.new_view.clone()
        {
            self.send_to(from, Message::NewView(new_view));
        }
    }

    /// Asks every peer for a batch this replica needs but never received.
    pub(super) fn fetch_batch(&mut self, height: Height, digest: Digest) {
        self.broadcast(Message::FetchBatch { height, digest });
    }

    pub(super) fn on_fetch_batch(&mut self, from: ValidatorIndex, height: Height, digest: Digest) {
        let batch = self.log.get(&height).and_then(|slot| slot.batches.get(&digest)).cloned();
        match batch {
            Some(batch) => self.send_to(from, Message::Batch { height, batch }),
            None => self.drop_message(DropReason::UnwantedBatch),
        }
    }

    /// A batch is kept only if this replica has a use for its digest at that height: the
    /// current pre-prepare, a commit certificate, or a prepared certificate.
    pub(super) fn on_batch(&mut self, height: Height, batch: Arc<Batch>) {
        let Some(slot) = self.log.get_mut(&height) else {
            return self.drop_message(DropReason::UnwantedBatch);
        };
        let digest = batch.digest();
        let wanted = slot.pre_prepare.as_ref().is_some_and(|pp| pp.body.digest == digest)
            || slot.certificate.as_ref().is_some_and(|certificate| certificate.statement.digest == digest)
            || slot.prepared.as_ref().is_some_and(|prepared| prepared.digest() == digest);
        if !wanted || slot.batches.contains_key(&digest) {
            return self.drop_message(DropReason::UnwantedBatch);
        }
        remember_batch(slot, digest, batch);
        self.deliver();
    }

    /// Asks the next peer (in rotation) for the committed blocks after ours, up to `target` or
    /// what one answer may hold, and never above the schedule's horizon (blocks there cannot be
    /// verified yet: the request waits until what was delivered is executed).
    pub(super) fn request_blocks(&mut self, target: Height) {
        if target <= self.committed {
            return;
        }
        let from = self.committed.next();
        let to = Height(target.0.min(from.0 + FETCH_HEIGHTS_MAX - 1).min(self.schedule.horizon().0));
        if to < from {
            self.transfer_next = true;
            return;
        }
        // Ask, in rotation, the peers that said they have more; failing that, any other peer;
        // never one that answered nothing since the last progress.
        let mut candidates: Vec<ValidatorIndex> = self
            .peers
            .iter()
            .filter(|(peer, (_, committed))| {
                *committed > self.committed && !self.transfer_misses.contains(peer)
            })
            .map(|(peer, _)| *peer)
            .collect();
        if candidates.is_empty() {
            let n = self.set_at(self.low.next()).n() as u16;
            candidates = (0..n)
                .map(ValidatorIndex)
                .filter(|peer| *peer != self.me && !self.transfer_misses.contains(peer))
                .collect();
        }
        if candidates.is_empty() {
            return;
        }
        let peer = candidates[usize::from(self.fetch_rotation) % candidates.len()];
        self.fetch_rotation = self.fetch_rotation.wrapping_add(1);
        self.counters.state_transfers += 1;
        self.fetching.insert(peer, (from, to));
        self.actions.fetch_blocks.push(FetchBlocks { from, to, peer });
    }

    /// A height that at least one honest validator has committed, as far as this replica
    /// knows: the (f+1)-th highest height peers said in their status (or served), and the
    /// highest checkpoint that f+1 validators voted for. One validator alone cannot raise it.
    fn known_committed(&self) -> Height {
        let mut claims: Vec<Height> = self.peers.values().map(|(_, committed)| *committed).collect();
        claims.sort_unstable_by(|a, b| b.cmp(a));
        let f_plus_one = self.set_at(self.low.next()).weak_quorum();
        let said = claims.get(f_plus_one.saturating_sub(1)).copied().unwrap_or(Height::GENESIS);
        let voted = self
            .checkpoint_votes
            .iter()
            .rev()
            .find(|(height, votes)| votes.len() >= self.set_at(**height).weak_quorum())
            .map(|(height, _)| *height)
            .unwrap_or(Height::GENESIS);
        said.max(voted)
    }

    /// A peer answered with nothing, or its request failed: while honest validators are known
    /// to be ahead, the next peer is asked at once (each peer at most once until progress or
    /// the next status tick, so at most n - 1 such requests per step).
    pub(super) fn on_no_blocks(&mut self, peer: ValidatorIndex) {
        if !self.fetching.contains_key(&peer) || !self.transfer_misses.insert(peer) {
            return;
        }
        let known = self.known_committed();
        if known > self.committed {
            self.request_blocks(known.max(Height(self.committed.0.saturating_add(FETCH_HEIGHTS_MAX))));
        }
    }

    /// Everything delivered is executed, so the horizon is as high as it gets: if a transfer is
    /// under way, ask for the next range now.
    pub(super) fn continue_transfer(&mut self) {
        if !self.transfer_next || self.executed < self.committed {
            return;
        }
        self.transfer_next = false;
        let target = self.known_committed().max(Height(self.committed.0.saturating_add(FETCH_HEIGHTS_MAX)));
        self.request_blocks(target);
    }

    /// Committed blocks (certificates verified): delivered in order; blocks above the next
    /// height wait in a bounded buffer. A peer's answer is kept only within the heights last
    /// asked of that peer; when the buffer is full, the highest blocks make way for lower ones
    /// (a peer serving far-ahead blocks cannot crowd out the next height).
    ///
    /// An answer that brought progress continues the transfer (once executed) while more is
    /// likely there: it held every height asked for, or a peer is known to be more than a
    /// checkpoint interval ahead. An answer that brought nothing ends it (the status tick and
    /// checkpoint votes above the window start it again), so a peer lying about its height
    /// costs at most one request per block of real progress.
    pub(super) fn on_blocks(&mut self, source: super::BlockSource, blocks: Vec<VerifiedBlock>) {
        let asked = match source {
            super::BlockSource::Peer(peer) => self.fetching.get(&peer).copied(),
            super::BlockSource::OwnStore => Some((Height::GENESIS, Height(u64::MAX))),
        };
        let before = self.committed;
        let mut highest = Height::GENESIS;
        for block in blocks {
            let height = block.height();
            if height <= self.committed {
                continue;
            }
            if asked.is_none_or(|(from, to)| height < from || height > to) {
                self.drop_message(DropReason::UnwantedBlock);
                continue;
            }
            highest = highest.max(height);
            if self.transfer_buffer.len() >= TRANSFER_BUFFER_MAX
                && !self.transfer_buffer.contains_key(&height)
            {
                match self.transfer_buffer.last_key_value().map(|(highest, _)| *highest) {
                    Some(highest) if highest > height => {
                        self.transfer_buffer.remove(&highest);
                    }
                    _ => {
                        self.drop_message(DropReason::UnwantedBlock);
                        continue;
                    }
                }
            }
            self.transfer_buffer.insert(height, block);
        }
        self.deliver();
        if let super::BlockSource::Peer(peer) = source
            && self.committed > before
        {
            // The peer has committed at least what it served.
            if let Some((_, committed)) = self.peers.get_mut(&peer) {
                *committed = (*committed).max(highest);
            }
            let whole = asked.is_some_and(|(_, to)| highest == to);
            let far = self.known_committed().0 > self.committed.0 + self.config.checkpoint_interval;
            if whole || far {
                self.transfer_next = true;
                self.continue_transfer();
            }
        }
    }
}
