'use strict'
// Retention (issue 15 item 3) through the official npm driver against a real server:
// versions older than a collection's history_days and documents past their ttl
// disappear (history reads start at the retention floor, index and collection reads
// drop the expired document), reads below the floor answer v4's 400 `bad request`,
// history_days: null keeps everything, ttl_days gives documents a ttl, and after the
// sweeps the data directory still passes `tally verify` and replays to the same head.

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

/** A few small writes: each is a batch, and every batch ends with a retention sweep. */
async function nudge(n = 3) {
  for (let i = 0; i < n; i++) await admin.query(q.Create(q.Collection('noise'), { data: { i } }))
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
        q.CreateCollection({ name: 'expiring', ttl_days: 1 })
      )
    )
    await admin.query(q.CreateIndex({ name: 'short_by_n', source: q.Collection('short'), terms: [{ field: ['data', 'n'] }] }))
  })
  after(async () => {
    if (server) await server.stop()
    fs.rmSync(dataDir, { recursive: true, force: true })
  })

  it('versions past history_days disappear; history_days: null keeps them', async () => {
    const s = await admin.query(q.Create(q.Ref(q.Collection('short'), '1'), { data: { n: 0 } }))
    const k = await admin.query(q.Create(q.Ref(q.Collection('kept'), '1'), { data: { n: 0 } }))
    for (let n = 1; n <= 3; n++) {
      await admin.query(q.Update(s.ref, { data: { n } }))
      await admin.query(q.Update(k.ref, { data: { n } }))
    }
    await nudge()
    const events = async r => (await admin.query(q.Paginate(q.Events(r), { size: 100 }))).data
    const kept = await events(k.ref)
    assert.deepEqual(kept.map(e => e.action), ['create', 'update', 'update', 'update'])
    const short = await events(s.ref)
    // History starts at the floor: the version standing there, shown as a create.
    assert.deepEqual(short.map(e => [e.action, e.data]), [['create', { n: 3 }]])
    // Reading below the floor is v4's 400, with its message.
    const e = await expectFaunaError(admin.query(q.Get(s.ref, s.ts)), 'BadRequest', 'bad request')
    assert.match(e.requestResult.responseContent.errors[0].description, /^Requested timestamp \S+ less than minimum allowed timestamp \S+\.$/)
    await expectFaunaError(admin.query(q.At(s.ts, q.Paginate(q.Match(q.Index('short_by_n'), 0)))), 'BadRequest', 'bad request')
    // The kept collection still answers at its first version's ts.
    assert.deepEqual((await admin.query(q.Get(k.ref, k.ts))).data, { n: 0 })
    // Current reads are unaffected.
    assert.deepEqual((await admin.query(q.Get(s.ref))).data, { n: 3 })
    const page = await admin.query(q.Paginate(q.Match(q.Index('short_by_n'), 3)))
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
    assert.deepEqual((await admin.query(q.Paginate(q.Events(doc.ref)))).data, [])
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
    assert.deepEqual(short.map(e => e.action), ['create'])
  })
})
