'use strict'
// Streams (issue 15, item 1): `client.stream.document(ref)` and `client.stream(set)` of
// the official npm driver (HTTP/2 to POST /stream) against the real server: document
// streams see create/update/delete in order with diff/prev as asked; set streams on
// Documents(c) and Match(index, terms) see add/remove; concurrent writes arrive in order,
// without gaps or duplicates (sequence numbers written in the documents); losing
// permission ends the stream with an error event; bad streams are refused.

const http2 = require('node:http2')
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

// Streams `ref` through `sub` across a loss of access: v2 is written, `revoke` runs, v3
// is written; answers every event up to the stream's error (the stream is closed).
async function streamAcrossRevocation(admin, sub, ref, revoke) {
  const events = []
  const got = collect(sub, evs => {
    events.splice(0, events.length, ...evs)
    return evs.some(e => e.type === 'error')
  })
  await waitStarted(events)
  await admin.query(q.Update(ref, { data: { v: 2 } }))
  await admin.query(revoke)
  await admin.query(q.Update(ref, { data: { v: 3 } }))
  const all = await got
  sub.close()
  return all
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
    const all = await streamAcrossRevocation(admin, sub, ref, q.Delete(key.ref))
    const versions = all.filter(e => e.type === 'version')
    assert.deepEqual(
      versions.map(e => e.data.document.data.v),
      [2]
    )
    const err = all.find(e => e.type === 'error')
    assert.ok(err, 'error event')
    assert.match(JSON.stringify(err.data.event || err.data), /unauthorized/i)
  })

  it('a role that loses read access ends a document stream with `permission denied`', async () => {
    await admin.query(q.CreateCollection({ name: 'vault' }))
    await admin.query(
      q.CreateRole({ name: 'vault_reader', privileges: [{ resource: q.Collection('vault'), actions: { read: true } }] })
    )
    const ref = q.Ref(q.Collection('vault'), '1')
    await admin.query(q.Create(ref, { data: { v: 1 } }))
    const key = await admin.query(q.CreateKey({ role: q.Role('vault_reader') }))
    const sub = server.client(key.secret).stream.document(ref)
    const all = await streamAcrossRevocation(admin, sub, ref, q.Update(q.Role('vault_reader'), { privileges: [] }))
    assert.deepEqual(
      all.filter(e => e.type === 'version').map(e => e.data.document.data.v),
      [2]
    )
    // The first error is the server's; the driver may add one when the stream ends.
    const err = all.find(e => e.type === 'error')
    assert.ok(err, JSON.stringify(all))
    assert.equal(err.data.code, 'permission denied', JSON.stringify(all))
  })

  it('a token whose membership predicate stops holding ends its stream with `permission denied`', async () => {
    await admin.query(q.CreateCollection({ name: 'members' }))
    await admin.query(q.CreateCollection({ name: 'board' }))
    const user = await admin.query(q.Create(q.Collection('members'), { data: { active: true } }))
    await admin.query(
      q.CreateRole({
        name: 'active_members',
        membership: [
          { resource: q.Collection('members'), predicate: q.Query(r => q.Select(['data', 'active'], q.Get(r))) },
        ],
        privileges: [{ resource: q.Collection('board'), actions: { read: true } }],
      })
    )
    const ref = q.Ref(q.Collection('board'), '1')
    await admin.query(q.Create(ref, { data: { v: 1 } }))
    const tok = await admin.query(q.Create(q.Tokens(), { instance: user.ref }))
    const sub = server.client(tok.secret).stream(ref)
    const all = await streamAcrossRevocation(admin, sub, ref, q.Update(user.ref, { data: { active: false } }))
    assert.deepEqual(
      all.filter(e => e.type === 'version').map(e => e.data.document.data.v),
      [2]
    )
    const err = all.find(e => e.type === 'error')
    assert.ok(err, JSON.stringify(all))
    assert.equal(err.data.code, 'permission denied', JSON.stringify(all))
  })

  it('a set stream leaves out the documents its secret may not read', async () => {
    await admin.query(q.CreateCollection({ name: 'notes' }))
    await admin.query(
      q.CreateRole({
        name: 'public_notes',
        privileges: [
          {
            resource: q.Collection('notes'),
            actions: { read: q.Query(r => q.Select(['data', 'public'], q.Get(r))) },
          },
        ],
      })
    )
    const key = await admin.query(q.CreateKey({ role: q.Role('public_notes') }))
    const sub = server.client(key.secret).stream(q.Documents(q.Collection('notes')))
    const events = []
    const got = collect(sub, evs => {
      events.splice(0, events.length, ...evs)
      return evs.some(e => e.type === 'error' || (e.type === 'set' && e.data.document.ref.id === '999'))
    })
    await waitStarted(events)
    const made = []
    for (let i = 0; i < 6; i++) {
      made.push(await admin.query(q.Create(q.Ref(q.Collection('notes'), String(i + 1)), { data: { public: i % 2 === 0 } })))
    }
    for (const d of made) await admin.query(q.Delete(d.ref))
    await admin.query(q.Create(q.Ref(q.Collection('notes'), '999'), { data: { public: true } }))
    const all = await got
    sub.close()
    assert.deepEqual(
      all.filter(e => e.type === 'set').map(e => [e.data.action, e.data.document.ref.id]),
      [
        ['add', '1'],
        ['add', '3'],
        ['add', '5'],
        ['remove', '1'],
        ['remove', '3'],
        ['remove', '5'],
        ['add', '999'],
      ],
      JSON.stringify(all)
    )
  })

  it('`unrestricted_read` on an index streams its Match without reading the documents', async () => {
    // v4: unrestricted_read reads the index's entries without the source documents'
    // read checks (what `tally demo animal-exchange`'s page key does with the purchases).
    await admin.query(q.CreateCollection({ name: 'sealed' }))
    await admin.query(q.CreateIndex({ name: 'sealed_all', source: q.Collection('sealed'), values: [{ field: ['ts'] }, { field: ['ref'] }] }))
    await admin.query(q.CreateRole({ name: 'sealed_watcher', privileges: [{ resource: q.Index('sealed_all'), actions: { unrestricted_read: true } }] }))
    const key = await admin.query(q.CreateKey({ role: q.Role('sealed_watcher') }))
    const watcher = server.client(key.secret)
    await assert.rejects(watcher.query(q.Get(q.Ref(q.Collection('sealed'), '1'))), e => e.requestResult.statusCode === 403 || e.requestResult.statusCode === 404)
    const sub = watcher.stream(q.Match(q.Index('sealed_all')), { fields: ['action', 'document', 'index'] })
    const events = []
    const got = collect(sub, evs => {
      events.splice(0, events.length, ...evs)
      return evs.some(e => e.type === 'error') || evs.filter(e => e.type === 'set').length >= 2
    })
    await waitStarted(events)
    const doc = await admin.query(q.Create(q.Ref(q.Collection('sealed'), '1'), { data: { secret: 'x' } }))
    await admin.query(q.Delete(doc.ref))
    const all = await got
    sub.close()
    assert.deepEqual(
      all.filter(e => e.type !== 'start').map(e => [e.type, e.data.action, e.data.document && e.data.document.ref.id]),
      [['set', 'add', '1'], ['set', 'remove', '1']],
      JSON.stringify(all)
    )
    // The index's values, nothing of the document's data.
    assert.doesNotMatch(JSON.stringify(all), /secret/)
    await assert.rejects(watcher.query(q.Get(doc.ref)), e => [403, 404].includes(e.requestResult.statusCode))
  })

  it('Insert and Remove in a document history make `history_rewrite` events', async () => {
    const ref = q.Ref(q.Collection('things'), '400')
    const created = await admin.query(q.Create(ref, { data: { v: 1 } }))
    const past = created.ts - 1000
    const sub = admin.stream(ref, { fields: ['action', 'document'] })
    const events = []
    const got = collect(sub, evs => {
      events.splice(0, events.length, ...evs)
      return evs.some(e => e.type === 'error' || e.type === 'version')
    })
    await waitStarted(events)
    await admin.query(q.Insert(ref, past, 'create', { data: { v: 0 } }))
    await admin.query(q.Remove(ref, past, 'create'))
    await admin.query(q.Update(ref, { data: { v: 2 } }))
    const all = (await got).filter(e => e.type !== 'start')
    sub.close()
    assert.deepEqual(
      all.map(e => [e.type, e.data.action, e.data.document.ts === past]),
      [
        ['history_rewrite', 'create', true],
        ['history_rewrite', 'create', true],
        ['version', 'update', false],
      ]
    )
    assert.deepEqual(all[0].data.document.data, { v: 0 })
    assert.equal(all[1].data.document.data, undefined, 'a removed version is named by ref and ts')
    assert.ok(all[0].txn < all[1].txn && all[1].txn < all[2].txn, 'txn is the commit ts of each edit')
    assert.ok(all[0].txn > past)
  })

  it('a client that stops reading gets `stream overflow`; another subscriber of the set sees every event', async () => {
    await admin.query(q.CreateCollection({ name: 'flood' }))
    const set = q.Documents(q.Collection('flood'))
    // The slow client: a plain HTTP/2 client with a small window that stops reading
    // after the start event.
    const session = http2.connect(server.url, { settings: { initialWindowSize: 1024 } })
    const req = session.request({
      ':method': 'POST',
      ':path': '/stream',
      authorization: `Bearer ${server.rootKey}`,
      'content-type': 'application/json',
    })
    req.end(JSON.stringify(set))
    const chunks = []
    await new Promise((resolve, reject) => {
      req.once('data', c => {
        chunks.push(c)
        req.pause()
        resolve()
      })
      req.once('error', reject)
    })
    assert.match(Buffer.concat(chunks).toString(), /"type":"start"/)
    // The reading subscriber, through the driver.
    const TXNS = 12
    const PER_TXN = 100
    const sub = admin.stream(set)
    const events = []
    const got = collect(sub, evs => {
      events.splice(0, events.length, ...evs)
      return evs.some(e => e.type === 'error') || evs.filter(e => e.type === 'set').length >= TXNS * PER_TXN
    })
    await waitStarted(events)
    for (let t = 0; t < TXNS; t++) {
      await admin.query(
        q.Foreach(
          Array.from({ length: PER_TXN }, (_, i) => t * PER_TXN + i + 1),
          q.Lambda('n', q.Create(q.Ref(q.Collection('flood'), q.ToString(q.Var('n'))), { data: {} }))
        )
      )
    }
    const seen = (await got).filter(e => e.type === 'set').map(e => Number(e.data.document.ref.id))
    sub.close()
    assert.deepEqual(
      seen,
      Array.from({ length: TXNS * PER_TXN }, (_, i) => i + 1)
    )
    // The slow client reads now: what was buffered, then the error event, then the end.
    const text = await new Promise((resolve, reject) => {
      req.on('data', c => chunks.push(c))
      req.on('end', () => resolve(Buffer.concat(chunks).toString()))
      req.on('error', reject)
      req.resume()
    })
    session.close()
    const lines = text.trim().split('\n').map(l => JSON.parse(l))
    const last = lines.at(-1)
    assert.equal(last.type, 'error')
    assert.equal(last.event.code, 'stream overflow')
    assert.match(last.event.description, /256 events unread/)
    const sets = lines.filter(l => l.type === 'set')
    assert.ok(sets.length < TXNS * PER_TXN, `the slow client got ${sets.length} events before the error`)
    assert.deepEqual(
      sets.map(l => Number(l.event.document.ref['@ref'].id)),
      Array.from({ length: sets.length }, (_, i) => i + 1),
      'what it got came in order, without gaps'
    )
    // The database kept committing all along, and still does.
    assert.equal(await admin.query(q.Count(q.Documents(q.Collection('flood')))), TXNS * PER_TXN)
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
    let events
    let got
    // The node allows 3 streams; those of the test before free their slots
    // asynchronously once closed, so a first try may be told `too many streams`.
    for (let i = 0; i < 100; i++) {
      const evs = (events = [])
      got = collect(c.stream(q.Documents(q.Collection('c'))), all => {
        evs.splice(0, evs.length, ...all)
        return all.some(e => e.type === 'set' || e.type === 'error')
      })
      for (let j = 0; j < 400 && !evs.some(e => e.type === 'start' || e.type === 'error'); j++) {
        await new Promise(r => setTimeout(r, 10))
      }
      if (started(evs)) break
      await got.catch(() => {})
      await new Promise(r => setTimeout(r, 20))
    }
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
