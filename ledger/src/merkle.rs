//! Binary Merkle trees over a list of leaves, with leaf/node domain separation.
//!
//! Shape: leaves sit at positions `0..count`; the tree has depth `ceil(log2(count))`; a missing
//! subtree hashes to the empty hash of its level. The root commits to `count` as well as to the
//! top node, so a proof cannot be replayed against a tree of another size. The same rules serve
//! the tx root of a block ([`root`], [`prove`]) and the incrementally updated state tree
//! ([`crate::state_tree::StateTree`]).
//!
//! Choice recorded in `docs/decisions.md`: rs_merkle was evaluated for the tx root; it would be a
//! second Merkle implementation beside the state tree's, and it lacks leaf/node domain
//! separation, so both roots use this module (about 150 lines).

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use tetrad_consensus::Digest;

const LEAF_TAG: &[u8; 16] = b"tetrad/mleaf/v1\0";
const NODE_TAG: &[u8; 16] = b"tetrad/mnode/v1\0";
const ROOT_TAG: &[u8; 16] = b"tetrad/mroot/v1\0";

/// Trees never hold more than 2^40 leaves; deeper proofs are refused outright.
pub const DEPTH_MAX: usize = 40;

/// Hash of a leaf's content.
pub fn leaf_hash(content: &[u8]) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(LEAF_TAG);
    hasher.update(content);
    Digest(*hasher.finalize().as_bytes())
}

/// Hash of an inner node from its two children.
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(NODE_TAG);
    hasher.update(left.as_bytes());
    hasher.update(right.as_bytes());
    Digest(*hasher.finalize().as_bytes())
}

/// The hash of an empty subtree of height `level` (level 0 is a missing leaf).
pub fn empty_hash(level: usize) -> Digest {
    // Computed once; DEPTH_MAX + 1 entries.
    static EMPTY: std::sync::OnceLock<Vec<Digest>> = std::sync::OnceLock::new();
    let table = EMPTY.get_or_init(|| {
        let mut table = vec![Digest::ZERO];
        for level in 1..=DEPTH_MAX {
            let below = table[level - 1];
            table.push(node_hash(&below, &below));
        }
        table
    });
    table[level.min(DEPTH_MAX)]
}

/// The depth of a tree of `count` leaves: the number of sibling hashes in a proof.
pub fn depth(count: u64) -> usize {
    if count <= 1 { 0 } else { (64 - (count - 1).leading_zeros()) as usize }
}

/// The root of a tree: commits to the leaf count and the top node.
pub fn root_of(count: u64, top: &Digest) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(ROOT_TAG);
    hasher.update(&count.to_le_bytes());
    hasher.update(top.as_bytes());
    Digest(*hasher.finalize().as_bytes())
}

/// All levels of a tree, bottom (leaves) first; the last level holds the single top node.
pub fn build_levels(leaves: Vec<Digest>) -> Vec<Vec<Digest>> {
    let count = leaves.len() as u64;
    let mut levels = vec![leaves];
    for level in 0..depth(count) {
        let below = &levels[level];
        let above: Vec<Digest> = below
            .chunks(2)
            .map(|pair| node_hash(&pair[0], pair.get(1).unwrap_or(&empty_hash(level))))
            .collect();
        levels.push(above);
    }
    levels
}

/// The root over `leaves` (already leaf-hashed).
pub fn root(leaves: &[Digest]) -> Digest {
    let levels = build_levels(leaves.to_vec());
    let top = levels.last().and_then(|level| level.first()).copied().unwrap_or(empty_hash(0));
    root_of(leaves.len() as u64, &top)
}

/// An inclusion proof: the position of a leaf, the tree size and the sibling hashes bottom-up.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct MerkleProof {
    pub index: u64,
    pub count: u64,
    pub siblings: Vec<Digest>,
}

/// Sibling hashes of `index` in `levels` (as built by [`build_levels`]).
pub fn siblings(levels: &[Vec<Digest>], index: u64) -> Vec<Digest> {
    let mut position = index as usize;
    let mut out = Vec::with_capacity(levels.len().saturating_sub(1));
    for (level, nodes) in levels.iter().enumerate().take(levels.len().saturating_sub(1)) {
        let sibling = position ^ 1;
        out.push(nodes.get(sibling).copied().unwrap_or(empty_hash(level)));
        position /= 2;
    }
    out
}

/// A proof that `leaves[index]` is in the tree over `leaves`.
pub fn prove(leaves: &[Digest], index: u64) -> Option<MerkleProof> {
    if index >= leaves.len() as u64 {
        return None;
    }
    let levels = build_levels(leaves.to_vec());
    Some(MerkleProof { index, count: leaves.len() as u64, siblings: siblings(&levels, index) })
}

/// Checks that `leaf` (already leaf-hashed) sits at `proof.index` under `root`.
pub fn verify(root: &Digest, leaf: &Digest, proof: &MerkleProof) -> bool {
    if proof.index >= proof.count
        || proof.siblings.len() != depth(proof.count)
        || proof.siblings.len() > DEPTH_MAX
    {
        return false;
    }
    let mut node = *leaf;
    let mut position = proof.index;
    for sibling in &proof.siblings {
        node = if position.is_multiple_of(2) { node_hash(&node, sibling) } else { node_hash(sibling, &node) };
        position /= 2;
    }
    root_of(proof.count, &node) == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(count: usize) -> Vec<Digest> {
        (0..count).map(|i| leaf_hash(&(i as u64).to_le_bytes())).collect()
    }

    #[test]
    fn every_leaf_proves_and_nothing_else_does() {
        for count in [1usize, 2, 3, 4, 5, 7, 8, 9, 16, 33] {
            let leaves = leaves(count);
            let root = root(&leaves);
            for index in 0..count {
                let proof = prove(&leaves, index as u64).expect("in range");
                assert!(verify(&root, &leaves[index], &proof), "count {count} index {index}");
                let other = leaf_hash(b"other");
                assert!(!verify(&root, &other, &proof), "count {count} index {index}");
                if count > 1 {
                    let mut moved = proof.clone();
                    moved.index = (moved.index + 1) % count as u64;
                    assert!(!verify(&root, &leaves[index], &moved), "count {count} index {index}");
                }
                let mut resized = proof.clone();
                resized.count += 1;
                assert!(!verify(&root, &leaves[index], &resized), "count {count} index {index}");
            }
            assert!(prove(&leaves, count as u64).is_none());
        }
    }

    #[test]
    fn root_depends_on_count_and_order() {
        let mut four = leaves(4);
        let three = leaves(3);
        assert_ne!(root(&four), root(&three));
        assert_ne!(root(&[]), root(&leaves(1)));
        let before = root(&four);
        four.swap(0, 1);
        assert_ne!(before, root(&four));
    }

    #[test]
    fn depth_matches_size() {
        assert_eq!([0, 1, 2, 3, 4, 5, 8, 9].map(depth), [0, 0, 1, 2, 2, 3, 3, 4]);
    }
}
