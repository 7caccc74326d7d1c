//! The address tree: a sparse Merkle tree from every account's address to its slot in the
//! state tree, so that a light client can be shown that an address has *no* account.
//!
//! The state tree ([`crate::state_tree`]) is indexed by creation order: it proves what an
//! account holds, but not that an address is absent. This tree is keyed by
//! `blake3(address)` (256 bits, one per level), with the usual shortcut: a subtree that holds
//! exactly one key hashes to that key's leaf, and an empty one to zero. So the tree is about
//! log2(accounts) deep, a proof is the siblings down to where the key's path ends (at its own
//! leaf, at another key's leaf, or at an empty subtree), and every set of keys has exactly one
//! root. It changes only when an account is created (addresses never leave).
//!
//! Every node with two or more keys below it is cached, so reading a root or a proof never
//! recomputes; an insertion recomputes its path (at most 256 nodes).

use std::collections::{BTreeMap, HashMap};

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use tetrad_consensus::Digest;

use crate::tx::Address;

/// A key of the tree: the hash of an address.
pub fn key_of(address: &Address) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"tetrad/addr/key\0");
    hasher.update(&address.0);
    Digest(*hasher.finalize().as_bytes())
}

/// The hash of a subtree that holds only `key`, which maps to `slot`.
pub fn leaf_hash(key: &Digest, slot: u64) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"tetrad/addr/leaf");
    hasher.update(&key.0);
    hasher.update(&slot.to_le_bytes());
    Digest(*hasher.finalize().as_bytes())
}

fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"tetrad/addr/node");
    hasher.update(&left.0);
    hasher.update(&right.0);
    Digest(*hasher.finalize().as_bytes())
}

/// The hash of an empty subtree.
pub const EMPTY: Digest = Digest::ZERO;

const DEPTH: usize = 256;

/// A key of the tree and its slot.
type Entry = ([u8; 32], u64);

fn bit(key: &[u8; 32], depth: usize) -> bool {
    key[depth / 8] & (0x80 >> (depth % 8)) != 0
}

/// `key` with every bit from `depth` on set to `ones`: the ends of the range of keys that share
/// its first `depth` bits.
fn bound(key: &[u8; 32], depth: usize, ones: bool) -> [u8; 32] {
    let mut out = *key;
    for (index, byte) in out.iter_mut().enumerate() {
        let first = index * 8;
        if first + 8 <= depth {
            continue;
        }
        let keep = depth.saturating_sub(first).min(8);
        let mask: u8 = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        *byte = if ones { (*byte & mask) | !mask } else { *byte & mask };
    }
    out
}

fn with_bit(key: &[u8; 32], depth: usize, value: bool) -> [u8; 32] {
    let mut out = bound(key, depth + 1, false);
    if value {
        out[depth / 8] |= 0x80 >> (depth % 8);
    } else {
        out[depth / 8] &= !(0x80 >> (depth % 8));
    }
    out
}

/// The path of a key through the tree, as a proof shows it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct AddressProof {
    /// The siblings from the root down, one per level the path descends.
    pub siblings: Vec<Digest>,
    /// Where the path ends: the leaf of the subtree below the last sibling (`(key, slot)`), or
    /// `None` for an empty subtree.
    pub leaf: Option<(Digest, u64)>,
}

/// What a checked [`AddressProof`] says of an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    /// The address has the account at this slot of the state tree.
    Slot(u64),
    /// The address has no account.
    Absent,
}

/// Checks `proof` for `address` against `root`: what it proves, or `None` if it proves nothing.
pub fn verify(root: &Digest, address: &Address, proof: &AddressProof) -> Option<Membership> {
    let key = key_of(address);
    let depth = proof.siblings.len();
    if depth > DEPTH {
        return None;
    }
    let (mut node, membership) = match proof.leaf {
        None => (EMPTY, Membership::Absent),
        Some((leaf_key, slot)) => {
            // The leaf must sit on the key's path: the first `depth` bits agree.
            if bound(&leaf_key.0, depth, false) != bound(&key.0, depth, false) {
                return None;
            }
            let membership = if leaf_key == key { Membership::Slot(slot) } else { Membership::Absent };
            (leaf_hash(&leaf_key, slot), membership)
        }
    };
    for level in (0..depth).rev() {
        let sibling = &proof.siblings[level];
        node = if bit(&key.0, level) { node_hash(sibling, &node) } else { node_hash(&node, sibling) };
    }
    (node == *root).then_some(membership)
}

/// The tree: every key with its slot, and the hash of every node that has two or more keys.
#[derive(Clone, Debug, Default)]
pub struct AddressTree {
    keys: BTreeMap<[u8; 32], u64>,
    nodes: HashMap<(u16, [u8; 32]), Digest>,
}

