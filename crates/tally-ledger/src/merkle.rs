//! RFC 9162 (Certificate Transparency v2) Merkle tree hash over SHA-256.
//!
//! Leaf hash = SHA-256(0x00 || leaf), node hash = SHA-256(0x01 || left || right), the left
//! subtree of an n-leaf tree holds the largest power of two smaller than n leaves, and the
//! empty tree hashes to SHA-256(""). The distinct prefixes keep a leaf from ever being
//! passed off as an interior node (second-preimage resistance); there is no padding, so a
//! tree's root commits to its exact size.
//!
//! The `*_of_hashes` variants take leaf hashes, so callers that keep leaf hashes (such as
//! [`crate::BlockBuilder`]) do not rehash the leaves for every proof.

use sha2::{Digest, Sha256};

use crate::LedgerError;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// SHA-256(0x00 || leaf).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    Sha256::new().chain_update([LEAF_PREFIX]).chain_update(leaf).finalize().into()
}

/// SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new().chain_update([NODE_PREFIX]).chain_update(left).chain_update(right).finalize().into()
}

/// The root of the empty tree, SHA-256("").
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Hashes every leaf with [`leaf_hash`].
pub fn hash_leaves<L: AsRef<[u8]>>(leaves: &[L]) -> Vec<Hash> {
    leaves.iter().map(|leaf| leaf_hash(leaf.as_ref())).collect()
}

/// `MTH(D[n])`: the root of the tree over `leaves`.
pub fn root<L: AsRef<[u8]>>(leaves: &[L]) -> Hash {
    root_of_hashes(&hash_leaves(leaves))
}

/// MTH over already hashed leaves.
pub fn root_of_hashes(leaf_hashes: &[Hash]) -> Hash {
    match leaf_hashes {
        [] => empty_root(),
        [single] => *single,
        _ => {
            let (left, right) = leaf_hashes.split_at(split_point(leaf_hashes.len() as u64) as usize);
            node_hash(&root_of_hashes(left), &root_of_hashes(right))
        }
    }
}

/// Roots of ranges of a tree's leaves: what the proof algorithms read. A slice of leaf
/// hashes answers by hashing; a persistent tree ([`crate::tlog::StoredTree`]) answers from
/// stored subtree hashes in O(log n) reads.
pub trait RangeRoots {
    /// `MTH(D[start:end])`, for `start <= end <= ` the tree's size.
    fn range_root(&self, start: u64, end: u64) -> Result<Hash, LedgerError>;
}

impl RangeRoots for [Hash] {
    fn range_root(&self, start: u64, end: u64) -> Result<Hash, LedgerError> {
        let size = self.len() as u64;
        if start > end || end > size {
            return Err(LedgerError::IndexOutOfRange { index: end, size });
        }
        Ok(root_of_hashes(&self[start as usize..end as usize]))
    }
}

/// `PATH(index, D[n])`: sibling hashes from the leaf up to the root (RFC 9162 §2.1.3.1).
pub fn inclusion_proof<L: AsRef<[u8]>>(leaves: &[L], index: u64) -> Result<Vec<Hash>, LedgerError> {
    inclusion_proof_of_hashes(&hash_leaves(leaves), index)
}

/// [`inclusion_proof`] over already hashed leaves.
pub fn inclusion_proof_of_hashes(leaf_hashes: &[Hash], index: u64) -> Result<Vec<Hash>, LedgerError> {
    inclusion_proof_in(leaf_hashes, leaf_hashes.len() as u64, index)
}

