'use strict'
// The stdlib verifier (helpers/ledger_verify.js, written from docs/ledger.md) against the
// RFC 6962 reference tree — the eight leaves the certificate-transparency and Trillian
// suites share, with their published roots, inclusion and consistency proofs — and
// against malformed proofs: wrong element length, wrong size or index, garbage, extra or
// missing elements. No server: this checks the verifier itself, so that the server tests
// that lean on it cannot pass with a verifier and a server wrong in the same way.

const { describe, it } = require('node:test')
const assert = require('node:assert/strict')
const V = require('./helpers/ledger_verify')

const hex = s => Buffer.from(s, 'hex')
const LEAVES = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'].map(hex)
const ROOTS = [
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
].map(hex)
const rootOf = n => ROOTS[n - 1]
// [leaf index, tree size, audit path]
const INCLUSION = [
  [0, 1, []],
  [0, 8, ['96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7', '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4']],
  [5, 8, ['bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b', 'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0', 'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7']],
  [2, 3, ['fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125']],
  [1, 5, ['6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d', '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', 'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b']],
].map(([i, n, p]) => [i, n, p.map(hex)])
// [old size, new size, proof]
const CONSISTENCY = [
  [1, 1, []],
  [1, 8, ['96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7', '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4']],
  [6, 8, ['0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a', 'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0', 'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7']],
  [2, 5, ['5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', 'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b']],
].map(([m, n, p]) => [m, n, p.map(hex)])

const flip = (buf, at = 0) => {
  const b = Buffer.from(buf)
  b[at] ^= 1
  return b
}

describe('the stdlib verifier on the RFC 6962 reference tree', () => {
  it('reproduces the reference roots', () => {
    for (let n = 1; n <= 8; n++) assert.ok(V.rootOf(LEAVES.slice(0, n).map(V.leafHash)).equals(rootOf(n)), `root of ${n}`)
    assert.equal(V.rootOf([]).toString('hex'), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
  })

  it('accepts the reference inclusion proofs and refuses every spoiled one', () => {
    for (const [i, n, path] of INCLUSION) {
      const leaf = V.leafHash(LEAVES[i])
      const r = rootOf(n)
      assert.ok(V.verifyInclusion(leaf, i, n, path, r), `${i}/${n}`)
      const refused = (what, ...args) => assert.ok(!V.verifyInclusion(...args), `${what} accepted for ${i}/${n}`)
      refused('size 0', leaf, i, 0, path, r)
      refused('index = size', leaf, n, n, path, r)
      refused('huge index', leaf, 2n ** 64n - 1n, n, path, r)
      refused('size doubled', leaf, i, n * 2, path, r)
      refused('wrong root', leaf, i, n, path, V.leafHash(Buffer.from('not the root')))
      refused('bare SHA-256 of the leaf', V.sha256(LEAVES[i]), i, n, path, r)
      refused('extra element', leaf, i, n, [...path, V.leafHash(Buffer.from('x'))], r)
      if (n > 1) refused('wrong index', leaf, i ^ 1, n, path, r)
      if (path.length > 0) {
        refused('last element dropped', leaf, i, n, path.slice(0, -1), r)
        refused('first element dropped', leaf, i, n, path.slice(1), r)
        for (let k = 0; k < path.length; k++) {
          refused('flipped bit', leaf, i, n, path.map((p, j) => (j === k ? flip(p, k) : p)), r)
          refused('element of 31 bytes', leaf, i, n, path.map((p, j) => (j === k ? p.subarray(1) : p)), r)
          refused('element of 33 bytes', leaf, i, n, path.map((p, j) => (j === k ? Buffer.concat([p, Buffer.alloc(1)]) : p)), r)
          refused('garbage element', leaf, i, n, path.map((p, j) => (j === k ? Buffer.from('garbage') : p)), r)
        }
      }
    }
  })

  it('accepts the reference consistency proofs and refuses every spoiled one', () => {
    for (const [m, n, proof] of CONSISTENCY) {
      const [r1, r2] = [rootOf(m), rootOf(n)]
      assert.ok(V.verifyConsistency(m, n, r1, r2, proof), `${m}->${n}`)
      const refused = (what, ...args) => assert.ok(!V.verifyConsistency(...args), `${what} accepted for ${m}->${n}`)
      refused('old size past new size', n + 1, n, r2, r1, proof)
      refused('garbage old root', m, n, V.leafHash(Buffer.from('x')), r2, proof)
      refused('garbage new root', m, n, r1, V.leafHash(Buffer.from('x')), proof)
      refused('extra element', m, n, r1, r2, [...proof, V.leafHash(Buffer.from('x'))])
      if (m === n) continue
      refused('roots swapped', m, n, r2, r1, proof)
      refused('empty proof', m, n, r1, r2, [])
      refused('old size - 1', m - 1, n, r1, r2, proof)
      refused('old size + 1', m + 1, n, r1, r2, proof)
      refused('new size doubled', m, n * 2, r1, r2, proof)
      refused('last element dropped', m, n, r1, r2, proof.slice(0, -1))
      for (let k = 0; k < proof.length; k++) {
        refused('flipped bit', m, n, r1, r2, proof.map((p, j) => (j === k ? flip(p) : p)))
        refused('element of 31 bytes', m, n, r1, r2, proof.map((p, j) => (j === k ? p.subarray(1) : p)))
        refused('garbage element', m, n, r1, r2, proof.map((p, j) => (j === k ? Buffer.from('garbage') : p)))
      }
    }
    assert.ok(V.verifyConsistency(0, 8, V.rootOf([]), rootOf(8), []), 'the empty tree is a prefix of every tree')
    assert.ok(!V.verifyConsistency(0, 8, V.rootOf([]), rootOf(8), [rootOf(8)]), '...with an empty proof only')
  })

  it('refuses malformed leaves, effects and signatures instead of misreading them', () => {
    assert.throws(() => V.parseLeaf(Buffer.alloc(88, 1)), /not a version-1 leaf/)
    assert.throws(() => V.parseLeaf(Buffer.alloc(90, 1)), /not a version-1 leaf/)
    const leaf = Buffer.alloc(89)
    leaf[0] = 2
    assert.throws(() => V.parseLeaf(leaf), /not a version-1 leaf/)
    assert.throws(() => V.parseEffect(Buffer.from([0, 0, 0, 0, 0, 9, 1, 2])), /effect leaf/)
    assert.throws(() => V.parseEffect(Buffer.from([2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])), /effect leaf/)
    const sth = { timestamp: 1, tree_size: 1, sha256_root_hash: rootOf(1).toString('base64') }
    const key = Buffer.alloc(32, 7).toString('base64')
    for (const sig of ['', 'AAAA', Buffer.alloc(68).toString('base64'), Buffer.concat([Buffer.from([8, 7, 0, 64]), Buffer.alloc(65)]).toString('base64')]) {
      assert.equal(V.verifySthSignature(sth, key, sig), false, `signature ${sig.slice(0, 12)}`)
    }
  })
})
