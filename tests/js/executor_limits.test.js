'use strict'
// No transaction can stop the ledger. Each query here used to be logged, then fail while
// its batch was applied: the node exited, and every restart replayed the input and exited
// again (on a cluster, every member did). Now each one answers a clear FQL error, nothing
// of it is applied, and the node — or every member — goes on serving.
// Also: a data directory written by an earlier build, whose log already holds such an
// input, opens; and a data directory of an unknown format is refused with a clear message.

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { TallyServer, tallyBin, q, ping, rawRequest, expectFaunaError, REPO_ROOT } = require('./helpers/server')
const { TallyCluster } = require('./helpers/cluster')

const LONG = 'n'.repeat(40_000)
// A transaction's ledger leaf record (89 bytes, its input as logged, 32 bytes per write) is
// one store value of at most 16 MiB; the input alone may be at most 16 MiB - 89 bytes.
const INPUT_BYTES_MAX = 16 * 1024 * 1024 - 89

/** A query of about `junkLen` bytes (a literal nobody stores) that creates `creates` documents. */
function withJunk(junkLen, coll, creates) {
  const xs = Array.from({ length: creates }, (_, i) => i)
  return q.Let({ junk: 'j'.repeat(junkLen) }, q.Map(xs, q.Lambda('x', q.Create(q.Collection(coll), { data: { name: 'junk' } }))))
}

/** The poison queries of the issue, each with the error it must now answer. */
function poisons() {
  const lambda = q.Query(q.Lambda('x', q.Var('x')))
  return [
    ['CreateCollection', q.CreateCollection({ name: LONG }), 'validation failed', /Names may be at most 1024 bytes/],
    ['CreateDatabase', q.CreateDatabase({ name: LONG }), 'validation failed', /Names may be at most 1024 bytes/],
    ['CreateIndex', q.CreateIndex({ name: LONG, source: q.Collection('c') }), 'validation failed', /Names may be/],
    ['CreateFunction', q.CreateFunction({ name: LONG, body: lambda }), 'validation failed', /Names may be/],
    ['CreateRole', q.CreateRole({ name: LONG, privileges: [] }), 'validation failed', /Names may be/],
    ['rename to a long name', q.Update(q.Collection('c'), { name: LONG }), 'validation failed', /Names may be/],
    ['Create, terms index', q.Create(q.Collection('c'), { data: { name: LONG } }), 'validation failed',
      /entry of index `c_by_name` would be \d+ bytes.*at most 32768 bytes/],
    ['Create, unique values index', q.Create(q.Collection('u'), { data: { name: LONG } }), 'validation failed',
      /entry of index `u_unique` would be/],
    ['Update into an indexed field', q.Update(q.Ref(q.Collection('c'), '1'), { data: { name: LONG } }),
      'validation failed', /entry of index `c_by_name`/],
    ['a document over 16 MiB', q.Create(q.Collection('plain'), { data: { s: q.Repeat('a', 8_400_000), t: q.Repeat('b', 8_400_000) } }),
      'validation failed', /a document may be at most 16777216 bytes/],
    // Found by this audit: the build of 297127d logged this, then failed to store the
    // transaction's ledger leaf record ("meta value of … bytes is too large") and exited.
    ['an input and writes too large for their ledger record', withJunk(INPUT_BYTES_MAX - 911, 'c', 40),
      'invalid argument', /ledger record would be \d+ bytes.*at most 16777216 bytes/],
  ]
}

async function setupSchema(client) {
  await client.query(q.CreateCollection({ name: 'c' }))
  await client.query(q.CreateCollection({ name: 'u' }))
  await client.query(q.CreateCollection({ name: 'plain' }))
  await client.query(q.CreateIndex({ name: 'c_by_name', source: q.Collection('c'), terms: [{ field: ['data', 'name'] }] }))
  await client.query(q.CreateIndex({ name: 'u_unique', source: q.Collection('u'), unique: true,
    values: [{ field: ['data', 'name'] }] }))
  await client.query(q.Create(q.Ref(q.Collection('c'), '1'), { data: { name: 'one' } }))
}

