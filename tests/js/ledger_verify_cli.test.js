'use strict'
// `tally verify --proof FILE --sth FILE` end to end: heads and proofs fetched from a
// running node through /ledger/v1/, saved to files, then checked by the binary with no
// server (the node is stopped first). Good proofs are accepted; a tampered proof, a proof
// for another tree size, a forged signature, a head signed by no pinned key and a broken
// consistency proof are each refused with a message that says which check failed.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { spawnSync } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { startServer, q, rawRequest, tallyBin } = require('./helpers/server')
const V = require('./helpers/ledger_verify')

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-verify-cli-'))
const save = (name, value) => {
  const p = path.join(dir, name)
  fs.writeFileSync(p, typeof value === 'string' ? value : JSON.stringify(value, null, 2))
  return p
}
const clone = v => JSON.parse(JSON.stringify(v))
const flipB64 = (s, at = 5) => {
  const b = V.b64(s)
  b[at % b.length] ^= 0x01
  return b.toString('base64')
}

/** Runs `tally verify` with `args`; returns {code, out}. */
function verify(...args) {
  const r = spawnSync(tallyBin(), ['verify', ...args], { encoding: 'utf8', timeout: 30_000 })
  return { code: r.status, out: `${r.stdout}${r.stderr}`.trim() }
}

function accepted(args, re) {
  const r = verify(...args)
  assert.equal(r.code, 0, r.out)
  assert.match(r.out, /^ok: /, r.out)
  if (re) assert.match(r.out, re)
  return r.out
}

function refused(args, re) {
  const r = verify(...args)
  assert.equal(r.code, 1, `expected a refusal, got: ${r.out}`)
  assert.match(r.out, /^bad: /, r.out)
  assert.match(r.out, re, r.out)
  return r.out
}

