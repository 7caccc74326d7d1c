//! Adversaries that send *valid, signed* messages chosen to hurt.

use std::sync::Arc;

use tetrad_consensus::certificate::Signed;
use tetrad_consensus::view_messages::{NewView, PreparedCertificate, ViewChange, reproposals};
use tetrad_consensus::wire::Message;
use tetrad_consensus::{Height, PrePrepare, ValidatorIndex, View};

use super::{Behavior, Event, World, validator_key};

impl World {
    /// Hole 1's attacker: holds the genesis key of every validator whose honest owner erased it
    /// (its stable checkpoint passed the epoch boundary), plus the current keys of the colluding
    /// validators. For the next view it forges view-changes (claiming no checkpoint, so they
    /// verify under the genesis keys) and, when it can sign for that view's primary, the
    /// new-view built from them, which re-proposes nothing. Everything goes to every replica,
    /// past any partition.
    pub(super) fn key_compromise_attack(&mut self) {
        for instance in &self.instances {
            if instance.honest()
                && let Some(replica) = &instance.replica
                && replica.key_heights().first().is_some_and(|first| *first > Height::GENESIS)
            {
                self.leaked.insert(instance.index.0);
            }
        }
        let colluders: Vec<usize> = (0..self.instances.len())
            .filter(|&id| {
                self.instances[id].behavior == Some(Behavior::Colluder)
                    && self.instances[id].replica.is_some()
            })
            .collect();
        let genesis = self.schedule.at(Height(1)).clone();
        if self.leaked.len() + colluders.len() < genesis.quorum() || self.leaked.is_empty() {
            return;
        }
        let highest = self
            .instances
            .iter()
            .filter(|instance| instance.honest())
            .filter_map(|instance| instance.replica.as_ref().map(|replica| replica.view()))
            .max()
            .unwrap_or_default();
        let view = View(highest.0 + self.rng.range(1, 2));
        // Colluders sign with their current key over a genuine stable checkpoint.
        let mut view_changes: Vec<Signed<ViewChange>> = Vec::new();
        let mut colluder_keys = Vec::new();
        for &id in &colluders {
            let Some(checkpoint) = self.latest_stable.clone() else { continue };
            let key_height = checkpoint.statement.height.next();
            let instance = &self.instances[id];
            let Some((_, key)) = instance.keys.iter().rev().find(|(first, _)| *first <= key_height) else {
                continue;
            };
            let body = ViewChange { new_view: view, checkpoint: Some(checkpoint), prepared: Vec::new() };
            let signed = Signed::sign(body, instance.index, key, self.schedule.at(key_height));
            colluder_keys.push((instance.index, key_height, key.clone()));
            view_changes.push(signed);
        }
        for &validator in &self.leaked {
            if view_changes.iter().any(|vc| vc.signer.0 == validator) {
                continue;
            }
            let body = ViewChange { new_view: view, checkpoint: None, prepared: Vec::new() };
            view_changes.push(Signed::sign(
                body,
                ValidatorIndex(validator),
                &validator_key(validator),
                &genesis,
            ));
        }
        view_changes.sort_by_key(|vc| vc.signer);
        view_changes.truncate(genesis.n());
        let mut messages: Vec<Message> = view_changes.iter().cloned().map(Message::ViewChange).collect();
        // The new-view, if the attacker can sign for the primary of `view` in the epoch the
        // new-view is verified under.
        let primary = genesis.primary(view);
        let min_s = view_changes.iter().map(|vc| vc.body.stable_height()).max().unwrap_or(Height::GENESIS);
        let key = if min_s == Height::GENESIS && self.leaked.contains(&primary.0) {
            Some(validator_key(primary.0))
        } else {
            colluder_keys
                .iter()
                .find(|(index, key_height, _)| *index == primary && *key_height == min_s.next())
                .map(|(_, _, key)| key.clone())
        };
        if let Some(key) = key {
            let set = self.schedule.at(min_s.next()).clone();
            let pre_prepares = reproposals(view, primary, &view_changes)
                .into_iter()
                .map(|(height, digest)| {
                    Signed::sign(PrePrepare { view, height, digest }, primary, &key, self.schedule.at(height))
                })
                .collect();
            let body = NewView { view, view_changes: view_changes.clone(), pre_prepares };
            messages.push(Message::NewView(Signed::sign(body, primary, &key, &set)));
        }
        let from = colluders.first().copied().unwrap_or(0);
        for message in messages {
            self.forgeries += 1;
            let bytes = Arc::new(message.encode());
            for to in 0..self.instances.len() {
                if self.instances[to].honest() {
                    let delay = self.rng.range(1, self.scenario.delay_max_ms);
                    self.push(self.now + delay, Event::Deliver { to, from, bytes: bytes.clone() });
                }
            }
        }
    }
}