/// [`inclusion_proof`] for leaf `index` of the first `size` leaves of `tree`.
pub fn inclusion_proof_in<T: RangeRoots + ?Sized>(tree: &T, size: u64, index: u64) -> Result<Vec<Hash>, LedgerError> {
    if index >= size {
        return Err(LedgerError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::new();
    path(tree, 0, size, index, &mut proof)?;
    Ok(proof)
}

/// The path of leaf `start + index` within the subtree `D[start:start+n]`.
fn path<T: RangeRoots + ?Sized>(
    tree: &T,
    start: u64,
    n: u64,
    index: u64,
    proof: &mut Vec<Hash>,
) -> Result<(), LedgerError> {
    if n <= 1 {
        return Ok(());
    }
    let k = split_point(n);
    if index < k {
        path(tree, start, k, index, proof)?;
        proof.push(tree.range_root(start + k, start + n)?);
    } else {
        path(tree, start + k, n - k, index - k, proof)?;
        proof.push(tree.range_root(start, start + k)?);
    }
    Ok(())
}

/// Checks that `leaf` sits at `index` in the tree of `size` leaves with root `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &[u8], index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    verify_inclusion_of_hash(&leaf_hash(leaf), index, size, proof, root)
}

/// [`verify_inclusion`] for an already hashed leaf.
pub fn verify_inclusion_of_hash(leaf_hash: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// `PROOF(old_size, D[n])`: proves the first `old_size` leaves are a prefix of `leaves`
/// (RFC 9162 §2.1.4.1). Empty when `old_size` is 0 or equals the tree size.
pub fn consistency_proof<L: AsRef<[u8]>>(leaves: &[L], old_size: u64) -> Result<Vec<Hash>, LedgerError> {
    consistency_proof_of_hashes(&hash_leaves(leaves), old_size)
}

/// [`consistency_proof`] over already hashed leaves.
pub fn consistency_proof_of_hashes(leaf_hashes: &[Hash], old_size: u64) -> Result<Vec<Hash>, LedgerError> {
    consistency_proof_in(leaf_hashes, old_size, leaf_hashes.len() as u64)
}

/// [`consistency_proof`] between the first `old_size` and the first `size` leaves of `tree`.
pub fn consistency_proof_in<T: RangeRoots + ?Sized>(
    tree: &T,
    old_size: u64,
    size: u64,
) -> Result<Vec<Hash>, LedgerError> {
    if old_size > size {
        return Err(LedgerError::OldSizeTooLarge { old: old_size, size });
    }
    let mut proof = Vec::new();
    if old_size > 0 && old_size < size {
        subproof(tree, 0, size, old_size, true, &mut proof)?;
    }
    Ok(proof)
}

/// `SUBPROOF(m, D[start:start+n], b)`; `whole` is b: true while `D[start:start+m]` is the
/// old tree itself, whose root the verifier already has.
fn subproof<T: RangeRoots + ?Sized>(
    tree: &T,
    start: u64,
    n: u64,
    m: u64,
    whole: bool,
    proof: &mut Vec<Hash>,
) -> Result<(), LedgerError> {
    if m == n {
        if !whole {
            proof.push(tree.range_root(start, start + n)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(tree, start, k, m, whole, proof)?;
        proof.push(tree.range_root(start + k, start + n)?);
    } else {
        subproof(tree, start + k, n - k, m - k, false, proof)?;
        proof.push(tree.range_root(start, start + k)?);
    }
    Ok(())
}

/// Checks that the tree (`old_size`, `old_root`) is a prefix of (`new_size`, `new_root`)
/// (RFC 9162 §2.1.4.2). An empty old tree is a prefix of every tree; equal sizes need
/// equal roots and an empty proof.
pub fn verify_consistency(old_size: u64, new_size: u64, old_root: &Hash, new_root: &Hash, proof: &[Hash]) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty();
    }
    if proof.is_empty() {
        return false;
    }
    // When the old tree is a complete subtree, its root is the proof's implied first element.
    let (seed, rest) = if old_size.is_power_of_two() { (old_root, proof) } else { (&proof[0], &proof[1..]) };
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*seed, *seed);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && fr == *old_root && sr == *new_root
}

/// The largest power of two smaller than `n` (n >= 2).
pub(crate) fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash {
        let mut out = [0; 32];
        hex::decode_to_slice(s, &mut out).unwrap();
        out
    }

    /// The eight leaves of the RFC 6962 / Trillian reference tree.
    fn reference_leaves() -> Vec<Vec<u8>> {
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
            .iter()
            .map(|s| hex::decode(s).unwrap())
            .collect()
    }

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("leaf-{i}").into_bytes()).collect()
    }

    #[test]
    fn small_trees_by_hand() {
        let none: [&[u8]; 0] = [];
        assert_eq!(hex::encode(root(&none)), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let one: Hash = Sha256::digest([&[0u8][..], b"a"].concat()).into();
        assert_eq!(root(&[b"a"]), one);
        let (a, b, c) = (leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c"));
        let ab: Hash = Sha256::digest([&[1u8][..], &a, &b].concat()).into();
        assert_eq!(root(&[b"a", b"b"]), ab);
        // Three leaves split 2 + 1: the lone right leaf is not padded or duplicated.
        assert_eq!(root(&[b"a", b"b", b"c"]), node_hash(&ab, &c));
    }

    #[test]
    fn reference_roots() {
        let expected = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let all = reference_leaves();
        for (n, want) in expected.iter().enumerate() {
            assert_eq!(hex::encode(root(&all[..=n])), *want, "size {}", n + 1);
        }
    }

    #[test]
    fn reference_proofs() {
        let all = reference_leaves();
        let leaf0_path = vec![
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ];
        assert_eq!(inclusion_proof(&all, 0).unwrap(), leaf0_path);
        assert_eq!(consistency_proof(&all, 1).unwrap(), leaf0_path);
        let six_to_eight = vec![
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ];
        assert_eq!(consistency_proof(&all, 6).unwrap(), six_to_eight);
        let two_to_five = vec![
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ];
        assert_eq!(consistency_proof(&all[..5], 2).unwrap(), two_to_five);
    }

    #[test]
    fn every_inclusion_proof_verifies_and_tampering_fails() {
        for n in 1..=40u64 {
            let ls = leaves(n as usize);
            let r = root(&ls);
            for i in 0..n {
                let leaf = &ls[i as usize];
                let proof = inclusion_proof(&ls, i).unwrap();
                assert!(verify_inclusion(leaf, i, n, &proof, &r), "n={n} i={i}");
                assert!(!verify_inclusion(b"forged", i, n, &proof, &r));
                // The size is authenticated by the signed root, not the proof, so only an
                // index past the end is rejected outright.
                assert!(!verify_inclusion(leaf, i, i, &proof, &r));
                assert!(!verify_inclusion(leaf, i, n, &proof, &leaf_hash(b"x")));
                if n > 1 {
                    assert!(!verify_inclusion(leaf, (i + 1) % n, n, &proof, &r));
                }
                for k in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[k][0] ^= 1;
                    assert!(!verify_inclusion(leaf, i, n, &bad, &r));
                }
                let mut longer = proof.clone();
                longer.push(r);
                assert!(!verify_inclusion(leaf, i, n, &longer, &r));
                if !proof.is_empty() {
                    assert!(!verify_inclusion(leaf, i, n, &proof[1..], &r));
                }
            }
            assert!(inclusion_proof(&ls, n).is_err());
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_tampering_fails() {
        for n in 1..=33u64 {
            let ls = leaves(n as usize);
            let new_root = root(&ls);
            for m in 0..=n {
                let old_root = root(&ls[..m as usize]);
                let proof = consistency_proof(&ls, m).unwrap();
                assert!(verify_consistency(m, n, &old_root, &new_root, &proof), "m={m} n={n}");
                if m == 0 || m == n {
                    continue;
                }
                assert!(!verify_consistency(m, n, &new_root, &new_root, &proof));
                assert!(!verify_consistency(m, n, &old_root, &old_root, &proof));
                // A new tree that rewrote history inside the old prefix must not verify.
                let mut rewritten = ls.clone();
                rewritten[m as usize - 1].push(b'!');
                let rewritten_root = root(&rewritten);
                assert!(!verify_consistency(m, n, &old_root, &rewritten_root, &proof));
                assert!(!verify_consistency(m, n, &old_root, &new_root, &[]));
                for k in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[k][31] ^= 0x80;
                    assert!(!verify_consistency(m, n, &old_root, &new_root, &bad));
                }
            }
            assert!(consistency_proof(&ls, n + 1).is_err());
            assert!(!verify_consistency(n + 1, n, &new_root, &new_root, &[]));
        }
    }
}
