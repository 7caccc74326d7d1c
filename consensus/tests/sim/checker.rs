//! The invariants the simulator checks after every step.

use std::collections::{BTreeMap, HashMap};

use tetrad_consensus::certificate::Signed;
use tetrad_consensus::view_messages::{NewView, reproposal_range};
use tetrad_consensus::wire::Message;
use tetrad_consensus::{CheckpointCertificate, Committed, Digest, Height, ValidatorSchedule, View};

pub struct Checker {
    schedule: ValidatorSchedule,
    honest: Vec<bool>,
    /// Per validator index: every instance of it is honest.
    honest_validators: Vec<bool>,
    /// The digest committed at each height by the first honest replica to commit it.
    committed: BTreeMap<u64, (Digest, usize)>,
    /// What each honest validator signed: (validator, kind, view, height) → digest.
    votes: HashMap<(u16, u8, u64, u64), Digest>,
    view_changes: HashMap<(u16, u64), Digest>,
    checkpoints: HashMap<(u16, u64), (Digest, Digest)>,
    violation: Option<String>,
    rejected: u64,
    /// (time healed, liveness bound, highest honest height at healing).
    heal: Option<(u64, u64, u64)>,
    /// When each instance first committed above that height.
    progressed_at: Vec<Option<u64>>,
}

const ACCEPT: u8 = 0;
const COMMIT: u8 = 1;

impl Checker {
    pub fn new(schedule: ValidatorSchedule, honest: Vec<bool>, honest_validators: Vec<bool>) -> Checker {
        let instances = honest.len();
        Checker {
            schedule,
            honest,
            honest_validators,
            committed: BTreeMap::new(),
            votes: HashMap::new(),
            view_changes: HashMap::new(),
            checkpoints: HashMap::new(),
            violation: None,
            rejected: 0,
            heal: None,
            progressed_at: vec![None; instances],
        }
    }

    /// The validator schedule certificates are checked against (it grows with rotations).
    pub fn set_schedule(&mut self, schedule: ValidatorSchedule) {
        self.schedule = schedule;
    }

    pub fn violation(&self) -> Option<&str> {
        self.violation.as_deref()
    }

    pub fn fail(&mut self, message: String) {
        if self.violation.is_none() {
            self.violation = Some(message);
        }
    }

    pub fn count_rejected(&mut self) {
        self.rejected += 1;
    }

    /// No honest replica signs two different digests for one (view, height) and kind, two
    /// different view-changes for one view, or two different checkpoints for one height.
    /// Only signatures of the sender's own validator count: a replica also forwards messages
    /// that others signed (a new-view to a replica that missed it).
    pub fn observe_sent(&mut self, instance: usize, sender: u16, message: &Message) {
        let mut accept = Vec::new();
        match message {
            Message::PrePrepare { pre_prepare, .. } => accept.push((
                pre_prepare.signer.0,
                ACCEPT,
                &pre_prepare.body.view,
                &pre_prepare.body.height,
                pre_prepare.body.digest,
            )),
            Message::Prepare(prepare) => accept.push((
                prepare.signer.0,
                ACCEPT,
                &prepare.body.view,
                &prepare.body.height,
                prepare.body.digest,
            )),
            Message::Commit(commit) => accept.push((
                commit.signer.0,
                COMMIT,
                &commit.body.view,
                &commit.body.height,
                commit.body.digest,
            )),
            Message::NewView(new_view) => {
                if new_view.signer.0 == sender {
                    self.check_new_view_choice(instance, new_view);
                }
                for pre_prepare in &new_view.body.pre_prepares {
                    accept.push((
                        pre_prepare.signer.0,
                        ACCEPT,
                        &pre_prepare.body.view,
                        &pre_prepare.body.height,
                        pre_prepare.body.digest,
                    ));
                }
            }
            Message::ViewChange(view_change) if view_change.signer.0 == sender => {
                let body = Digest::of(&borsh::to_vec(&view_change.body).expect("encode"));
                let key = (view_change.signer.0, view_change.body.new_view.0);
                if let Some(previous) = self.view_changes.insert(key, body)
                    && previous != body
                {
                    self.fail(format!("honest instance {instance} sent two view-changes for view {}", key.1));
                }
            }
            Message::Checkpoint(checkpoint) if checkpoint.signer.0 == sender => {
                let value = (checkpoint.body.header_hash, checkpoint.body.state_root);
                let key = (checkpoint.signer.0, checkpoint.body.height.0);
                if let Some(previous) = self.checkpoints.insert(key, value)
                    && previous != value
                {
                    self.fail(format!(
                        "honest instance {instance} sent two checkpoints for height {}",
                        key.1
                    ));
                }
            }
            _ => {}
        }
        for (signer, kind, view, height, digest) in accept {
            if signer != sender {
                continue;
            }
            if let Some(previous) = self.votes.insert((signer, kind, view.0, height.0), digest)
                && previous != digest
            {
                let kind = if kind == ACCEPT { "pre-prepare/prepare" } else { "commit" };
                self.fail(format!(
                    "honest validator {signer} signed two {kind} digests at view {view} height {height}: {previous:?} and {digest:?}"
                ));
            }
        }
    }

