'use strict'
// Issue 19: `tally export` / `tally import` round trip of a database tree with schema and
// document history, and a Fauna snapshot export (tagged and simple formats, a gzipped
// file) imported with its ids and timestamps and queried through the official driver.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { startServer, q, faunadb, REPO_ROOT } = require('./helpers/server')

const { values } = faunadb

function tally(server, args) {
  const r = spawnSync(server.bin, args, {
    encoding: 'utf8',
    env: { ...process.env, TALLY_ROOT_KEY: server.rootKey, TALLY_ENDPOINT: server.url },
    timeout: 120_000,
  })
  assert.equal(r.status, 0, `tally ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`)
  return r.stdout
}

async function dbClient(server, name) {
  const admin = server.adminClient()
  const k = await admin.query(q.CreateKey({ database: q.Database(name), role: 'admin' }))
  return server.client(k.secret)
}

/** Everything the round trip must keep, read through the driver. */
async function snapshot(c) {
  const colls = await c.query(q.Map(q.Paginate(q.Collections()), q.Lambda('r', q.Get(q.Var('r')))))
  const out = { collections: {}, indexes: null, functions: null, roles: null, docs: {} }
  for (const coll of colls.data) {
    out.collections[coll.name] = { history_days: coll.history_days, data: coll.data }
    const docs = await c.query(
      q.Map(
        q.Paginate(q.Documents(q.Collection(coll.name)), { size: 1000 }),
        q.Lambda('r', [q.Get(q.Var('r')), q.Paginate(q.Events(q.Var('r')), { size: 1000 })])
      )
    )
    for (const [doc, events] of docs.data) {
      out.docs[`${coll.name}/${doc.ref.id}`] = {
        ts: doc.ts,
        data: doc.data,
        history: events.data.map(e => ({ ts: e.ts, action: e.action, data: e.data })),
      }
    }
  }
  const strip = d => {
    const { ref, ts, ...rest } = d
    return rest
  }
  out.indexes = (await c.query(q.Map(q.Paginate(q.Indexes()), q.Lambda('r', q.Get(q.Var('r')))))).data.map(strip)
  out.functions = (await c.query(q.Map(q.Paginate(q.Functions()), q.Lambda('r', q.Get(q.Var('r')))))).data.map(strip)
  out.roles = (await c.query(q.Map(q.Paginate(q.Roles()), q.Lambda('r', q.Get(q.Var('r')))))).data.map(strip)
  return JSON.parse(JSON.stringify(out))
}

