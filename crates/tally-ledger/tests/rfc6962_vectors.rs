//! The RFC 6962 reference tree (the eight leaves the certificate-transparency and Trillian
//! test suites share), its published inclusion and consistency proofs, and every way of
//! spoiling one: each must be refused by the RFC 9162 verification algorithms.

use tally_ledger::merkle::{
    consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency, verify_inclusion, Hash,
};

fn h(s: &str) -> Hash {
    let mut out = [0; 32];
    hex::decode_to_slice(s, &mut out).unwrap();
    out
}

fn leaves() -> Vec<Vec<u8>> {
    ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
        .iter()
        .map(|s| hex::decode(s).unwrap())
        .collect()
}

/// MTH of the first 1..=8 leaves.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (leaf index, tree size, audit path).
fn inclusion_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (0, 1, vec![]),
        (
            0,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            5,
            8,
            vec![
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (2, 3, vec![h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
        (
            1,
            5,
            vec![
                h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
    ]
}

/// (old size, new size, proof).
fn consistency_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            6,
            8,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            5,
            vec![
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
    ]
}

fn root_of(size: u64) -> Hash {
    h(ROOTS[size as usize - 1])
}

#[test]
fn reference_roots_and_proofs_are_reproduced() {
    let all = leaves();
    for n in 1..=8 {
        assert_eq!(root(&all[..n]), h(ROOTS[n - 1]), "root of {n}");
    }
    for (index, size, path) in inclusion_vectors() {
        assert_eq!(inclusion_proof(&all[..size as usize], index).unwrap(), path, "inclusion {index}/{size}");
    }
    for (old, new, proof) in consistency_vectors() {
        assert_eq!(consistency_proof(&all[..new as usize], old).unwrap(), proof, "consistency {old}->{new}");
    }
}

#[test]
fn reference_inclusion_proofs_verify_and_every_spoiled_one_is_refused() {
    let all = leaves();
    for (index, size, path) in inclusion_vectors() {
        let leaf = &all[index as usize];
        let r = root_of(size);
        assert!(verify_inclusion(leaf, index, size, &path, &r), "{index}/{size}");
        let refused = |what: &str, i: u64, n: u64, p: &[Hash], r: &Hash| {
            assert!(!verify_inclusion(leaf, i, n, p, r), "{what} accepted for {index}/{size}");
        };
        refused("size 0", index, 0, &path, &r);
        refused("index = size", size, size, &path, &r);
        refused("index past size", size + 1, size, &path, &r);
        refused("huge index", u64::MAX, size, &path, &r);
        refused("wrong root", index, size, &path, &leaf_hash(b"not the root"));
        refused("empty-tree root", index, size, &path, &h(&hex::encode(sha2_empty())));
        if size > 1 {
            refused("wrong index", index ^ 1, size, &path, &r);
        }
        // A size of the same path shape (e.g. leaf 0 of 7 or of 8 leaves) passes the
        // algorithm: the size is authenticated by the signed head, which covers it and
        // the root together. A size of another shape must fail on its own.
        refused("size doubled", index, size * 2, &path, &r);
        refused("size + 8", index, size + 8, &path, &r);
        let mut longer = path.clone();
        longer.push(leaf_hash(b"garbage"));
        refused("extra element", index, size, &longer, &r);
        let mut prefixed = vec![[0u8; 32]];
        prefixed.extend_from_slice(&path);
        refused("zero element first", index, size, &prefixed, &r);
        if !path.is_empty() {
            refused("last element dropped", index, size, &path[..path.len() - 1], &r);
            refused("first element dropped", index, size, &path[1..], &r);
            let mut reversed = path.clone();
            reversed.reverse();
            if reversed != path {
                refused("reversed", index, size, &reversed, &r);
            }
            for k in 0..path.len() {
                for bit in [0u8, 7] {
                    let mut bad = path.clone();
                    bad[k][31 - k % 32] ^= 1 << bit;
                    refused("flipped bit", index, size, &bad, &r);
                }
            }
        }
        // The leaf is hashed with its 0x00 prefix: its bare SHA-256 or the node prefix is not it.
        assert!(!verify_inclusion(&[&[1u8][..], leaf].concat(), index, size, &path, &r));
    }
}

fn sha2_empty() -> Hash {
    // SHA-256 of nothing, the empty tree's root.
    h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
}

#[test]
fn reference_consistency_proofs_verify_and_every_spoiled_one_is_refused() {
    for (old, new, proof) in consistency_vectors() {
        let (r1, r2) = (root_of(old), root_of(new));
        assert!(verify_consistency(old, new, &r1, &r2, &proof), "{old}->{new}");
        let refused = |what: &str, m: u64, n: u64, a: &Hash, b: &Hash, p: &[Hash]| {
            assert!(!verify_consistency(m, n, a, b, p), "{what} accepted for {old}->{new}");
        };
        refused("old size past new size", new + 1, new, &r2, &r1, &proof);
        if r1 != r2 {
            refused("roots swapped", old, new, &r2, &r1, &proof);
        }
        refused("garbage old root", old, new, &leaf_hash(b"x"), &r2, &proof);
        refused("garbage new root", old, new, &r1, &leaf_hash(b"x"), &proof);
        let mut longer = proof.clone();
        longer.push(leaf_hash(b"garbage"));
        refused("extra element", old, new, &r1, &r2, &longer);
        if old == new {
            continue;
        }
        refused("empty proof", old, new, &r1, &r2, &[]);
        refused("old size - 1", old - 1, new, &r1, &r2, &proof);
        refused("old size + 1", old + 1, new, &r1, &r2, &proof);
        // As for inclusion, a new size of the same proof shape is the signed head's to
        // authenticate; one of another shape must fail here.
        refused("new size doubled", old, new * 2, &r1, &r2, &proof);
        refused("last element dropped", old, new, &r1, &r2, &proof[..proof.len() - 1]);
        refused("first element dropped", old, new, &r1, &r2, &proof[1..]);
        for k in 0..proof.len() {
            let mut bad = proof.clone();
            bad[k][0] ^= 0x40;
            refused("flipped bit", old, new, &r1, &r2, &bad);
        }
    }
    // The empty tree is consistent with every tree, and only with an empty proof.
    assert!(verify_consistency(0, 8, &sha2_empty(), &root_of(8), &[]));
    assert!(!verify_consistency(0, 8, &sha2_empty(), &root_of(8), &[root_of(8)]));
}
