'use strict'
// Retention (issue 15 item 3) through the official npm driver against a real server:
// versions older than a collection's history_days and v4's 15 minutes (MVTOffset) and
// documents past their ttl disappear (history reads start at the retention floor, index
// and collection reads drop the expired document), reads below the floor answer v4's
// 400 `bad request` while reads within the 15 minutes still answer, history_days: null
// keeps everything, ttl_days gives documents a ttl, an idle node removes what expires
// without any further write (an empty block), and after the sweeps the data directory
// still passes `tally verify` and replays to the same head. History more than 15
// minutes old is written with Insert at past timestamps, not waited for.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { execFileSync } = require('node:child_process')
const { TallyServer, expectFaunaError, sleep, q, tallyBin } = require('./helpers/server')

let server
let admin
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-retention-'))

/**
 * A few small writes, each a batch that ends with a retention sweep: a batch sweeps when
 * its commit ts is at least 10 ms past the last sweep's (executor rules 4,
 * tally-exec sweep_spacing.rs), so each write waits that long after the one before.
 */
async function nudge(n = 3) {
  for (let i = 0; i < n; i++) {
    await sleep(SWEEP_SPACING_MS + 5)
    await admin.query(q.Create(q.Collection('noise'), { data: { i } }))
  }
}

/** Commit ts between two batches that sweep (`SWEEP_SPACING_MICROS`). */
const SWEEP_SPACING_MS = 10

const MINUTE = 60_000_000

/** The server's current time, µs. */
async function serverNow() {
  return Number(await admin.query(q.ToMicros(q.Now())))
}

