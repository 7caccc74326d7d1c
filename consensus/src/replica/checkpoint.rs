//! PBFT §4.3: checkpoints every K heights over (height, header hash, state root); 2f+1 matching
//! ones make a stable checkpoint (a finalized header), which moves the watermarks and lets the
//! log be dropped.

use super::{DropReason, Replica};
use crate::certificate::{Certificate, CheckpointCertificate, Signed};
use crate::messages::Checkpoint;
use crate::safety::SafetyRecord;
use crate::safety::SafetyWrite;
use crate::types::{Digest, Height};
use crate::wire::Message;

/// Checkpoint heights remembered per signer above the low watermark (a Byzantine validator
/// cannot grow the map by voting for many heights).
const CHECKPOINT_VOTES_PER_SIGNER_MAX: usize = 8;

impl Replica {
    pub(super) fn on_executed(&mut self, height: Height, header_hash: Digest, state_root: Digest) {
        self.transferred_unexecuted = self.transferred_unexecuted.split_off(&height.next());
        self.checkpoint_executed(height, header_hash, state_root);
        if self.halted.is_none() {
            self.continue_transfer();
        }
    }

    /// Signs a checkpoint vote at every checkpoint height executed (and checks a stable
    /// checkpoint adopted from others against what this replica executed).
    fn checkpoint_executed(&mut self, height: Height, header_hash: Digest, state_root: Digest) {
        assert!(height <= self.committed, "executed {height} before it was committed ({})", self.committed);
        assert_eq!(height, self.executed.next(), "execution must be in height order");
        self.executed = height;
        let statement = Checkpoint { height, header_hash, state_root };
        // Caught up to a stable checkpoint adopted from others (state transfer): the state this
        // replica reached must be the certified one.
        if height == self.low
            && let Some(stable) = &self.stable
            && stable.statement != statement
        {
            let certified = stable.statement.clone();
            return self.diverge(height, certified, statement);
        }
        if !height.0.is_multiple_of(self.config.checkpoint_interval) || height <= self.low {
            return;
        }
        let Some(vote) = self.sign(statement) else { return };
        self.broadcast(Message::Checkpoint(vote.clone()));
        self.record_checkpoint_vote(vote);
        self.check_stable(height);
    }

    pub(super) fn on_checkpoint(&mut self, vote: Signed<Checkpoint>) {
        let height = vote.body.height;
        if height <= self.low {
            return self.drop_message(DropReason::StaleCheckpoint);
        }
        if !height.0.is_multiple_of(self.config.checkpoint_interval) {
            return self.drop_message(DropReason::Unexpected);
        }
        self.record_checkpoint_vote(vote);
        self.check_stable(height);
        self.check_behind_window();
    }

    fn record_checkpoint_vote(&mut self, vote: Signed<Checkpoint>) {
        let signer = vote.signer;
        let height = vote.body.height;
        self.checkpoint_votes.entry(height).or_default().insert(signer, vote);
        let mine: Vec<Height> = self
            .checkpoint_votes
            .iter()
            .filter(|(_, votes)| votes.contains_key(&signer))
            .map(|(h, _)| *h)
            .collect();
        if mine.len() > CHECKPOINT_VOTES_PER_SIGNER_MAX {
            // Forget the signer's lowest vote: the highest ones are what tell us we are behind.
            if let Some(votes) = self.checkpoint_votes.get_mut(&mine[0]) {
                votes.remove(&signer);
            }
        }
        self.checkpoint_votes.retain(|_, votes| !votes.is_empty());
    }

    /// A quorum of matching checkpoint votes at `height` makes it stable.
    fn check_stable(&mut self, height: Height) {
        let Some(votes) = self.checkpoint_votes.get(&height) else { return };
        let quorum = self.set_at(height).quorum();
        let mut statements: Vec<&Checkpoint> = votes.values().map(|vote| &vote.body).collect();
        statements.sort_by_key(|statement| (statement.header_hash, statement.state_root));
        statements.dedup();
        let Some(statement) = statements
            .into_iter()
            .find(|statement| votes.values().filter(|vote| &vote.body == *statement).count() >= quorum)
            .cloned()
        else {
            return;
        };
        let certificate = Certificate::from_votes(statement, votes.values());
        self.adopt_stable_checkpoint(certificate);
    }

    /// Moves the low watermark to a stable checkpoint (PBFT §4.3), from a quorum of votes or a
    /// new-view's view-changes. If this replica has not committed that far, it fetches blocks.
    pub(super) fn adopt_stable_checkpoint(&mut self, certificate: CheckpointCertificate) {
        let height = certificate.statement.height;
        if height <= self.low {
            return;
        }
        if let Some(mine) = self.checkpoint_votes.get(&height).and_then(|votes| votes.get(&self.me)).cloned()
            && mine.body != certificate.statement
        {
            // This replica's execution disagrees with a quorum: a determinism bug or corrupted
            // state. It stops (fail-stop) rather than sign or serve anything from that state.
            self.drop_message(DropReason::CheckpointMismatch);
            return self.diverge(height, certificate.statement, mine.body);
        }
        self.low = height;
        self.stable = Some(certificate.clone());
        self.actions.persist.push(SafetyWrite::Put(SafetyRecord::Stable(certificate.clone())));
        self.actions.stable_checkpoints.push(certificate);
        self.collect_garbage(height);
        self.forget_retired_view_changes();
        if self.next_height <= height {
            self.next_height = height.next();
        }
        if self.committed < height {
            self.request_blocks(height);
        }
    }

    /// The low watermark moved: view-changes signed under epochs now retired no longer count.
    /// If this replica's own is among them while it changes views, no peer past the boundary
    /// accepts it any more, and it may not sign a second one for the same view: it moves on to
    /// the next view with a view-change signed under its current key.
    fn forget_retired_view_changes(&mut self) {
        let retired: Vec<_> = self
            .view_changes
            .iter()
            .filter(|(_, vc)| self.retired(crate::certificate::Statement::key_height(&vc.body)))
            .map(|(signer, _)| *signer)
            .collect();
        for signer in &retired {
            self.view_changes.remove(signer);
        }
        if !self.view_active && retired.contains(&self.me) {
            self.start_view_change(self.view.next());
        }
    }

    /// PBFT §4.3: f+1 checkpoint votes above the high watermark mean this replica is behind.
    fn check_behind_window(&mut self) {
        let high = Height(self.low.0 + self.config.watermark_window);
        let f_plus_one = self.set_at(high).weak_quorum();
        let mut signers = std::collections::BTreeSet::new();
        let mut target = Height::GENESIS;
        for (height, votes) in self.checkpoint_votes.range(high.next()..) {
            signers.extend(votes.keys().copied());
            target = target.max(*height);
        }
        if signers.len() >= f_plus_one && self.committed < target {
            self.request_blocks(target);
        }
    }
}
