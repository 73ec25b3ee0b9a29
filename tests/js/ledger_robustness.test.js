'use strict'
// The ledger head, restarts, and queries that push the evaluator's bounds — through the
// official driver against a real server.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { startServer, q, rawRequest, expectFaunaError } = require('./helpers/server')

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
})