/** Send every poison through `client`, checking each error; then a normal write must work. */
async function sendPoisons(client, label) {
  for (const [what, expr, code, re] of poisons()) {
    if (label !== 'single node' && what.startsWith('an input and writes')) {
      // A 16 MiB Raft entry can take longer than the cluster's 5 s write timeout to reach
      // a majority on a loaded machine: the answer may then be the ambiguous
      // `unavailable` instead (it is applied all the same, as a failed transaction).
      const r = await client.query(expr).then(() => 'applied', e => e)
      assert.notEqual(r, 'applied', `${label}: ${what} was applied`)
      const got = JSON.stringify(r.requestResult && r.requestResult.responseContent)
      assert.ok(r.name === 'BadRequest' ? re.test(got) : /"code":"unavailable"/.test(got), `${label}: ${what}: ${got.slice(0, 400)}`)
      continue
    }
    const e = await expectFaunaError(client.query(expr), 'BadRequest', code)
    const detail = JSON.stringify(e.requestResult.responseContent.errors)
    assert.match(detail, re, `${label}: ${what}: ${detail.slice(0, 400)}`)
  }
  // Nothing of them was applied.
  assert.equal(await client.query(q.Count(q.Documents(q.Collection('c')))), 1)
  assert.equal(await client.query(q.Count(q.Documents(q.Collection('u')))), 0)
  assert.equal(await client.query(q.Count(q.Documents(q.Collection('plain')))), 0)
  assert.equal(await client.query(q.Count(q.Collections())), 3)
  assert.equal(await client.query(q.Select(['data', 'name'], q.Get(q.Ref(q.Collection('c'), '1')))), 'one')
}

test('oversized writes are transaction errors; the node serves on and restarts', async t => {
  const s = new TallyServer()
  await s.start()
  t.after(() => s.stop())
  const c = s.adminClient()
  await setupSchema(c)
  await sendPoisons(c, 'single node')
  assert.ok(s.alive, s.logTail())
  assert.equal(await ping(s.port), 200)
  // A batch that mixes a poison with good writes applies the good ones.
  const good = q.Create(q.Collection('c'), { data: { name: 'two' } })
  const results = await Promise.allSettled([c.query(good), c.query(poisons()[6][1]), c.query(good)])
  assert.deepEqual(results.map(r => r.status), ['fulfilled', 'rejected', 'fulfilled'])
  assert.equal(await c.query(q.Count(q.Match(q.Index('c_by_name'), 'two'))), 2)
  // The node replays its log on restart (killed, so the tail after its last checkpoint is
  // replayed, poisons included), and comes back with the same data.
  s.proc.kill('SIGKILL')
  await s.exited
  await s.start()
  const c2 = s.adminClient()
  assert.equal(await c2.query(q.Count(q.Match(q.Index('c_by_name'), 'two'))), 2)
  assert.equal(await c2.query(q.Count(q.Documents(q.Collection('c')))), 3)
  await c2.query(good)
})

test('a query too large for its ledger record is refused before it is logged', async t => {
  // Only reachable with a body limit above 16 MiB: the input alone would not fit.
  const s = new TallyServer({ extraArgs: ['--body-bytes-max', String(20 << 20)] })
  await s.start()
  t.after(() => s.stop())
  const c = s.adminClient()
  await c.query(q.CreateCollection({ name: 'c' }))
  const e = await expectFaunaError(c.query(withJunk(INPUT_BYTES_MAX + 10, 'c', 1)), 'BadRequest', 'invalid argument')
  assert.match(JSON.stringify(e.requestResult.responseContent.errors), /a transaction's input may be at most 16777127 bytes/)
  assert.equal(await c.query(q.Count(q.Documents(q.Collection('c')))), 0)
  await c.query(q.Create(q.Collection('c'), { data: { name: 'after' } }))
  assert.ok(s.alive, s.logTail())
})

test('a 3-member cluster: every member answers the errors, stays up, and heads agree', async t => {
  const cluster = new TallyCluster({ replicas: 3 })
  await cluster.start()
  t.after(() => cluster.stop())
  const leader = await cluster.leader()
  await setupSchema(leader.client())
  const [follower] = await cluster.followers()
  await sendPoisons(leader.client(), 'leader')
  // Through a follower the writes are forwarded to the leader; the answers are the same.
  // Each reproduction of the issue: the five schema names, the two indexed Creates.
  for (const [what, expr, code] of poisons().filter((_, i) => i <= 4 || i === 6 || i === 7)) {
    await expectFaunaError(follower.client().query(expr), 'BadRequest', code).catch(e => {
      throw new Error(`follower: ${what}: ${e.message}`)
    })
  }
  await follower.client().query(q.Create(q.Collection('c'), { data: { name: 'after' } }))
  const head = await cluster.converge()
  for (const m of cluster.members) assert.ok(m.alive, `member ${m.id} exited: ${JSON.stringify(m.exitInfo)}`)
  assert.ok(head.height > 0)
  for (const m of cluster.members) {
    assert.equal(await m.client().query(q.Count(q.Match(q.Index('c_by_name'), 'after'))), 1)
  }
})

/** A fresh copy of the fixture data directory (made by an earlier build). */
function unpackFixture() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-fixture-'))
  execFileSync('tar', ['xzf', path.join(REPO_ROOT, 'tests', 'fixtures', 'datadir-unmarked-poisoned.tgz'), '-C', dir])
  return { dir, dataDir: path.join(dir, 'data') }
}

