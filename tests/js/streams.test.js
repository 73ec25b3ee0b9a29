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
const { TallyServer, q, rawRequest } = require('./helpers/server')

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
    // v4's `index` field: the index's ref, the entry's terms (an array) and values.
    assert.deepEqual(sets[0].index.terms, ['yellow'])
    assert.equal(sets[0].index.ref.id, 'things_by_color')
    assert.deepEqual(sets[0].index.values, [])
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
    // v4's answer to a lost authorization (StreamSpec), with what was lost after it.
    assert.equal(err.data.code, 'permission denied', JSON.stringify(err.data))
    assert.match(err.data.description, /^Authorization lost during stream evaluation\. .*(secret|key)/i)
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
    assert.match(err.data.description, /^Authorization lost during stream evaluation\./)
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

  it('history edits make `set` events on Documents(c) and Match streams, at the edited ts (v4)', async () => {
    // v4 turns every index write of a transaction into a `set` event, whatever its valid
    // ts: `document.ts` is the edited ts, `txn` the edit's commit. A row the edit takes
    // away (v4's SetRemove) is shown with that row's action, so undoing an `add` shows
    // `add`. The version after an edited one is revised (it now follows another one),
    // and its rows change with it.
    await admin.query(q.CreateCollection({ name: 'hist' }))
    await admin.query(
      q.CreateIndex({ name: 'hist_by_color', source: q.Collection('hist'), terms: [{ field: ['data', 'color'] }] })
    )
    const a = await admin.query(q.Create(q.Ref(q.Collection('hist'), '1'), { data: { color: 'blue' } }))
    const t0 = a.ts
    const past1 = t0 - 1000
    const past2 = t0 - 500
    const fields = { fields: ['action', 'document', 'index'] }
    const subs = [admin.stream(q.Documents(q.Collection('hist')), fields), admin.stream(q.Match(q.Index('hist_by_color'), 'blue'), fields)]
    const evs = [[], []]
    const sentinel = e => e.type === 'set' && e.data.document.ref.id === '3'
    const got = subs.map((sub, i) =>
      collect(sub, all => {
        evs[i].splice(0, evs[i].length, ...all)
        return all.some(e => e.type === 'error' || sentinel(e))
      })
    )
    for (const e of evs) await waitStarted(e)
    const commits = []
    const run = async expr => commits.push(await admin.query(q.Let({ r: expr }, q.ToMicros(q.Now()))))
    // 1. An earlier create of an existing document: it enters the set at past1, no
    //    longer at t0 (its version at t0 is an update now).
    await run(q.Insert(a.ref, past1, 'create', { data: { color: 'blue' } }))
    // 2. Removing that version again: back as it was.
    await run(q.Remove(a.ref, past1, 'create'))
    // 3. A document created in the past by Insert.
    await run(q.Insert(q.Ref(q.Collection('hist'), '2'), past2, 'create', { data: { color: 'blue' } }))
    // 4. An update version just after t0 that moves document 1 out of `blue` (it stays
    //    in the collection: no Documents event).
    await run(q.Insert(a.ref, t0 + 1, 'update', { data: { color: 'red' } }))
    const c = await admin.query(q.Create(q.Ref(q.Collection('hist'), '3'), { data: { color: 'blue' } }))
    const all = await Promise.all(got)
    for (const sub of subs) sub.close()
    const view = e => [e.data.action, e.data.document.ref.id, e.data.document.ts, e.txn]
    const expectedDocs = [
      ['add', '1', t0, 1],
      ['add', '1', past1, 1],
      ['add', '1', past1, 2],
      ['add', '1', t0, 2],
      ['add', '2', past2, 3],
      ['add', '3', c.ts, 5],
    ]
    const expectedBlue = [...expectedDocs.slice(0, 5), ['remove', '1', t0 + 1, 4], ['add', '3', c.ts, 5]]
    const txns = [null, ...commits, c.ts]
    const check = (events, expected, what) => {
      const sets = events.filter(e => e.type !== 'start')
      assert.deepEqual(
        sets.map(view),
        expected.map(([action, id, ts, n]) => [action, id, ts, txns[n]]),
        `${what}: ${JSON.stringify(sets)}`
      )
    }
    check(all[0], expectedDocs, 'Documents(hist)')
    check(all[1], expectedBlue, 'Match(hist_by_color, blue)')
    assert.equal(all[1].find(e => e.type === 'set').data.index.ref.id, 'hist_by_color')
    // The change feed of the index says the same as the documents' history.
    const feed = await admin.query(q.Paginate(q.Events(q.Match(q.Index('hist_by_color'), 'blue')), { size: 100 }))
    assert.deepEqual(
      feed.data.map(e => [e.action, e.document.id, e.ts]),
      [
        ['add', '2', past2],
        ['add', '1', t0],
        ['remove', '1', t0 + 1],
        ['add', '3', c.ts],
      ]
    )
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
    // v4's answers (StreamSpec): what is not a document, a version or an index set.
    const e1 = await bad(q.Add(1, 2))
    assert.equal(e1.code, 'invalid argument')
    assert.equal(e1.description, 'Expected a Document Ref or Version, or a Set Ref, got Integer.')
    const e2 = await bad(q.Documents(q.Collection('things')), { fields: ['action', 'bogus'] })
    assert.equal(e2.code, 'invalid url parameter')
    assert.match(e2.description, /^Invalid url parameter fields. Invalid field name 'bogus'./)
    // Empty names, as v4 split the parameter: refused unless at the end (`action,` is `action`).
    const raw = async fields => {
      const r = await rawRequest(server.port, {
        method: 'POST', path: `/stream?fields=${fields}`, body: JSON.stringify({ documents: { collection: 'things' } }),
        headers: { authorization: `Bearer ${server.rootKey}`, 'content-type': 'application/json' }, timeoutMs: 5000,
      })
      return r.status === 200 ? 200 : JSON.parse(r.body).errors[0]
    }
    for (const f of ['', 'action,,document', ',action']) {
      const e = await raw(f)
      assert.equal(e.code, 'invalid url parameter', `fields=${f}`)
      assert.match(e.description, /Invalid field name ''/)
    }
    const e3 = await bad(q.Documents(q.Collection('nope')))
    assert.equal(e3.code, 'invalid ref')
    // Schema documents are not streamed; nor are sets other than Documents and Match
    // (v4 streamed index sets only: no Union, Intersection, Difference, Singleton, Events).
    const e4 = await bad(q.Collection('things'))
    assert.equal(e4.description, 'Expected a Document Ref or Version, or a Set Ref, got Collection Ref.')
    for (const set of [
      q.Union(q.Match(q.Index('things_by_color'), 'a'), q.Match(q.Index('things_by_color'), 'b')),
      q.Intersection(q.Match(q.Index('things_by_color'), 'a'), q.Match(q.Index('things_by_color'), 'b')),
      q.Difference(q.Match(q.Index('things_by_color'), 'a'), q.Match(q.Index('things_by_color'), 'b')),
      q.Singleton(q.Ref(q.Collection('things'), '1')),
      q.Events(q.Documents(q.Collection('things'))),
    ]) {
      const e = await bad(set)
      assert.equal(e.code, 'invalid argument')
      assert.match(e.description, /got Set\. Of sets, Documents\(collection\) and Match\(index, terms\) can be streamed\./)
    }
    // A write is refused before anything is written.
    const e5 = await bad(q.Create(q.Collection('things'), { data: { streamed: true } }))
    assert.equal(e5.code, 'invalid expression')
    assert.equal(e5.description, 'Call performs a write, which is not allowed in stream requests.')
    assert.equal(await admin.query(q.IsEmpty(q.Filter(q.Paginate(q.Documents(q.Collection('things')), { size: 1000 }), r => q.Select(['data', 'streamed'], q.Get(r), false)))), true)
  })

  it('a version (what Get answers) and a path-string ref stream their document, as in v4', async () => {
    const ref = q.Ref(q.Collection('things'), '500')
    await admin.query(q.Create(ref, { data: { v: 0 } }))
    for (const [i, expr] of [q.Get(ref), q.Ref('collections/things/500')].entries()) {
      const sub = admin.stream(expr)
      const events = []
      const got = collect(sub, evs => {
        events.splice(0, events.length, ...evs)
        return evs.some(e => e.type === 'error' || e.type === 'version')
      })
      await waitStarted(events)
      await admin.query(q.Update(ref, { data: { v: i + 1 } }))
      const v = (await got).find(e => e.type === 'version')
      sub.close()
      assert.ok(v, JSON.stringify(events))
      assert.equal(v.data.action, 'update')
      assert.deepEqual(v.data.document.data, { v: i + 1 })
    }
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

describe('a stream that falls behind the commit rate', { timeout: 180_000 }, () => {
  // TALLY_STREAM_LAG_MAX (testing only; it can only lower the 4,096 default) makes the
  // bound small enough to reach in a test. The slow stream's role asks a read predicate
  // per document that sums a 40,000-number array (tens of ms of evaluation), read for
  // every commit; writers commit faster than that. Nothing here measures time: writers
  // keep committing until the slow stream reports its overflow.
  const LAG = 16
  let srv
  before(async () => {
    process.env.TALLY_STREAM_LAG_MAX = String(LAG)
    srv = new TallyServer()
    try {
      await srv.start()
    } finally {
      delete process.env.TALLY_STREAM_LAG_MAX
    }
    const c = srv.adminClient()
    await c.query(q.CreateCollection({ name: 'lagged' }))
    await c.query(q.CreateCollection({ name: 'ballast' }))
    await c.query(q.Create(q.Ref(q.Collection('ballast'), '1'), { data: { xs: Array.from({ length: 40_000 }, () => 1) } }))
    const heavy = q.Query(
      q.Lambda(
        'r',
        q.GTE(
          q.Reduce(
            q.Lambda(['acc', 'x'], q.Add(q.Var('acc'), q.Var('x'))),
            0,
            q.Select(['data', 'xs'], q.Get(q.Ref(q.Collection('ballast'), '1')))
          ),
          0
        )
      )
    )
    await c.query(
      q.CreateRole({
        name: 'slow_reader',
        privileges: [
          { resource: q.Collection('lagged'), actions: { read: heavy } },
          { resource: q.Collection('ballast'), actions: { read: true } },
        ],
      })
    )
  })
  after(() => srv && srv.stop())

  it('gets `stream overflow` and closes; another subscriber of the set sees every event', async () => {
    const admin = srv.adminClient()
    const key = await admin.query(q.CreateKey({ role: q.Role('slow_reader') }))
    const set = q.Documents(q.Collection('lagged'))
    const slowEvents = []
    const slow = collect(srv.client(key.secret).stream(set), evs => {
      slowEvents.splice(0, slowEvents.length, ...evs)
      return evs.some(e => e.type === 'error')
    }, 150_000)
    const fastEvents = []
    const fastSub = admin.stream(set)
    const fast = collect(fastSub, evs => {
      fastEvents.splice(0, fastEvents.length, ...evs)
      return evs.some(e => e.type === 'error' || (e.type === 'set' && e.data.document.ref.id === '999999'))
    }, 150_000)
    await waitStarted(slowEvents)
    await waitStarted(fastEvents)
    // Eight writers, one document per commit, until the slow stream gave up (at most
    // 4,000 commits: far more than the bound).
    let n = 0
    const writer = async () => {
      while (n < 4000 && !slowEvents.some(e => e.type === 'error')) {
        const id = String(++n)
        await admin.query(q.Create(q.Ref(q.Collection('lagged'), id), { data: {} }))
      }
    }
    await Promise.all(Array.from({ length: 8 }, writer))
    const slowAll = await slow
    const err = slowAll.find(e => e.type === 'error')
    assert.equal(err.data.code, 'stream overflow', JSON.stringify(err.data))
    assert.match(err.data.description, new RegExp(`more than ${LAG} commits behind`))
    // What the slow stream got before the error came in order, each document once.
    const slowIds = slowAll.filter(e => e.type === 'set').map(e => e.data.document.ref.id)
    assert.equal(new Set(slowIds).size, slowIds.length)
    // The other subscriber gets every commit, once, in commit order.
    await admin.query(q.Create(q.Ref(q.Collection('lagged'), '999999'), { data: {} }))
    const fastAll = await fast
    fastSub.close()
    const fastSets = fastAll.filter(e => e.type === 'set')
    assert.ok(!fastAll.some(e => e.type === 'error'), JSON.stringify(fastAll.find(e => e.type === 'error')))
    assert.equal(fastSets.length, n + 1)
    assert.equal(new Set(fastSets.map(e => e.data.document.ref.id)).size, n + 1)
    const txns = fastSets.map(e => e.txn)
    assert.deepEqual(txns, [...txns].sort((x, y) => x - y), 'commit order')
    // The database kept committing, and the server still serves streams.
    assert.equal(await admin.query(q.Count(set)), n + 1)
  })
})