impl World {
    /// Keeps the view-changes a Byzantine instance receives (alone and inside new-views).
    pub(super) fn remember_view_changes(&mut self, id: usize, message: &Message) {
        let view_changes: Vec<Signed<ViewChange>> = match message {
            Message::ViewChange(view_change) => vec![view_change.clone()],
            Message::NewView(new_view) => new_view.body.view_changes.clone(),
            _ => return,
        };
        let seen = &mut self.instances[id].seen_view_changes;
        for view_change in view_changes {
            seen.insert((view_change.body.new_view.0, view_change.signer.0), view_change);
        }
        // Bounded: only the latest views matter.
        while seen.len() > 256 {
            seen.pop_first();
        }
    }

    /// The Byzantine instance's own view-change with its prepared certificates replaced by real
    /// but stale ones: per height, the lowest view it has seen, preferring a digest that a later
    /// view replaced.
    pub(super) fn stale_view_change(&mut self, from: usize, view_change: &Signed<ViewChange>) -> Message {
        let instance = &self.instances[from];
        let stable = view_change.body.stable_height();
        let high = Height(stable.0 + super::WINDOW);
        let mut by_height: std::collections::BTreeMap<Height, Vec<PreparedCertificate>> = Default::default();
        let own = view_change.body.prepared.iter();
        let seen = instance.seen_view_changes.values().flat_map(|vc| vc.body.prepared.iter());
        for certificate in own.chain(seen) {
            let height = certificate.height();
            if height > stable && height <= high && certificate.view() < view_change.body.new_view {
                by_height.entry(height).or_default().push(certificate.clone());
            }
        }
        let mut prepared = Vec::new();
        for (_, mut certificates) in by_height {
            certificates.sort_by_key(|certificate| certificate.view());
            let newest = certificates[certificates.len() - 1].digest();
            let replaced = certificates.iter().find(|certificate| certificate.digest() != newest);
            prepared.push(replaced.unwrap_or(&certificates[0]).clone());
        }
        let body = ViewChange { prepared, ..view_change.body.clone() };
        let key_height = body.stable_height().next();
        let key =
            instance.keys.iter().rev().find(|(first, _)| *first <= key_height).map(|(_, key)| key.clone());
        match key {
            Some(key) => {
                Message::ViewChange(Signed::sign(body, instance.index, &key, self.schedule.at(key_height)))
            }
            None => Message::ViewChange(view_change.clone()),
        }
    }

    /// A valid new-view for backup `to`, built from a quorum of real view-changes chosen by `to`
    /// (so different backups get different new-views).
    pub(super) fn split_new_view(&mut self, from: usize, to: usize, new_view: &Signed<NewView>) -> Message {
        let instance = &self.instances[from];
        let view = new_view.body.view;
        let mut candidates: Vec<Signed<ViewChange>> = instance
            .seen_view_changes
            .range((view.0, 0)..=(view.0, u16::MAX))
            .map(|(_, vc)| vc.clone())
            .collect();
        for view_change in &new_view.body.view_changes {
            if !candidates.iter().any(|vc| vc.signer == view_change.signer) {
                candidates.push(view_change.clone());
            }
        }
        candidates.sort_by_key(|vc| vc.signer);
        let quorum = new_view.body.view_changes.len();
        if candidates.len() <= quorum {
            return Message::NewView(new_view.clone());
        }
        let offset = to % candidates.len();
        let mut chosen: Vec<Signed<ViewChange>> =
            (0..quorum).map(|i| candidates[(offset + i) % candidates.len()].clone()).collect();
        chosen.sort_by_key(|vc| vc.signer);
        let me = instance.index;
        let key_for = |height: Height| {
            instance.keys.iter().rev().find(|(first, _)| *first <= height).map(|(_, key)| key.clone())
        };
        let mut pre_prepares = Vec::new();
        for (height, digest) in reproposals(view, me, &chosen) {
            let Some(key) = key_for(height) else { return Message::NewView(new_view.clone()) };
            pre_prepares.push(Signed::sign(
                PrePrepare { view, height, digest },
                me,
                &key,
                self.schedule.at(height),
            ));
        }
        let (min_s, _) = tetrad_consensus::view_messages::reproposal_range(&chosen);
        let Some(key) = key_for(min_s.next()) else { return Message::NewView(new_view.clone()) };
        let body = NewView { view, view_changes: chosen, pre_prepares };
        Message::NewView(Signed::sign(body, me, &key, self.schedule.at(min_s.next())))
    }
}
