'use strict'
// Quorum certificates on a real 3-member cluster: every member signs the heads it
// computes, and get-sth from any member carries the signatures of every voter that
// computed the same head. Checked with the stdlib verifier (helpers/ledger_verify.js)
// against the member keys `/cluster/status` lists, and by `tally verify --members`
// offline: a proof fetched from one member verifies against a head fetched from another;
// with one member down the head still carries a majority; a head with a minority of
// signatures is refused.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { q, tallyBin, HOST } = require('./helpers/server')
const { TallyCluster } = require('./helpers/cluster')
const V = require('./helpers/ledger_verify')

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-quorum-'))
const save = (name, value) => {
  const p = path.join(dir, name)
  fs.writeFileSync(p, JSON.stringify(value))
  return p
}

function verify(...args) {
  const r = spawnSync(tallyBin(), ['verify', ...args], { encoding: 'utf8', timeout: 30_000 })
  return { code: r.status, out: `${r.stdout}${r.stderr}`.trim() }
}

/** Checks every signature of `sth` and that each is by the key `/cluster/status` lists for its member. */
function checkSignatures(sth, memberKeys) {
  for (const s of sth.signatures) {
    assert.equal(V.b64(s.public_key).toString('hex'), memberKeys[String(s.member)], `member ${s.member}'s key`)
    assert.ok(V.verifySthSignature(sth, s.public_key, s.tree_head_signature), `member ${s.member}'s signature`)
  }
  return new Set(sth.signatures.map(s => s.member))
}

/**
 * get-sth from `member` until it carries at least `want` signatures (a peer busy under
 * load may miss one 2 s answer; bounded, then the last answer is returned as it is).
 */
// The member's signed head once it carries `want` signatures and at least `minSize` leaves
// (a follower applies a committed write a moment after the leader answered it).
async function sthWith(member, want, minSize = 0) {
  let r
  for (let i = 0; i < 10; i++) {
    r = await member.get('/ledger/v1/get-sth', 15_000)
    assert.equal(r.status, 200, JSON.stringify(r.body))
    if (r.body.signatures.length >= want && r.body.tree_size >= minSize) break
    await new Promise(res => setTimeout(res, 300))
  }
  return r.body
}

