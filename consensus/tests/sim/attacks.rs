//! Adversaries that send *valid, signed* messages chosen to hurt.

use std::sync::Arc;

use tetrad_consensus::certificate::Signed;
use tetrad_consensus::view_messages::{NewView, ViewChange, reproposals};
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
