'use strict'
// A verifier for Tally's transparency log written from docs/ledger.md alone, with
// nothing but Node's standard library (SHA-256 and ed25519 from node:crypto). It shares
// no code with the server: if the documentation and the server disagree, it fails.

const crypto = require('node:crypto')

const sha256 = (...parts) => {
  const h = crypto.createHash('sha256')
  for (const p of parts) h.update(p)
  return h.digest()
}
const leafHash = leaf => sha256(Buffer.from([0]), leaf)
const nodeHash = (l, r) => sha256(Buffer.from([1]), l, r)
const b64 = s => Buffer.from(s, 'base64')
const is32 = h => Buffer.isBuffer(h) && h.length === 32

/** RFC 9162 §2.1.1: MTH over leaf hashes. */
function rootOf(hashes) {
  if (hashes.length === 0) return sha256(Buffer.alloc(0))
  if (hashes.length === 1) return hashes[0]
  let k = 1
  while (k * 2 < hashes.length) k *= 2
  return nodeHash(rootOf(hashes.slice(0, k)), rootOf(hashes.slice(k)))
}

/** RFC 9162 §2.1.3.2, with BigInt so sizes past 2^53 are exact. */
function verifyInclusion(leafHashBuf, index, size, path, root) {
  if (![leafHashBuf, root, ...path].every(is32)) return false
  let fn = BigInt(index)
  let sn = BigInt(size) - 1n
  if (fn > sn) return false
  let r = leafHashBuf
  for (const p of path) {
    if (sn === 0n) return false
    if ((fn & 1n) === 1n || fn === sn) {
      r = nodeHash(p, r)
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n
        sn >>= 1n
      }
    } else {
      r = nodeHash(r, p)
    }
    fn >>= 1n
    sn >>= 1n
  }
  return sn === 0n && r.equals(root)
}

/** RFC 9162 §2.1.4.2. */
function verifyConsistency(first, second, firstRoot, secondRoot, proof) {
  if (![firstRoot, secondRoot, ...proof].every(is32)) return false
  let m = BigInt(first)
  const n = BigInt(second)
  if (m > n) return false
  if (m === n) return proof.length === 0 && firstRoot.equals(secondRoot)
  if (m === 0n) return proof.length === 0
  if (proof.length === 0) return false
  const isPow2 = (m & (m - 1n)) === 0n
  const path = isPow2 ? [firstRoot, ...proof] : proof
  let fn = m - 1n
  let sn = n - 1n
  while ((fn & 1n) === 1n) {
    fn >>= 1n
    sn >>= 1n
  }
  let fr = path[0]
  let sr = path[0]
  for (const c of path.slice(1)) {
    if (sn === 0n) return false
    if ((fn & 1n) === 1n || fn === sn) {
      fr = nodeHash(c, fr)
      sr = nodeHash(c, sr)
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n
        sn >>= 1n
      }
    } else {
      sr = nodeHash(sr, c)
    }
    fn >>= 1n
    sn >>= 1n
  }
  m = sn
  return m === 0n && fr.equals(firstRoot) && sr.equals(secondRoot)
}

/** The transaction leaf, version 1 (docs/ledger.md). */
function parseLeaf(buf) {
  if (buf.length !== 89 || buf[0] !== 1) throw new Error(`not a version-1 leaf (${buf.length} bytes)`)
  return {
    ts: buf.readBigUInt64BE(1),
    height: buf.readBigUInt64BE(9),
    position: buf.readUInt32BE(17),
    inputHash: buf.subarray(21, 53),
    effectCount: buf.readUInt32BE(53),
    effectsRoot: buf.subarray(57, 89),
  }
}

/** An effect leaf (docs/ledger.md): space, op, key length, key, ts, value. */
function parseEffect(buf) {
  if (buf.length < 14) throw new Error(`not an effect leaf (${buf.length} bytes)`)
  const keyLen = buf.readUInt32BE(2)
  if (buf.length < 14 + keyLen) throw new Error(`not an effect leaf (key of ${keyLen} bytes in ${buf.length})`)
  if (buf[0] > 1 || buf[1] > 1) throw new Error(`not an effect leaf (space ${buf[0]}, op ${buf[1]})`)
  const key = buf.subarray(6, 6 + keyLen)
  const value = buf.subarray(14 + keyLen)
  if (buf[1] === 1 && value.length > 0) throw new Error('not an effect leaf (a remove with a value)')
  return { space: buf[0], op: buf[1], key, ts: buf.readBigUInt64BE(6 + keyLen), value }
}

/**
 * A document key: database u64 ‖ collection u64 ‖ id, the id `0x01 ‖ u64` (numeric) or
 * `0x02 ‖ UTF-8 with each 0x00 followed by 0xFF ‖ 0x00 0x01` (named).
 */
function parseDocKey(key) {
  if (key.length < 17) throw new Error(`not a document key (${key.length} bytes)`)
  const db = key.readBigUInt64BE(0)
  const collection = key.readBigUInt64BE(8)
  let id
  if (key[16] === 1 && key.length === 25) {
    id = key.readBigUInt64BE(17).toString()
  } else if (key[16] === 2 && key.length >= 19 && key[key.length - 2] === 0 && key[key.length - 1] === 1) {
    const bytes = []
    for (let i = 17; i < key.length - 2; i++) {
      bytes.push(key[i])
      if (key[i] === 0) {
        if (key[i + 1] !== 0xff) throw new Error('not a document key (a 0x00 in a named id not followed by 0xFF)')
        i++
      }
    }
    id = Buffer.from(bytes).toString('utf8')
  } else {
    throw new Error('not a document key (unknown id form)')
  }
  return { db, collection, id }
}