describe('export and import', { timeout: 180_000 }, () => {
  let server
  let tmp
  before(async () => {
    server = await startServer()
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-export-'))
  })
  after(async () => {
    if (server) await server.stop()
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true })
  })

  it('a database with children, schema and history round-trips', async () => {
    const admin = server.adminClient()
    await admin.query(q.CreateDatabase({ name: 'src', data: { team: 'x' } }))
    const src = await dbClient(server, 'src')
    await src.query(q.CreateDatabase({ name: 'inner' }))
    await src.query(q.CreateCollection({ name: 'things', history_days: 30, data: { kind: 'test' } }))
    await src.query(q.CreateIndex({ name: 'things_by_n', source: q.Collection('things'), terms: [{ field: ['data', 'n'] }] }))
    await src.query(q.CreateFunction({ name: 'double', body: q.Query(q.Lambda('x', q.Multiply(q.Var('x'), 2))) }))
    await src.query(
      q.CreateRole({
        name: 'reader',
        privileges: [
          { resource: q.Collection('things'), actions: { read: true } },
          { resource: q.Function('double'), actions: { call: true } },
        ],
      })
    )
    await src.query(q.Update(q.Function('double'), { role: q.Role('reader') }))
    await src.query(q.CreateKey({ role: 'server', data: { purpose: 'app' } }))
    for (let i = 0; i < 30; i++) {
      await src.query(
        q.Create(q.Ref(q.Collection('things'), String(1000 + i)), {
          data: { n: i % 5, name: `t${i}`, when: q.Time('2024-03-01T00:00:00Z'), tags: ['a', { deep: i }], blob: q.Bytes('AQID') },
        })
      )
    }
    for (let i = 0; i < 30; i += 3) {
      await src.query(q.Update(q.Ref(q.Collection('things'), String(1000 + i)), { data: { n: 9, v: 2 } }))
    }
    const inner = server.client(`${server.rootKey}:src/inner:admin`)
    await inner.query(q.CreateCollection({ name: 'leaf' }))
    for (let i = 0; i < 3; i++) await inner.query(q.Create(q.Collection('leaf'), { data: { i } }))

    const file = path.join(tmp, 'src.jsonl')
    tally(server, ['export', '--database', 'src', '--out', file])
    const lines = fs.readFileSync(file, 'utf8').trim().split('\n').map(l => JSON.parse(l))
    assert.equal(lines[0].tally_export, 1)
    assert.equal(lines[lines.length - 1].type, 'end')
    const key = lines.find(l => l.type === 'key')
    assert.ok(key, 'keys are exported')
    assert.equal(key.doc.secret, undefined)
    assert.equal(key.doc.hashed_secret, undefined)

    await admin.query(q.CreateDatabase({ name: 'dst' }))
    const resume = path.join(tmp, 'resume')
    const out = tally(server, ['import', '--database', 'dst', '--file', file, '--resume', resume])
    assert.match(out, /imported 33 documents/)
    const dst = await dbClient(server, 'dst')
    assert.deepEqual(await snapshot(dst), await snapshot(src))
    const innerDst = server.client(`${server.rootKey}:dst/inner:admin`)
    assert.deepEqual(await snapshot(innerDst), await snapshot(inner))
    // The schema works, not just looks alike.
    assert.equal(await dst.query(q.Call(q.Function('double'), 21)), 42)
    const byN = await dst.query(q.Count(q.Match(q.Index('things_by_n'), 9)))
    assert.equal(byN, 10)
    // Done: running it again with the resume file imports nothing more.
    const again = tally(server, ['import', '--database', 'dst', '--file', file, '--resume', resume])
    assert.match(again, /imported 0 documents/)
  })

  it("a Fauna snapshot export lands with its ids, timestamps and values", async () => {
    const admin = server.adminClient()
    await admin.query(q.CreateDatabase({ name: 'shop' }))
    const fixtures = path.join(REPO_ROOT, 'tests', 'fixtures')
    tally(server, ['import', '--database', 'shop', '--fauna', path.join(fixtures, 'fauna_export')])
    tally(server, ['import', '--database', 'shop', '--fauna', path.join(fixtures, 'fauna_export_simple')])
    const shop = await dbClient(server, 'shop')
    const ada = await shop.query(q.Get(q.Ref(q.Collection('Users'), '388254392419336704')))
    assert.equal(ada.ts, Date.parse('2024-01-10T10:00:00Z') * 1000 + 1)
    assert.equal(ada.data.name, 'Ada')
    assert.equal(ada.data.age, 36)
    assert.equal(ada.data.balance, 10.5)
    assert.ok(ada.data.born instanceof values.FaunaDate)
    assert.equal(ada.data.born.value, '1988-02-03')
    assert.deepEqual(ada.data.meta, { '@tag': 'vip' })
    const bob = await shop.query(q.Get(q.Ref(q.Collection('Users'), '388254392419336705')))
    assert.ok(bob.data.best_friend instanceof values.Ref)
    assert.equal(bob.data.best_friend.id, '388254392419336704')
    assert.equal(bob.data.best_friend.collection.id, 'Users')
    // The reference resolves to the imported document.
    assert.equal(await shop.query(q.Select(['data', 'name'], q.Get(q.Select(['data', 'best_friend'], q.Get(bob.ref))))), 'Ada')
    assert.equal(await shop.query(q.Count(q.Documents(q.Collection('Users')))), 3)
    const order = await shop.query(q.Get(q.Ref(q.Collection('Orders'), '388254392419336800')))
    assert.equal(order.data.total, 25)
    assert.ok(order.ttl instanceof values.FaunaTime)
    assert.equal(order.ttl.date.toISOString(), '2099-01-01T00:00:00.000Z')
    assert.equal(await shop.query(q.Count(q.Documents(q.Collection('Orders')))), 2)
  })

  it('refuses a file of another format version', async () => {
    const bad = path.join(tmp, 'bad.jsonl')
    fs.writeFileSync(bad, '{"tally_export": 99}\n')
    const r = spawnSync(server.bin, ['import', '--file', bad, '--endpoint', server.url, '--root-key', server.rootKey], { encoding: 'utf8' })
    assert.notEqual(r.status, 0)
    assert.match(r.stderr, /format 99; this build reads format 1/)
  })
})