/** The retention sweeps' removal count, from /metrics (root key on the client port). */
async function removedVersions() {
  const res = await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${server.rootKey}` } })
  assert.equal(res.status, 200)
  const m = /^tally_retention_removed_versions_total (\d+)$/m.exec(await res.text())
  assert.ok(m, 'the removal counter is exposed')
  return Number(m[1])
}

async function head() {
  const res = await fetch(`${server.url}/ledger/head`, { headers: { authorization: `Bearer ${server.rootKey}` } })
  assert.equal(res.status, 200)
  return res.json()
}

describe('retention', () => {
  before(async () => {
    server = new TallyServer({ dataDir })
    await server.start()
    admin = server.adminClient()
    await admin.query(
      q.Do(
        q.CreateCollection({ name: 'short', history_days: 0 }),
        q.CreateCollection({ name: 'kept', history_days: null }),
        q.CreateCollection({ name: 'noise' }),
        q.CreateCollection({ name: 'expiring', ttl_days: 1 }),
        q.CreateCollection({ name: 'idle', history_days: 0 })
      )
    )
    await admin.query(q.CreateIndex({ name: 'short_by_n', source: q.Collection('short'), terms: [{ field: ['data', 'n'] }] }))
  })
  after(async () => {
    if (server) await server.stop()
    fs.rmSync(dataDir, { recursive: true, force: true })
  })

  it('versions past history_days and 15 minutes disappear; history_days: null keeps them', async () => {
    // Four versions an hour to half an hour old, in both collections. (Reads at those
    // timestamps answer `invalid ref`: the collections did not exist yet. Refusals below
    // the floor are checked against a model in tally-fql/tests/retention.rs.)
    const removedBefore = await removedVersions()
    const now = await serverNow()
    const at = [60, 50, 40, 30].map(m => now - m * MINUTE)
    const s = { ref: q.Ref(q.Collection('short'), '1') }
    const k = { ref: q.Ref(q.Collection('kept'), '1') }
    for (const r of [s.ref, k.ref]) {
      await admin.query(q.Insert(r, at[0], 'create', { data: { n: 0 } }))
      for (let n = 1; n <= 3; n++) await admin.query(q.Insert(r, at[n], 'update', { data: { n } }))
    }
    await nudge()
    const events = async r => (await admin.query(q.Paginate(q.Events(r), { size: 100 }))).data
    const kept = await events(k.ref)
    assert.deepEqual(kept.map(e => e.action), ['create', 'update', 'update', 'update'])
    const short = await events(s.ref)
    // History starts at the floor: the version standing there, shown as a create.
    assert.deepEqual(short.map(e => [e.action, e.data]), [['create', { n: 3 }]])
    // The three superseded versions (and their index entries) are physically gone.
    assert.ok((await removedVersions()) >= removedBefore + 3, 'the sweeps removed the superseded versions')
    // v4's 15 minutes: with history_days 0, a read just before a fresh update still
    // answers from the version it replaced, which no sweep removes for 15 minutes.
    const u = await admin.query(q.Update(s.ref, { data: { n: 4 } }))
    await nudge()
    assert.deepEqual((await admin.query(q.Get(s.ref, u.ts - 1))).data, { n: 3 })
    assert.deepEqual((await admin.query(q.At(u.ts - 1, q.Paginate(q.Match(q.Index('short_by_n'), 3))))).data.map(r => r.id), ['1'])
    const history = (await admin.query(q.Paginate(q.Events(s.ref), { size: 100 }))).data
    assert.deepEqual(history.map(e => [e.action, e.data]), [['create', { n: 3 }], ['update', { n: 4 }]])
    // Current reads are unaffected.
    assert.deepEqual((await admin.query(q.Get(s.ref))).data, { n: 4 })
    const page = await admin.query(q.Paginate(q.Match(q.Index('short_by_n'), 4)))
    assert.deepEqual(page.data.map(r => r.id), ['1'])
  })

  it('a document past its ttl disappears from reads, indexes and history', async () => {
    const doc = await admin.query(
      q.Create(q.Ref(q.Collection('short'), '2'), { data: { n: 7 }, ttl: q.TimeAdd(q.Now(), 1, 'second') })
    )
    assert.equal(await admin.query(q.Exists(doc.ref)), true)
    // Wait (bounded) until the ttl has passed, writing so that sweeps run.
    const deadline = Date.now() + 20_000
    while ((await admin.query(q.Exists(doc.ref))) && Date.now() < deadline) {
      await sleep(200)
      await nudge(1)
    }
    await nudge()
    assert.equal(await admin.query(q.Exists(doc.ref)), false)
    await expectFaunaError(admin.query(q.Get(doc.ref)), 'NotFound', 'instance not found')
    assert.deepEqual((await admin.query(q.Paginate(q.Match(q.Index('short_by_n'), 7)))).data, [])
    const ids = (await admin.query(q.Paginate(q.Documents(q.Collection('short'))))).data.map(r => r.id)
    assert.deepEqual(ids, ['1'])
    // Its history is kept for history_days and 15 minutes (nothing removed it yet).
    assert.deepEqual((await admin.query(q.Paginate(q.Events(doc.ref)))).data.map(e => e.action), ['create'])
    // It can be created again, and is indexed again.
    await admin.query(q.Create(doc.ref, { data: { n: 7 } }))
    assert.deepEqual((await admin.query(q.Paginate(q.Match(q.Index('short_by_n'), 7)))).data.map(r => r.id), ['2'])
  })

  it('ttl_days gives each written document a ttl that many days after the write', async () => {
    const d = await admin.query(q.Create(q.Collection('expiring'), { data: { a: 1 } }))
    const day = 86_400_000_000
    const ttlMicros = BigInt(await admin.query(q.ToMicros(q.Select('ttl', q.Get(d.ref)))))
    assert.equal(ttlMicros, BigInt(d.ts) + BigInt(day))
    const explicit = await admin.query(q.Create(q.Collection('expiring'), { data: { a: 2 }, ttl: q.Time('2100-01-01T00:00:00Z') }))
    assert.equal(explicit.ttl.value, '2100-01-01T00:00:00Z')
  })

  it('an idle node removes a document once the floor passes its ttl, without a further write', async () => {
    // Created an hour ago with a ttl that the floor (now - 15 minutes) passes in 6 s.
    const now = await serverNow()
    const ref = q.Ref(q.Collection('idle'), '1')
    await admin.query(q.Insert(ref, now - 60 * MINUTE, 'create', { data: { n: 1 }, ttl: q.Epoch(now - 15 * MINUTE + 6_000_000, 'microseconds') }))
    assert.equal(await admin.query(q.Exists(ref)), false, 'past its ttl it is gone from reads at once')
    const removed = await removedVersions()
    const height = (await head()).height
    // No more writes: poll (bounded) until a sweep removed it.
    const deadline = Date.now() + 30_000
    while ((await removedVersions()) === removed && Date.now() < deadline) await sleep(250)
    assert.ok((await removedVersions()) > removed, 'an idle node swept the expired document')
    const after = (await head()).height
    assert.ok(after > height, `the removal is a block of its own (height ${height} -> ${after})`)
    // A truly idle node then logs nothing: nothing else can go before 15 minutes pass.
    // (Bounded polling: the height must stay put for 5 s.)
    let settled = after
    let stableSince = Date.now()
    const until = Date.now() + 30_000
    while (Date.now() - stableSince < 5_000 && Date.now() < until) {
      await sleep(500)
      const h = (await head()).height
      if (h !== settled) {
        settled = h
        stableSince = Date.now()
      }
    }
    assert.ok(Date.now() - stableSince >= 5_000, `the height settles (at ${settled})`)
    assert.ok(settled - after <= 2, `at most a settling pass, not a stream of empty blocks (${after} -> ${settled})`)
  })

  it('after the sweeps the data directory verifies and replays to the same head', async () => {
    const before = await head()
    await server.stop()
    const out = execFileSync(tallyBin(), ['verify', '--data-dir', dataDir], { encoding: 'utf8' })
    assert.match(out, /^ok/m)
    // Replay from the log (the state store moved aside) removes the same versions.
    fs.renameSync(path.join(dataDir, 'state.redb'), path.join(dataDir, 'state.redb.moved'))
    await server.start()
    admin = server.adminClient()
    assert.deepEqual(await head(), before)
    const short = (await admin.query(q.Paginate(q.Events(q.Ref(q.Collection('short'), '1')), { size: 100 }))).data
    assert.deepEqual(short.map(e => e.action), ['create', 'update'])
  })
})
