'use strict'
// Change feeds that never skip (issue 15, item 2): a consumer paginating
// `Paginate(Events(set), {after, size})` while writers add, update and remove
// documents sees every add/remove of the set exactly once and in order, across page
// ends that fall inside one transaction's events, and across a kill -9 of the server
// (its cursor is only data: it survives restarts).

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { TallyServer, q } = require('./helpers/server')

const SEED = Number(process.env.TALLY_FEED_SEED || Math.floor(Math.random() * 2 ** 31))

function rng(seed) {
  let x = seed >>> 0 || 1
  return () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return (x >>> 0) / 2 ** 32
  }
}

const key = e => `${e.ts}/${e.action}/${e.document.id}`

let server

/** kill -9 the server and start a new one on the same data directory (which it then owns). */
async function killAndRestart() {
  const { dataDir, rootKey } = server
  server.proc.kill('SIGKILL')
  await server.exited
  const old = server
  server = new TallyServer({ dataDir, rootKey })
  await server.start()
  old.ownsDataDir = false
  server.ownsDataDir = true
}

describe('change feeds', { timeout: 300_000 }, () => {
  before(async () => {
    server = new TallyServer()
    await server.start()
    const c = server.adminClient()
    await c.query(q.CreateCollection({ name: 'orders' }))
    await c.query(
      q.CreateIndex({ name: 'orders_by_state', source: q.Collection('orders'), terms: [{ field: ['data', 'state'] }] })
    )
    console.log(`change_feed: seed ${SEED} (TALLY_FEED_SEED=${SEED} replays it)`)
  })
  after(() => server && server.stop())

  it('300 events of one transaction page with size 7 exactly once, forwards and backwards, across writes and a restart', async () => {
    let c = server.adminClient()
    await c.query(q.CreateCollection({ name: 'bulk' }))
    await c.query(q.CreateIndex({ name: 'bulk_by_tag', source: q.Collection('bulk'), terms: [{ field: ['data', 'tag'] }], values: [{ field: ['data', 'n'] }, { field: ['ref'] }] }))
    // One transaction adds 300 documents to both sets: 300 events at one ts.
    const ids = Array.from({ length: 300 }, (_, i) => String(1000 + i))
    await c.query(q.Foreach(ids, q.Lambda('id', q.Create(q.Ref(q.Collection('bulk'), q.Var('id')), { data: { tag: 't', n: q.ToNumber(q.Var('id')) } }))))
    const restart = async () => {
      await killAndRestart()
      c = server.adminClient()
    }
    const ev = e => `${e.ts}/${e.action}/${e.document.id}`
    let extra = 0
    // Between pages another transaction adds a document (a later ts) to the sets.
    const write = () => c.query(q.Create(q.Ref(q.Collection('bulk'), String(5000 + ++extra)), { data: { tag: 't', n: 5000 + extra } }))
    for (const feed of [q.Events(q.Documents(q.Collection('bulk'))), q.Events(q.Match(q.Index('bulk_by_tag'), 't'))]) {
      const whole = async () => (await c.query(q.Paginate(feed, { size: 10_000 }))).data.map(ev)
      // Forwards: each page's `after`, until a page has none.
      const fwd = []
      let after
      for (let page = 0; ; page++) {
        const p = await c.query(q.Paginate(feed, after ? { size: 7, after } : { size: 7 }))
        assert.ok(p.data.length <= 7)
        fwd.push(...p.data.map(ev))
        if (page === 20) await restart() // the cursor is data: it outlives the process
        if (page % 5 === 0) await write()
        if (!p.after) break
        after = p.after
      }
      // Backwards from the end: each page's `before`, until a page has none; pages come
      // newest first, each in ascending order.
      const back = []
      let before = null
      for (let page = 0; ; page++) {
        const p = await c.query(q.Paginate(feed, { size: 7, before }))
        assert.ok(p.data.length <= 7)
        back.unshift(...p.data.map(ev))
        if (page === 20) await restart()
        if (!p.before) break
        before = p.before
      }
      const all = await whole()
      assert.equal(new Set(fwd).size, fwd.length, 'forwards: no event twice')
      assert.equal(new Set(back).size, back.length, 'backwards: no event twice')
      // Forwards saw the writes made while it paged (they land after its cursor);
      // backwards started after them all.
      assert.deepEqual(fwd, all.slice(0, fwd.length))
      assert.ok(fwd.length >= 300)
      assert.deepEqual(back, all)
      const bulk = all.filter(k => Number(k.split('/')[2]) < 5000)
      assert.equal(bulk.length, 300, 'the 300 events of one ts, once each')
      assert.equal(new Set(bulk.map(k => k.split('/')[0])).size, 1)
    }
  })

  it('a consumer sees every event of a set exactly once, in order, through concurrent writes and a kill -9', async () => {
    const r = rng(SEED)
    const feed = q.Events(q.Match(q.Index('orders_by_state'), 'open'))
    let c = server.adminClient()
    const live = [] // refs of documents that exist

    // One writer transaction: several creates, moves out of or into the set, deletes.
    const write = async () => {
      const ops = []
      const n = 1 + Math.floor(r() * 4)
      for (let i = 0; i < n; i++) {
        const pick = r()
        if (pick < 0.5 || live.length === 0) {
          ops.push(q.Create(q.Collection('orders'), { data: { state: r() < 0.8 ? 'open' : 'closed' } }))
        } else if (pick < 0.8) {
          const ref = live[Math.floor(r() * live.length)]
          ops.push(q.Update(ref, { data: { state: r() < 0.5 ? 'open' : 'closed' } }))
        } else {
          const ref = live.splice(Math.floor(r() * live.length), 1)[0]
          ops.push(q.Delete(ref))
        }
      }
      // A ref may appear twice (update then delete): keep only the first use per txn.
      const out = await c.query(q.Do(...ops, null)).catch(() => null)
      return out
    }
    const created = async () => {
      const page = await c.query(q.Paginate(q.Documents(q.Collection('orders')), { size: 100_000 }))
      live.splice(0, live.length, ...page.data)
    }

    // The consumer follows v4's protocol: a page's `after` while there is one; at the end
    // of the feed (no `after`), the last event it saw, as an inclusive cursor, dropping
    // that event when it comes back first.
    const seen = []
    let cursor = null
    let last = null
    const consume = async () => {
      for (;;) {
        const opts = { size: 1 + Math.floor(r() * 3) }
        if (cursor) opts.after = cursor
        else if (last) opts.after = { ts: last.ts, action: last.action, document: last.document }
        const page = await c.query(q.Paginate(feed, opts))
        let events = page.data
        if (!cursor && last && events.length > 0 && key(events[0]) === key(last)) events = events.slice(1)
        for (const e of events) seen.push(key(e))
        if (page.data.length > 0) last = page.data[page.data.length - 1]
        cursor = page.after || null
        if (!page.after) return
      }
    }

    for (let round = 0; round < 40; round++) {
      // Writers and the consumer interleave: a write lands between any two pages.
      await Promise.all([write(), write(), consume()])
      await created()
      if (round === 20) {
        // kill -9 and restart on the same data; the consumer keeps its cursor.
        await killAndRestart()
        c = server.adminClient()
      }
    }
    await consume()

    // The whole feed, read at once at the end: the consumer's view must equal it.
    const all = []
    let after
    for (;;) {
      const page = await c.query(q.Paginate(feed, after ? { size: 1000, after } : { size: 1000 }))
      for (const e of page.data) all.push(key(e))
      if (page.data.length < 1000) break
      after = page.after
    }
    assert.ok(all.length > 40, `the run produced events (${all.length})`)
    assert.equal(new Set(seen).size, seen.length, 'no event twice')
    assert.deepEqual(seen, all, 'every event, in order')
    // Events are ordered by ts, and each add/remove alternates per document.
    const state = new Map()
    for (const k of all) {
      const [, action, id] = k.split('/')
      const was = state.get(id) || 'remove'
      assert.notEqual(action, was, `document ${id}: ${action} twice in a row`)
      state.set(id, action)
    }
  })
})