test('a data directory from an earlier build (format 1) is refused with what to do, and left as it was', async t => {
  // Made by the build before the executor's limits (d063b95): a collection, an index, two
  // documents (heights 1-4), a graceful stop, a restart, then a Create whose indexed field
  // is 40,000 bytes long, which stopped that build at height 5 and again on every start.
  // It has no format marker: format 1. Its blocks predate the transparency log (block
  // headers v1), which this build's headers commit to, so it is refused before anything
  // is opened, with the way to move the data.
  const { dir, dataDir } = unpackFixture()
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  assert.ok(!fs.existsSync(path.join(dataDir, 'FORMAT')))
  const before = fs.readdirSync(dataDir).sort()
  const out = await runServe(dataDir)
  assert.notEqual(out.code, 0, out.text)
  assert.match(out.text, /has format 1 .*no FORMAT marker.*reads format 5.*tally export.*commit bb86f26, the last build of format 1/s)
  assert.deepEqual(fs.readdirSync(dataDir).sort(), before, 'nothing was written into it')
})

test('a data directory of this format whose log holds an input that stopped an earlier build opens', async t => {
  // Made by the build of main at 297127d (format 2): a collection `c`, an index
  // `c_by_name`, documents c/1 `one` and c/2 `two` (heights 1-4), then a query of 16 MiB
  // less 1,000 bytes that creates 40 documents: its ledger leaf record did not fit in the
  // store ("meta value of 16779414 bytes is too large"), so that build exited at height 5
  // and again on every start. Its batches carry no executor rules: this build stops before
  // applying batch 5 and says what to do; with --apply-other-rules it replays the input as
  // a failed transaction.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-fixture2-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  execFileSync('tar', ['xzf', path.join(REPO_ROOT, 'tests', 'fixtures', 'datadir-format2-poisoned.tgz'), '-C', dir])
  const refused = await runServe(path.join(dir, 'data'))
  assert.equal(refused.code, 72, refused.text)
  assert.match(refused.text, /batch \d was sequenced by a build from before batches carried executor rules/)
  assert.match(refused.text, /stop it gracefully/)
  assert.match(refused.text, /--apply-other-rules/)
  const s = new TallyServer({ dataDir: path.join(dir, 'data'), rootKey: 'fixture-root-key', extraArgs: ['--apply-other-rules'] })
  await s.start()
  t.after(() => s.stop())
  const head = async () => {
    const r = await rawRequest(s.port, { method: 'GET', path: '/ledger/head', headers: { authorization: 'Bearer fixture-root-key' } })
    assert.equal(r.status, 200, r.body)
    return JSON.parse(r.body)
  }
  const c = s.adminClient()
  assert.equal(await c.query(q.Count(q.Documents(q.Collection('c')))), 2)
  assert.equal(await c.query(q.Count(q.Match(q.Index('c_by_name'), 'poison'))), 0)
  assert.equal(await c.query(q.Select(['data', 'name'], q.Get(q.Ref(q.Collection('c'), '2')))), 'two')
  const replayed = await head()
  assert.equal(replayed.height, 5, JSON.stringify(replayed))
  await c.query(q.Create(q.Collection('c'), { data: { name: 'after' } }))
  const after = await head()
  assert.equal(after.height, 6)
  // Replayed again after a kill, the same blocks come out.
  s.proc.kill('SIGKILL')
  await s.exited
  await s.start()
  assert.deepEqual(await head(), after)
  assert.equal(await s.adminClient().query(q.Count(q.Match(q.Index('c_by_name'), 'after'))), 1)
})

/** Run `tally serve` on `dataDir` until it exits (or 20 s): its exit code and output. */
function runServe(dataDir) {
  const bin = tallyBin()
  return new Promise(resolve => {
    const p = spawn(bin, ['serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--root-key', 'fixture-root-key'],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_BACKTRACE: '0' } })
    let text = ''
    p.stdout.on('data', d => { text += d })
    p.stderr.on('data', d => { text += d })
    const timer = setTimeout(() => p.kill('SIGKILL'), 20_000)
    p.on('exit', code => { clearTimeout(timer); resolve({ code, text }) })
  })
}

test('a data directory of an unknown format is refused with a clear message', async t => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-format-'))
  t.after(() => fs.rmSync(dataDir, { recursive: true, force: true }))
  fs.writeFileSync(path.join(dataDir, 'FORMAT'), 'tally data directory format 9\n')
  const bin = tallyBin()
  const out = await new Promise(resolve => {
    const p = spawn(bin, ['serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--root-key', 'fixture-root-key'],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_BACKTRACE: '0' } })
    let text = ''
    p.stdout.on('data', d => { text += d })
    p.stderr.on('data', d => { text += d })
    const timer = setTimeout(() => p.kill('SIGKILL'), 20_000)
    p.on('exit', code => { clearTimeout(timer); resolve({ code, text }) })
  })
  assert.notEqual(out.code, 0, out.text)
  assert.match(out.text, /has format 9, and this build of tally reads format 2, 3, 4/)
  assert.deepEqual(fs.readdirSync(dataDir), ['FORMAT'], 'nothing else was created')
})