describe('quorum certificates on a 3-member cluster', { timeout: 300_000 }, () => {
  let cluster
  let status
  let statusFile

  before(async () => {
    cluster = await new TallyCluster({ replicas: 3 }).start()
    const c = (await cluster.leader()).client()
    await c.query(q.CreateCollection({ name: 'accounts' }))
    for (let i = 1; i <= 4; i++) await c.query(q.Create(q.Ref(q.Collection('accounts'), String(i)), { data: { n: i } }))
    await cluster.converge()
  })

  after(async () => {
    if (cluster) await cluster.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it('`tally cluster status` lists every member key', async () => {
    const f = (await cluster.followers())[0]
    // Saved as an operator would: the CLI's output is the file `tally verify --members` reads.
    const r = spawnSync(tallyBin(), ['cluster', 'status', '--endpoint', `http://${HOST}:${f.port}`], {
      encoding: 'utf8',
      timeout: 30_000,
      env: { ...process.env, TALLY_ROOT_KEY: cluster.rootKey },
    })
    assert.equal(r.status, 0, r.stderr)
    status = JSON.parse(r.stdout)
    assert.deepEqual(Object.keys(status.member_keys).sort(), ['1', '2', '3'])
    assert.equal(new Set(Object.values(status.member_keys)).size, 3, 'three distinct keys')
    assert.equal(status.member_keys[String(f.id)], status.member_key)
    statusFile = path.join(dir, 'status.json')
    fs.writeFileSync(statusFile, r.stdout)
  })

  it('get-sth from any member carries all three signatures over the same head', async () => {
    const heads = []
    for (const m of cluster.members) heads.push(await sthWith(m, 3))
    // /ledger/head lists the same keys as `tally cluster status`.
    const lh = await cluster.members[2].head()
    assert.deepEqual(lh.body.member_keys, status.member_keys)
    const keys = Object.values(status.member_keys)
    for (const h of heads) {
      assert.equal(V.verifyQuorum(h, keys), 3)
      assert.equal(V.verifyQuorum({ ...h, signatures: h.signatures.slice(1) }, keys), 2)
      assert.throws(() => V.verifyQuorum({ ...h, signatures: h.signatures.slice(2) }, keys), /signed by 1 of 3 members: no majority/)
      assert.equal(h.members, 3)
      assert.equal(h.quorum, true)
      assert.deepEqual([...checkSignatures(h, status.member_keys)].sort(), [1, 2, 3], JSON.stringify(h.signatures))
      assert.equal(h.tree_size, heads[0].tree_size)
      assert.equal(h.sha256_root_hash, heads[0].sha256_root_hash)
      // ed25519 is deterministic: one member's signature of one head is the same wherever it is served.
      assert.deepEqual(h.signatures, heads[0].signatures)
    }
  })

  it('a proof from one member verifies offline against a head from another, by a majority of pinned keys', async () => {
    const leader = await cluster.leader()
    const [f1, f2] = await cluster.followers()
    const older = await sthWith(f2, 3)
    const updated = await leader.client().query(q.Update(q.Ref(q.Collection('accounts'), '1'), { data: { n: 10 } }))
    const head = await sthWith(f1, 3, older.tree_size + 1)
    assert.equal(head.signatures.length, 3, JSON.stringify(head))
    assert.ok(head.tree_size > older.tree_size, `f1's head holds the update: ${JSON.stringify(head)}`)
    // The stdlib verifier (docs/ledger.md only): a head from f1, certified by all three
    // pinned keys; a revision proof from f2 and a consistency proof from the leader
    // against it and an older head from f2.
    assert.equal(V.verifyQuorum(head, Object.values(status.member_keys)), 3)
    assert.equal(V.verifyQuorum(older, Object.values(status.member_keys)), 3)
    await cluster.converge()
    const rev = await f2.get(`/ledger/v1/get-proof-by-revision?ref=accounts/1&ts=${updated.ts}&tree_size=${head.tree_size}`)
    assert.equal(rev.status, 200, JSON.stringify(rev.body))
    V.verifyRevision(rev.body, head, { id: '1', ts: updated.ts })
    const cons = await leader.get(`/ledger/v1/get-sth-consistency?first=${older.tree_size}&second=${head.tree_size}`)
    assert.equal(cons.status, 200, JSON.stringify(cons.body))
    const [r1, r2] = [V.b64(older.sha256_root_hash), V.b64(head.sha256_root_hash)]
    assert.ok(V.verifyConsistency(older.tree_size, head.tree_size, r1, r2, cons.body.consistency.map(V.b64)), 'consistency across members')
    const entries = (await leader.get(`/ledger/v1/get-entries?start=${head.tree_size - 1}&end=${head.tree_size - 1}`)).body
    const leaf = entries.entries[0].leaf_input
    const hash = V.leafHash(V.b64(leaf)).toString('base64')
    const proof = (await f2.get(`/ledger/v1/get-proof-by-hash?hash=${encodeURIComponent(hash)}&tree_size=${head.tree_size}`)).body
    const sthFile = save('sth.json', head)
    const proofFile = save('proof.json', { ...proof, leaf_input: leaf })
    let r = verify('--proof', proofFile, '--sth', sthFile, '--members', statusFile)
    assert.equal(r.code, 0, r.out)
    assert.match(r.out, /^ok: the leaf is in the tree of \d+ leaves; head signed by 3 of 3 members \(a majority\)/)
    // Two of three signatures are still a quorum certificate; one is not.
    const two = { ...head, signatures: head.signatures.slice(0, 2) }
    r = verify('--proof', proofFile, '--sth', save('two.json', two), '--members', statusFile)
    assert.equal(r.code, 0, r.out)
    assert.match(r.out, /signed by 2 of 3 members/)
    const one = { ...head, signatures: head.signatures.slice(1, 2) }
    r = verify('--proof', proofFile, '--sth', save('one.json', one), '--members', statusFile)
    assert.equal(r.code, 1, r.out)
    assert.match(r.out, /^bad: the head \(--sth\): the head is signed by 1 of the 3 pinned member keys; a quorum certificate needs a majority \(2\)/)
    // The same signature twice counts once.
    const doubled = { ...head, signatures: [head.signatures[0], head.signatures[0]] }
    r = verify('--proof', proofFile, '--sth', save('doubled.json', doubled), '--members', statusFile)
    assert.equal(r.code, 1, r.out)
    assert.match(r.out, /signed by 1 of the 3 pinned/)
  })

  it('with a member down the head carries a majority; with two down, no quorum', async () => {
    const leader = await cluster.leader()
    const [f1, f2] = await cluster.followers()
    await f1.kill9()
    await leader.client().query(q.Create(q.Ref(q.Collection('accounts'), '9'), { data: { n: 9 } }))
    let r = { body: await sthWith(leader, 2) }
    assert.equal(r.body.quorum, true, JSON.stringify(r.body))
    assert.deepEqual([...checkSignatures(r.body, status.member_keys)].sort(), [leader.id, f2.id].sort())
    const sthFile = save('sth-two.json', r.body)
    const c = (await f2.get(`/ledger/v1/get-sth-consistency?first=${r.body.tree_size}&second=${r.body.tree_size}`)).body
    const first = (await f2.get('/ledger/v1/get-sth')).body
    assert.equal(first.tree_size, r.body.tree_size)
    await f2.kill9()
    r = await leader.get('/ledger/v1/get-sth', 15_000)
    assert.equal(r.status, 200, JSON.stringify(r.body))
    assert.equal(r.body.quorum, false)
    assert.deepEqual(r.body.signatures.map(s => s.member), [leader.id])
    const alone = verify('--proof', save('cons.json', c), '--sth', save('sth-alone.json', r.body), '--old-sth', sthFile, '--members', statusFile)
    assert.equal(alone.code, 1, alone.out)
    assert.match(alone.out, /signed by 1 of the 3 pinned member keys/)
    // The members still agree on every block: signatures never entered the replicated state.
    await f1.start()
    await f2.start()
    await f1.waitUp()
    await f2.waitUp()
    await cluster.converge()
  })
})