describe('tally verify --proof --sth, offline', { timeout: 120_000 }, () => {
  let server
  const files = {}
  let memberKey // base64, as get-sth lists it
  let updatedTs

  async function get(p) {
    const res = await rawRequest(server.port, { method: 'GET', path: p, headers: { authorization: `Bearer ${server.rootKey}` } })
    assert.equal(res.status, 200, `${p}: ${res.body}`)
    return JSON.parse(res.body)
  }

  before(async () => {
    server = await startServer()
    const c = server.adminClient()
    await c.query(q.CreateCollection({ name: 'accounts' }))
    await c.query(q.Create(q.Ref(q.Collection('accounts'), '1'), { data: { balance: 10 } }))
    const older = await get('/ledger/v1/get-sth')
    for (let i = 2; i <= 5; i++) await c.query(q.Create(q.Ref(q.Collection('accounts'), String(i)), { data: { balance: i } }))
    updatedTs = (await c.query(q.Update(q.Ref(q.Collection('accounts'), '1'), { data: { balance: 11 } }))).ts
    const head = await get('/ledger/v1/get-sth')
    assert.equal(head.tree_size, older.tree_size + 5)
    memberKey = head.signatures[0].public_key
    const n = head.tree_size
    // A leaf, its hash, and its proof by hash (with the leaf added, as docs/ledger.md says).
    const entry = (await get(`/ledger/v1/get-entries?start=2&end=2`)).entries[0]
    const leafHash = V.leafHash(V.b64(entry.leaf_input)).toString('base64')
    const byHash = await get(`/ledger/v1/get-proof-by-hash?hash=${encodeURIComponent(leafHash)}&tree_size=${n}`)
    assert.equal(byHash.tree_size, n)
    const forOlder = await get(`/ledger/v1/get-proof-by-hash?hash=${encodeURIComponent(leafHash)}&tree_size=${n - 1}`)
    const revision = await get(`/ledger/v1/get-proof-by-revision?ref=accounts/1&ts=${updatedTs}&tree_size=${n}`)
    const consistency = await get(`/ledger/v1/get-sth-consistency?first=${older.tree_size}&second=${n}`)
    assert.deepEqual([consistency.first, consistency.second], [older.tree_size, n])
    Object.assign(files, {
      head: save('sth.json', head),
      older: save('sth-older.json', older),
      byHash: save('proof-by-hash.json', { ...byHash, leaf_input: entry.leaf_input }),
      byHashOnly: save('proof-by-hash-only.json', { ...byHash, hash: leafHash }),
      revision: save('proof-revision.json', revision),
      consistency: save('consistency.json', consistency),
      forOlder: save('proof-other-size.json', { ...forOlder, leaf_input: entry.leaf_input }),
    })
    // Everything below runs with no server at all.
    await server.stop()
    server = null
  })

  after(async () => {
    if (server) await server.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it('accepts saved inclusion, revision and consistency proofs', () => {
    accepted(['--proof', files.byHash, '--sth', files.head, '--key', memberKey], /the leaf is in the tree of \d+ leaves; head signed by 1 of 1 members/)
    accepted(['--proof', files.byHashOnly, '--sth', files.head], /leaf 2 is in the tree.*no member keys pinned/)
    accepted(['--proof', files.revision, '--sth', files.head, '--key', V.b64(memberKey).toString('hex')], new RegExp(`accounts/1 at ts ${updatedTs}`))
    accepted(['--proof', files.consistency, '--sth', files.head, '--old-sth', files.older, '--key', memberKey], /tree \d+ is a prefix of tree \d+/)
  })

  it('refuses a tampered proof', () => {
    const p = JSON.parse(fs.readFileSync(files.byHash, 'utf8'))
    p.audit_path[0] = flipB64(p.audit_path[0])
    refused(['--proof', save('tampered-path.json', p), '--sth', files.head], /audit path does not lead from leaf 2 to the head's root/)
    const leaf = JSON.parse(fs.readFileSync(files.byHash, 'utf8'))
    leaf.leaf_input = flipB64(leaf.leaf_input, 3)
    refused(['--proof', save('tampered-leaf.json', leaf), '--sth', files.head], /audit path does not lead/)
    const rev = JSON.parse(fs.readFileSync(files.revision, 'utf8'))
    rev.effect.leaf = flipB64(rev.effect.leaf, 40)
    refused(['--proof', save('tampered-effect.json', rev), '--sth', files.head], /effect is not in the leaf's effects tree/)
    const other = JSON.parse(fs.readFileSync(files.revision, 'utf8'))
    other.revision.ts += 1
    refused(['--proof', save('other-version.json', other), '--sth', files.head], /does not name the version the proof claims/)
    const cons = JSON.parse(fs.readFileSync(files.consistency, 'utf8'))
    cons.consistency[cons.consistency.length - 1] = flipB64(cons.consistency[cons.consistency.length - 1])
    refused(['--proof', save('tampered-consistency.json', cons), '--sth', files.head, '--old-sth', files.older], /does not show that tree \d+ is a prefix/)
    refused(['--proof', files.consistency, '--sth', files.older, '--old-sth', files.head], /from tree size \d+ \(`first`\), but --old-sth has tree_size/)
    const garbage = save('garbage.json', '{"leaf_index": 2, "audit_path": ["not base64!"], "hash": "AAAA"}')
    refused(['--proof', garbage, '--sth', files.head], /audit_path`\[0\] is not base64/)
    refused(['--proof', save('not-json.json', 'proof?'), '--sth', files.head], /is not JSON/)
    // Malformed at the byte level: a path element or a root of the wrong length.
    const short = JSON.parse(fs.readFileSync(files.byHash, 'utf8'))
    short.audit_path[0] = V.b64(short.audit_path[0]).subarray(1).toString('base64')
    refused(['--proof', save('short-element.json', short), '--sth', files.head], /audit_path`\[0\] is not 32 bytes/)
    const long = JSON.parse(fs.readFileSync(files.consistency, 'utf8'))
    long.consistency[0] = Buffer.concat([V.b64(long.consistency[0]), Buffer.alloc(1)]).toString('base64')
    refused(['--proof', save('long-element.json', long), '--sth', files.head, '--old-sth', files.older], /consistency`\[0\] is not 32 bytes/)
    const head = JSON.parse(fs.readFileSync(files.head, 'utf8'))
    head.sha256_root_hash = V.b64(head.sha256_root_hash).subarray(2).toString('base64')
    refused(['--proof', files.byHash, '--sth', save('short-root.json', head)], /sha256_root_hash` must be 32 bytes, got 30/)
  })

  it('refuses a proof for another tree size', () => {
    refused(['--proof', files.forOlder, '--sth', files.head], /the proof is for a tree of (\d+) leaves, the head for \d+/)
    // Without the size field the path itself does not lead to the head's root.
    const p = JSON.parse(fs.readFileSync(files.forOlder, 'utf8'))
    delete p.tree_size
    refused(['--proof', save('other-size-unlabelled.json', p), '--sth', files.head], /audit path does not lead/)
  })

  it('refuses a forged or misattributed signature', () => {
    const head = JSON.parse(fs.readFileSync(files.head, 'utf8'))
    const forged = clone(head)
    forged.signatures[0].tree_head_signature = flipB64(forged.signatures[0].tree_head_signature, 20)
    refused(['--proof', files.byHash, '--sth', save('forged-sig.json', forged)], /signature 0 \(member 1, key .*\) does not verify over the head/)
    // A head whose size or root was changed no longer matches its signature.
    const resized = { ...clone(head), tree_size: head.tree_size + 1 }
    refused(['--proof', files.byHash, '--sth', save('resized.json', resized)], /does not verify over the head/)
    const rerooted = { ...clone(head), sha256_root_hash: flipB64(head.sha256_root_hash) }
    refused(['--proof', files.byHash, '--sth', save('rerooted.json', rerooted)], /does not verify over the head/)
    // A genuine signature by a key nobody pinned is no quorum certificate.
    const stranger = crypto.generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' })
    const strangerKey = Buffer.from(stranger.x, 'base64url').toString('base64')
    refused(['--proof', files.byHash, '--sth', files.head, '--key', strangerKey], /signed by 0 of the 1 pinned member keys; a quorum certificate needs a majority \(1\)/)
    // A head re-signed by a stranger with its own key verifies, but not under the pinned key.
    const { privateKey, publicKey } = crypto.generateKeyPairSync('ed25519')
    const sig = crypto.sign(null, V.treeHeadBytes(head), privateKey)
    const ds = Buffer.concat([Buffer.from([8, 7, 0, 64]), sig]).toString('base64')
    const pk = Buffer.from(publicKey.export({ format: 'jwk' }).x, 'base64url').toString('base64')
    const swapped = { ...clone(head), signatures: [{ public_key: pk, tree_head_signature: ds }] }
    refused(['--proof', files.byHash, '--sth', save('swapped.json', swapped), '--key', memberKey], /signed by 0 of the 1 pinned/)
    const unsigned = { ...clone(head), signatures: [] }
    refused(['--proof', files.byHash, '--sth', save('unsigned.json', unsigned)], /carries no signature/)
    refused(['--proof', files.byHash, '--sth', files.head, '--key', 'abc'], /member key `abc` is not 32 bytes/)
  })
})
