'use strict'
// The transparency log through /ledger/v1/ against a real server, checked by a verifier
// written from docs/ledger.md with only SHA-256 and ed25519 from Node's standard library
// (helpers/ledger_verify.js): signed heads, every leaf and the root recomputed from
// get-entries, inclusion by hash, consistency between two heads, a document revision,
// and who may see what.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { startServer, q, rawRequest } = require('./helpers/server')
const V = require('./helpers/ledger_verify')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { tallyBin } = require('./helpers/server')

/** RFC 9162 §2.1.3.1 PATH(m, D[n]) over leaf hashes. */
function inclusionPath(hashes, m) {
  if (hashes.length <= 1) return []
  let k = 1
  while (k * 2 < hashes.length) k *= 2
  if (m < k) return [...inclusionPath(hashes.slice(0, k), m), V.rootOf(hashes.slice(k))]
  return [...inclusionPath(hashes.slice(k), m - k), V.rootOf(hashes.slice(0, k))]
}

describe('transparency log API', { timeout: 120_000 }, () => {
  let server
  let c

  async function get(path, secret = server.rootKey) {
    const headers = secret ? { authorization: `Bearer ${secret}` } : {}
    const res = await rawRequest(server.port, { method: 'GET', path, headers })
    return { status: res.status, body: JSON.parse(res.body) }
  }

  async function sth(secret) {
    const r = await get('/ledger/v1/get-sth', secret)
    assert.equal(r.status, 200, JSON.stringify(r.body))
    return r.body
  }

  before(async () => {
    server = await startServer()
    c = server.adminClient()
    await c.query(q.CreateCollection({ name: 'accounts' }))
    await c.query(q.CreateIndex({ name: 'by_owner', source: q.Collection('accounts'), terms: [{ field: ['data', 'owner'] }] }))
  })

  after(async () => {
    if (server) await server.stop()
  })

  it('signs its head with the member key it publishes', async () => {
    await c.query(q.Create(q.Ref(q.Collection('accounts'), '1'), { data: { owner: 'ann', balance: 10 } }))
    const head = await sth()
    assert.ok(head.tree_size >= 3, `three transactions so far, tree has ${head.tree_size}`)
    assert.equal(head.signatures.length, 1)
    const { public_key: pk, tree_head_signature: sig } = head.signatures[0]
    assert.equal(sig, head.tree_head_signature)
    assert.ok(V.verifySthSignature(head, pk, sig), 'the signature verifies')
    const forgedSize = { ...head, tree_size: head.tree_size + 1 }
    assert.ok(!V.verifySthSignature(forgedSize, pk, sig), 'a head with another size does not')
    const other = require('node:crypto').generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' })
    const otherKey = Buffer.from(other.x, 'base64url').toString('base64')
    assert.ok(!V.verifySthSignature(head, otherKey, sig), "another key's check fails")
    const flipped = V.b64(sig)
    flipped[10] ^= 1
    assert.ok(!V.verifySthSignature(head, pk, flipped.toString('base64')), 'a flipped signature does not')
    // /ledger/head names the same member key, in hex.
    const h = await get('/ledger/head')
    assert.equal(h.body.member_key, V.b64(pk).toString('hex'))
    assert.equal(h.body.header.tree_size, head.tree_size)
    assert.equal(Buffer.from(h.body.header.tree_root, 'hex').toString('base64'), head.sha256_root_hash)
    // The header hashes as docs/ledger.md lays it out, and the head's timestamp is its
    // last commit ts in ms.
    assert.equal(h.body.header.height, head.height)
    assert.equal(V.blockHeaderHash(h.body.header).toString('hex'), h.body.hash)
    assert.equal(head.timestamp, Math.floor(h.body.header.last_ts / 1000))
  })

  it('every leaf and the root are recomputed from get-entries', async () => {
    const head = await sth()
    const r = await get(`/ledger/v1/get-entries?start=0&end=${head.tree_size - 1}`)
    assert.equal(r.status, 200, JSON.stringify(r.body))
    assert.equal(r.body.entries.length, head.tree_size)
    const hashes = r.body.entries.map((e, i) => {
      const leaf = V.b64(e.leaf_input)
      const parsed = V.parseLeaf(leaf)
      // The leaf commits to the logged input it carries as extra_data...
      assert.ok(parsed.inputHash.equals(V.leafHash(V.b64(e.extra_data))), `input of leaf ${i}`)
      // ...and to its effects, whose hashes come along.
      const fx = e.effect_hashes.map(V.b64)
      assert.equal(fx.length, parsed.effectCount)
      assert.ok(V.rootOf(fx).equals(parsed.effectsRoot), `effects of leaf ${i}`)
      if (i > 0) assert.ok(parsed.ts > V.parseLeaf(V.b64(r.body.entries[i - 1].leaf_input)).ts, 'ts increase')
      return V.leafHash(leaf)
    })
    assert.ok(V.rootOf(hashes).equals(V.b64(head.sha256_root_hash)), 'root recomputed from the leaves')
    // Each leaf is found by its hash, with a proof that verifies against the head.
    for (const [i, h] of hashes.entries()) {
      const p = await get(`/ledger/v1/get-proof-by-hash?hash=${encodeURIComponent(h.toString('base64'))}&tree_size=${head.tree_size}`)
      assert.equal(p.status, 200, JSON.stringify(p.body))
      assert.equal(p.body.leaf_index, i)
      const path = p.body.audit_path.map(V.b64)
      assert.ok(V.verifyInclusion(h, i, head.tree_size, path, V.b64(head.sha256_root_hash)), `leaf ${i}`)
      if (path.length > 0) {
        path[0] = Buffer.from(path[0])
        path[0][0] ^= 1
        assert.ok(!V.verifyInclusion(h, i, head.tree_size, path, V.b64(head.sha256_root_hash)), `spoiled ${i}`)
      }
    }
  })

  it('a later head is consistent with an earlier one', async () => {
    const first = await sth()
    for (let i = 2; i <= 6; i++) {
      await c.query(q.Create(q.Ref(q.Collection('accounts'), String(i)), { data: { owner: `o${i}`, balance: i } }))
    }
    const second = await sth()
    assert.equal(second.tree_size, first.tree_size + 5)
    const r = await get(`/ledger/v1/get-sth-consistency?first=${first.tree_size}&second=${second.tree_size}`)
    assert.equal(r.status, 200, JSON.stringify(r.body))
    const proof = r.body.consistency.map(V.b64)
    const [r1, r2] = [V.b64(first.sha256_root_hash), V.b64(second.sha256_root_hash)]
    assert.ok(V.verifyConsistency(first.tree_size, second.tree_size, r1, r2, proof))
    assert.ok(!V.verifyConsistency(first.tree_size, second.tree_size, r2, r1, proof), 'roots swapped')
    assert.ok(!V.verifyConsistency(first.tree_size + 1, second.tree_size, r1, r2, proof), 'another first size')
    const forged = proof.map(b => Buffer.from(b))
    forged[forged.length - 1][5] ^= 0x20
    assert.ok(!V.verifyConsistency(first.tree_size, second.tree_size, r1, r2, forged), 'a forged proof')
  })

  it('proves a document revision, and a proof for another tree size fails', async () => {
    const updated = await c.query(q.Update(q.Ref(q.Collection('accounts'), '1'), { data: { balance: 11 } }))
    await c.query(q.Create(q.Ref(q.Collection('accounts'), '7'), { data: { owner: 'x', balance: 0 } }))
    const head = await sth()
    const ref = 'accounts/1'
    const r = await get(`/ledger/v1/get-proof-by-revision?ref=${ref}&ts=${updated.ts}&tree_size=${head.tree_size}`)
    assert.equal(r.status, 200, JSON.stringify(r.body))
    const { leaf, effect } = V.verifyRevision(r.body, head, { id: '1', ts: updated.ts })
    assert.equal(leaf.ts, BigInt(updated.ts), 'the leaf is the transaction that wrote the version')
    assert.ok(effect.value.length > 0)
    assert.throws(() => V.verifyRevision(r.body, head, { id: '2', ts: updated.ts }), /names document 1/)
    // A proof served for an older tree size does not verify against this head.
    const older = await get(`/ledger/v1/get-proof-by-revision?ref=${ref}&ts=${updated.ts}&tree_size=${head.tree_size - 1}`)
    assert.equal(older.status, 200)
    assert.throws(() => V.verifyRevision({ ...older.body, tree_size: head.tree_size }, head, { id: '1', ts: updated.ts }), /not in the head/)
    // A version that does not exist is not proven.
    const none = await get(`/ledger/v1/get-proof-by-revision?ref=${ref}&ts=${updated.ts - 1}`)
    assert.equal(none.status, 404, JSON.stringify(none.body))
  })

  it('keys see only what they may read; proofs need no write permission', async () => {
    await c.query(q.CreateDatabase({ name: 'tenant' }))
    const tenantKey = await c.query(q.CreateKey({ database: q.Database('tenant'), role: 'server' }))
    const tc = server.client(tenantKey.secret)
    await tc.query(q.CreateCollection({ name: 'accounts' }))
    const own = await tc.query(q.Create(q.Ref(q.Collection('accounts'), '1'), { data: { owner: 'tenant' } }))
    const readOnly = await c.query(q.CreateKey({ database: q.Database('tenant'), role: 'server-readonly' }))
    const head = await sth(readOnly.secret)
    const mine = await get(`/ledger/v1/get-proof-by-revision?ref=accounts/1&ts=${own.ts}`, readOnly.secret)
    assert.equal(mine.status, 200, JSON.stringify(mine.body))
    V.verifyRevision(mine.body, head, { id: '1', ts: own.ts })
    // The tenant's accounts/1 is its own: asked for the root database's version (at its
    // ts the tenant's collection did not exist yet), the tenant's key gets no proof.
    const parentDoc = await c.query(q.Get(q.Ref(q.Collection('accounts'), '1')))
    const theirs = await get(`/ledger/v1/get-proof-by-revision?ref=accounts/1&ts=${parentDoc.ts}`, readOnly.secret)
    assert.equal(theirs.status, 400, JSON.stringify(theirs.body))
    assert.equal(theirs.body.errors[0].code, 'invalid ref')
    // The answer names the tenant's database, not the root's.
    const rootProof = await get(`/ledger/v1/get-proof-by-revision?ref=accounts/1&ts=${parentDoc.ts}`)
    assert.equal(rootProof.status, 200, JSON.stringify(rootProof.body))
    assert.notEqual(String(mine.body.revision.db), String(rootProof.body.revision.db))
    V.verifyRevision(rootProof.body, await sth(), { id: '1', ts: parentDoc.ts })
    // A sibling tenant's key never gets the tenant's version, even for the same ref and ts.
    await c.query(q.CreateDatabase({ name: 'sibling' }))
    const siblingKey = await c.query(q.CreateKey({ database: q.Database('sibling'), role: 'server' }))
    await server.client(siblingKey.secret).query(q.CreateCollection({ name: 'accounts' }))
    await server.client(siblingKey.secret).query(q.Create(q.Ref(q.Collection('accounts'), '1'), { data: { owner: 'sibling' } }))
    const crossed = await get(`/ledger/v1/get-proof-by-revision?ref=accounts/1&ts=${own.ts}`, siblingKey.secret)
    assert.ok([400, 404].includes(crossed.status), JSON.stringify(crossed.body))
    // A read-only key reads every kind of proof: by hash and consistency too.
    const later = await sth(readOnly.secret)
    const leafHash = V.leafHash(V.b64(mine.body.leaf_input)).toString('base64')
    const byHash = await get(`/ledger/v1/get-proof-by-hash?hash=${encodeURIComponent(leafHash)}&tree_size=${later.tree_size}`, readOnly.secret)
    assert.equal(byHash.status, 200, JSON.stringify(byHash.body))
    assert.ok(V.verifyInclusion(V.b64(leafHash), byHash.body.leaf_index, later.tree_size, byHash.body.audit_path.map(V.b64), V.b64(later.sha256_root_hash)))
    const cons = await get(`/ledger/v1/get-sth-consistency?first=${head.tree_size}&second=${later.tree_size}`, readOnly.secret)
    assert.equal(cons.status, 200, JSON.stringify(cons.body))
    assert.ok(V.verifyConsistency(head.tree_size, later.tree_size, V.b64(head.sha256_root_hash), V.b64(later.sha256_root_hash), cons.body.consistency.map(V.b64)))
    // A client key without a role reads nothing, so it proves nothing.
    const client = await c.query(q.CreateKey({ database: q.Database('tenant'), role: 'client' }))
    const denied = await get(`/ledger/v1/get-proof-by-revision?ref=accounts/1&ts=${own.ts}`, client.secret)
    assert.equal(denied.status, 403, JSON.stringify(denied.body))
    // get-entries shows every tenant's transactions: root authority only.
    const entries = await get('/ledger/v1/get-entries?start=0&end=0', tenantKey.secret)
    assert.equal(entries.status, 403, JSON.stringify(entries.body))
    const anon = await get('/ledger/v1/get-sth', null)
    assert.equal(anon.status, 401)
  })

  it("an admin's Remove redacts a version: old heads and proofs still verify, the removal is an effect", async () => {
    const ref = q.Ref(q.Collection('accounts'), '20')
    const created = await c.query(q.Create(ref, { data: { owner: 'gone', balance: 1 } }))
    await c.query(q.Update(ref, { data: { balance: 2 } }))
    const before = await sth()
    const proof = (await get(`/ledger/v1/get-proof-by-revision?ref=accounts/20&ts=${created.ts}&tree_size=${before.tree_size}`)).body
    V.verifyRevision(proof, before, { id: '20', ts: created.ts })
    await c.query(q.Remove(ref, created.ts, 'create'))
    const after = await sth()
    assert.equal(after.tree_size, before.tree_size + 1, 'the Remove is one more leaf')
    // The version is gone: no proof can be served for it any more...
    const gone = await get(`/ledger/v1/get-proof-by-revision?ref=accounts/20&ts=${created.ts}`)
    assert.equal(gone.status, 404, JSON.stringify(gone.body))
    // ...but nothing was rewritten: the new head extends the old one, the old proof
    // still holds against the old head, and its leaf is in the new tree unchanged.
    const cons = await get(`/ledger/v1/get-sth-consistency?first=${before.tree_size}&second=${after.tree_size}`)
    const [r1, r2] = [V.b64(before.sha256_root_hash), V.b64(after.sha256_root_hash)]
    assert.ok(V.verifyConsistency(before.tree_size, after.tree_size, r1, r2, cons.body.consistency.map(V.b64)))
    V.verifyRevision(proof, before, { id: '20', ts: created.ts })
    const leafHash = V.leafHash(V.b64(proof.leaf_input))
    const byHash = await get(`/ledger/v1/get-proof-by-hash?hash=${encodeURIComponent(leafHash.toString('base64'))}&tree_size=${after.tree_size}`)
    assert.equal(byHash.status, 200, JSON.stringify(byHash.body))
    assert.equal(byHash.body.leaf_index, proof.leaf_index)
    assert.ok(V.verifyInclusion(leafHash, proof.leaf_index, after.tree_size, byHash.body.audit_path.map(V.b64), r2))
    // The Remove's own leaf commits to the removal: an effect leaf (space 0, op 1, the
    // version's key and ts, no value), built here from the documented layout.
    const entry = (await get(`/ledger/v1/get-entries?start=${after.tree_size - 1}&end=${after.tree_size - 1}`)).body.entries[0]
    const key = V.b64(proof.revision.key)
    const removal = Buffer.alloc(14 + key.length)
    removal[0] = 0
    removal[1] = 1
    removal.writeUInt32BE(key.length, 2)
    key.copy(removal, 6)
    removal.writeBigUInt64BE(BigInt(created.ts), 6 + key.length)
    const fx = entry.effect_hashes.map(V.b64)
    assert.ok(fx.some(h => h.equals(V.leafHash(removal))), 'the removal is one of its effects')
    assert.ok(V.rootOf(fx).equals(V.parseLeaf(V.b64(entry.leaf_input)).effectsRoot))
    // A server that passes the removal off as the version (same key, same ts, every path
    // genuine) is caught by the stdlib verifier and by `tally verify --proof`.
    const at = fx.findIndex(h => h.equals(V.leafHash(removal)))
    const removeLeafHash = V.leafHash(V.b64(entry.leaf_input)).toString('base64')
    const removeProof = (await get(`/ledger/v1/get-proof-by-hash?hash=${encodeURIComponent(removeLeafHash)}&tree_size=${after.tree_size}`)).body
    const forged = {
      ...proof,
      tree_size: after.tree_size,
      leaf_index: after.tree_size - 1,
      leaf_input: entry.leaf_input,
      audit_path: removeProof.audit_path,
      effect: { leaf: removal.toString('base64'), index: at, count: fx.length, audit_path: inclusionPath(fx, at).map(b => b.toString('base64')) },
    }
    assert.throws(() => V.verifyRevision(forged, after, { id: '20', ts: created.ts }), /not a document version/)
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-forged-'))
    try {
      fs.writeFileSync(path.join(dir, 'proof.json'), JSON.stringify(forged))
      fs.writeFileSync(path.join(dir, 'sth.json'), JSON.stringify(after))
      const r = spawnSync(tallyBin(), ['verify', '--proof', path.join(dir, 'proof.json'), '--sth', path.join(dir, 'sth.json')], { encoding: 'utf8' })
      assert.equal(r.status, 1, r.stdout + r.stderr)
      assert.match(r.stdout, /^bad: .*the effect is not a document version written/)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it('refuses malformed and out-of-range requests with a clear error', async () => {
    const head = await sth()
    const cases = [
      [`/ledger/v1/get-sth-consistency?first=2&second=${head.tree_size + 1}`, /larger than the tree/],
      ['/ledger/v1/get-sth-consistency?first=5&second=4', /must not be larger/],
      ['/ledger/v1/get-sth-consistency?first=x&second=4', /first=/],
      ['/ledger/v1/get-proof-by-hash?hash=AAAA', /32 bytes/],
      [`/ledger/v1/get-entries?start=${head.tree_size}&end=${head.tree_size}`, /below the tree size/],
      ['/ledger/v1/get-proof-by-revision?ref=accounts&ts=1', /<collection>\/<id>/],
      ['/ledger/v1/get-proof-by-revision?ref=keys/1&ts=1', /user document/],
    ]
    for (const [path, re] of cases) {
      const r = await get(path)
      assert.equal(r.status, 400, `${path}: ${JSON.stringify(r.body)}`)
      assert.match(r.body.errors[0].description, re, path)
    }
    const unknown = Buffer.alloc(32, 3).toString('base64')
    const nf = await get(`/ledger/v1/get-proof-by-hash?hash=${encodeURIComponent(unknown)}`)
    assert.equal(nf.status, 404)
    // A long range is cut to the limit rather than refused (RFC 6962 allows fewer).
    const all = await get(`/ledger/v1/get-entries?start=0&end=${Number.MAX_SAFE_INTEGER}`)
    assert.equal(all.status, 200)
    assert.equal(all.body.entries.length, Math.min(head.tree_size, 256))
  })
})
