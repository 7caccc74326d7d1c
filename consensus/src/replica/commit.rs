//! PBFT §4.2, third phase: 2f+1 matching commits make a request committed-local; batches are
//! delivered strictly in height order, each with its commit certificate.

use super::{Committed, DropReason, Replica, signers_for};
use crate::certificate::{Certificate, Signed};
use crate::messages::Commit;
use crate::types::Height;

impl Replica {
    pub(super) fn on_commit(&mut self, commit: Signed<Commit>) {
        let Commit { view, height, .. } = commit.body;
        if let Some(reason) = self.check_vote_view_and_height(view, height) {
            return self.drop_message(reason);
        }
        let slot = self.log.entry(height).or_default();
        if slot.commits.contains_key(&commit.signer) {
            return self.drop_message(DropReason::Duplicate);
        }
        slot.commits.insert(commit.signer, commit);
        self.check_committed(height);
    }

    /// committed-local: a quorum of commits for one digest in the current view. A quorum of
    /// commits means f+1 honest replicas prepared that digest, so no other digest can ever be
    /// committed at this height; the certificate is self-standing proof, and the batch is
    /// fetched if this replica never saw it.
    pub(super) fn check_committed(&mut self, height: Height) {
        let Some(slot) = self.log.get(&height) else { return };
        if slot.certificate.is_some() || height <= self.committed {
            return;
        }
        let set = self.schedule.at(height);
        // Group the commits by digest; honest replicas commit only one per (view, height).
        let mut digests: Vec<_> = slot.commits.values().map(|commit| commit.body.digest).collect();
        digests.sort();
        digests.dedup();
        let Some((digest, signers)) = digests
            .into_iter()
            .map(|digest| (digest, signers_for(&slot.commits, digest, |commit| commit.digest)))
            .find(|(_, signers)| signers.len() >= set.quorum())
        else {
            return;
        };
        let view = self.view;
        let statement = Commit { view, height, digest };
        let votes: Vec<_> = signers.iter().filter_map(|signer| slot.commits.get(signer)).collect();
        let certificate = Certificate::from_votes(statement, votes);
        let missing = !slot.batches.contains_key(&digest);
        if let Some(slot) = self.log.get_mut(&height) {
            slot.certificate = Some(certificate);
        }
        if missing {
            self.fetch_batch(height, digest);
        }
        self.deliver();
    }

    /// Delivers every height after the last delivered one whose certificate and batch are both
    /// known, in order (execution is strictly in height order).
    pub(super) fn deliver(&mut self) {
        let mut progressed = false;
        loop {
            let next = self.committed.next();
            if let Some(block) = self.transfer_buffer.remove(&next) {
                self.committed_time_ms = self.committed_time_ms.max(block.batch().timestamp_ms);
                self.transferred_unexecuted.insert(next, block.batch().clone());
                self.actions.committed.push(Committed {
                    height: next,
                    batch: block.batch().clone(),
                    certificate: block.certificate().clone(),
                });
                self.committed = next;
                progressed = true;
                continue;
            }
            let Some(slot) = self.log.get(&next) else { break };
            let Some(certificate) = slot.certificate.clone() else { break };
            let Some(batch) = slot.batches.get(&certificate.statement.digest).cloned() else { break };
            self.committed_time_ms = self.committed_time_ms.max(batch.timestamp_ms);
            self.actions.committed.push(Committed { height: next, batch, certificate });
            self.committed = next;
            progressed = true;
        }
        if progressed {
            self.transfer_misses.clear();
            if self.next_height <= self.committed {
                self.next_height = self.committed.next();
            }
            self.on_progress();
        }
    }
}
