'use strict'
// Streams (issue 15, item 1): `client.stream.document(ref)` and `client.stream(set)` of
// the official npm driver (HTTP/2 to POST /stream) against the real server: document
// streams see create/update/delete in order with diff/prev as asked; set streams on
// Documents(c) and Match(index, terms) see add/remove; concurrent writes arrive in order,
// without gaps or duplicates (sequence numbers written in the documents); losing
// permission ends the stream with an error event; bad streams are refused.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { TallyServer, q } = require('./helpers/server')

let server
let admin

/** Open a stream and collect its events; `until(events)` says when to resolve. */
function collect(sub, until, ms = 20_000) {
  const events = []
  let done
  const p = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`stream timed out; got ${JSON.stringify(events)}`)), ms)
    done = () => {
      clearTimeout(timer)
      resolve(events)
    }
  })
  const push = type => (data, raw) => {
    events.push({ type, data, txn: raw && raw.txn })
    if (until(events)) done()
  }
  for (const t of ['start', 'version', 'set', 'error', 'snapshot', 'history_rewrite']) {
    try {
      sub.on(t, push(t))
    } catch (_) {
      // `snapshot` exists on document streams only.
    }
  }
  sub.start()
  return p
}

function started(events) {
  return events.some(e => e.type === 'start')
}

async function waitStarted(events) {
  for (let i = 0; i < 400 && !started(events); i++) await new Promise(r => setTimeout(r, 10))
  assert.ok(started(events), 'stream started')
}