    /// An honest primary's new-view re-proposes, at each height, a digest whose certificate is
    /// at least as high as the highest-view prepared certificate among the honest view-changes
    /// it holds, and that digest if the views are equal: a stale certificate (a lower view, or
    /// a digest a later view replaced) never wins. A *higher* certificate from a faulty sender
    /// may win: it is real, and nothing committed can be overridden by it (quorum intersection).
    fn check_new_view_choice(&mut self, instance: usize, new_view: &Signed<NewView>) {
        let (min_s, _) = reproposal_range(&new_view.body.view_changes);
        let mut honest_best: BTreeMap<Height, (View, Digest)> = BTreeMap::new();
        // The highest view of a certificate for each (height, digest), from any sender.
        let mut best_for_digest: BTreeMap<(Height, Digest), View> = BTreeMap::new();
        for view_change in &new_view.body.view_changes {
            let honest = self.honest_validators.get(view_change.signer.as_usize()).copied().unwrap_or(false);
            for certificate in &view_change.body.prepared {
                if certificate.height() <= min_s {
                    continue;
                }
                let key = (certificate.height(), certificate.digest());
                let view = best_for_digest.entry(key).or_insert(certificate.view());
                *view = (*view).max(certificate.view());
                if !honest {
                    continue;
                }
                let candidate = (certificate.view(), certificate.digest());
                let entry = honest_best.entry(certificate.height()).or_insert(candidate);
                if candidate.0 > entry.0 {
                    *entry = candidate;
                }
            }
        }
        for pre_prepare in &new_view.body.pre_prepares {
            let height = pre_prepare.body.height;
            let Some((view, digest)) = honest_best.get(&height).copied() else { continue };
            let chosen = best_for_digest.get(&(height, pre_prepare.body.digest)).copied();
            if digest != pre_prepare.body.digest && chosen.is_none_or(|chosen| chosen <= view) {
                if std::env::var_os("TETRAD_SIM_DEBUG").is_some() {
                    for vc in &new_view.body.view_changes {
                        let certs: Vec<_> =
                            vc.body.prepared.iter().map(|c| (c.height().0, c.view().0, c.digest())).collect();
                        eprintln!(
                            "view-change of {} (stable {}): {certs:?}",
                            vc.signer,
                            vc.body.stable_height()
                        );
                    }
                }
                self.fail(format!(
                    "honest instance {instance}'s new-view for view {} re-proposes {:?} at height {height} (certificate view {chosen:?}), but the honest view-changes' highest certificate (view {view}) is for {digest:?}",
                    new_view.body.view, pre_prepare.body.digest
                ));
            }
        }
    }

    /// Agreement, certificate validity and batch validity of a delivered block.
    /// Only honest replicas' outputs are checked: a Byzantine replica may emit anything.
    pub fn check_committed(&mut self, now: u64, instance: usize, block: &Committed, valid: bool) {
        if !self.honest[instance] {
            return;
        }
        let height = block.height;
        let certificate = &block.certificate;
        if certificate.statement.height != height || certificate.statement.digest != block.batch.digest() {
            self.fail(format!(
                "instance {instance}: certificate at height {height} is not over the delivered batch"
            ));
        }
        if let Err(error) = certificate.verify(self.schedule.at(height)) {
            self.fail(format!(
                "instance {instance}: certificate at height {height} does not verify: {error}"
            ));
        }
        if !self.honest[instance] {
            return;
        }
        if !valid {
            self.fail(format!(
                "instance {instance} committed an invalid batch at height {height}: {:?}",
                block.batch
            ));
        }
        let digest = certificate.statement.digest;
        match self.committed.get(&height.0) {
            Some((first, other)) if *first != digest => {
                let other = *other;
                let first = *first;
                self.fail(format!(
                    "agreement: honest instances {other} and {instance} committed {first:?} and {digest:?} at height {height}"
                ));
            }
            Some(_) => {}
            None => {
                self.committed.insert(height.0, (digest, instance));
            }
        }
        if let Some((_, _, target)) = self.heal
            && height.0 > target
            && self.progressed_at[instance].is_none()
        {
            self.progressed_at[instance] = Some(now);
        }
    }

    pub fn check_checkpoint(&mut self, instance: usize, certificate: &CheckpointCertificate) {
        if !self.honest[instance] {
            return;
        }
        if let Err(error) = certificate.verify(self.schedule.at(certificate.statement.height)) {
            self.fail(format!("instance {instance}: stable checkpoint does not verify: {error}"));
        }
    }

    pub fn healed(&mut self, now: u64, bound: u64, heights: &[u64]) {
        let target = heights
            .iter()
            .zip(&self.honest)
            .filter(|(_, honest)| **honest)
            .map(|(h, _)| *h)
            .max()
            .unwrap_or(0);
        self.heal = Some((now, bound, target));
    }

    /// Liveness: after healing, every honest replica committed above the highest height any
    /// honest replica had at healing, within the bound.
    pub fn check_liveness(&mut self, end: u64, heights: &[u64]) {
        let Some((healed_at, bound, target)) = self.heal else { return };
        if end < healed_at + bound {
            return;
        }
        let progress: Vec<(usize, Option<u64>)> = self
            .progressed_at
            .iter()
            .copied()
            .enumerate()
            .filter(|(instance, _)| self.honest[*instance])
            .collect();
        for (instance, progressed_at) in progress {
            match progressed_at {
                Some(at) if at <= healed_at + bound => {}
                Some(at) => self.fail(format!(
                    "liveness: instance {instance} passed height {target} only {} ms after healing (bound {bound} ms)",
                    at - healed_at
                )),
                None => self.fail(format!(
                    "liveness: instance {instance} stayed at height {} (healed at {healed_at} ms with height {target}; bound {bound} ms)",
                    heights[instance]
                )),
            }
        }
    }
}
