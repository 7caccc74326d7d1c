//! The authenticated map of accounts: an append-indexed binary Merkle tree.
//!
//! Every account is given a *slot* when it is created (genesis accounts in address order, then
//! new accounts in execution order), so the slot of an account is the same on every replica. The
//! leaf at a slot hashes the account's address, balance and nonce. Updating a leaf recomputes the
//! `depth = ceil(log2(count))` nodes above it: O(log n) per touched account.
//!
//! The tree lives in memory (64 bytes per account) and is rebuilt from the accounts column
//! family when the store opens; see `docs/decisions.md` for why this was chosen over jmt.

use std::collections::BTreeMap;

use tetrad_consensus::Digest;

use crate::merkle::{self, MerkleProof};

/// The nodes a block changes: `(level, index, hash)` bottom-up, and the new leaf count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeUpdate {
    pub count: u64,
    pub nodes: Vec<(usize, u64, Digest)>,
    pub root: Digest,
}

#[derive(Clone, Debug)]
pub struct StateTree {
    /// `levels[0]` are the leaves; `levels[k]` holds `ceil(count / 2^k)` nodes.
    levels: Vec<Vec<Digest>>,
}

impl Default for StateTree {
    fn default() -> Self {
        StateTree::from_leaves(Vec::new())
    }
}

impl StateTree {
    pub fn from_leaves(leaves: Vec<Digest>) -> StateTree {
        StateTree { levels: merkle::build_levels(leaves) }
    }

    pub fn count(&self) -> u64 {
        self.levels[0].len() as u64
    }

    pub fn root(&self) -> Digest {
        let top =
            self.levels.last().and_then(|level| level.first()).copied().unwrap_or(merkle::empty_hash(0));
        merkle::root_of(self.count(), &top)
    }

    pub fn leaf(&self, slot: u64) -> Option<Digest> {
        self.levels[0].get(slot as usize).copied()
    }

    pub fn prove(&self, slot: u64) -> Option<MerkleProof> {
        if slot >= self.count() {
            return None;
        }
        Some(MerkleProof { index: slot, count: self.count(), siblings: merkle::siblings(&self.levels, slot) })
    }

    /// A node as stored (before any update).
    fn stored(&self, level: usize, index: u64) -> Digest {
        self.levels
            .get(level)
            .and_then(|nodes| nodes.get(index as usize))
            .copied()
            .unwrap_or(merkle::empty_hash(level))
    }

    /// The nodes and root after setting the leaves in `updates` (slot → leaf hash), without
    /// changing the tree. Slots at or above `count` append; they must extend the tree without gaps.
    pub fn update(&self, updates: &BTreeMap<u64, Digest>) -> TreeUpdate {
        let count = match updates.keys().next_back() {
            Some(&last) if last >= self.count() => last + 1,
            _ => self.count(),
        };
        assert!(
            updates.range(self.count()..).count() as u64 == count - self.count(),
            "new slots must extend the state tree without gaps"
        );
        if updates.is_empty() {
            return TreeUpdate { count, nodes: Vec::new(), root: self.root() };
        }
        let depth = merkle::depth(count);
        let mut nodes = Vec::with_capacity(updates.len() * 3);
        // The changed nodes of one level, sorted by index: every other node of that level is
        // as stored, so a sibling is either the next changed node or a stored one.
        let mut changed: Vec<(u64, Digest)> = updates.iter().map(|(slot, leaf)| (*slot, *leaf)).collect();
        nodes.extend(changed.iter().map(|(index, hash)| (0, *index, *hash)));
        for level in 0..depth {
            let mut parents = Vec::with_capacity(changed.len() / 2 + 1);
            let mut position = 0;
            while position < changed.len() {
                let (index, hash) = changed[position];
                let (left, right) = if index.is_multiple_of(2) {
                    match changed.get(position + 1) {
                        Some(&(next, next_hash)) if next == index + 1 => {
                            position += 1;
                            (hash, next_hash)
                        }
                        _ => (hash, self.stored(level, index + 1)),
                    }
                } else {
                    (self.stored(level, index - 1), hash)
                };
                position += 1;
                let parent = (index / 2, merkle::node_hash(&left, &right));
                nodes.push((level + 1, parent.0, parent.1));
                parents.push(parent);
            }
            changed = parents;
        }
        // After `depth` levels exactly one node is left: the top.
        assert_eq!(changed.len(), 1, "state tree update did not converge to one top node");
        TreeUpdate { count, nodes, root: merkle::root_of(count, &changed[0].1) }
    }

    /// Writes an update computed by [`StateTree::update`] on this same tree.
    pub fn apply(&mut self, update: &TreeUpdate) {
        let depth = merkle::depth(update.count);
        while self.levels.len() < depth + 1 {
            self.levels.push(Vec::new());
        }
        for (level, index, hash) in &update.nodes {
            let nodes = &mut self.levels[*level];
            let index = *index as usize;
            if index >= nodes.len() {
                // Appends only ever extend a level by the nodes just computed.
                nodes.resize(index + 1, merkle::empty_hash(*level));
            }
            nodes[index] = *hash;
        }
        assert_eq!(self.count(), update.count, "state tree update applied to another tree");
        debug_assert_eq!(self.root(), update.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(seed: u64) -> Digest {
        merkle::leaf_hash(&seed.to_le_bytes())
    }

    #[test]
    fn incremental_updates_match_a_rebuild() {
        let mut tree = StateTree::default();
        let mut reference: Vec<Digest> = Vec::new();
        let mut seed = 1u64;
        for round in 0..40u64 {
            let mut updates = BTreeMap::new();
            // Touch a few existing slots and append a few new ones.
            for k in 0..(round % 5) {
                if !reference.is_empty() {
                    let slot = (round * 7 + k * 13) % reference.len() as u64;
                    seed += 1;
                    updates.insert(slot, leaf(seed));
                }
            }
            for k in 0..(round % 4) {
                seed += 1;
                updates.insert(reference.len() as u64 + k, leaf(seed));
            }
            let update = tree.update(&updates);
            for (&slot, &hash) in &updates {
                if slot as usize >= reference.len() {
                    reference.push(hash);
                } else {
                    reference[slot as usize] = hash;
                }
            }
            assert_eq!(update.root, merkle::root(&reference), "round {round}");
            tree.apply(&update);
            assert_eq!(tree.root(), merkle::root(&reference), "round {round}");
            for slot in 0..reference.len() as u64 {
                let proof = tree.prove(slot).expect("slot exists");
                assert!(merkle::verify(&tree.root(), &reference[slot as usize], &proof));
            }
        }
    }

    #[test]
    fn update_does_not_change_the_tree() {
        let tree = StateTree::from_leaves((0..5).map(leaf).collect());
        let before = tree.root();
        let mut updates = BTreeMap::new();
        updates.insert(2, leaf(99));
        updates.insert(5, leaf(100));
        let update = tree.update(&updates);
        assert_ne!(update.root, before);
        assert_eq!(tree.root(), before);
    }

    #[test]
    #[should_panic(expected = "without gaps")]
    fn gaps_are_refused() {
        let tree = StateTree::from_leaves((0..5).map(leaf).collect());
        let mut updates = BTreeMap::new();
        updates.insert(7, leaf(1));
        let _ = tree.update(&updates);
    }
}