describe('streams', { timeout: 120_000 }, () => {
  before(async () => {
    server = new TallyServer()
    await server.start()
    admin = server.adminClient()
    await admin.query(q.CreateCollection({ name: 'things' }))
    await admin.query(q.CreateCollection({ name: 'purchases' }))
    await admin.query(
      q.CreateIndex({ name: 'things_by_color', source: q.Collection('things'), terms: [{ field: ['data', 'color'] }] })
    )
  })
  after(() => server && server.stop())

  it('a document stream sees create, update and delete in order, with diff and prev', async () => {
    const ref = q.Ref(q.Collection('things'), '101')
    await admin.query(q.Create(ref, { data: { n: 0, color: 'red' } }))
    const sub = admin.stream.document(ref, { fields: ['action', 'document', 'diff', 'prev'] })
    const events = []
    const got = collect(sub, evs => {
      events.splice(0, events.length, ...evs)
      return evs.filter(e => e.type === 'version').length >= 2
    })
    await waitStarted(events)
    await admin.query(q.Update(ref, { data: { n: 1, color: null } }))
    await admin.query(q.Delete(ref))
    const all = await got
    sub.close()
    const types = all.map(e => e.type)
    assert.deepEqual(types.slice(0, 2), ['start', 'snapshot'])
    assert.equal(all[1].data.data.n, 0)
    const versions = all.filter(e => e.type === 'version').map(e => e.data)
    assert.deepEqual(versions.map(v => v.action), ['update', 'delete'])
    assert.deepEqual(versions[0].document.data, { n: 1 })
    assert.deepEqual(versions[0].diff.data, { n: 1, color: null })
    assert.deepEqual(versions[0].prev.data, { n: 0, color: 'red' })
    assert.deepEqual(versions[1].document.data, { n: 1 })
    assert.ok(versions[1].document.ts > versions[0].document.ts)
    // `txn` of each event is its commit ts, increasing.
    const txns = all.filter(e => e.type === 'version').map(e => e.txn)
    assert.ok(txns[0] < txns[1])
  })

  it('a document stream sees the create of a document that did not exist yet', async () => {
    const ref = q.Ref(q.Collection('things'), '102')
    const sub = admin.stream(ref)
    const events = []
    const got = collect(sub, evs => {
      events.splice(0, events.length, ...evs)
      return evs.some(e => e.type === 'version')
    })
    await waitStarted(events)
    await admin.query(q.Create(ref, { data: { hello: 'world' } }))
    const all = await got
    sub.close()
    const v = all.find(e => e.type === 'version').data
    assert.equal(v.action, 'create')
    assert.deepEqual(v.document.data, { hello: 'world' })
    assert.equal(v.diff, undefined, 'diff only when asked for')
  })

  it('a set stream on Documents(c) sees adds and removes', async () => {
    const sub = admin.stream(q.Documents(q.Collection('things')))
    const events = []
    const got = collect(sub, evs => {
      events.splice(0, events.length, ...evs)
      return evs.filter(e => e.type === 'set').length >= 2
    })
    await waitStarted(events)
    const doc = await admin.query(q.Create(q.Collection('things'), { data: { color: 'blue' } }))
    await admin.query(q.Update(doc.ref, { data: { color: 'green' } })) // no set event
    await admin.query(q.Delete(doc.ref))
    const sets = (await got).filter(e => e.type === 'set').map(e => e.data)
    sub.close()
    assert.deepEqual(sets.map(s => s.action), ['add', 'remove'])
    assert.equal(sets[0].document.ref.id, doc.ref.id)
  })

  it('a set stream on Match(index, terms) sees the documents entering and leaving it', async () => {
    const sub = admin.stream(q.Match(q.Index('things_by_color'), 'yellow'), { fields: ['action', 'document', 'index'] })
    const events = []
    const got = collect(sub, evs => {
      events.splice(0, events.length, ...evs)
      return evs.filter(e => e.type === 'set').length >= 2
    })
    await waitStarted(events)
    await admin.query(q.Create(q.Collection('things'), { data: { color: 'purple' } })) // not in the set
    const doc = await admin.query(q.Create(q.Collection('things'), { data: { color: 'yellow' } }))
    await admin.query(q.Update(doc.ref, { data: { color: 'orange' } }))
    const sets = (await got).filter(e => e.type === 'set').map(e => e.data)
    sub.close()
    assert.deepEqual(
      sets.map(s => [s.action, s.document.ref.id]),
      [
        ['add', doc.ref.id],
        ['remove', doc.ref.id],
      ]
    )
    assert.deepEqual(sets[0].index.terms, 'yellow')
  })

  it('under concurrent writes every version arrives once, in order', async () => {
    const ref = q.Ref(q.Collection('things'), '200')
    await admin.query(q.Create(ref, { data: { seq: 0 } }))
    const N = 120
    const sub = admin.stream.document(ref)
    const events = []
    const got = collect(sub, evs => {
      events.splice(0, events.length, ...evs)
      return evs.filter(e => e.type === 'version').length >= N
    })
    await waitStarted(events)
    // Four writers; each increments `seq` in its own transaction, so commit order is seq order.
    const bump = () => admin.query(q.Update(ref, { data: { seq: q.Add(q.Select(['data', 'seq'], q.Get(ref)), 1) } }))
    await Promise.all(
      [0, 1, 2, 3].map(async () => {
        for (let i = 0; i < N / 4; i++) await bump()
      })
    )
    const seqs = (await got).filter(e => e.type === 'version').map(e => e.data.document.data.seq)
    sub.close()
    assert.deepEqual(
      seqs,
      Array.from({ length: N }, (_, i) => i + 1)
    )
  })

  it('a set stream sees each of 200 concurrent purchases exactly once', async () => {
    const sub = admin.stream(q.Documents(q.Collection('purchases')))
    const events = []
    const got = collect(sub, evs => {
      events.splice(0, events.length, ...evs)
      return evs.filter(e => e.type === 'set').length >= 200
    })
    await waitStarted(events)
    await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        admin.query(q.Create(q.Ref(q.Collection('purchases'), String(1000 + i)), { data: { i } }))
      )
    )
    const ids = (await got).filter(e => e.type === 'set').map(e => e.data.document.ref.id)
    sub.close()
    assert.equal(ids.length, 200)
    assert.equal(new Set(ids).size, 200)
  })

  it('losing permission ends the stream with an error event', async () => {
    const ref = q.Ref(q.Collection('things'), '300')
    await admin.query(q.Create(ref, { data: { v: 1 } }))
    const key = await admin.query(q.CreateKey({ role: 'server' }))
    const c = server.client(key.secret)
    const sub = c.stream.document(ref)
    const events = []
    const got = collect(sub, evs => {
      events.splice(0, events.length, ...evs)
      return evs.some(e => e.type === 'error')
    })
    await waitStarted(events)
    await admin.query(q.Update(ref, { data: { v: 2 } }))
    await admin.query(q.Delete(key.ref))
    await admin.query(q.Update(ref, { data: { v: 3 } }))
    const all = await got
    sub.close()
    const versions = all.filter(e => e.type === 'version')
    assert.deepEqual(
      versions.map(e => e.data.document.data.v),
      [2]
    )
    const err = all.find(e => e.type === 'error')
    assert.ok(err, 'error event')
    assert.match(JSON.stringify(err.data.event || err.data), /unauthorized/i)
  })

  it('refuses what it cannot stream, and unknown fields, with a clear error', async () => {
    const bad = async (expr, opts) => {
      const events = await collect(admin.stream(expr, opts), evs => evs.some(e => e.type === 'error'), 10_000)
      const err = events.find(e => e.type === 'error').data
      return err.requestResult.responseContent.errors[0]
    }
    const e1 = await bad(q.Add(1, 2))
    assert.equal(e1.code, 'invalid argument')
    assert.match(e1.description, /document ref, Documents\(collection\) or Match/)
    const e2 = await bad(q.Documents(q.Collection('things')), { fields: ['action', 'bogus'] })
    assert.match(e2.description, /Unknown stream field `bogus`/)
    const e3 = await bad(q.Documents(q.Collection('nope')))
    assert.equal(e3.code, 'invalid ref')
  })
})

