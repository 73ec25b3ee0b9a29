'use strict'
// The leaf-hash lookup behind get-proof-by-hash is node-local (leafhash.redb, built in the
// background from the state's tree; crates/tally-server/src/leaf_index.rs). Through the real
// server: a leaf is found by its hash the moment it is committed and after it is indexed,
// the index catches up with the tree (tally_leaf_index_leaves), and a directory whose index
// is missing or damaged, or that an earlier build wrote (format 3), still finds every leaf
// and rebuilds the file.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { startServer, rawRequest, q } = require('./helpers/server')
const V = require('./helpers/ledger_verify')

describe('leaf-hash index', { timeout: 120_000 }, () => {
  let server

  async function get(p) {
    const res = await rawRequest(server.port, { method: 'GET', path: p, headers: { authorization: `Bearer ${server.rootKey}` } })
    return { status: res.status, text: res.body }
  }

  async function json(p) {
    const r = await get(p)
    assert.equal(r.status, 200, r.text)
    return JSON.parse(r.text)
  }

  async function indexed() {
    const text = (await get('/metrics')).text
    const m = text.match(/^tally_leaf_index_leaves (\d+)$/m)
    assert.ok(m, 'the gauge is exposed')
    return Number(m[1])
  }

  async function caughtUp(size) {
    for (let i = 0; i < 200; i++) {
      if ((await indexed()) === size) return
      await new Promise(r => setTimeout(r, 50))
    }
    assert.fail(`the index did not reach ${size} leaves (at ${await indexed()})`)
  }

  /** Every leaf of the current tree is found at its index, with a proof that verifies. */
  async function allFound() {
    const head = await json('/ledger/v1/get-sth')
    const entries = (await json(`/ledger/v1/get-entries?start=0&end=${head.tree_size - 1}`)).entries
    assert.equal(entries.length, head.tree_size)
    for (const [i, e] of entries.entries()) {
      const h = V.leafHash(V.b64(e.leaf_input))
      const p = await json(`/ledger/v1/get-proof-by-hash?hash=${encodeURIComponent(h.toString('base64'))}&tree_size=${head.tree_size}`)
      assert.equal(p.leaf_index, i)
      assert.ok(V.verifyInclusion(h, i, head.tree_size, p.audit_path.map(V.b64), V.b64(head.sha256_root_hash)), `leaf ${i}`)
    }
    return head.tree_size
  }

  before(async () => {
    server = await startServer()
    const c = server.adminClient()
    await c.query(q.CreateCollection({ name: 'things' }))
    for (let i = 0; i < 20; i++) await c.query(q.Create(q.Collection('things'), { data: { i } }))
  })

  after(async () => {
    if (server) await server.stop()
  })

  it('finds a leaf as soon as it is committed, and after the index caught up', async () => {
    const c = server.adminClient()
    await c.query(q.Create(q.Collection('things'), { data: { i: 'last' } }))
    // Straight after the commit: found whether or not the index has it yet.
    const size = await allFound()
    await caughtUp(size)
    assert.equal(await allFound(), size)
    assert.ok(fs.statSync(path.join(server.dataDir, 'leafhash.redb')).size > 0)
    // A hash that is no leaf: 404, also once everything is indexed.
    const none = Buffer.alloc(32, 7).toString('base64')
    const r = await get(`/ledger/v1/get-proof-by-hash?hash=${encodeURIComponent(none)}`)
    assert.equal(r.status, 404, r.text)
  })

  it('a missing or damaged index, or a format-3 directory, finds every leaf and is rebuilt', async () => {
    const size = await allFound()
    await caughtUp(size)
    const file = path.join(server.dataDir, 'leafhash.redb')
    const marker = path.join(server.dataDir, 'FORMAT')
    for (const spoil of [
      () => fs.rmSync(file),
      () => fs.writeFileSync(file, 'not a redb file'),
      () => fs.writeFileSync(marker, 'tally data directory format 3\n'),
    ]) {
      await server.stop({ keepData: true })
      spoil()
      await server.start()
      assert.equal(fs.readFileSync(marker, 'utf8'), 'tally data directory format 5\n')
      assert.equal(await allFound(), size)
      await caughtUp(size)
      assert.equal(await allFound(), size)
    }
  })
})