impl AddressTree {
    /// Builds the tree of `accounts` (address, slot).
    pub fn build(accounts: impl IntoIterator<Item = (Address, u64)>) -> AddressTree {
        let keys: BTreeMap<[u8; 32], u64> =
            accounts.into_iter().map(|(address, slot)| (key_of(&address).0, slot)).collect();
        let sorted: Vec<([u8; 32], u64)> = keys.iter().map(|(key, slot)| (*key, *slot)).collect();
        let mut tree = AddressTree { keys, nodes: HashMap::new() };
        tree.build_from(0, &sorted);
        tree
    }

    /// Hashes the subtree at `depth` holding `sorted` (all sharing their first `depth` bits),
    /// caching every node with two or more keys.
    fn build_from(&mut self, depth: usize, sorted: &[([u8; 32], u64)]) -> Digest {
        match sorted {
            [] => EMPTY,
            [(key, slot)] => leaf_hash(&Digest(*key), *slot),
            [(first, _), ..] => {
                let split = sorted.partition_point(|(key, _)| !bit(key, depth));
                let left = self.build_from(depth + 1, &sorted[..split]);
                let right = self.build_from(depth + 1, &sorted[split..]);
                let hash = node_hash(&left, &right);
                self.nodes.insert((depth as u16, bound(first, depth, false)), hash);
                hash
            }
        }
    }

    /// The keys that share their first `depth` bits with `key`, up to two of them, and how
    /// many there are (0, 1 or 2 for "two or more").
    fn below(&self, depth: usize, key: &[u8; 32]) -> ([Option<Entry>; 2], usize) {
        let range = self.keys.range(bound(key, depth, false)..=bound(key, depth, true));
        let mut out = [None, None];
        let mut count = 0;
        for (found, slot) in range.take(2) {
            out[count] = Some((*found, *slot));
            count += 1;
        }
        (out, count)
    }

    /// The hash of the subtree at `depth` on `key`'s path.
    fn hash_at(&self, depth: usize, key: &[u8; 32]) -> Digest {
        match self.below(depth, key) {
            (_, 0) => EMPTY,
            ([Some((found, slot)), _], 1) => leaf_hash(&Digest(found), slot),
            _ => self.nodes.get(&(depth as u16, bound(key, depth, false))).copied().unwrap_or(EMPTY),
        }
    }

    pub fn root(&self) -> Digest {
        self.hash_at(0, &[0; 32])
    }

    /// Adds `address` at `slot` (an address already in the tree keeps its slot: accounts never
    /// move) and recomputes its path.
    pub fn insert(&mut self, address: &Address, slot: u64) {
        let key = key_of(address).0;
        if self.keys.contains_key(&key) {
            return;
        }
        self.keys.insert(key, slot);
        // The nodes on the key's path with two or more keys below them are the depths up to the
        // deepest one shared with another key (fewer keys share deeper prefixes): find it by
        // bisection, then recompute those nodes bottom-up, about log2(keys) of them.
        if self.below(0, &key).1 < 2 {
            return;
        }
        let (mut shared, mut alone) = (0usize, DEPTH);
        while alone - shared > 1 {
            let middle = (shared + alone) / 2;
            if self.below(middle, &key).1 >= 2 { shared = middle } else { alone = middle }
        }
        for depth in (0..=shared).rev() {
            let left = self.hash_at(depth + 1, &with_bit(&key, depth, false));
            let right = self.hash_at(depth + 1, &with_bit(&key, depth, true));
            self.nodes.insert((depth as u16, bound(&key, depth, false)), node_hash(&left, &right));
        }
    }

    /// The root after adding `new` (address, slot) pairs, without changing the tree.
    pub fn root_with(&self, new: &[(Address, u64)]) -> Digest {
        let mut added: BTreeMap<[u8; 32], u64> = BTreeMap::new();
        for (address, slot) in new {
            let key = key_of(address).0;
            if !self.keys.contains_key(&key) {
                added.insert(key, *slot);
            }
        }
        if added.is_empty() {
            return self.root();
        }
        self.hash_with(0, &[0; 32], &added)
    }

    fn hash_with(&self, depth: usize, key: &[u8; 32], added: &BTreeMap<[u8; 32], u64>) -> Digest {
        let (low, high) = (bound(key, depth, false), bound(key, depth, true));
        let mut new = added.range(low..=high);
        let Some(first_new) = new.next() else {
            return self.hash_at(depth, key);
        };
        let (_, count) = self.below(depth, key);
        match (count, new.next()) {
            (0, None) => leaf_hash(&Digest(*first_new.0), *first_new.1),
            // Distinct keys part before the last level.
            _ if depth == DEPTH => EMPTY,
            _ => {
                let left = self.hash_with(depth + 1, &with_bit(key, depth, false), added);
                let right = self.hash_with(depth + 1, &with_bit(key, depth, true), added);
                node_hash(&left, &right)
            }
        }
    }