describe('stream limits', { timeout: 60_000 }, () => {
  let small
  before(async () => {
    process.env.TALLY_STREAMS_MAX = '3'
    // A short answer-send deadline: streams must outlive it (they are not answers a
    // client fails to read; they bound their own backlog).
    small = new TallyServer({ extraArgs: ['--answer-send-timeout-ms', '300'] })
    try {
      await small.start()
    } finally {
      delete process.env.TALLY_STREAMS_MAX
    }
    await small.adminClient().query(q.CreateCollection({ name: 'c' }))
  })
  after(() => small && small.stop())

  it('a stream over the node limit gets a `too many streams` error, and room comes back on close', async () => {
    const c = small.adminClient()
    const set = q.Documents(q.Collection('c'))
    const subs = []
    const first = []
    const seen = collect((subs[0] = c.stream(set)), evs => {
      first.splice(0, first.length, ...evs)
      return evs.some(x => x.type === 'set')
    })
    await waitStarted(first)
    for (let i = 1; i < 3; i++) {
      const sub = c.stream(set)
      await collect(sub, evs => started(evs))
      subs.push(sub)
    }
    const over = c.stream(set)
    const evs = await collect(over, e => e.some(x => x.type === 'error'), 10_000)
    const err = evs.find(e => e.type === 'error').data.requestResult
    assert.equal(err.statusCode, 429)
    assert.equal(err.responseContent.errors[0].code, 'too many streams')
    assert.match(err.responseContent.errors[0].description, /at most 3 streams/)
    // The open streams still work.
    await c.query(q.Create(q.Collection('c'), { data: {} }))
    await seen
    subs[1].close()
    let again
    for (let i = 0; i < 100; i++) {
      const sub = c.stream(set)
      const e = await collect(sub, x => started(x) || x.some(y => y.type === 'error'))
      if (started(e)) {
        again = sub
        break
      }
      await new Promise(r => setTimeout(r, 20)) // the closed stream's slot is freed asynchronously
    }
    assert.ok(again, 'a slot came back after a close')
    for (const s of [subs[0], subs[2], again]) s.close()
  })

  it('a quiet stream outlives the answer-send deadline and still gets events', async () => {
    const c = small.adminClient()
    const events = []
    const got = collect(c.stream(q.Documents(q.Collection('c'))), evs => {
      events.splice(0, events.length, ...evs)
      return evs.some(e => e.type === 'set' || e.type === 'error')
    })
    await waitStarted(events)
    await new Promise(r => setTimeout(r, 1500)) // five times the deadline, nothing sent
    await c.query(q.Create(q.Collection('c'), { data: {} }))
    const all = await got
    assert.ok(all.some(e => e.type === 'set'), JSON.stringify(all))
  })
})

describe('streams per connection', { timeout: 60_000 }, () => {
  let srv
  before(async () => {
    srv = new TallyServer()
    await srv.start()
    await srv.adminClient().query(q.CreateCollection({ name: 'c' }))
  })
  after(() => srv && srv.stop())

  it('the 101st stream on one connection gets `too many streams`; queries still pass', async () => {
    const c = srv.adminClient()
    const subs = []
    for (let i = 0; i < 100; i++) {
      const sub = c.stream(q.Documents(q.Collection('c')))
      subs.push(sub)
    }
    await Promise.all(subs.map(s => collect(s, started)))
    const evs = await collect(c.stream(q.Documents(q.Collection('c'))), e => e.some(x => x.type === 'error'), 10_000)
    const res = evs.find(e => e.type === 'error').data.requestResult
    assert.equal(res.statusCode, 429)
    assert.match(res.responseContent.errors[0].description, /at most 100 streams/)
    assert.equal(await c.query(q.Add(1, 2)), 3)
    for (const s of subs) s.close()
  })
})
