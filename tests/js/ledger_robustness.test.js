'use strict'
// The ledger head, restarts, and queries that push the evaluator's bounds — through the
// official driver against a real server.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { execFileSync } = require('node:child_process')
const { startServer, q, rawRequest, expectFaunaError, tallyBin } = require('./helpers/server')
const V = require('./helpers/ledger_verify')

async function sth(server) {
  const res = await rawRequest(server.port, {
    method: 'GET',
    path: '/ledger/v1/get-sth',
    headers: { authorization: `Bearer ${server.rootKey}` },
  })
  assert.equal(res.status, 200, res.body)
  return JSON.parse(res.body)
}

async function head(server) {
  const res = await rawRequest(server.port, {
    method: 'GET',
    path: '/ledger/head',
    headers: { authorization: `Bearer ${server.rootKey}` },
  })
  assert.equal(res.status, 200)
  return JSON.parse(res.body)
}

describe('ledger and robustness', { timeout: 120_000 }, () => {
  let server
  let c

  before(async () => {
    server = await startServer()
    c = server.adminClient()
    await c.query(q.CreateCollection({ name: 'entries' }))
  })

  after(async () => {
    if (server) await server.stop()
  })

  it('every write batch extends the hash chain', async () => {
    const h1 = await head(server)
    assert.ok(h1.height >= 1, 'the schema write made a block')
    assert.match(h1.hash, /^[0-9a-f]{64}$/)
    await c.query(q.Create(q.Collection('entries'), { data: { n: 1 } }))
    const h2 = await head(server)
    assert.equal(h2.height, h1.height + 1)
    assert.notEqual(h2.hash, h1.hash)
    assert.equal(h2.header.prev_hash, h1.hash, 'the new block chains the previous one')
    assert.ok(h2.header.first_ts <= h2.header.last_ts)
    // Reads do not make blocks.
    await c.query(q.Paginate(q.Documents(q.Collection('entries'))))
    assert.equal((await head(server)).height, h2.height)
  })

  it('recursion through user functions is bounded on both paths, and the node stays up', async () => {
    await c.query(
      q.CreateFunction({
        name: 'depth',
        body: q.Query(
          q.Lambda('n', q.If(q.LTE(q.Var('n'), 0), 0, q.Add(1, q.Call(q.Function('depth'), q.Subtract(q.Var('n'), 1)))))
        ),
      })
    )
    assert.equal(await c.query(q.Call(q.Function('depth'), 100)), 100)
    // Read-only path.
    await expectFaunaError(c.query(q.Call(q.Function('depth'), 100000)), 'BadRequest', 'call error')
    // Write path (inside the executor): the same bound, a clean error, no crash.
    await expectFaunaError(
      c.query(q.Do(q.Create(q.Collection('entries'), { data: { n: 2 } }), q.Call(q.Function('depth'), 100000))),
      'BadRequest',
      'call error'
    )
    // The aborted transaction left nothing behind, and writes still work.
    const all = await c.query(q.Map(q.Paginate(q.Documents(q.Collection('entries'))), q.Lambda('r', q.Select(['data', 'n'], q.Get(q.Var('r'))))))
    assert.deepEqual(all.data, [1])
    await c.query(q.Create(q.Collection('entries'), { data: { n: 3 } }))
  })

  it('a clean restart keeps every acknowledged write and the same head', async () => {
    const before = await head(server)
    await server.stop({ keepData: true })
    await server.start()
    c = server.adminClient()
    const after = await head(server)
    assert.equal(after.height, before.height)
    assert.equal(after.hash, before.hash)
    const ns = await c.query(q.Map(q.Paginate(q.Documents(q.Collection('entries'))), q.Lambda('r', q.Select(['data', 'n'], q.Get(q.Var('r'))))))
    assert.deepEqual(ns.data, [1, 3])
    // New writes chain onto the recovered head.
    await c.query(q.Create(q.Collection('entries'), { data: { n: 4 } }))
    const next = await head(server)
    assert.equal(next.header.prev_hash, after.hash)
  })

  it('key rotation as docs/ledger.md says: old heads keep their signatures, new ones use the new key', async () => {
    const old = await sth(server)
    const oldKey = old.signatures[0].public_key
    // Stop, move member.key aside, start: a new key is made.
    await server.stop({ keepData: true })
    fs.renameSync(path.join(server.dataDir, 'member.key'), path.join(server.dataDir, 'member.key.old'))
    await server.start()
    c = server.adminClient()
    await c.query(q.Create(q.Collection('entries'), { data: { n: 5 } }))
    const now = await sth(server)
    const newKey = now.signatures[0].public_key
    assert.notEqual(newKey, oldKey)
    assert.ok(V.verifySthSignature(now, newKey, now.signatures[0].tree_head_signature))
    assert.ok(V.verifySthSignature(old, oldKey, old.signatures[0].tree_head_signature), 'the old head keeps its signature')
    assert.equal((await head(server)).member_key, V.b64(newKey).toString('hex'), '/ledger/head publishes the new key')
    // The new head extends the old one: rotation rewrote nothing.
    const cons = await rawRequest(server.port, {
      method: 'GET',
      path: `/ledger/v1/get-sth-consistency?first=${old.tree_size}&second=${now.tree_size}`,
      headers: { authorization: `Bearer ${server.rootKey}` },
    })
    const proof = JSON.parse(cons.body).consistency.map(V.b64)
    assert.ok(V.verifyConsistency(old.tree_size, now.tree_size, V.b64(old.sha256_root_hash), V.b64(now.sha256_root_hash), proof))
    // Offline, every stored signature still verifies, and both keys are reported.
    await server.stop({ keepData: true })
    const out = execFileSync(tallyBin(), ['verify', '--data-dir', server.dataDir], { encoding: 'utf8' })
    assert.match(out, /^ok: .* member signatures by 2 key\(s\)/)
    await server.start()
    c = server.adminClient()
  })
})