    /// The proof of `address`'s path: to its leaf, or to where it would be.
    pub fn prove(&self, address: &Address) -> AddressProof {
        let key = key_of(address).0;
        let mut siblings = Vec::new();
        for depth in 0..=DEPTH {
            match self.below(depth, &key) {
                (_, 0) => return AddressProof { siblings, leaf: None },
                ([Some((found, slot)), _], 1) => {
                    return AddressProof { siblings, leaf: Some((Digest(found), slot)) };
                }
                _ => {
                    let other = with_bit(&key, depth, !bit(&key, depth));
                    siblings.push(self.hash_at(depth + 1, &other));
                }
            }
        }
        // Two distinct keys always part before depth 256.
        AddressProof { siblings, leaf: None }
    }
}

#[cfg(test)]
mod tests {
    use tetrad_consensus::SecretKey;

    use super::*;

    fn address(seed: u64) -> Address {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        bytes[9] = 0x5a;
        SecretKey::from_seed(bytes).public_key()
    }

    #[test]
    fn incremental_inserts_give_the_built_root_and_proofs_hold() {
        let mut incremental = AddressTree::default();
        assert_eq!(incremental.root(), EMPTY);
        let mut all = Vec::new();
        for seed in 0..300u64 {
            let (address, slot) = (address(seed), seed * 3);
            let predicted = incremental.root_with(&[(address, slot)]);
            incremental.insert(&address, slot);
            all.push((address, slot));
            assert_eq!(incremental.root(), predicted, "root_with predicts the insert of {seed}");
            if seed % 37 == 0 {
                assert_eq!(AddressTree::build(all.clone()).root(), incremental.root(), "after {seed}");
            }
        }
        let root = incremental.root();
        for (address, slot) in &all {
            let proof = incremental.prove(address);
            assert_eq!(verify(&root, address, &proof), Some(Membership::Slot(*slot)));
        }
        for seed in 1000..1100u64 {
            let stranger = address(seed);
            let proof = incremental.prove(&stranger);
            assert_eq!(verify(&root, &stranger, &proof), Some(Membership::Absent), "absent {seed}");
        }
        // Several at once.
        let batch: Vec<(Address, u64)> = (2000..2050u64).map(|seed| (address(seed), seed)).collect();
        let predicted = incremental.root_with(&batch);
        for (address, slot) in &batch {
            incremental.insert(address, *slot);
        }
        assert_eq!(incremental.root(), predicted);
    }

    #[test]
    fn lies_do_not_verify() {
        let tree = AddressTree::build((0..64u64).map(|seed| (address(seed), seed)));
        let root = tree.root();
        let present = address(5);
        let honest = tree.prove(&present);
        assert_eq!(verify(&root, &present, &honest), Some(Membership::Slot(5)));
        // Another slot.
        let mut lie = honest.clone();
        lie.leaf = lie.leaf.map(|(key, slot)| (key, slot + 1));
        assert_eq!(verify(&root, &present, &lie), None);
        // "Absent" for a present address: an empty end, or another key's leaf.
        let mut lie = honest.clone();
        lie.leaf = None;
        assert_eq!(verify(&root, &present, &lie), None);
        let other = tree.prove(&address(6));
        assert_eq!(verify(&root, &present, &other), None, "another key's proof");
        // A flipped sibling; a path cut short or made longer.
        let mut lie = honest.clone();
        lie.siblings[0].0[0] ^= 1;
        assert_eq!(verify(&root, &present, &lie), None);
        let mut lie = honest.clone();
        lie.siblings.pop();
        assert_eq!(verify(&root, &present, &lie), None);
        let mut lie = honest.clone();
        lie.siblings.push(EMPTY);
        assert_eq!(verify(&root, &present, &lie), None);
        // A stranger shown a leaf that is not on its path.
        let stranger = address(999);
        let mut lie = tree.prove(&stranger);
        lie.leaf = honest.leaf;
        assert_eq!(verify(&root, &stranger, &lie), None);
    }

    #[test]
    fn small_trees() {
        let empty = AddressTree::default();
        assert_eq!(verify(&empty.root(), &address(1), &empty.prove(&address(1))), Some(Membership::Absent));
        let one = AddressTree::build([(address(1), 7)]);
        assert_eq!(one.root(), leaf_hash(&key_of(&address(1)), 7));
        assert_eq!(verify(&one.root(), &address(1), &one.prove(&address(1))), Some(Membership::Slot(7)));
        assert_eq!(verify(&one.root(), &address(2), &one.prove(&address(2))), Some(Membership::Absent));
    }
}
