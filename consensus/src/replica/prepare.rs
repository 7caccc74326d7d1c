//! PBFT §4.2, second phase: 2f matching prepares and the pre-prepare make a request prepared.

use super::{DropReason, Replica, signers_for};
use crate::certificate::Signed;
use crate::messages::{Commit, Prepare};
use crate::safety::SafetyRecord;
use crate::view_messages::PreparedCertificate;
use crate::wire::Message;

impl Replica {
    pub(super) fn on_prepare(&mut self, prepare: Signed<Prepare>) {
        let Prepare { view, height, .. } = prepare.body;
        if let Some(reason) = self.check_vote_view_and_height(view, height) {
            return self.drop_message(reason);
        }
        if prepare.signer == self.set_at(height).primary(view) {
            // PBFT §4.2: the primary's pre-prepare stands for its prepare.
            return self.drop_message(DropReason::NotFromPrimary);
        }
        let slot = self.log.entry(height).or_default();
        if slot.prepares.contains_key(&prepare.signer) {
            return self.drop_message(DropReason::Duplicate);
        }
        slot.prepares.insert(prepare.signer, prepare);
        self.check_prepared(height);
    }

    /// Common checks for prepares and commits: the current, installed view; inside the window.
    pub(super) fn check_vote_view_and_height(
        &self,
        view: crate::types::View,
        height: crate::types::Height,
    ) -> Option<DropReason> {
        if view < self.view {
            Some(DropReason::OldView)
        } else if view > self.view {
            Some(DropReason::FutureView)
        } else if !self.view_active {
            Some(DropReason::ViewChanging)
        } else if !self.in_window(height) {
            Some(DropReason::OutsideWindow)
        } else {
            None
        }
    }

    /// PBFT §4.2: prepared(m, v, n, i) holds once the log has the pre-prepare and 2f matching
    /// prepares from distinct backups. Then the replica persists the certificate and commits.
    pub(super) fn check_prepared(&mut self, height: crate::types::Height) {
        let Some(slot) = self.log.get(&height) else { return };
        let Some(pre_prepare) = slot.pre_prepare.clone() else { return };
        if slot.sent_commit {
            return;
        }
        let set = self.schedule.at(height);
        let needed = set.quorum() - 1;
        let digest = pre_prepare.body.digest;
        let primary = set.primary(pre_prepare.body.view);
        let signers = signers_for(&slot.prepares, digest, |prepare| prepare.digest);
        let backups: Vec<_> = signers.into_iter().filter(|signer| *signer != primary).collect();
        if backups.len() < needed {
            return;
        }
        let view = pre_prepare.body.view;
        if self.safety.check_commit(view, height, digest).is_err() {
            return self.drop_message(DropReason::SafetyRule);
        }
        let prepares = backups
            .iter()
            .filter_map(|signer| slot.prepares.get(signer).map(|prepare| (*signer, prepare.signature)))
            .collect();
        let certificate = PreparedCertificate { pre_prepare, prepares };
        let Some(commit) = self.sign(Commit { view, height, digest }) else { return };
        self.safety.record_commit(view, height, digest);
        let slot = self.log.entry(height).or_default();
        slot.prepared = Some(certificate.clone());
        slot.sent_commit = true;
        slot.commits.insert(self.me, commit.clone());
        self.persist_then_broadcast(SafetyRecord::Prepared(certificate), Message::Commit(commit));
        self.check_committed(height);
    }
}
