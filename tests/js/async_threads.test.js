'use strict'
// Heavy work stays off the async threads (issue 13, item 4): a query of few evaluation
// steps that does a lot of work in one of them (an NGram of a long string) runs on the
// long-work pool, not inline on the thread that read the request; large answers are
// encoded as their client takes them. While several such queries run — at least as many
// as the server has async threads — `/ping` and a small query of another tenant, sent
// after them on other connections, are answered before any of them finishes. Before,
// each heavy query held an async thread for its whole evaluation and nothing else was
// answered until one finished.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const http2 = require('node:http2')
const os = require('node:os')
const { startServer, q, ping, sleep, HOST } = require('./helpers/server')

const MIB = 1024 * 1024

describe('heavy single steps', () => {
  let server
  before(async () => {
    server = await startServer()
  })
  after(async () => server && (await server.stop()))

  // Each heavy query must outlast the wait below by a wide margin even when it runs
  // alone on a quiet machine: an earlier version (2 × 600,000 n-grams, about 80 ms here)
  // finished before /ping was even sent once the evaluator got faster, and the order
  // then said nothing about the async threads.
  it('/ping and another tenant answer while heavy few-step queries run', async () => {
    const admin = server.adminClient()
    await admin.query(q.CreateDatabase({ name: 'quiet' }))
    const key = await admin.query(q.CreateKey({ database: q.Database('quiet'), role: 'server' }))
    const quiet = server.client(key.secret)
    assert.equal(await quiet.query(q.Add(1, 2)), 3)

    // Each `big` is one step of about 70 ms (999,999 n-grams of a 500 KB string, near
    // NGram's element bound); four of them stay under the per-query memory bound. The
    // query is a handful of steps, far below the inline step bound, and takes about
    // 300 ms alone — with n of them on the machine's cores, longer.
    const big = q.Count(q.NGram(q.Repeat('a', 500000), 1, 2))
    const heavy = q.Add(big, big, big, big)
    const n = Math.max(4, os.availableParallelism ? os.availableParallelism() : os.cpus().length)
    const order = []
    const heavies = []
    for (let i = 0; i < n; i++) {
      // A client (an HTTP/2 connection) each.
      const c = server.adminClient()
      heavies.push(
        c.query(heavy, { queryTimeout: 120_000 }).then(v => {
          order.push('heavy')
          return v
        })
      )
    }
    // Let them arrive and start (if they have not, nothing below can fail wrongly).
    await sleep(50)
    const probes = [
      ping(server.port, 60_000).then(s => {
        order.push('ping')
        return s
      }),
      quiet.query(q.Add(1, 2)).then(v => {
        order.push('quiet')
        return v
      }),
    ]
    const [status, sum] = await Promise.all(probes)
    const results = await Promise.all(heavies)
    assert.equal(status, 200)
    assert.equal(sum, 3)
    for (const r of results) assert.equal(r, 4 * 999999)
    const firstHeavy = order.indexOf('heavy')
    assert.ok(order.indexOf('ping') < firstHeavy, `/ping waited for a heavy query: ${order.join(', ')}`)
    assert.ok(order.indexOf('quiet') < firstHeavy, `the quiet tenant waited for a heavy query: ${order.join(', ')}`)
  })
})