/**
 * A block header (version 2, 165 bytes) from its JSON form (`/ledger/head` `header`:
 * numbers, hashes in hex), and its hash `SHA-256("tally.block.v2\0" ‖ header)`.
 */
function blockHeaderBytes(hd) {
  const b = Buffer.alloc(165)
  b[0] = 2
  b.writeBigUInt64BE(BigInt(hd.height), 1)
  Buffer.from(hd.prev_hash, 'hex').copy(b, 9)
  b.writeBigUInt64BE(BigInt(hd.first_ts), 41)
  b.writeBigUInt64BE(BigInt(hd.last_ts), 49)
  b.writeUInt32BE(hd.txn_count, 57)
  Buffer.from(hd.inputs_root, 'hex').copy(b, 61)
  Buffer.from(hd.effects_root, 'hex').copy(b, 93)
  b.writeBigUInt64BE(BigInt(hd.tree_size), 125)
  Buffer.from(hd.tree_root, 'hex').copy(b, 133)
  return b
}
const blockHeaderHash = hd => sha256(Buffer.from('tally.block.v2\0', 'latin1'), blockHeaderBytes(hd))

/** The RFC 6962 TreeHeadSignature bytes of a head. */
function treeHeadBytes(sth) {
  const b = Buffer.alloc(50)
  b[0] = 0
  b[1] = 1
  b.writeBigUInt64BE(BigInt(sth.timestamp), 2)
  b.writeBigUInt64BE(BigInt(sth.tree_size), 10)
  b64(sth.sha256_root_hash).copy(b, 18)
  return b
}

/** Checks one DigitallySigned ed25519 signature of `sth` by the raw 32-byte `publicKey`. */
function verifySthSignature(sth, publicKeyB64, signatureB64) {
  const ds = b64(signatureB64)
  if (ds.length !== 68 || ds[0] !== 8 || ds[1] !== 7 || ds.readUInt16BE(2) !== 64) return false
  const key = crypto.createPublicKey({
    key: { kty: 'OKP', crv: 'Ed25519', x: b64(publicKeyB64).toString('base64url') },
    format: 'jwk',
  })
  return crypto.verify(null, treeHeadBytes(sth), key, ds.subarray(4))
}

/**
 * A quorum certificate (docs/ledger.md): every signature the head lists verifies, and a
 * majority of `memberKeysHex` (pinned, e.g. /cluster/status `member_keys`) signed it.
 * Returns how many pinned keys signed; throws if that is no majority.
 */
function verifyQuorum(sth, memberKeysHex) {
  const pinned = [...new Set(memberKeysHex.map(k => k.toLowerCase()))]
  const signers = new Set()
  for (const s of sth.signatures) {
    if (!verifySthSignature(sth, s.public_key, s.tree_head_signature)) throw new Error(`signature of member ${s.member} does not verify`)
    signers.add(b64(s.public_key).toString('hex'))
  }
  const count = pinned.filter(k => signers.has(k)).length
  if (count * 2 <= pinned.length) throw new Error(`signed by ${count} of ${pinned.length} members: no majority`)
  return count
}

/**
 * Checks a get-proof-by-revision answer against a head: the effect leaf is the version the
 * answer's `revision` names (its storage key, database and collection ids, id and ts) and
 * the one `expect` asks for ({id, ts}), the effect is in the leaf's effects tree, and the
 * leaf is in the head's tree. Returns the parsed effect, leaf and key, or throws saying
 * which check failed.
 */
function verifyRevision(proof, sth, expect) {
  if (BigInt(proof.tree_size) !== BigInt(sth.tree_size)) throw new Error('proof is for another tree size')
  const leafBuf = b64(proof.leaf_input)
  const leaf = parseLeaf(leafBuf)
  const effectBuf = b64(proof.effect.leaf)
  const effect = parseEffect(effectBuf)
  if (effect.space !== 0 || effect.op !== 0) throw new Error('effect is not a document version')
  const doc = parseDocKey(effect.key)
  const rev = proof.revision
  if (!effect.key.equals(b64(rev.key))) throw new Error('effect names another storage key than `revision.key`')
  if (doc.db !== BigInt(rev.db) || doc.collection !== BigInt(rev.collection_id)) {
    throw new Error(`effect names database ${doc.db} collection ${doc.collection}, the answer ${rev.db} ${rev.collection_id}`)
  }
  if (doc.id !== String(rev.id) || effect.ts !== BigInt(rev.ts)) throw new Error('effect is not the version `revision` names')
  if (doc.id !== expect.id) throw new Error(`effect names document ${doc.id}, not ${expect.id}`)
  if (effect.ts !== BigInt(expect.ts)) throw new Error(`effect ts ${effect.ts} is not ${expect.ts}`)
  if (effect.value.length === 0) throw new Error('effect carries no stored value')
  const effectPath = proof.effect.audit_path.map(b64)
  if (BigInt(proof.effect.count) !== BigInt(leaf.effectCount)) throw new Error("effect count is not the leaf's")
  if (!verifyInclusion(leafHash(effectBuf), proof.effect.index, leaf.effectCount, effectPath, leaf.effectsRoot)) {
    throw new Error("effect is not in the leaf's effects tree")
  }
  const path = proof.audit_path.map(b64)
  if (!verifyInclusion(leafHash(leafBuf), proof.leaf_index, sth.tree_size, path, b64(sth.sha256_root_hash))) {
    throw new Error("leaf is not in the head's tree")
  }
  return { leaf, effect, doc }
}

module.exports = {
  sha256,
  leafHash,
  nodeHash,
  rootOf,
  verifyInclusion,
  verifyConsistency,
  parseLeaf,
  parseEffect,
  parseDocKey,
  treeHeadBytes,
  blockHeaderBytes,
  blockHeaderHash,
  verifySthSignature,
  verifyQuorum,
  verifyRevision,
  b64,
}