describe('large answers', () => {
  let server
  before(async () => {
    server = await startServer()
  })
  after(async () => server && (await server.stop()))

  it('are sent whole and exact through the driver, HTTP/1.1 and HTTP/2', async () => {
    const client = server.adminClient()
    await client.query(q.CreateCollection({ name: 'c' }))
    // About 9 MiB of every kind of value the answer encoder splits or tags.
    const query = q.Let(
      { s: q.Repeat('é"\\\n', 2 * MIB / 4) },
      {
        strings: q.Map(q.NGram(q.Repeat('a', 3), 1, 1), q.Lambda('_', q.Var('s'))),
        bytes: q.Bytes(Buffer.alloc(100_001, 7).toString('base64')),
        tagged: { '@weird': q.Repeat('x', 100_000), n: 1.5 },
        refs: q.Map(q.NGram(q.Repeat('b', 1000), 1, 1), q.Lambda('_', q.Collection('c'))),
      }
    )
    const v = await client.query(query)
    const s = 'é"\\\n'.repeat(2 * MIB / 4)
    assert.equal(v.strings.length, 3)
    for (const x of v.strings) assert.equal(x, s)
    assert.equal(Buffer.from(v.bytes.value).length, 100_001)
    assert.ok(Buffer.from(v.bytes.value).every(b => b === 7))
    assert.equal(v.tagged['@weird'], 'x'.repeat(100_000))
    assert.equal(v.tagged.n, 1.5)
    assert.equal(v.refs.length, 1000)
    assert.equal(v.refs[999].id, 'c')

    // HTTP/1.1: the same bytes as the driver saw (chunked, as the length is not known
    // before the answer is encoded).
    const res = await server.raw(JSON.stringify(q.wrap(query)), { timeoutMs: 60_000 })
    assert.equal(res.status, 200)
    const raw = JSON.parse(res.body).resource
    assert.equal(raw.strings[2], s)
    assert.deepEqual(raw.tagged, { '@obj': { '@weird': 'x'.repeat(100_000), n: 1.5 } })
    assert.deepEqual(raw.refs[0], { '@ref': { id: 'c', collection: { '@ref': { id: 'collections' } } } })

    // HTTP/2 with a small window the client widens as it reads: everything arrives.
    const session = http2.connect(`http://${HOST}:${server.port}`, { settings: { initialWindowSize: 65535 } })
    const body = await new Promise((resolve, reject) => {
      const req = session.request({
        ':method': 'POST',
        ':path': '/',
        authorization: `Bearer ${server.rootKey}`,
        'content-type': 'application/json',
      })
      const chunks = []
      req.on('data', c => chunks.push(c))
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
      req.on('error', reject)
      req.end(JSON.stringify(q.wrap(query)))
    })
    session.close()
    assert.equal(body, res.body)
  })

  it('of write transactions are exact through the driver and over HTTP/1.1', async () => {
    const client = server.adminClient()
    await client.query(q.CreateCollection({ name: 'w' }))
    // A write (it goes through the log and the executor) answering about 8 MiB of
    // escaped strings, tagged objects and refs (the executor writes its text with the
    // streamed encoder the read path uses).
    const s = 'é"\\\n'.repeat(2 * MIB / 4)
    const query = q.Do(
      q.Create(q.Collection('w'), { data: { n: 1 } }),
      {
        strings: q.Map(q.NGram(q.Repeat('a', 3), 1, 1), q.Lambda('_', q.Repeat('é"\\\n', 2 * MIB / 4))),
        tagged: { '@weird': q.Repeat('x', 100_000), n: 1.5 },
        refs: q.Map(q.NGram(q.Repeat('b', 1000), 1, 1), q.Lambda('_', q.Collection('w'))),
        created: q.Select(['data'], q.Create(q.Collection('w'), { data: { '@weird': 'w', s: 'é' } })),
      }
    )
    const v = await client.query(query)
    assert.equal(v.strings.length, 3)
    for (const x of v.strings) assert.equal(x, s)
    assert.equal(v.tagged['@weird'], 'x'.repeat(100_000))
    assert.equal(v.tagged.n, 1.5)
    assert.equal(v.refs.length, 1000)
    assert.equal(v.refs[999].id, 'w')
    assert.deepEqual(v.created, { '@weird': 'w', s: 'é' })
    assert.equal(await client.query(q.Count(q.Documents(q.Collection('w')))), 2)

    const res = await server.raw(JSON.stringify(q.wrap(query)), { timeoutMs: 60_000 })
    assert.equal(res.status, 200)
    const raw = JSON.parse(res.body).resource
    assert.equal(raw.strings[2], s)
    assert.deepEqual(raw.tagged, { '@obj': { '@weird': 'x'.repeat(100_000), n: 1.5 } })
    assert.deepEqual(raw.created, { '@obj': { '@weird': 'w', s: 'é' } })
    assert.deepEqual(raw.refs[0], { '@ref': { id: 'w', collection: { '@ref': { id: 'collections' } } } })
  })
})
